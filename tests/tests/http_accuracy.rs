//! Accuracy against the gateway's own account (issue 3, section 4): a mixed HTTP/1.1
//! workload through a real nginx (2 workers), then request by request, the agent's
//! `--request-log` against nginx's access log, and the request metrics against the
//! log's counts.
//!
//! Requests are matched by (client address:port, order on that connection): nginx's
//! `$remote_addr:$remote_port` and `$connection_requests`, the agent's `remote` and
//! the order of its downstream lines for that remote.
//!
//! Every check runs to the end and the test prints one table of all mismatches, so a
//! run says everything the agent gets wrong, not only the first thing.

use anyhow::{bail, ensure, Result};
use gatescope_tests::accuracy::request_log::{request_log_vs_nginx, Addrs, Shares};
use gatescope_tests::accuracy::*;
use gatescope_tests::agent::Agent;
use gatescope_tests::client::{Conn, Req, ABORTED};
use gatescope_tests::request_log::{parse_request_log, ReqLine};
use gatescope_tests::util::TempDir;
use gatescope_tests::workload::{self, poll_last};
use gatescope_tests::AccuracyScene;
use std::collections::BTreeMap;
use std::time::Duration;

/// Without the agent: the workload's own account against nginx's access log, and
/// the comparison against a synthetic perfect (and a faulty) agent. This is the
/// harness's self-test; it must pass for the agent test to mean anything.
#[test]
fn workload_matches_nginx_access_log() -> Result<()> {
    let scene = AccuracyScene::start(2)?;
    let sent = workload::run_mixed(scene.nginx.listen_port())?;
    // The client's record against nginx's log, the kinds of requests, the
    // upstream's record, a perfect and a faulty synthetic agent.
    let log = self_check::harness_self_check(&scene, &sent)?;

    // Timeouts and aborts as nginx records them (for the agent test's expectations).
    for e in log
        .iter()
        .filter(|e| e.status == 504 || e.status == ABORTED)
    {
        eprintln!("nginx gave up: {e:?}");
    }
    Ok(())
}

