//! Real Caddy 2.6 (issue 10, section 2): a Go gateway, one process whose
//! goroutines move between threads and which keeps a 1-byte background read
//! pending on each idle client connection. Caddy is a `reverse_proxy` in
//! front of the counting upstream (tests/src/upstream.rs); `/down*` goes to a
//! port where nothing listens (502).
//!
//! Oracles: Caddy's own JSON access log (status of each request), the
//! client's own counts (each request's bytes both ways, connections), and
//! the upstream's own record (bytes, and which request arrived on which
//! connection in which order). The agent attaches with `--pid`, and once
//! more by name (`--discover caddy`).
//!
//! Links: an upstream call in the agent's `--request-log` is named by (the
//! gateway's local port, rank of its first byte among the calls on that
//! port); the upstream names the same call by (peer port, order on the
//! connection). A link is WRONG when the downstream line it sits on has
//! another path than the request the upstream received there (every path
//! here is unique). Go gives no thread order to rely on, so only "no wrong
//! link" is required; the linked share is printed.

use anyhow::{ensure, Context, Result};
use gatescope_tests::accuracy::{sum_by_code, HTTP_REQUESTS, HTTP_UPSTREAM_REQUESTS};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::caddy::Caddy;
use gatescope_tests::client::{Conn, Req, Sent, Transfer};
use gatescope_tests::expect::{no_losses, nothing_untracked, traffic_deltas};
use gatescope_tests::metrics::{HANDLED, REQUESTS_ALL, TARGET_PROCESSES};
use gatescope_tests::request_log::{check_links, parse_request_log, ReqLine};
use gatescope_tests::upstream::{Upstream, UpstreamExchange, UpstreamStats};
use gatescope_tests::util::{self, free_port, TempDir};
use std::collections::BTreeMap;
use std::time::Duration;

/// Every request on its own keep-alive connection, in order; the last one
/// says `Connection: close` when `close`.
fn conn(port: u16, reqs: Vec<Req>) -> Result<Vec<Sent>> {
    let mut c = Conn::open(port)?;
    for r in reqs {
        c.exchange(r)?;
    }
    c.close()
}

/// The traffic: 200s of many sizes (one-shot and keep-alive, GET and POST
/// with bodies), 404s from the upstream, 502s from the dead peer, chunked
/// responses, and concurrent keep-alive clients. Every path is unique.
/// Returns every request with what the client wrote and read, and the
/// number of connections.
fn drive(port: u16) -> Result<(Vec<Sent>, u64)> {
    let mut sent = Vec::new();
    let mut conns = 0u64;
    for size in [0usize, 1, 1234, 16384, 100_000] {
        sent.extend(conn(
            port,
            vec![Req::get(&format!("/size/{size}")).close()],
        )?);
        conns += 1;
    }
    sent.extend(conn(port, vec![Req::post("/size/10", 3000).close()])?);
    sent.extend(conn(port, vec![Req::post("/size/50001", 70_000).close()])?);
    sent.extend(conn(port, vec![Req::get("/nope/1").close()])?);
    sent.extend(conn(port, vec![Req::get("/down/1").close()])?);
    conns += 4;
    sent.extend(conn(
        port,
        vec![
            Req::get("/size/100"),
            Req::get("/size/4096"),
            Req::get("/nope/2"),
            Req::get("/down/2"),
            Req::get("/chunked/3"),
            Req::post("/size/101", 5000),
            Req::get("/size/200000"),
            Req::get("/chunked/5"),
            Req::get("/size/102"),
            // heads larger than the capture, one with a body in the same
            // write, and chunk-size lines inside large transfers
            Req::get("/size/103").padded(6 * 1024),
            Req::post("/size/104", 3000).padded(30 * 1024),
            Req::get("/burst/70"),
        ],
    )?);
    conns += 1;
    // Concurrent keep-alive clients: Caddy's goroutines on several threads.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || -> Result<Vec<Sent>> {
                let reqs = (0..8)
                    .map(|j| {
                        let n = 20_000 + 100 * i + j;
                        match j {
                            3 => Req::get(&format!("/nope/{n}")),
                            5 => Req::get(&format!("/chunked/{}", 2 + i)),
                            _ => Req::get(&format!("/size/{n}")),
                        }
                    })
                    .collect();
                conn(port, reqs)
            })
        })
        .collect();
    for th in threads {
        sent.extend(th.join().expect("client thread panicked")?);
        conns += 1;
    }
    Ok((sent, conns))
}

