//! Linking each upstream call to its client request, against ground truth
//! (issue 9, section 3).
//!
//! A real nginx with ONE worker and keep-alive upstream pools; witness
//! upstreams (tests/src/witness.rs) that record which request (its client's
//! `X-Test-Id`, a header the agent does not use) arrived on which upstream
//! connection (its peer port: the gateway's local port) and in which order.
//! The agent's view is its `--request-log`: every downstream line lists the
//! calls linked to it (gateway local address, peer, first-byte time, link
//! result); calls left unlinked have lines of their own.
//!
//! An agent call is named by (gateway local port, peer port, rank of its
//! first byte among the calls on that pair); the witness names the same call
//! by (peer port, its own port, accept order then order on the connection).
//! A linked call is right when the downstream line it is linked to is the
//! request the client sent under the call's id (client port, order on the
//! client connection), and wrong otherwise.
//!
//! Scenarios, one after the other, each with its own figures: tens of
//! concurrent clients on the SAME path with random upstream delays; URIs
//! nginx rewrites (`rewrite`, `proxy_pass .../other/`); retries to a second
//! peer after a 502, a reset or a connect timeout (a timer: no I/O before
//! the retry); 504s (`proxy_read_timeout`); 499s (clients
//! that give up); pipelined requests; and the same-path load again with a
//! `traceparent` and `X-Request-ID` passing through.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::Agent;
use gatescope_tests::nginx::{conf_head, Nginx};
use gatescope_tests::request_log::{parse_request_log, parse_unlinked, AttemptLine};
use gatescope_tests::util::{free_port, TempDir};
use gatescope_tests::witness::{Behaviour, Blackhole, Witness};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request a client sent.
#[derive(Clone, Debug)]
struct Sent {
    /// The client connection's local port (the agent's `remote`).
    client_port: u16,
    /// Its place on that connection, from 0.
    seq: usize,
    id: String,
    scenario: &'static str,
}

const SCENARIOS: [&str; 10] = [
    "same path",
    "rewritten",
    "retry 502",
    "retry reset",
    "retry timer",
    "limit_req",
    "504",
    "499",
    "pipelined",
    "headers",
];

fn scenario_no(name: &str) -> usize {
    SCENARIOS
        .iter()
        .position(|s| *s == name)
        .expect("a known scenario")
}