/// The agent against nginx, request by request, plus the request metrics (native
/// and Kong mode, two agents on the same nginx at once).
#[test]
fn agent_matches_nginx_access_log() -> Result<()> {
    let scene = AccuracyScene::start(2)?;
    let dir = TempDir::new("reqlog")?;
    let req_log = dir.path().join("requests.jsonl");
    let req_log_arg = req_log.display().to_string();
    let master = scene.nginx.master_pid();
    let native = Agent::start(
        &[master],
        &["--request-log", &req_log_arg, "--capture-bytes", "256"],
    )?;
    // The native agent runs on BTF tracepoints, the Kong-mode one on the
    // classic trace events (the fallback where tp_btf is refused); both read
    // buffers from the saved registers (no syscall hook). `cargo xtask test`
    // runs this again with the syscall-hook fallback for every agent
    // (GATESCOPE_PAYLOAD_FROM=syscall-hook): all four combinations must
    // agree with nginx's log, each on its own.
    let kong = Agent::start(
        &[master],
        &[
            "--metrics-compat",
            "kong",
            "--capture-bytes",
            "256",
            "--raw-tracepoints=false",
        ],
    )?;
    let payload = match std::env::var("GATESCOPE_PAYLOAD_FROM").as_deref() {
        Ok("syscall-hook") => "payload=syscall hook sys_enter (taxes every syscall of the host)",
        _ => "payload=sock_*_length with the saved registers (no syscall hook)",
    };
    for (agent, hook) in [
        (&native, payload),
        (&native, "attached as the BTF tracepoint sock_recv_length"),
        (&kong, payload),
        (&kong, "raw tracepoints off (--raw-tracepoints=false)"),
    ] {
        ensure!(
            agent.stderr().contains(hook),
            "expected `{hook}` in:\n{}",
            agent.stderr()
        );
    }
    let listener = scene.nginx.listen_addr();
    let backend = scene.upstream.addr();
    let down = format!("127.0.0.1:{}", scene.down_port);

    let sent = workload::run_mixed(scene.nginx.listen_port())?;
    let log = gatescope_tests::util::poll(LOG_TIMEOUT, "the acc log", || {
        let l = scene.nginx.acc_log()?;
        Ok((l.len() >= sent.len()).then_some(l))
    })?;
    let mut report = Report::default();
    let read_agent = || -> Result<Vec<ReqLine>> {
        parse_request_log(&std::fs::read_to_string(&req_log).unwrap_or_default())
    };
    let truth = upstream_truth(&scene, &log)?;
    let want_up = truth.len();
    let (complete, lines) = poll_last(LOG_TIMEOUT, || {
        let l = read_agent()?;
        let down_n = l.iter().filter(|x| x.is_downstream()).count();
        let up_n = l.len() - down_n;
        Ok((down_n >= log.len() && up_n >= want_up, l))
    })?;
    let at = Addrs {
        listener: &listener,
        backend: &backend,
        down: &down,
    };
    let (agent, diffs, up_diffs) = request_log_vs_nginx(
        &lines,
        &log,
        &sent,
        &truth,
        &at,
        Shares::CLEAR_TEXT,
        &mut report,
    );

    // Metrics: requests by code against the log, in both modes.
    let by_status = counts_by_status(&log);
    let n = log.len() as f64;
    metric_check(
        &mut report,
        "metrics: gatescope_http_requests_total by code",
        &native,
        &by_status,
        |s| sum_by_code(s, HTTP_REQUESTS),
    )?;
    metric_check(
        &mut report,
        "metrics: gatescope_http_requests_all_total",
        &native,
        &Some(n),
        |s| s.get(HTTP_REQUESTS_ALL, &[]).ok().flatten(),
    )?;
    let up_by_code: BTreeMap<String, f64> = {
        let mut m = BTreeMap::new();
        for t in &truth {
            *m.entry(t.status.to_string()).or_insert(0.0) += 1.0;
        }
        m
    };
    metric_check(
        &mut report,
        "metrics: gatescope_http_upstream_requests_total by code",
        &native,
        &up_by_code,
        |s| {
            let mut m = BTreeMap::new();
            for x in s.matching(HTTP_UPSTREAM_REQUESTS, &[("peer", backend.as_str())]) {
                let code = x.labels.get("code").cloned().unwrap_or_default();
                *m.entry(code).or_insert(0.0) += x.value;
            }
            m.retain(|_, v| *v != 0.0);
            m
        },
    )?;
    metric_check(
        &mut report,
        "kong: kong_nginx_requests_total",
        &kong,
        &Some(n),
        |s| {
            let v: Vec<f64> = s
                .matching(KONG_NGINX_REQUESTS, &[])
                .map(|x| x.value)
                .collect();
            (v.len() == 1).then(|| v[0])
        },
    )?;
    metric_check(
        &mut report,
        "kong: kong_http_requests_total by code",
        &kong,
        &by_status,
        |s| sum_by_code(s, KONG_HTTP_REQUESTS),
    )?;

    // Latency histograms, bytes and the source label, per service and route,
    // against the log (both modes).
    check_route_rule(&log)?;
    log_vs_upstream_answers(&log, &truth, &backend, &mut report);
    latency_bytes_source(
        &mut report,
        &log,
        &agent,
        [&native, &kong],
        &listener,
        &backend,
    )?;

    // Connection phases (stub_status semantics): all closed now; then one idle
    // keep-alive connection (waiting), one half-sent head (reading), one request
    // waiting for its response (writing).
    metric_check(
        &mut report,
        "gauges: reading/writing/waiting/active after the workload",
        &native,
        &[0.0; 4],
        |s| phase_gauges(s, DOWN_CONNS).unwrap_or([f64::NAN; 4]),
    )?;
    // Every connection is closed and accounted for now: the workload is
    // well-formed HTTP/1.1 (large heads and chunk-size lines inside large
    // reads included), so nothing may count as an anomaly, in either agent.
    for (agent, mode) in [(&native, "native"), (&kong, "kong")] {
        metric_check(
            &mut report,
            &format!("metrics: gatescope_http_anomalies_total all 0 ({mode})"),
            agent,
            &BTreeMap::new(),
            |s| {
                let mut m = BTreeMap::new();
                for x in s.matching(HTTP_ANOMALIES, &[]) {
                    if x.value != 0.0 {
                        let kind = x.labels.get("kind").cloned().unwrap_or_default();
                        *m.entry(kind).or_insert(0.0) += x.value;
                    }
                }
                m
            },
        )?;
    }
    let mut idle = Conn::open(scene.nginx.listen_port())?;
    idle.exchange(Req::get("/size/10"))?;
    let mut partial = std::net::TcpStream::connect(("127.0.0.1", scene.nginx.listen_port()))?;
    std::io::Write::write_all(&mut partial, b"GET /size/1 HTTP/1.1\r\nHost: x\r\n")?;
    let mut busy = Conn::open(scene.nginx.listen_port())?;
    busy.send(&[Req::get("/slow/3000")])?;
    std::thread::sleep(Duration::from_millis(100));
    metric_check(
        &mut report,
        "gauges: reading/writing/waiting/active = 1/1/1/3 (native)",
        &native,
        &[1.0, 1.0, 1.0, 3.0],
        |s| phase_gauges(s, DOWN_CONNS).unwrap_or([f64::NAN; 4]),
    )?;
    metric_check(
        &mut report,
        "gauges: kong reading/writing/waiting/active = 1/1/1/3",
        &kong,
        &[1.0, 1.0, 1.0, 3.0],
        |s| phase_gauges(s, KONG_CONNS).unwrap_or([f64::NAN; 4]),
    )?;
    drop((idle, partial, busy));

    report
        .notes
        .push(format!("agent log complete before the timeout: {complete}"));
    let summary = format!(
        "{}{}{}",
        report.render(),
        diffs.render("request duration"),
        up_diffs.render("upstream duration")
    );
    eprintln!("{summary}");
    if report.failed() {
        bail!(
            "{summary}\n--- nginx acc log ---\n{}\n--- agent request log ---\n{}\n--- agent stderr (tail) ---\n{}",
            scene.nginx.acc_log_text(),
            std::fs::read_to_string(&req_log).unwrap_or_default(),
            native
                .stderr()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

/// Per route, each request's values.
type PerRoute = BTreeMap<String, Vec<Timed>>;

/// Whether the upstream answered, by the log (a response head read: `$upstream_status`
/// and `$upstream_header_time`), against the upstream's own record (a status sent).
fn log_vs_upstream_answers(
    log: &[gatescope_tests::access_log::AccEntry],
    truth: &[gatescope_tests::upstream::UpstreamExchange],
    backend: &str,
    report: &mut Report,
) {
    let answered = log
        .iter()
        .filter(|e| {
            e.last_upstream()
                .is_some_and(|u| u.addr == backend && u.answered())
        })
        .count();
    let sent = truth.iter().filter(|t| t.status != 0).count();
    report.check(
        "nginx: upstream answers = upstream's own record",
        answered == sent && answered > 0 && answered < log.len(),
        "(all)",
        format!("{answered} answered in the log"),
        format!("upstream: {sent} answered"),
    );
}

/// The latency histograms, `gatescope_http_bytes_total`/`kong_bandwidth_bytes`
/// and the `source` label, per service and route, against nginx's log.
///
/// Each request's values come from the log; the agent's `--request-log` line for
/// it (matched by client and order) says only on which side of a bucket edge the
/// agent's clock put it, when that differs from the log's (see
/// [`histogram_vs_log`]).
fn latency_bytes_source(
    report: &mut Report,
    log: &[gatescope_tests::access_log::AccEntry],
    lines: &BTreeMap<Key, ReqLine>,
    [native, kong]: [&Agent; 2],
    listener: &str,
    backend: &str,
) -> Result<()> {
    let ms = |t: Option<f64>| t.unwrap_or(0.0) * 1000.0;
    let mut request = PerRoute::new();
    let mut upstream = PerRoute::new();
    let mut added = PerRoute::new();
    let mut bytes: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut by_source: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for e in log {
        let route = route_of(&e.uri);
        let line = lines.get(&(e.client, e.connection_requests));
        let leg = line
            .and_then(|l| l.upstream.as_ref())
            .map(|l| l.duration_ms);
        request.entry(route.clone()).or_default().push(Timed {
            log_ms: e.request_ms(),
            agent_ms: line.map(|l| l.duration_ms),
        });
        // Kong's gateway-added latency: $request_time less the time nginx spent
        // on upstreams.
        let up_total: f64 = e.upstream.iter().map(|u| ms(u.response_time)).sum();
        added.entry(route.clone()).or_default().push(Timed {
            log_ms: e.request_ms() - up_total,
            agent_ms: line.map(|l| l.duration_ms - leg.unwrap_or(0.0)),
        });
        if let Some(u) = e.last_upstream().filter(|u| u.addr == backend) {
            upstream.entry(route.clone()).or_default().push(Timed {
                log_ms: ms(u.response_time),
                agent_ms: leg,
            });
        }
        // nginx's $request_length is the request line, head and body as read;
        // $bytes_sent every byte written to the client, head included: the
        // agent's ingress and egress. Zero sizes add no series (as Kong).
        for (dir, n) in [("ingress", e.request_length), ("egress", e.bytes_sent)] {
            if n > 0 {
                *bytes.entry((route.clone(), dir.into())).or_default() += n as f64;
            }
        }
        let source = if e
            .last_upstream()
            .is_some_and(gatescope_tests::access_log::UpstreamAttempt::answered)
        {
            "service"
        } else {
            "kong"
        };
        *by_source
            .entry((route, e.status.to_string(), source.into()))
            .or_default() += 1.0;
    }
    let routes_of = |m: &PerRoute| -> BTreeMap<String, f64> {
        m.iter().map(|(r, v)| (r.clone(), v.len() as f64)).collect()
    };
    // Each family once its counts are all in (polled), then compared.
    let histograms: [(&Agent, Histogram, &PerRoute); 5] = [
        (
            native,
            Histogram {
                family: "gatescope_http_request_duration_seconds",
                service: listener,
                ms_per_unit: 1000.0,
                resolution_ms: WITHIN_RESOLUTION_MS,
                min_buckets: 6,
            },
            &request,
        ),
        (
            // Native: per the upstream request's own service (the peer) and route.
            native,
            Histogram {
                family: "gatescope_http_upstream_duration_seconds",
                service: backend,
                ms_per_unit: 1000.0,
                resolution_ms: WITHIN_RESOLUTION_MS,
                min_buckets: 6,
            },
            &upstream,
        ),
        (
            kong,
            Histogram {
                family: "kong_request_latency_ms",
                service: listener,
                ms_per_unit: 1.0,
                resolution_ms: WITHIN_RESOLUTION_MS,
                min_buckets: 5,
            },
            &request,
        ),
        (
            // Kong: per the client request's service and route.
            kong,
            Histogram {
                family: "kong_upstream_latency_ms",
                service: listener,
                ms_per_unit: 1.0,
                resolution_ms: WITHIN_RESOLUTION_MS,
                min_buckets: 5,
            },
            &upstream,
        ),
        (
            // A difference of two logged times: twice the resolution.
            kong,
            Histogram {
                family: "kong_kong_latency_ms",
                service: listener,
                ms_per_unit: 1.0,
                resolution_ms: 2.0 * WITHIN_RESOLUTION_MS,
                min_buckets: 3,
            },
            &added,
        ),
    ];
    for (agent, h, want) in &histograms {
        let count = format!("{}_count", h.family);
        let scrape = metric_check(
            report,
            &format!("{}: counts settled", h.family),
            agent,
            &routes_of(want),
            |s| {
                let mut m: BTreeMap<String, f64> = BTreeMap::new();
                for x in s.matching(&count, &[("service", h.service)]) {
                    *m.entry(x.label("route").unwrap_or_default().into())
                        .or_default() += x.value;
                }
                m.retain(|_, v| *v != 0.0);
                m
            },
        )?;
        histogram_vs_log(report, h, &scrape, want);
    }
    for (agent, family) in [
        (native, "gatescope_http_bytes_total"),
        (kong, "kong_bandwidth_bytes"),
    ] {
        metric_check(
            report,
            &format!("{family}: = sums of $request_length, $bytes_sent per route"),
            agent,
            &bytes,
            |s| sum_by_route(s, family, listener, "direction"),
        )?;
    }
    for (agent, family) in [(native, HTTP_REQUESTS), (kong, KONG_HTTP_REQUESTS)] {
        metric_check(
            report,
            &format!("{family}: source=service exactly when the upstream answered"),
            agent,
            &by_source,
            |s| {
                let mut m = BTreeMap::new();
                for x in s.matching(family, &[("service", listener)]) {
                    let l = |k| x.label(k).unwrap_or_default().to_string();
                    *m.entry((l("route"), l("code"), l("source"))).or_insert(0.0) += x.value;
                }
                m.retain(|_, v| *v != 0.0);
                m
            },
        )?;
    }
    Ok(())
}
