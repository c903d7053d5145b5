//! TLS across the agent's and the gateway's lifecycle (issue 11): TLS
//! keep-alive connections already open when the agent starts, and
//! `nginx -s reload` while clients make TLS connections. The oracle is
//! nginx's `acc` log, request by request (method, path, status,
//! `$request_length`, `$bytes_sent`), matched by the client's end of the TLS
//! connection and the order on it.

use anyhow::{bail, ensure, Result};
use gatescope_tests::access_log::AccEntry;
use gatescope_tests::accuracy::{HTTP_ANOMALIES, HTTP_REQUESTS_ALL, LOG_TIMEOUT};
use gatescope_tests::agent::Agent;
use gatescope_tests::client::{Conn, Req, Sent};
use gatescope_tests::metrics::{EVENTS_LOST, TLS_LOSSES};
use gatescope_tests::prom::Scrape;
use gatescope_tests::request_log::{parse_request_log, ReqLine};
use gatescope_tests::util::{self, TempDir};
use gatescope_tests::workload::{check_sent, poll_last};
use gatescope_tests::AccuracyScene;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const TLS_HANDSHAKES: &str = "gatescope_downstream_tls_handshakes_total";

/// Requests on each connection after the agent started: a small and a large
/// response, a body of many TLS records, a 6 KiB head (nginx reads it with
/// more than one `SSL_read`, the later ones from OpenSSL's buffer), and a 404
/// from nginx itself.
fn after_start() -> Vec<Req> {
    vec![
        Req::get("/size/100"),
        Req::get("/size/200000"),
        Req::post("/size/10", 70_000),
        Req::get("/size/300").padded(6 * 1024),
        Req::get("/missing"),
    ]
}

