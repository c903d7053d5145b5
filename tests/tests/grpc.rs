//! gRPC through nginx (issue 12): a grpcio client calls a grpcio server
//! through nginx's `grpc_pass` (h2c upstream, keep-alive), over an h2c
//! listener and an h2-over-TLS one. Unary calls answering OK, NOT_FOUND and
//! UNAVAILABLE, a server stream, a client stream and a bidirectional stream,
//! over several channels (`gatescope_tests::grpc`).
//!
//! Exact against three witnesses: the client's own account of each call,
//! nginx's access log (method, path, status, `$request_length`,
//! `$bytes_sent`, the upstream's grpc-status), and the server's record of
//! the calls it finished. Downstream calls are matched as multisets of
//! (client address, method, path, status, bytes, grpc-status): a channel
//! makes one call at a time, but its calls' order in nginx's log and the
//! agent's need not agree to the line.

use anyhow::{ensure, Result};
use gatescope_tests::accuracy::{HTTP_ANOMALIES, LOG_TIMEOUT};
use gatescope_tests::agent::{Agent, Expect};
use gatescope_tests::grpc::{self, ClientCall, GrpcApp, LogLine, METHODS};
use gatescope_tests::metrics::{EVENTS_LOST, TLS_LOSSES};
use gatescope_tests::nginx::Nginx;
use gatescope_tests::request_log::{parse_request_log, ReqLine};
use gatescope_tests::tls::SelfSigned;
use gatescope_tests::util::{self, free_port, TempDir};
use gatescope_tests::workload::poll_last;
use std::collections::BTreeMap;
use std::fmt::Debug;

const GRPC_REQUESTS: &str = "gatescope_grpc_requests_total";
const GRPC_UPSTREAM: &str = "gatescope_grpc_upstream_requests_total";
/// Channels per listener, rounds of every method per channel, messages per
/// server stream.
const CHANNELS: u32 = 3;
const ROUNDS: u32 = 4;
const STREAM_N: u32 = 5;

/// Counts of each distinct item.
fn multiset<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, i64> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    m
}

/// The items whose counts differ, as "(item): want n, got m" lines.
fn differences<T: Ord + Debug>(want: &BTreeMap<T, i64>, got: &BTreeMap<T, i64>) -> Vec<String> {
    let mut out = Vec::new();
    for k in want.keys().chain(got.keys()) {
        let (w, g) = (
            want.get(k).copied().unwrap_or(0),
            got.get(k).copied().unwrap_or(0),
        );
        if w != g
            && !out
                .iter()
                .any(|l: &String| l.starts_with(&format!("{k:?}:")))
        {
            out.push(format!("{k:?}: want {w}, got {g}"));
        }
    }
    out
}

/// The client's account: every call ended as its method does.
fn check_client(calls: &[ClientCall]) -> Result<()> {
    let want = CHANNELS * ROUNDS * METHODS.len() as u32;
    ensure!(
        calls.len() == want as usize,
        "{} calls, want {want}",
        calls.len()
    );
    for c in calls {
        let (_, code) = METHODS
            .iter()
            .find(|(m, _)| *m == c.method)
            .copied()
            .unwrap_or_default();
        let received = match c.method.as_str() {
            "/gs.Probe/Stream" => u64::from(STREAM_N),
            "/gs.Probe/Chat" => 3,
            _ if code == 0 => 1,
            _ => 0,
        };
        ensure!(
            c.code == code && c.received == received,
            "client call {c:?}: want code {code}, {received} messages"
        );
    }
    Ok(())
}

/// A downstream call as nginx logged it and as the agent should report it.
type Down = (String, String, String, u16, u64, u64, Option<u16>);

fn nginx_down(l: &LogLine) -> Down {
    (
        l.remote.clone(),
        l.method.clone(),
        l.uri.clone(),
        l.status,
        l.request_length,
        l.bytes_sent,
        l.grpc_status,
    )
}

fn agent_down(l: &ReqLine) -> Down {
    (
        l.remote.clone(),
        l.method.clone(),
        l.path.clone(),
        l.status,
        l.request_bytes,
        l.response_bytes,
        l.grpc.as_ref().and_then(|g| g.status),
    )
}

