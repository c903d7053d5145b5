//! The accuracy tests' mixed HTTP/1.1 workload against [`Nginx::start_accuracy`]:
//! one-shot and keep-alive connections, pipelining, chunked upstream responses
//! (also with chunk-size lines inside large reads), request heads up to 30 KiB,
//! request and response bodies far larger than a 256-byte capture, HEAD, a 404
//! from nginx itself, 502 (upstream down), 504 (upstream timeout), aborting clients,
//! and concurrent clients (both workers). Every request is recorded as a
//! [`Sent`], the client's own account.
//!
//! [`Nginx::start_accuracy`]: crate::nginx::Nginx::start_accuracy

use crate::client::{Conn, Endpoint, Req, Sent, ABORTED};
use crate::upstream::{body_size_for, burst_body_len, chunked_body_len, SLOW_BODY};
use anyhow::{ensure, Context, Result};
use std::collections::BTreeSet;
use std::time::Duration;

// The delays below put every slow request mid-bucket in all latency histograms
// (native seconds: 5, 10, 25, 50, 100, 250, 500 ms; Kong's request and upstream
// latency: 25, 50, 80, 100, 250, 400, 700 ms; Kong's gateway-added latency: 5, 7,
// 10, 15, 20, 30, 50, 75, 100 ms), at least 5 ms from any edge, so that the
// accuracy test's bucket comparisons are decided for them (it leaves out only
// requests whose logged time is within nginx's resolution of an edge).

/// nginx's `proxy_read_timeout` on `/slow/` in the accuracy config (ms): a 504
/// lasts about 450 ms (native 250-500 ms, Kong 400-700 ms).
pub const SLOW_TIMEOUT_MS: u64 = 450;
/// How long an aborting client waits before closing (its upstream answer is due
/// after [`ABORT_SLOW_MS`]): a 499 lasts about 150 ms (100-250 ms in both).
pub const ABORT_AFTER: Duration = Duration::from_millis(150);
pub const ABORT_SLOW_MS: u64 = 300;
/// Upstream delays (ms) of the slow requests that are answered: about 16, 37 and
/// 62 ms with nginx's own time (native 10-25, 25-50, 50-100 ms; Kong under 25,
/// 25-50, 50-80 ms).
pub const SLOW_MS: [u64; 3] = [15, 36, 60];
/// Pauses (ms) between a POST's head and the rest of its body: time the gateway
/// adds before it goes upstream (Kong's gateway-added latency 30-50 and 50-75 ms).
pub const BODY_PAUSE_MS: [u64; 2] = [40, 62];

/// What a request should get from the accuracy nginx (if the client waits).
pub fn expected_status(path: &str) -> u16 {
    if path == "/missing" {
        404
    } else if path.starts_with("/down") {
        502
    } else if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|m| m.parse::<u64>().ok())
    {
        if ms > SLOW_TIMEOUT_MS {
            504
        } else {
            200
        }
    } else if body_size_for(path).is_some()
        || path.starts_with("/chunked/")
        || path.starts_with("/burst/")
    {
        200
    } else {
        404
    }
}

/// True for requests nginx passes to the live upstream (`location /`, `/slow/`).
pub fn goes_to_backend(path: &str) -> bool {
    !(path == "/missing" || path.starts_with("/down"))
}

/// The decoded body length a 200 GET of `path` has.
fn expected_body(path: &str) -> Option<u64> {
    if let Some(n) = body_size_for(path) {
        return Some(n as u64);
    }
    if let Some(n) = path
        .strip_prefix("/chunked/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return Some(chunked_body_len(n) as u64);
    }
    if let Some(n) = path
        .strip_prefix("/burst/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return Some(burst_body_len(n) as u64);
    }
    if path.starts_with("/slow/") {
        return Some(SLOW_BODY as u64);
    }
    None
}

/// Check one client record against what the accuracy nginx must answer.
pub fn check_sent(s: &Sent) -> Result<()> {
    if s.status == ABORTED {
        ensure!(s.read == 0, "aborted request read bytes: {s:?}");
        return Ok(());
    }
    let want = expected_status(&s.path);
    ensure!(s.status == want, "status {} (want {want}): {s:?}", s.status);
    if s.status == 200 {
        if s.method == "HEAD" {
            ensure!(s.body_len == 0, "HEAD with a body: {s:?}");
        } else if let Some(b) = expected_body(&s.path) {
            ensure!(s.body_len == b, "body {} (want {b}): {s:?}", s.body_len);
        }
    }
    Ok(())
}

fn one_shot(ep: Endpoint, req: Req) -> Result<Vec<Sent>> {
    let mut c = Conn::open_at(ep)?;
    c.exchange(req.close())?;
    c.close()
}

