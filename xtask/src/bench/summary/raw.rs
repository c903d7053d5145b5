//! The raw numbers of the benchmark's report: every round, the agent's numbers, the pairs.

use super::*;

/// Every round: load, latency, errors and the CPU of each process.
pub(in crate::bench) fn rounds_table(rounds: &[&Round]) -> String {
    let rows: Vec<Vec<String>> = rounds
        .iter()
        .map(|r| {
            vec![
                r.number.to_string(),
                r.pair.to_string(),
                r.gateway.title().into(),
                r.mode.name().into(),
                match (r.paced, r.programs.is_some()) {
                    (true, _) => "paced",
                    (false, true) => "flat out, bpf_stats",
                    (false, false) => "flat out",
                }
                .into(),
                thousands(r.wrk.requests_per_second.round() as u64),
                thousands(r.wrk.requests),
                ms(r.wrk.p50),
                ms(r.wrk.p99),
                r.wrk.errors.to_string(),
                format!("{:.1}", proxy_us_per_request(r)),
                format!("{:.2}", r.proxy_cpu / r.wall),
                format!("{:.2}", r.upstream_cpu / r.wall),
                format!("{:.2}", r.wrk_cpu / r.wall),
                r.agent
                    .as_ref()
                    .map_or_else(|| "—".into(), |a| format!("{:.2}", a.cpu_load / r.wall)),
                format!("{:.2}", r.load1),
                format!("{:.2}", r.other_cores),
                r.foreign_agents.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "round",
            "pair",
            "gateway",
            "mode",
            "load",
            "requests/s",
            "requests",
            "p50 ms",
            "p99 ms",
            "errors",
            "proxy CPU µs/request",
            "proxy cores",
            "upstream cores",
            "wrk cores",
            "agent cores",
            "load avg (1 min)",
            "other processes, cores",
            "other gatescope agents",
        ],
        &rows,
    )
}

/// The agent's numbers of each round it ran in.
pub(in crate::bench) fn agent_table(rounds: &[&Round]) -> String {
    let rows: Vec<Vec<String>> = rounds
        .iter()
        .filter_map(|r| {
            let a = r.agent.as_ref()?;
            Some(vec![
                r.number.to_string(),
                format!("{:.1}", a.attach.as_secs_f64()),
                format!("{:.2}", a.cpu_load),
                format!("{:.3}", a.cpu_load / r.wall),
                format!("{:.4}", cores_per_10k(r)?),
                format!("{:.2}", a.cpu_total),
                format!("{:.4}", cpu_per_10k_requests(r)?),
                format!("{:.1}", a.peak_rss as f64 / MIB),
                opt(a.events_received),
                a.events_received.map_or_else(
                    || "—".into(),
                    |e| format!("{:.2}", e / r.wrk.requests.max(1) as f64),
                ),
                opt(a.events_lost),
            ])
        })
        .collect();
    table(
        &[
            "round",
            "attach s",
            "CPU-s under load",
            "cores",
            "cores per 10k req/s",
            "CPU-s incl. drain",
            "CPU-s per 10k requests",
            "peak RSS MiB",
            "events received",
            "events/request",
            "events lost",
        ],
        &rows,
    )
}

/// Each pair: gatescope's round against its baseline.
pub(in crate::bench) fn pairs_table(rounds: &[Round]) -> String {
    let rows: Vec<Vec<String>> = pairs(rounds)
        .iter()
        .map(|p| {
            let first = if p.baseline.number < p.gatescope.number {
                "baseline first"
            } else {
                "gatescope first"
            };
            vec![
                p.number.to_string(),
                format!(
                    "{}, {}, {first}",
                    p.gatescope.gateway.title(),
                    if p.gatescope.paced {
                        "paced"
                    } else {
                        "flat out"
                    }
                ),
                thousands(p.baseline.wrk.requests_per_second.round() as u64),
                thousands(p.gatescope.wrk.requests_per_second.round() as u64),
                pct(p.ratio(|r| r.wrk.requests_per_second)),
                times(p.ratio(|r| r.wrk.p50)),
                times(p.ratio(|r| r.wrk.p99)),
                times(p.ratio(proxy_us_per_request)),
            ]
        })
        .collect();
    table(
        &[
            "pair",
            "gateway, load, order",
            "baseline req/s",
            "gatescope req/s",
            "throughput",
            "p50",
            "p99",
            "proxy CPU/request",
        ],
        &rows,
    )
}