#[test]
fn grpc_calls_through_nginx_are_exact() -> Result<()> {
    let app = GrpcApp::compile()?;
    let server = app.server()?;
    let cert = SelfSigned::generate()?;
    let (port, tls_port) = (free_port()?, free_port()?);
    let tls = cert.listen_tls();
    let nginx = Nginx::start_conf(
        |d| grpc::nginx_conf(d, 2, port, Some((tls_port, &tls)), server.port()),
        2,
        port,
    )?;
    let dir = TempDir::new("reqlog-grpc")?;
    let req_log = dir.path().join("requests.jsonl");
    let mut agent = Agent::start(
        &[nginx.master_pid()],
        &["--request-log", &req_log.display().to_string()],
    )?;

    // The client over h2c, then over TLS; its own account first.
    let listeners = [format!("127.0.0.1:{port}"), format!("127.0.0.1:{tls_port}")];
    let mut calls: Vec<(String, ClientCall)> = Vec::new();
    for (listener, ca) in listeners.iter().zip([None, Some(cert.cert())]) {
        let c = app.client(listener, ca.as_deref(), CHANNELS, ROUNDS, STREAM_N)?;
        check_client(&c)?;
        calls.extend(c.into_iter().map(|c| (listener.clone(), c)));
    }
    let n = calls.len();

    // nginx's log against the client's calls and the server's record.
    let log = util::poll(LOG_TIMEOUT, "nginx's log", || {
        let l = grpc::read_log(nginx.dir_path())?;
        Ok((l.len() >= n).then_some(l))
    })?;
    ensure!(log.len() == n, "{} log lines for {n} calls", log.len());
    let by_call = |listener: &str, method: &str, code: u16| {
        (
            listener
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .parse::<u16>()
                .unwrap_or(0),
            method.to_owned(),
            Some(code),
        )
    };
    let want = multiset(calls.iter().map(|(l, c)| by_call(l, &c.method, c.code)));
    let logged = multiset(
        log.iter()
            .map(|l| (l.server_port, l.uri.clone(), l.grpc_status)),
    );
    let diff = differences(&want, &logged);
    ensure!(
        diff.is_empty(),
        "nginx's log against the client:\n{}",
        diff.join("\n")
    );
    for l in &log {
        ensure!(
            (
                l.method.as_str(),
                l.status,
                l.protocol.as_str(),
                l.upstream_status.as_str()
            ) == ("POST", 200, "HTTP/2.0", "200"),
            "nginx logged {l:?}"
        );
    }
    let served = multiset(server.calls()?);
    let want_served = multiset(calls.iter().map(|(_, c)| (c.method.clone(), c.code)));
    let diff = differences(&want_served, &served);
    ensure!(
        diff.is_empty(),
        "the server's record against the client:\n{}\n{}",
        diff.join("\n"),
        server.diagnostics()
    );

    // The agent's request log: every call both ways.
    let backend = format!("127.0.0.1:{}", server.port());
    let (_, lines) = poll_last(LOG_TIMEOUT, || {
        let l = parse_request_log(&std::fs::read_to_string(&req_log).unwrap_or_default())?;
        let down = l.iter().filter(|x| x.is_downstream()).count();
        Ok((down >= n && l.len() - down >= n, l))
    })?;
    let (down, up): (Vec<&ReqLine>, Vec<&ReqLine>) = lines.iter().partition(|l| l.is_downstream());
    let diff = differences(
        &multiset(log.iter().map(nginx_down)),
        &multiset(down.iter().map(|l| agent_down(l))),
    );
    let mut problems = Vec::new();
    if !diff.is_empty() {
        problems.push(format!(
            "downstream calls, nginx's log (want) against the agent (got):\n{}",
            diff.join("\n")
        ));
    }
    let up_want = multiset(
        log.iter()
            .map(|l| (backend.clone(), l.uri.clone(), 200, l.grpc_status)),
    );
    let up_got = multiset(up.iter().map(|l| {
        (
            l.remote.clone(),
            l.path.clone(),
            l.status,
            l.grpc.as_ref().and_then(|g| g.status),
        )
    }));
    let diff = differences(&up_want, &up_got);
    if !diff.is_empty() {
        problems.push(format!(
            "upstream calls, nginx's log (want) against the agent (got):\n{}",
            diff.join("\n")
        ));
    }
    for l in &lines {
        let named = l
            .grpc
            .as_ref()
            .map(|g| format!("/{}/{}", g.service, g.method));
        if named.as_deref() != Some(l.path.as_str()) {
            problems.push(format!("not named as its gRPC call: {}", l.raw));
        }
    }

    // Metrics: calls by grpc-status per listener and route, and per peer.
    let mut exp: Vec<Expect> = multiset(
        calls
            .iter()
            .map(|(l, c)| (l.clone(), c.method.clone(), c.code)),
    )
    .into_iter()
    .map(|((listener, route, code), k)| {
        Expect::new(
            GRPC_REQUESTS,
            &[
                ("service", &listener),
                ("route", &route),
                ("grpc_status", &code.to_string()),
            ],
            k as f64,
        )
    })
    .collect();
    for (code, k) in multiset(calls.iter().map(|(_, c)| c.code)) {
        exp.push(Expect::new(
            GRPC_UPSTREAM,
            &[("peer", &backend), ("grpc_status", &code.to_string())],
            k as f64,
        ));
    }
    let scrape = agent.wait_all(&exp, LOG_TIMEOUT);
    if let Err(e) = &scrape {
        problems.push(format!("metrics: {e:#}"));
    }
    if let Ok(s) = &scrape {
        for x in s.matching(HTTP_ANOMALIES, &[]) {
            if x.value != 0.0 {
                problems.push(format!("anomalies {:?} = {}", x.labels, x.value));
            }
        }
        for r in TLS_LOSSES {
            let v = s.get_or_zero(EVENTS_LOST, &[("reason", r)])?;
            if v != 0.0 {
                problems.push(format!("{r} = {v}"));
            }
        }
        let unknown: f64 = s
            .matching(GRPC_REQUESTS, &[("grpc_status", "unknown")])
            .map(|x| x.value)
            .sum();
        if unknown != 0.0 {
            problems.push(format!("{unknown} calls with grpc_status unknown"));
        }
    }
    eprintln!(
        "{n} calls ({} per listener): {} downstream and {} upstream agent lines; \
         nginx's $request_length {} and $bytes_sent {} in all, the agent's {} and {}",
        n / 2,
        down.len(),
        up.len(),
        log.iter().map(|l| l.request_length).sum::<u64>(),
        log.iter().map(|l| l.bytes_sent).sum::<u64>(),
        down.iter().map(|l| l.request_bytes).sum::<u64>(),
        down.iter().map(|l| l.response_bytes).sum::<u64>(),
    );
    ensure!(
        problems.is_empty(),
        "{}\n--- agent stderr (tail) ---\n{}",
        problems.join("\n"),
        util::tail(&agent.stderr(), 20)
    );
    agent.stop_ok()
}
