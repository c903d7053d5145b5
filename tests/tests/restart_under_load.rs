//! The agent is restarted while the gateway is under load: the new agent
//! picks up the connections that are already open at their next request (a
//! message boundary) and counts them exactly from then on, while other
//! clients keep the gateway busy throughout the restart.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{Agent, SETTLE_TIMEOUT};
use gatescope_tests::client::{Conn, Req, Sent};
use gatescope_tests::request_log::{parse_req_line, ReqLine};
use gatescope_tests::util::TempDir;
use gatescope_tests::Scene;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MEASURED_CONNS: usize = 8;
const REQUESTS_PER_PHASE: usize = 5;
const LOAD_THREADS: usize = 2;
/// Bounds the background load whatever happens to the test.
const LOAD_LIMIT: Duration = Duration::from_secs(30);

fn size_for(conn: usize, i: usize) -> usize {
    [10, 1500, 9000, 70_000][(conn + i) % 4]
}

#[test]
fn restart_under_load_picks_up_open_connections() -> Result<()> {
    let scene = Scene::start(2)?;
    let port = scene.nginx.listen_port();
    let pid = scene.nginx.master_pid();
    let mut first = Agent::start(&[pid], &[])?;

    // Background load on its own connections, through the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    let load_requests = Arc::new(AtomicU64::new(0));
    let load_conns = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..LOAD_THREADS)
        .map(|_| {
            let (stop, done, opened) = (stop.clone(), load_requests.clone(), load_conns.clone());
            thread::spawn(move || -> Result<()> {
                let start = Instant::now();
                // nginx closes a keep-alive connection after 1000 requests
                // (keepalive_requests): take a fresh one well before that.
                'conns: while start.elapsed() < LOAD_LIMIT {
                    let mut conn = Conn::open(port)?;
                    opened.fetch_add(1, Ordering::SeqCst);
                    for _ in 0..200 {
                        if stop.load(Ordering::Relaxed) || start.elapsed() >= LOAD_LIMIT {
                            break 'conns;
                        }
                        let sent = conn.exchange(Req::get("/size/200"))?;
                        ensure!(sent.status == 200, "load request got {}", sent.status);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        })
        .collect();

    // The measured connections: opened and used while the first agent runs.
    let mut conns = (0..MEASURED_CONNS)
        .map(|_| Conn::open(port))
        .collect::<Result<Vec<_>>>()?;
    for (c, conn) in conns.iter_mut().enumerate() {
        for i in 0..REQUESTS_PER_PHASE {
            conn.exchange(Req::get(&format!("/size/{}", size_for(c, i))))?;
        }
    }

    // Restart under load. What may be open when the second agent attaches:
    // the load's current connections and those it opens until the second
    // agent is up, and the upstream connections open before the stop or
    // opened until then (the upstream's own counts).
    let (load_before, up_before) = (load_conns.load(Ordering::SeqCst), scene.upstream.stats());
    first.stop_ok()?;
    let log_dir = TempDir::new("restart")?;
    let log = log_dir.path().join("requests.jsonl");
    let second = Agent::start(&[pid], &["--request-log", log.to_str().context("path")?])?;
    let before = load_requests.load(Ordering::Relaxed);
    let (load_after, up_after) = (load_conns.load(Ordering::SeqCst), scene.upstream.stats());

    // Second phase on the same, already open connections.
    let mut truth: Vec<Sent> = Vec::new();
    for (c, conn) in conns.iter_mut().enumerate() {
        for i in 0..REQUESTS_PER_PHASE {
            let sent = conn.exchange(Req::get(&format!("/size/{}", size_for(c, i + 1))))?;
            ensure!(sent.status == 200, "measured request got {}", sent.status);
            truth.push(sent);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread")?;
    }
    let during = load_requests.load(Ordering::Relaxed) - before;
    ensure!(
        during > 0,
        "the load did not run while the second agent was up"
    );

    // Every measured request after the restart is in the new agent's log,
    // exactly once, with the client's own byte counts.
    let want = truth.len();
    let lines = gatescope_tests::util::poll(SETTLE_TIMEOUT, "request log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let measured: Vec<ReqLine> = text
            .lines()
            .filter_map(|l| parse_req_line(l).ok())
            .filter(|l| {
                l.role == "downstream" && truth.iter().any(|t| t.client.to_string() == l.remote)
            })
            .collect();
        Ok((measured.len() >= want).then_some(measured))
    })?;
    ensure!(
        lines.len() == want,
        "{} measured lines, want {want}",
        lines.len()
    );
    for sent in &truth {
        let on_conn: Vec<&ReqLine> = lines
            .iter()
            .filter(|l| l.remote == sent.client.to_string())
            .collect();
        ensure!(
            on_conn.len() == REQUESTS_PER_PHASE,
            "{}: {} lines",
            sent.client,
            on_conn.len()
        );
    }
    for conn_truth in truth.chunks(REQUESTS_PER_PHASE) {
        let client = conn_truth[0].client.to_string();
        let got: Vec<(String, u16, u64, u64)> = lines
            .iter()
            .filter(|l| l.remote == client)
            .map(|l| (l.path.clone(), l.status, l.request_bytes, l.response_bytes))
            .collect();
        let want: Vec<(String, u16, u64, u64)> = conn_truth
            .iter()
            .map(|s| (s.path.clone(), s.status, s.written, s.read))
            .collect();
        ensure!(
            got == want,
            "connection {client}: agent {got:?}\nclient {want:?}"
        );
    }
    let found = second
        .scrape()?
        .get_or_zero("gatescope_events_received_total", &[("kind", "conn_found")])?;
    ensure!(
        found >= MEASURED_CONNS as f64,
        "only {found} connections found mid-stream, want at least {MEASURED_CONNS}"
    );
    // Which of the others moved bytes after the attach (and so were found) is
    // a race with the load; how many could have is not.
    let could = MEASURED_CONNS as u64
        + LOAD_THREADS as u64
        + (load_after - load_before)
        + up_before.open
        + (up_after.accepted - up_before.accepted);
    ensure!(
        found <= could as f64,
        "{found} connections found mid-stream, but at most {could} were open when the second \
         agent attached ({MEASURED_CONNS} measured, {LOAD_THREADS} + {} load, upstream \
         {up_before:?} -> {up_after:?})",
        load_after - load_before
    );
    eprintln!("restart_under_load: {found} connections found mid-stream, at most {could} open");
    Ok(())
}