/// The agent's downstream lines and nginx's entries for the same clients,
/// compared in order per client: nginx's entries of each client from its
/// `first` request on (`$connection_requests`), against all the agent's lines
/// for that client.
fn compare(
    log: &[AccEntry],
    lines: &[ReqLine],
    first: &BTreeMap<SocketAddr, u64>,
) -> Result<usize> {
    let mut problems = Vec::new();
    let mut compared = 0;
    for (client, from) in first {
        let want: Vec<&AccEntry> = log
            .iter()
            .filter(|e| e.client == *client && e.connection_requests >= *from)
            .collect();
        let got: Vec<&ReqLine> = lines
            .iter()
            .filter(|l| l.is_downstream() && l.remote == client.to_string())
            .collect();
        if want.len() != got.len() {
            problems.push(format!(
                "{client}: nginx logged {} requests from #{from}, the agent {}",
                want.len(),
                got.len()
            ));
            continue;
        }
        for (e, l) in want.iter().zip(&got) {
            compared += 1;
            let same = (e.method.as_str(), e.uri.as_str(), e.status)
                == (l.method.as_str(), l.path.as_str(), l.status)
                && (e.request_length, e.bytes_sent) == (l.request_bytes, l.response_bytes);
            if !same {
                problems.push(format!(
                    "{client} #{}: nginx {} {} {} in {} out {}; agent {}",
                    e.connection_requests,
                    e.method,
                    e.uri,
                    e.status,
                    e.request_length,
                    e.bytes_sent,
                    l.raw
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(compared)
}

/// No HTTP anomaly of any kind, and no TLS call lost.
fn clean(s: &Scrape) -> Result<()> {
    for x in s.matching(HTTP_ANOMALIES, &[]) {
        ensure!(x.value == 0.0, "anomalies {:?} = {}", x.labels, x.value);
    }
    for r in TLS_LOSSES {
        let v = s.get_or_zero(EVENTS_LOST, &[("reason", r)])?;
        ensure!(v == 0.0, "{r} losses: {v}");
    }
    Ok(())
}

fn handshakes(s: &Scrape, listener: &str) -> Result<[f64; 3]> {
    let mut r = [0.0; 3];
    for (i, result) in ["ok", "failed", "closed"].iter().enumerate() {
        r[i] = s.get_or_zero(
            TLS_HANDSHAKES,
            &[("listener", listener), ("result", result)],
        )?;
    }
    Ok(r)
}

/// The agent's request log, once it has `n` downstream lines (or the last
/// read at the timeout).
fn downstream_lines(path: &Path, n: usize) -> Result<Vec<ReqLine>> {
    let (_, lines) = poll_last(LOG_TIMEOUT, || {
        let l = parse_request_log(&std::fs::read_to_string(path).unwrap_or_default())?;
        Ok((l.iter().filter(|x| x.is_downstream()).count() >= n, l))
    })?;
    Ok(lines)
}

fn acc_log_with(scene: &AccuracyScene, n: usize) -> Result<Vec<AccEntry>> {
    util::poll(LOG_TIMEOUT, "the acc log", || {
        let l = scene.nginx.acc_log()?;
        Ok((l.len() >= n).then_some(l))
    })
}

/// Three TLS keep-alive connections carry a request each before the agent
/// starts. The agent learns each connection's `SSL*` at its next `SSL_read`
/// (the read syscall inside it names the socket), so every later request is
/// parsed from its first byte, exactly, with no anomaly. No handshake is
/// counted: none happened while the agent watched.
#[test]
fn open_tls_connections_are_parsed_from_their_next_request() -> Result<()> {
    let scene = AccuracyScene::start_tls(1)?;
    let ep = scene.endpoint();
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::open_at(ep)?;
        check_sent(&c.exchange(Req::get("/size/100"))?)?;
        conns.push(c);
    }
    acc_log_with(&scene, 3)?;

    let dir = TempDir::new("tls-late")?;
    let req_log = dir.path().join("requests.jsonl");
    let agent = Agent::start(
        &[scene.nginx.master_pid()],
        &["--request-log", &req_log.display().to_string()],
    )?;
    let mut first = BTreeMap::new();
    let mut sent: Vec<Sent> = Vec::new();
    for c in &mut conns {
        first.insert(c.local_addr(), 2);
        for r in after_start() {
            let s = c.exchange(r)?;
            check_sent(&s)?;
            sent.push(s);
        }
    }
    for c in conns {
        c.close()?;
    }
    let log = acc_log_with(&scene, 3 + sent.len())?;
    let lines = downstream_lines(&req_log, sent.len())?;
    let compared = compare(&log, &lines, &first)?;
    ensure!(
        compared == sent.len(),
        "{compared} of {} compared",
        sent.len()
    );

    let s = agent.scrape()?;
    ensure!(
        s.get_or_zero(HTTP_REQUESTS_ALL, &[])? == sent.len() as f64,
        "requests_all {} for {} requests",
        s.get_or_zero(HTTP_REQUESTS_ALL, &[])?,
        sent.len()
    );
    clean(&s)?;
    let hs = handshakes(&s, &scene.nginx.listen_addr())?;
    ensure!(hs == [0.0; 3], "handshakes ok/failed/closed {hs:?}");
    Ok(())
}

/// `nginx -s reload` while a client makes one TLS connection per request: the
/// old worker finishes the connections it holds, the new ones take the next
/// (their OpenSSL is the same file, probed once; the programs filter by
/// target process). Every request on either generation is exact against
/// nginx's log, and every connection's handshake counts once.
#[test]
fn tls_requests_are_exact_across_a_reload() -> Result<()> {
    let mut scene = AccuracyScene::start_tls(2)?;
    let ep = scene.endpoint();
    let dir = TempDir::new("tls-reload")?;
    let req_log = dir.path().join("requests.jsonl");
    let agent = Agent::start(
        &[scene.nginx.master_pid()],
        &["--request-log", &req_log.display().to_string()],
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> Result<Vec<Sent>> {
            let paths = ["/size/100", "/size/50000", "/missing"];
            let mut sent = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) && i >= 30 {
                    break;
                }
                let mut c = Conn::open_at(ep)?;
                let s = c.exchange(Req::get(paths[i % paths.len()]).close())?;
                check_sent(&s)?;
                sent.push(s);
                c.close()?;
            }
            Ok(sent)
        })
    };
    // Let the old generation serve some first.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let old = scene.nginx.worker_pids();
    let new = scene.nginx.reload()?;
    ensure!(new.iter().all(|w| !old.contains(w)), "{old:?} -> {new:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut sent = match client.join() {
        Ok(r) => r?,
        Err(_) => bail!("the client thread panicked"),
    };
    // Each a connection of its own; one more below.
    let connections = sent.len() + 1;
    // Keep-alive on the new generation too.
    let mut c = Conn::open_at(ep)?;
    for r in after_start() {
        let s = c.exchange(r)?;
        check_sent(&s)?;
        sent.push(s);
    }
    c.close()?;

    let log = acc_log_with(&scene, sent.len())?;
    ensure!(
        log.len() == sent.len(),
        "nginx logged {} of {}",
        log.len(),
        sent.len()
    );
    let lines = downstream_lines(&req_log, sent.len())?;
    let first: BTreeMap<SocketAddr, u64> = sent.iter().map(|s| (s.client, 1)).collect();
    let compared = compare(&log, &lines, &first)?;
    ensure!(
        compared == sent.len(),
        "{compared} of {} compared",
        sent.len()
    );
    let s = agent.scrape()?;
    clean(&s)?;
    let hs = handshakes(&s, &scene.nginx.listen_addr())?;
    // One handshake per connection made, counted by the client (a client
    // port may serve two of them in turn: `first` counts addresses).
    ensure!(
        hs == [connections as f64, 0.0, 0.0],
        "handshakes ok/failed/closed {hs:?}, want {connections} ok ({} client addresses)",
        first.len()
    );
    eprintln!(
        "{} requests on {connections} connections ({} client addresses) across the reload",
        sent.len(),
        first.len()
    );
    Ok(())
}