fn keep_alive(ep: Endpoint, reqs: Vec<Req>) -> Result<Vec<Sent>> {
    let mut c = Conn::open_at(ep)?;
    for r in reqs {
        c.exchange(r)?;
    }
    c.close()
}

/// Send a request whose answer is due after [`ABORT_SLOW_MS`], wait
/// [`ABORT_AFTER`], close. `before` are answered first on the same connection.
fn aborting(ep: Endpoint, before: Vec<Req>) -> Result<Vec<Sent>> {
    let mut c = Conn::open_at(ep)?;
    for r in before {
        c.exchange(r)?;
    }
    c.send(&[Req::get(&format!("/slow/{ABORT_SLOW_MS}"))])?;
    std::thread::sleep(ABORT_AFTER);
    c.abort()
}

/// The whole workload; returns every request as the client saw it, after
/// checking each against [`check_sent`] and that no client address repeats.
pub fn run_mixed(port: u16) -> Result<Vec<Sent>> {
    run_mixed_at(Endpoint::Plain(port))
}

/// [`run_mixed`] against any [`Endpoint`] (clear text or TLS).
pub fn run_mixed_at(ep: Endpoint) -> Result<Vec<Sent>> {
    let all = mixed(ep)?;
    check_all(&all)?;
    Ok(all)
}

/// The same workload over TLS (`ep` an [`Endpoint::Tls`]), and then what
/// TLS makes different: request and response bodies of many 16 KiB records
/// (up to 300 KB), on one-shot and keep-alive connections, also pipelined
/// behind a large body, and heads of 20 KiB (two records) in one write.
pub fn run_mixed_tls(ep: Endpoint) -> Result<Vec<Sent>> {
    ensure!(
        matches!(ep, Endpoint::Tls { .. }),
        "run_mixed_tls on {ep:?}"
    );
    let mut all = mixed(ep)?;
    for r in [
        Req::post("/size/300000", 200_000),
        Req::get("/size/300000"),
        Req::get("/chunked/20"),
    ] {
        all.extend(one_shot(ep, r)?);
    }
    all.extend(keep_alive(
        ep,
        vec![
            Req::post("/size/100", 100_000),
            Req::get("/size/100000"),
            Req::get("/size/10").padded(20 * 1024),
            Req::post("/size/16384", 16_384).padded(20 * 1024),
            Req::head("/size/100000"),
            Req::get("/burst/200"),
        ],
    )?);
    {
        let mut c = Conn::open_at(ep)?;
        c.pipeline(&[
            Req::post("/size/40000", 50_000),
            Req::get("/size/20000"),
            Req::get("/missing"),
            Req::head("/size/5"),
        ])?;
        all.extend(c.close()?);
    }
    check_all(&all)?;
    Ok(all)
}