fn count_by<K: Ord>(it: impl Iterator<Item = K>) -> BTreeMap<K, u64> {
    let mut m = BTreeMap::new();
    for k in it {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// Upstream counters once every request reached it and they held still.
fn settled(up: &Upstream, requests: u64) -> Result<UpstreamStats> {
    let mut last = None;
    util::poll(Duration::from_secs(10), "upstream to settle", || {
        let st = up.stats();
        if st.requests != requests {
            return Ok(None);
        }
        if last == Some(st) {
            return Ok(Some(st));
        }
        last = Some(st);
        std::thread::sleep(Duration::from_millis(300));
        Ok(None)
    })
}

/// The whole scene and every check; `discover`: the agent finds Caddy by
/// name instead of by pid.
fn run(discover: bool) -> Result<()> {
    let upstream = Upstream::start()?;
    let down_port = free_port()?;
    let caddy = Caddy::start(free_port()?, upstream.port(), down_port)?;
    let dir = TempDir::new("caddy-links")?;
    let log = dir.path().join("requests.jsonl");
    let log_arg = log.display().to_string();
    let pid = caddy.pid().to_string();
    let mut args = vec!["--request-log", log_arg.as_str()];
    if discover {
        args.extend(["--discover", "caddy"]);
    } else {
        args.extend(["--pid", pid.as_str()]);
    }
    let mut agent = Agent::start(&[], &args)?;
    // One process, whatever its thread count (a second caddy on the host
    // would be discovered too and spoil every count: fail on it).
    let base = agent.wait_all(&[Expect::new(TARGET_PROCESSES, &[], 1.0)], SETTLE_TIMEOUT)?;
    ensure!(
        sum_by_code(&base, HTTP_REQUESTS).is_empty(),
        "requests before any traffic:\n{}",
        base.text
    );

    let (sent, conns) = drive(caddy.listen_port())?;
    let t = Transfer {
        connections: conns,
        requests: sent.len() as u64,
        written: sent.iter().map(|s| s.written).sum(),
        read: sent.iter().map(|s| s.read).sum(),
    };
    let to_upstream = sent.iter().filter(|s| !s.path.starts_with("/down")).count();
    let up = settled(&upstream, to_upstream as u64)?;

    // Caddy's log: one entry per request, by client address and path, with
    // the status the client saw (HTTP/1.1 on both sides).
    let caddy_log = caddy.wait_access_log(sent.len(), Duration::from_secs(10))?;
    let client_view = count_by(sent.iter().map(|s| (s.client, s.path.clone(), s.status)));
    let caddy_view = count_by(
        caddy_log
            .iter()
            .map(|e| (e.client, e.uri.clone(), e.status)),
    );
    ensure!(
        client_view == caddy_view,
        "client vs caddy's log:\n{client_view:?}\n{caddy_view:?}"
    );
    ensure!(
        caddy_log.iter().all(|e| e.proto == "HTTP/1.1"),
        "not all HTTP/1.1: {caddy_log:?}"
    );
    let by_status = count_by(caddy_log.iter().map(|e| e.status));
    for code in [200, 404, 502] {
        ensure!(by_status.contains_key(&code), "no {code} in {by_status:?}");
    }
    let want_codes: BTreeMap<String, f64> = by_status
        .iter()
        .map(|(c, n)| (c.to_string(), *n as f64))
        .collect();

    // Accepted, bytes both legs, upstream connections, requests by status.
    let listener = caddy.listen_addr();
    let peer = upstream.addr();
    let mut exp = traffic_deltas(&base, &listener, &peer, &t, &up)?;
    let plus = |name: &str, n: u64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            &[],
            base.get_or_zero(name, &[])? + n as f64,
        ))
    };
    exp.push(plus(REQUESTS_ALL, t.requests)?);
    exp.push(plus(HANDLED, t.connections)?);
    exp.extend(nothing_untracked(&base)?);
    for (code, n) in upstream.codes() {
        let c = code.to_string();
        exp.push(Expect::new(
            HTTP_UPSTREAM_REQUESTS,
            &[("peer", &peer), ("code", &c)],
            n as f64,
        ));
    }
    let s = match agent.wait_all(&exp, SETTLE_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            // Which calls the agent missed or still holds: its request log,
            // flushed at exit with every pending call, against the upstream.
            let _ = agent.stop();
            let diff = std::fs::read_to_string(&log)
                .map_err(anyhow::Error::from)
                .and_then(|t| upstream_diff(&t, &upstream));
            return Err(e
                .context(caddy.diagnostics())
                .context(format!("request log vs the upstream: {diff:?}")));
        }
    };
    no_losses(&s)?;
    let codes = util::poll(SETTLE_TIMEOUT, "requests by status", || {
        let got = sum_by_code(&agent.scrape()?, HTTP_REQUESTS);
        Ok((got == want_codes).then_some(got))
    })
    .with_context(|| {
        format!(
            "want {want_codes:?}, agent has {:?}",
            agent.scrape().map(|s| sum_by_code(&s, HTTP_REQUESTS))
        )
    })?;
    let anomalies: BTreeMap<String, f64> = s
        .matching("gatescope_http_anomalies_total", &[])
        .filter(|x| x.value != 0.0)
        .map(|x| (x.labels.get("kind").cloned().unwrap_or_default(), x.value))
        .collect();
    println!(
        "caddy (discover={discover}): {} requests on {} connections, {} bytes in, {} out; \
         upstream {} requests on {} connections; by status {codes:?}; anomalies {anomalies:?}",
        t.requests, t.connections, t.written, t.read, up.requests, up.accepted
    );

    // Well-formed traffic, chunk-size lines in the middle of Caddy's large
    // transfers and heads larger than the capture included: no anomaly.
    ensure!(
        anomalies.is_empty(),
        "anomalies {anomalies:?} on well-formed traffic:\n{}",
        s.text
    );

    // The request log: flushed and every call still pending reported at exit.
    agent.stop_ok()?;
    let text = std::fs::read_to_string(&log)?;
    let lines = parse_request_log(&text)?;
    // Downstream lines: exactly the client's requests, bytes and status.
    let agent_down = count_by(lines.iter().filter(|l| l.is_downstream()).map(|l| {
        (
            l.remote.clone(),
            l.method.clone(),
            l.path.clone(),
            l.status,
            l.request_bytes,
            l.response_bytes,
        )
    }));
    let client_down = count_by(sent.iter().map(|s| {
        (
            s.client.to_string(),
            s.method.clone(),
            s.path.clone(),
            s.status,
            s.written,
            s.read,
        )
    }));
    ensure!(
        agent_down == client_down,
        "downstream lines vs the client:\nagent  {agent_down:?}\nclient {client_down:?}"
    );
    // Upstream lines: exactly the upstream's own record.
    let exchanges = upstream.exchanges();
    let (agent_up, truth_up) = upstream_views(&lines, &exchanges);
    ensure!(
        agent_up == truth_up,
        "upstream lines vs the upstream:\nagent    {agent_up:?}\nupstream {truth_up:?}"
    );

    // Links: every call once, linked or not; none linked to the wrong request.
    let links = check_links(&text, &exchanges)?;
    println!("caddy (discover={discover}) links: {}", links.summary());
    ensure!(
        links.wrong.is_empty(),
        "wrong links:\n{}",
        links.wrong.join("\n")
    );
    Ok(())
}

