//! The agent is restarted while the gateway is under load: the new agent
//! picks up the connections that are already open at their next request (a
//! message boundary) and counts them exactly from then on, while other
//! clients keep the gateway busy before and after the restart.
//!
//! The load pauses, holding its connections open, for the moment the second
//! agent attaches, and nginx's idle upstream connections are let expire
//! first (`keepalive_timeout 1s` in the upstream block, until the upstream's
//! own count of open connections is 0). Which connections were open at the
//! attach is then known exactly: the measured ones and one per load thread.
//! Were the load running at that moment, which of its connections move bytes
//! first on either side of the attach would be a race no witness here sees.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{Agent, SETTLE_TIMEOUT};
use gatescope_tests::client::{Conn, Req, Sent};
use gatescope_tests::request_log::{parse_req_line, ReqLine};
use gatescope_tests::util::TempDir;
use gatescope_tests::{nginx::Tuning, Scene};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MEASURED_CONNS: usize = 8;
const REQUESTS_PER_PHASE: usize = 5;
const LOAD_THREADS: usize = 2;
/// Bounds the background load whatever happens to the test.
const LOAD_LIMIT: Duration = Duration::from_secs(30);
/// nginx closes idle upstream connections after this (upstream block).
const UPSTREAM_IDLE_S: u32 = 1;

fn size_for(conn: usize, i: usize) -> usize {
    [10, 1500, 9000, 70_000][(conn + i) % 4]
}

#[test]
fn restart_under_load_picks_up_open_connections() -> Result<()> {
    let scene = Scene::start_tuned(
        2,
        &Tuning {
            upstream_keepalive_timeout_s: Some(UPSTREAM_IDLE_S),
            ..Tuning::default()
        },
    )?;
    let port = scene.nginx.listen_port();
    let pid = scene.nginx.master_pid();
    let mut first = Agent::start(&[pid], &[])?;

    // Background load on its own connections, through the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    // While set, each load thread parks holding one open connection.
    let pause = Arc::new(AtomicBool::new(false));
    let parked = Arc::new(AtomicU64::new(0));
    let load_requests = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..LOAD_THREADS)
        .map(|_| {
            let (stop, pause, parked, done) = (
                stop.clone(),
                pause.clone(),
                parked.clone(),
                load_requests.clone(),
            );
            thread::spawn(move || -> Result<()> {
                let start = Instant::now();
                // nginx closes a keep-alive connection after 1000 requests
                // (keepalive_requests): take a fresh one well before that.
                'conns: while start.elapsed() < LOAD_LIMIT {
                    let mut conn = Conn::open(port)?;
                    for _ in 0..200 {
                        // A parked connection moves bytes once more after the
                        // pause, whenever the stop comes: it was open at the
                        // attach, and the count of found ones relies on it.
                        let mut resumed = false;
                        if pause.load(Ordering::SeqCst) {
                            parked.fetch_add(1, Ordering::SeqCst);
                            while pause.load(Ordering::SeqCst) && start.elapsed() < LOAD_LIMIT {
                                thread::sleep(Duration::from_millis(5));
                            }
                            parked.fetch_sub(1, Ordering::SeqCst);
                            resumed = true;
                        }
                        if !resumed
                            && (stop.load(Ordering::Relaxed) || start.elapsed() >= LOAD_LIMIT)
                        {
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

    // Restart under load: the first agent stops while the load runs; the
    // load parks and nginx's idle upstream connections expire; the second
    // agent attaches; the load resumes.
    first.stop_ok()?;
    let stopped_at = load_requests.load(Ordering::Relaxed);
    pause.store(true, Ordering::SeqCst);
    gatescope_tests::util::poll(
        Duration::from_secs(5 + u64::from(UPSTREAM_IDLE_S)),
        "load parked and upstream connections closed",
        || {
            let up = scene.upstream.stats();
            Ok(
                (parked.load(Ordering::SeqCst) == LOAD_THREADS as u64 && up.open == 0)
                    .then_some(()),
            )
        },
    )?;
    ensure!(stopped_at > 0, "the load did not run before the restart");
    let log_dir = TempDir::new("restart")?;
    let log = log_dir.path().join("requests.jsonl");
    let second = Agent::start(&[pid], &["--request-log", log.to_str().context("path")?])?;
    let open_at_attach = scene.upstream.stats().open;
    pause.store(false, Ordering::SeqCst);
    let before = load_requests.load(Ordering::Relaxed);

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
    // Open at the attach, and each moved bytes after it: the measured
    // connections and the parked load's; no upstream connection (the
    // upstream's own count was 0 before and after the attach).
    ensure!(
        open_at_attach == 0,
        "an upstream connection opened while the load was parked"
    );
    let found = second
        .scrape()?
        .get_or_zero("gatescope_events_received_total", &[("kind", "conn_found")])?;
    let open = (MEASURED_CONNS + LOAD_THREADS) as f64;
    ensure!(
        found == open,
        "{found} connections found mid-stream; {open} were open when the second agent attached \
         ({MEASURED_CONNS} measured, {LOAD_THREADS} load, 0 upstream)"
    );
    eprintln!("restart_under_load: {found} connections found mid-stream, as many as were open");
    Ok(())
}