fn mixed(ep: Endpoint) -> Result<Vec<Sent>> {
    let mut all: Vec<Sent> = Vec::new();
    let timeout = format!("/slow/{}", 4 * SLOW_TIMEOUT_MS);

    // One-shot connections (Connection: close).
    for r in [
        Req::get("/size/0"),
        Req::get("/size/1234"),
        Req::get("/size/200000"),
        Req::head("/size/5000"),
        Req::post("/size/10", 5000),
        Req::post("/size/50000", 70_000),
        Req::get("/chunked/1"),
        Req::get("/chunked/6"),
        Req::head("/chunked/3"),
        Req::get("/missing"),
        Req::get("/down"),
        Req::get(&format!("/slow/{}", SLOW_MS[2])),
        Req::get(&timeout),
    ] {
        all.extend(one_shot(ep, r)?);
    }

    // Keep-alive connections, the client closes (A) or asks the server to (B).
    all.extend(keep_alive(
        ep,
        vec![
            Req::get("/size/100"),
            Req::post("/size/20", 10_000),
            Req::get("/chunked/5"),
            Req::head("/size/3000"),
            Req::get("/missing"),
            Req::get("/size/70000"),
            Req::post("/size/0", 4097),
            Req::get("/down"),
            Req::get(&format!("/slow/{}", SLOW_MS[0])),
            Req::get("/size/1"),
        ],
    )?);
    all.extend(keep_alive(
        ep,
        vec![
            Req::get("/size/10"),
            Req::get(&timeout),
            Req::get("/chunked/2"),
            Req::get("/size/10").close(),
        ],
    )?);

    // Heads larger than the capture (cookies, bearer tokens): 6 KiB and 30
    // KiB, without and with a body in the same write, and one that arrives in
    // four writes; chunked responses whose chunk-size lines fall inside the
    // gateway's reads (head and all chunks in one upstream write).
    all.extend(keep_alive(
        ep,
        vec![
            Req::get("/size/100").padded(6 * 1024),
            Req::post("/size/200", 3000).padded(6 * 1024),
            Req::get("/burst/80"),
            Req::get("/size/10").padded(30 * 1024),
            Req::post("/size/10", 2000).padded(30 * 1024),
            Req::get("/burst/3"),
            Req::head("/burst/5"),
        ],
    )?);
    {
        let mut c = Conn::open_at(ep)?;
        c.send_in_pieces(
            &Req::get("/size/300").padded(20 * 1024),
            4,
            Duration::from_millis(5),
        )?;
        c.recv()?;
        c.exchange(Req::get("/burst/120"))?;
        c.exchange(Req::post("/burst/40", 40_000).padded(8 * 1024))?;
        all.extend(c.close()?);
    }

    // Pipelining: several requests in one write, twice on one connection.
    {
        let mut c = Conn::open_at(ep)?;
        c.pipeline(&[
            Req::get("/size/10"),
            Req::head("/size/3000"),
            Req::post("/size/20", 6000),
            Req::get("/chunked/4"),
            Req::get("/missing"),
            Req::get("/size/50000"),
        ])?;
        c.pipeline(&[Req::get("/size/1"), Req::get("/size/2").close()])?;
        all.extend(c.close()?);
    }
    // A slow request at the head of a pipeline: the ones behind it wait in nginx.
    {
        let mut c = Conn::open_at(ep)?;
        c.pipeline(&[
            Req::get(&format!("/slow/{}", SLOW_MS[1])),
            Req::get("/size/100"),
            Req::get("/size/100"),
        ])?;
        all.extend(c.close()?);
    }

    // Bodies that arrive late: nginx waits for them before it goes upstream.
    for ms in BODY_PAUSE_MS {
        let mut c = Conn::open_at(ep)?;
        c.send_with_pause(
            &Req::post("/size/10", 6000).close(),
            Duration::from_millis(ms),
        )?;
        c.recv()?;
        all.extend(c.close()?);
    }

    // Clients that give up before the response.
    for _ in 0..3 {
        all.extend(aborting(ep, vec![])?);
    }
    all.extend(aborting(
        ep,
        vec![Req::get("/size/10"), Req::post("/size/5", 8000)],
    )?);

    // Concurrent clients: both workers, interleaved syscalls.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || -> Result<Vec<Sent>> {
                let mut out = Vec::new();
                for j in 0..2 {
                    out.extend(one_shot(ep, Req::get(&format!("/size/{}", 300 * i + j)))?);
                    out.extend(keep_alive(
                        ep,
                        vec![
                            Req::get(&format!("/chunked/{}", 2 + i)),
                            Req::post("/size/64", 5000 + 1000 * i),
                            Req::head(&format!("/size/{}", 10_000 + i)),
                            Req::get("/missing"),
                            Req::get(&format!("/size/{}", 20_000 + i)),
                        ],
                    )?);
                }
                Ok(out)
            })
        })
        .collect();
    for t in threads {
        all.extend(t.join().expect("client thread panicked")?);
    }
    Ok(all)
}

/// Every request against [`check_sent`]; no client address used twice.
fn check_all(all: &[Sent]) -> Result<()> {
    for s in all {
        check_sent(s)?;
    }
    let mut conns = BTreeSet::new();
    let mut firsts = 0;
    for s in all {
        conns.insert(s.client);
        firsts += usize::from(s.seq == 1);
    }
    ensure!(
        conns.len() == firsts,
        "a client address was used by two connections; the (address, order) key is ambiguous"
    );
    Ok(())
}

/// Requests per status in a client record.
pub fn status_counts(sent: &[Sent]) -> std::collections::BTreeMap<u16, u64> {
    let mut m = std::collections::BTreeMap::new();
    for s in sent {
        *m.entry(s.status).or_insert(0) += 1;
    }
    m
}

/// Sanity: the path carries no query (the tests compare `$uri` with the agent's path).
pub fn no_query(sent: &[Sent]) -> Result<()> {
    for s in sent {
        ensure!(!s.path.contains('?'), "query string in {}", s.path);
    }
    Ok(())
}

/// Convenience for messages.
pub fn describe(s: &Sent) -> String {
    format!(
        "{} #{} {} {} -> {} ({}B/{}B{})",
        s.client,
        s.seq,
        s.method,
        s.path,
        s.status,
        s.written,
        s.read,
        if s.pipelined { ", pipelined" } else { "" }
    )
}

/// Wait until `f` returns Some or `timeout` passes; the last value either way.
pub fn poll_last<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Result<(bool, T)>,
) -> Result<(bool, T)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (ok, v) = f().context("polling")?;
        if ok || std::time::Instant::now() >= deadline {
            return Ok((ok, v));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