/// (method, path, status, request bytes, response bytes) counted, from the
/// request log's upstream lines and from the upstream's own record.
type UpstreamView = BTreeMap<(String, String, u16, u64, u64), u64>;

fn upstream_views(
    lines: &[ReqLine],
    exchanges: &[UpstreamExchange],
) -> (UpstreamView, UpstreamView) {
    let agent = count_by(lines.iter().filter(|l| !l.is_downstream()).map(|l| {
        (
            l.method.clone(),
            l.path.clone(),
            l.status,
            l.request_bytes,
            l.response_bytes,
        )
    }));
    let truth = count_by(exchanges.iter().map(|e| {
        (
            e.method.clone(),
            e.path.clone(),
            e.status,
            e.request_bytes,
            e.response_bytes,
        )
    }));
    (agent, truth)
}

/// The upstream lines of a request log the upstream has no record of, and
/// the upstream's exchanges the log lacks (method, path, status, bytes).
fn upstream_diff(log: &str, upstream: &Upstream) -> Result<String> {
    let (agent_up, truth_up) = upstream_views(&parse_request_log(log)?, &upstream.exchanges());
    let only = |a: &BTreeMap<_, u64>, b: &BTreeMap<_, u64>| {
        a.iter()
            .filter(|(k, n)| b.get(*k) != Some(*n))
            .map(|(k, n)| format!("{k:?} x{n}"))
            .collect::<Vec<_>>()
    };
    Ok(format!(
        "only in the log: {:?}; only at the upstream: {:?}",
        only(&agent_up, &truth_up),
        only(&truth_up, &agent_up)
    ))
}

#[test]
fn caddy_by_pid() -> Result<()> {
    run(false)
}

#[test]
fn caddy_discovered_by_name() -> Result<()> {
    run(true)
}