fn conf(d: &str, workers: u32, port: u16, peers: [u16; 4]) -> String {
    let [good, fail, reset, hole] = peers;
    let head = conf_head(d, workers);
    format!(
        r#"{head}    limit_req_zone $binary_remote_addr zone=paced:1m rate=200r/s;
    upstream good {{ server 127.0.0.1:{good}; keepalive 16; }}
    upstream flaky {{
        server 127.0.0.1:{fail} max_fails=0;
        server 127.0.0.1:{good} max_fails=0;
        keepalive 16;
    }}
    upstream resetting {{
        server 127.0.0.1:{reset} max_fails=0;
        server 127.0.0.1:{good} max_fails=0;
        keepalive 16;
    }}
    upstream hanging {{
        server 127.0.0.1:{hole} max_fails=0;
        server 127.0.0.1:{good} max_fails=0;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /same {{ proxy_pass http://good; }}
        location /rw/ {{
            rewrite ^/rw/(.*)$ /rewritten/$1 break;
            proxy_pass http://good;
        }}
        location /pp/ {{ proxy_pass http://good/other/; }}
        location /retry502 {{
            proxy_next_upstream error timeout http_502;
            proxy_pass http://flaky;
        }}
        location /retryreset {{
            proxy_next_upstream error timeout http_502;
            proxy_pass http://resetting;
        }}
        location /paced {{
            limit_req zone=paced burst=500;
            proxy_pass http://good;
        }}
        location /retrytimer {{
            proxy_connect_timeout 100ms;
            proxy_next_upstream error timeout;
            proxy_pass http://hanging;
        }}
        location /slow {{
            proxy_read_timeout 300ms;
            proxy_pass http://good;
        }}
    }}
}}
"#
    )
}

/// A small deterministic generator for delays (no dependency needed).
fn rand(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// One request: `X-Test-Id` names it; with `headers`, a unique `traceparent`
/// and `X-Request-ID` pass through too.
fn request(path: &str, id: &str, delay_ms: u64, headers: bool, n: u64) -> String {
    let trace = if headers {
        format!(
            "traceparent: 00-{:032x}-{:016x}-01\r\nX-Request-ID: rid-{id}\r\n",
            u128::from(n) + 1,
            n + 1
        )
    } else {
        String::new()
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\n{trace}X-Test-Id: {id}\r\nX-Delay-Ms: {delay_ms}\r\n\r\n"
    )
}

/// Reads one response (head and `Content-Length` body) from `s`, keeping
/// what follows in `buf`; its status.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad status line in {head:?}"))?;
            let len: usize = gatescope_tests::witness::header(&head, "Content-Length")
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no Content-Length in {head:?}"))?;
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk)?;
                ensure!(n > 0, "connection closed inside a response body");
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return Ok(status);
        }
        let n = s.read(&mut chunk)?;
        ensure!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What one client does on its own keep-alive connection.
#[derive(Clone, Copy)]
enum Plan {
    /// `n` requests one after the other to paths made by `path(i)`, each
    /// with an upstream delay of `delay` + 0..`jitter` ms; with `headers`.
    Sequential {
        n: usize,
        path: fn(usize) -> String,
        delay: u64,
        jitter: u64,
        headers: bool,
        want: u16,
    },
    /// `n` requests in one write.
    Pipelined { n: usize },
    /// One request whose answer takes 800 ms; the client leaves after 150 ms.
    GiveUp,
}

fn run_client(port: u16, scenario: &'static str, client: usize, plan: Plan) -> Result<Vec<Sent>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let client_port = s.local_addr()?.port();
    let mut seed = 0x9e37_79b9_7f4a_7c15 ^ ((client as u64 + 1) * 0x1000_0001);
    let mut sent = Vec::new();
    let mut buf = Vec::new();
    let mut note = |seq: usize| {
        let id = format!("{}-{client}-{seq}", scenario.replace(' ', "_"));
        sent.push(Sent {
            client_port,
            seq,
            id: id.clone(),
            scenario,
        });
        id
    };
    match plan {
        Plan::Sequential {
            n,
            path,
            delay,
            jitter,
            headers,
            want,
        } => {
            for seq in 0..n {
                let id = note(seq);
                let d = delay + rand(&mut seed) % jitter.max(1);
                let tag = (client * 1000 + seq) as u64;
                s.write_all(request(&path(seq), &id, d, headers, tag).as_bytes())?;
                let status = read_response(&mut s, &mut buf)?;
                ensure!(status == want, "{id}: status {status}, expected {want}");
            }
        }
        Plan::Pipelined { n } => {
            let mut all = String::new();
            for seq in 0..n {
                let id = note(seq);
                all.push_str(&request("/same/p", &id, rand(&mut seed) % 5, false, 0));
            }
            s.write_all(all.as_bytes())?;
            for _ in 0..n {
                let status = read_response(&mut s, &mut buf)?;
                ensure!(status == 200, "pipelined: status {status}");
            }
        }
        Plan::GiveUp => {
            let id = note(0);
            s.write_all(request("/same/late", &id, 800, false, 0).as_bytes())?;
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    Ok(sent)
}

/// `clients` clients at once, each with `plan`.
fn concurrently(
    port: u16,
    scenario: &'static str,
    clients: usize,
    plan: Plan,
) -> Result<Vec<Sent>> {
    let handles: Vec<_> = (0..clients)
        .map(|c| std::thread::spawn(move || run_client(port, scenario, c, plan)))
        .collect();
    let mut sent = Vec::new();
    for h in handles {
        sent.extend(h.join().expect("client thread panicked")?);
    }
    Ok(sent)
}

/// One call as the agent reported it, and to which request.
#[derive(Clone, Debug)]
struct Call {
    attempt: AttemptLine,
    /// (client port, order on that connection) of the downstream line it is
    /// linked to.
    owner: Option<(u16, usize)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    calls: u64,
    linked: u64,
    evidence: u64,
    inferred: u64,
    ambiguous: u64,
    none: u64,
    wrong: u64,
}

fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {addr:?}"))
}

/// Names every agent call by the witness's record and tallies, per
/// scenario, how it was linked and whether rightly. Errors list the calls
/// that cannot be named (the views disagree on how many there were).
fn compare(
    calls: &[Call],
    truth: &BTreeMap<(u16, u16), Vec<String>>,
    sent: &[Sent],
) -> Result<(BTreeMap<&'static str, Tally>, Vec<String>)> {
    let by_id: HashMap<&str, &Sent> = sent.iter().map(|s| (s.id.as_str(), s)).collect();
    // A client port is used again by a later scenario's connection (loopback
    // reuses ports in TIME_WAIT): the agent's lines for a port run on from
    // one connection to the next, and so do the requests sent from it.
    let mut per_port: HashMap<u16, Vec<&Sent>> = HashMap::new();
    for s in sent {
        per_port.entry(s.client_port).or_default().push(s);
    }
    for list in per_port.values_mut() {
        list.sort_by_key(|s| (scenario_no(s.scenario), s.seq));
    }
    let by_place: HashMap<(u16, usize), &Sent> = per_port
        .iter()
        .flat_map(|(&port, list)| list.iter().enumerate().map(move |(n, s)| ((port, n), *s)))
        .collect();
    let mut on_pair: BTreeMap<(u16, u16), Vec<&Call>> = BTreeMap::new();
    for c in calls {
        let key = (port_of(&c.attempt.local)?, port_of(&c.attempt.peer)?);
        on_pair.entry(key).or_default().push(c);
    }
    let mut problems = Vec::new();
    for (key, ids) in truth {
        let seen = on_pair.get(key).map_or(0, Vec::len);
        if seen != ids.len() {
            problems.push(format!(
                "connection {key:?}: the witness read {} requests, the agent reported {seen} calls",
                ids.len()
            ));
        }
    }
    for key in on_pair.keys() {
        if !truth.contains_key(key) {
            problems.push(format!("connection {key:?}: calls the witness never saw"));
        }
    }
    let mut tally: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for ids in truth.values() {
        for id in ids {
            if let Some(s) = by_id.get(id.as_str()) {
                tally.entry(s.scenario).or_default().calls += 1;
            }
        }
    }
    for (key, mut list) in on_pair {
        let Some(ids) = truth.get(&key).filter(|ids| ids.len() == list.len()) else {
            continue;
        };
        list.sort_by_key(|c| c.attempt.first_ns);
        for (c, id) in list.into_iter().zip(ids) {
            let Some(sent) = by_id.get(id.as_str()) else {
                problems.push(format!("the witness read an unknown id {id:?}"));
                continue;
            };
            let t = tally.entry(sent.scenario).or_default();
            match c.attempt.link.as_str() {
                "evidence" => t.evidence += 1,
                "inferred" => t.inferred += 1,
                "ambiguous" => t.ambiguous += 1,
                "none" => t.none += 1,
                other => problems.push(format!("unknown link result {other:?}")),
            }
            if let Some(owner) = c.owner {
                t.linked += 1;
                let right = by_place.get(&owner).is_some_and(|s| s.id == *id);
                if !right {
                    t.wrong += 1;
                    problems.push(format!(
                        "WRONG LINK: call for {id} ({:?}) linked to the request at {owner:?} ({:?})",
                        c.attempt,
                        by_place.get(&owner).map(|s| &s.id)
                    ));
                }
            }
        }
    }
    Ok((tally, problems))
}

fn print(tally: &BTreeMap<&'static str, Tally>) {
    eprintln!(
        "{:<12} {:>6} {:>7} {:>9} {:>9} {:>10} {:>5} {:>6} {:>8}",
        "scenario",
        "calls",
        "linked",
        "evidence",
        "inferred",
        "ambiguous",
        "none",
        "wrong",
        "linked%"
    );
    for name in SCENARIOS {
        let t = tally.get(name).copied().unwrap_or_default();
        eprintln!(
            "{name:<12} {:>6} {:>7} {:>9} {:>9} {:>10} {:>5} {:>6} {:>7.1}%",
            t.calls,
            t.linked,
            t.evidence,
            t.inferred,
            t.ambiguous,
            t.none,
            t.wrong,
            100.0 * t.linked as f64 / t.calls.max(1) as f64
        );
    }
}

/// The issue's setting: one worker, so every request shares one event loop.
#[test]
fn every_link_is_right_and_nearly_every_call_is_linked() -> Result<()> {
    run(1)
}

/// Two workers: each thread's order is read on its own, requests spread
/// over both.
#[test]
fn two_workers_are_told_apart() -> Result<()> {
    run(2)
}

fn run(workers: u32) -> Result<()> {
    let good = Witness::start(Behaviour::Answer)?;
    let fail = Witness::start(Behaviour::Fail502)?;
    let reset = Witness::start(Behaviour::Reset)?;
    let hole = Blackhole::start()?;
    ensure!(hole.stalls(), "the blackhole peer completes handshakes");
    let port = free_port()?;
    let peers = [good.port(), fail.port(), reset.port(), hole.port()];
    let nginx = Nginx::start_conf(|d| conf(d, workers, port, peers), workers, port)?;
    let dir = TempDir::new("links")?;
    let log = dir.path().join("requests.jsonl");
    let log_arg = log.display().to_string();
    let mut agent = Agent::start(
        &[nginx.master_pid()],
        &["--request-log", &log_arg, "--capture-bytes", "512"],
    )?;

    let same = |_| "/same".to_owned();
    let rewritten = |i: usize| {
        if i.is_multiple_of(2) {
            format!("/rw/item/{i}")
        } else {
            format!("/pp/item/{i}")
        }
    };
    let seq = |n, path, delay, jitter, headers, want| Plan::Sequential {
        n,
        path,
        delay,
        jitter,
        headers,
        want,
    };
    let mut sent = Vec::new();
    sent.extend(concurrently(
        port,
        "same path",
        40,
        seq(10, same, 0, 20, false, 200),
    )?);
    sent.extend(concurrently(
        port,
        "rewritten",
        20,
        seq(10, rewritten, 0, 10, false, 200),
    )?);
    sent.extend(concurrently(
        port,
        "retry 502",
        20,
        seq(6, |_| "/retry502".to_owned(), 0, 5, false, 200),
    )?);
    sent.extend(concurrently(
        port,
        "retry reset",
        20,
        seq(6, |_| "/retryreset".to_owned(), 0, 5, false, 200),
    )?);
    // Every other request first tries a peer whose handshake never
    // completes: its retry starts from proxy_connect_timeout's timer, with
    // no I/O of its own before it.
    sent.extend(concurrently(
        port,
        "retry timer",
        20,
        seq(4, |_| "/retrytimer".to_owned(), 0, 5, false, 200),
    )?);
    // limit_req delays each request: its upstream call starts from a
    // timer, after whatever I/O the worker did last.
    sent.extend(concurrently(
        port,
        "limit_req",
        40,
        seq(5, |_| "/paced".to_owned(), 0, 5, false, 200),
    )?);
    sent.extend(concurrently(
        port,
        "504",
        10,
        seq(2, |_| "/slow".to_owned(), 600, 1, false, 504),
    )?);
    sent.extend(concurrently(port, "499", 10, Plan::GiveUp)?);
    sent.extend(concurrently(
        port,
        "pipelined",
        10,
        Plan::Pipelined { n: 5 },
    )?);
    sent.extend(concurrently(
        port,
        "headers",
        40,
        seq(10, same, 0, 20, true, 200),
    )?);
    // The given-up requests' answers are due after 800 ms.
    std::thread::sleep(Duration::from_millis(1200));
    // Every downstream line written: the links metric counts what the log
    // lists so far, result by result.
    let text =
        gatescope_tests::util::poll(Duration::from_secs(10), "every downstream line", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let down = parse_request_log(&text)?
                .iter()
                .filter(|l| l.is_downstream())
                .count();
            Ok((down >= sent.len()).then_some(text))
        })?;
    let scrape = agent.scrape()?;
    let mut listed: BTreeMap<String, u64> = BTreeMap::new();
    for l in parse_request_log(&text)? {
        for a in l.attempts {
            *listed.entry(a.link).or_default() += 1;
        }
    }
    for a in parse_unlinked(&text)? {
        *listed.entry(a.link).or_default() += 1;
    }
    for result in ["evidence", "inferred", "ambiguous", "none"] {
        let metric = scrape.get_or_zero("gatescope_trace_links_total", &[("result", result)])?;
        let want = listed.get(result).copied().unwrap_or_default();
        ensure!(
            metric == want as f64,
            "gatescope_trace_links_total{{result={result:?}}} is {metric}, the request log lists {want}"
        );
    }
    // At exit the agent reports every call still waiting as unlinked.
    agent.stop_ok()?;

    let text = std::fs::read_to_string(&log)?;
    let lines = parse_request_log(&text)?;
    let mut calls = Vec::new();
    let mut order: HashMap<u16, usize> = HashMap::new();
    for l in lines.iter().filter(|l| l.is_downstream()) {
        let client = port_of(&l.remote)?;
        let n = order.entry(client).or_default();
        for a in &l.attempts {
            calls.push(Call {
                attempt: a.clone(),
                owner: Some((client, *n)),
            });
        }
        *n += 1;
    }
    for a in parse_unlinked(&text)? {
        calls.push(Call {
            attempt: a,
            owner: None,
        });
    }
    // Every request the clients sent has its downstream line.
    let mut per_client: HashMap<u16, usize> = HashMap::new();
    for s in &sent {
        *per_client.entry(s.client_port).or_default() += 1;
    }
    ensure!(
        per_client == order,
        "downstream lines per client connection differ from what the clients sent"
    );

    // The timer scenario did wait for proxy_connect_timeout (100 ms).
    let timed_out = lines
        .iter()
        .filter(|l| l.is_downstream() && l.path == "/retrytimer" && l.duration_ms >= 100.0)
        .count();
    ensure!(
        timed_out > 0,
        "no /retrytimer request waited for the connect timeout"
    );
    eprintln!("retry timer: {timed_out} requests waited for proxy_connect_timeout");
    // limit_req did delay requests (200 at once, 200 a second).
    let paced = lines
        .iter()
        .filter(|l| l.is_downstream() && l.path == "/paced" && l.duration_ms >= 100.0)
        .count();
    ensure!(paced > 0, "limit_req delayed no request");
    eprintln!("limit_req: {paced} requests delayed by 100 ms or more");

    let mut truth: BTreeMap<(u16, u16), Vec<String>> = BTreeMap::new();
    for w in [&good, &fail, &reset] {
        let mut arrivals = w.arrivals();
        arrivals.sort_by_key(|a| (a.conn, a.seq));
        for a in arrivals {
            truth.entry((a.peer_port, w.port())).or_default().push(a.id);
        }
    }
    let (tally, problems) = compare(&calls, &truth, &sent)?;
    eprintln!("nginx with {workers} worker(s):");
    print(&tally);
    for p in &problems {
        eprintln!("{p}");
    }

    // The comparison can fail: two linked calls of the same-path load
    // swapped between their requests are two wrong links.
    let mut swapped = calls.clone();
    let first = (0..swapped.len()).find(|&i| swapped[i].owner.is_some());
    let second = first.and_then(|f| {
        (f + 1..swapped.len())
            .find(|&i| swapped[i].owner.is_some() && swapped[i].owner != swapped[f].owner)
    });
    let linked = [first, second].map(Option::unwrap_or_default);
    ensure!(second.is_some(), "fewer than two linked calls");
    let (a, b) = (swapped[linked[0]].owner, swapped[linked[1]].owner);
    swapped[linked[0]].owner = b;
    swapped[linked[1]].owner = a;
    let (bad, _) = compare(&swapped, &truth, &sent)?;
    let wrong = |t: &BTreeMap<&str, Tally>| t.values().map(|t| t.wrong).sum::<u64>();
    ensure!(
        wrong(&bad) == wrong(&tally) + 2,
        "a swapped pair was not reported as two wrong links"
    );

    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    let sum = |header: bool| {
        tally
            .iter()
            .filter(|(name, _)| (**name == "headers") == header)
            .fold((0, 0), |(c, l), (_, t)| (c + t.calls, l + t.linked))
    };
    let (calls_plain, linked_plain) = sum(false);
    let (calls_header, linked_header) = sum(true);
    eprintln!(
        "no header: {linked_plain}/{calls_plain} linked; with traceparent and X-Request-ID: {linked_header}/{calls_header}"
    );
    for name in SCENARIOS {
        ensure!(
            tally.get(name).is_some_and(|t| t.calls > 0),
            "scenario {name} made no upstream call"
        );
    }
    ensure!(
        linked_plain * 100 >= calls_plain * 99,
        "only {linked_plain} of {calls_plain} calls linked without headers (target 99%)"
    );
    ensure!(
        linked_header == calls_header,
        "only {linked_header} of {calls_header} calls linked with headers (target 100%)"
    );
    drop(nginx);
    Ok(())
}
