//! Tests of the benchmark's summary: numbers and tables.

use super::*;
use crate::bench::Results;

#[test]
fn formats_numbers() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(21345), "21,345");
    assert_eq!(thousands(1234567), "1,234,567");
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
    assert_eq!(t, "| a   | bb  |\n| --- | --- |\n| xyz | 1   |\n");
}

/// A round with round numbers: `rps` requests/s for 10 s, `proxy_cpu` CPU seconds.
fn round(number: usize, pair: usize, mode: Mode, gateway: Gateway, rps: f64, p99: f64) -> Round {
    let load = gatescope_tests::wrk::Load {
        threads: 2,
        connections: 50,
        seconds: 10,
        delay_ms: None,
        header_bytes: 0,
    };
    let requests = (rps * 10.0) as u64;
    Round {
        number,
        pair,
        mode,
        gateway,
        paced: false,
        tracing: false,
        load,
        wrk: gatescope_tests::wrk::Report {
            requests,
            elapsed: 10.0,
            requests_per_second: rps,
            p50: 0.001,
            p99,
            errors: 0,
        },
        wall: 10.0,
        // 10 µs per request without the agent, 12 µs with it.
        proxy_cpu: requests as f64
            * if mode == Mode::Gatescope {
                12e-6
            } else {
                10e-6
            },
        upstream_cpu: 1.0,
        wrk_cpu: 1.0,
        other_cores: 0.0,
        load1: 0.5,
        foreign_agents: 0,
        agent: (mode == Mode::Gatescope).then(|| crate::bench::AgentRound {
            attach: std::time::Duration::from_millis(100),
            // 0.02 cores per 10k requests/s.
            cpu_load: rps / 1e4 * 0.02 * 10.0,
            cpu_total: rps / 1e4 * 0.02 * 10.0,
            peak_rss: 30 << 20,
            events_received: Some(requests as f64 * 4.0),
            events_lost: Some(0.0),
            lost_reasons: Vec::new(),
            version: Some("0.1.0".into()),
            spans_exported: None,
            spans_dropped: None,
        }),
        programs: None,
    }
}

#[test]
fn summary_has_issue_10s_rows_and_verdicts() {
    use crate::bench::{getppid::HostMode, HostTax, ProgCost};
    let n = Gateway::Nginx;
    let h = Gateway::Haproxy;
    let mut stats = round(3, 1, Mode::Gatescope, n, 50_000.0, 0.004);
    // 500k requests, 2 programs: 1.2 s + 0.3 s of run time = 3,000 ns per request.
    stats.programs = Some(vec![
        ProgCost {
            name: "sock_send".into(),
            kind: "tracing".into(),
            runs: 1_000_000,
            ns: 1_200_000_000,
        },
        ProgCost {
            name: "sock_recv".into(),
            kind: "tracing".into(),
            runs: 1_000_000,
            ns: 300_000_000,
        },
    ]);
    let results = Results {
        rounds: vec![
            round(1, 1, Mode::Baseline, n, 80_000.0, 0.002),
            round(2, 1, Mode::Gatescope, n, 60_000.0, 0.004),
            round(4, 2, Mode::Baseline, h, 40_000.0, 0.002),
            round(5, 2, Mode::Gatescope, h, 38_000.0, 0.002),
        ],
        stats: vec![stats],
        tracing: Vec::new(),
        host_tax: Some(HostTax {
            modes: vec![
                HostMode {
                    name: "no agent".into(),
                    args: None,
                    ns: vec![100.0, 101.0, 99.0],
                },
                HostMode {
                    name: "default".into(),
                    args: Some(Vec::new()),
                    ns: vec![101.0, 101.0, 101.0],
                },
            ],
            note: Some("no --payload-from".into()),
        }),
    };
    let text = summary_table(&results);
    let line = |start: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("| {start}")))
            .unwrap_or_else(|| panic!("no row {start:?} in\n{text}"))
            .to_string()
    };
    let programs = line("programs' cost per proxied request, summed (nginx");
    assert!(
        programs.contains("3000 ns") && programs.contains("**missed** by 1500 ns"),
        "{programs}"
    );
    let tax = line("host tax: getppid(2) elsewhere, agent default");
    assert!(tax.contains("1.01×") && tax.contains("met"), "{tax}");
    assert!(line("host tax, syscall-hook fallback").contains("not timed"));
    let cpu = line("proxy CPU per request, gatescope / baseline (nginx");
    assert!(cpu.contains("1.20×") && cpu.contains("**missed**"), "{cpu}");
    let throughput = line("throughput, gatescope / baseline (nginx");
    assert!(
        throughput.contains("75.0%") && throughput.contains("**missed** by 15.0 points"),
        "{throughput}"
    );
    let cores = line("agent CPU cores per 10k requests/s (nginx");
    assert!(cores.contains("0.0200") && cores.contains("met"), "{cores}");
    assert!(line("events lost at the highest rate (nginx").contains("| 0     "));
    let haproxy = line("throughput, gatescope / baseline (HAProxy");
    assert!(
        haproxy.contains("95.0%") && haproxy.contains("met (5.0 points to spare)"),
        "{haproxy}"
    );
    // No stats round through HAProxy: no programs row for it.
    assert!(!text.contains("summed (HAProxy"), "{text}");
}
