//! Resilience (issue 4, section 3), each case against its own nginx and agent:
//! a worker crash, a reload that adds workers, nginx's binary upgrade, SIGTERM
//! under load, and 50,000 idle connections (the ring buffer overrun is
//! `overflow.rs`).

use anyhow::{ensure, Context, Result};
use gatescope_tests::accuracy::{sum_by_code, HTTP_REQUESTS};
use gatescope_tests::agent::{http_get, Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::Client;
use gatescope_tests::expect::{
    losses_from, mixed_traffic, no_losses, settled_upstream, traffic_deltas,
};
use gatescope_tests::holders::Holders;
use gatescope_tests::metrics::*;
use gatescope_tests::nginx::Tuning;
use gatescope_tests::prom::Scrape;
use gatescope_tests::upstream::UpstreamStats;
use gatescope_tests::wrk::Wrk;
use gatescope_tests::{bpftool, util, Scene};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shared deltas plus the requests the client made (all HTTP).
fn expectations(
    base: &Scrape,
    scene: &Scene,
    c: &Client,
    up: &UpstreamStats,
) -> Result<Vec<Expect>> {
    let t = c.totals();
    let (l, p) = (scene.nginx.listen_addr(), scene.upstream.addr());
    let mut exp = traffic_deltas(base, &l, &p, &t, up)?;
    exp.push(Expect::new(
        REQUESTS_ALL,
        &[],
        base.get_or_zero(REQUESTS_ALL, &[])? + t.requests as f64,
    ));
    Ok(exp)
}

/// Wait for [`expectations`] plus `gatescope_target_processes == procs`; then
/// require that nothing was lost.
fn settle(agent: &Agent, base: &Scrape, scene: &Scene, c: &Client, procs: usize) -> Result<Scrape> {
    let up = settled_upstream(scene, c.totals().requests)?;
    let mut exp = expectations(base, scene, c, &up)?;
    exp.push(Expect::new(TARGET_PROCESSES, &[], procs as f64));
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    no_losses(&s)?;
    Ok(s)
}

/// The nginx worker holding the accepted end of `conn`, once it is accepted.
fn worker_of(scene: &Scene, conn: &TcpStream) -> Result<u32> {
    let std::net::SocketAddr::V4(client) = conn.local_addr()? else {
        anyhow::bail!("not IPv4");
    };
    let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, scene.nginx.listen_port());
    util::poll(Duration::from_secs(5), "nginx to accept", || {
        let Some(inode) = util::tcp_inode(server, client).filter(|i| *i != 0) else {
            return Ok(None);
        };
        Ok(scene
            .nginx
            .worker_pids()
            .into_iter()
            .find(|w| util::socket_inodes(*w).contains(&inode)))
    })
    .with_context(|| format!("no worker holds the socket of {client}"))
}

/// True once the server side has gone: EOF or an error on a non-blocking peek.
fn closed_by_peer(s: &TcpStream) -> Result<bool> {
    match util::peek(s)? {
        util::Peek::Data(n) => anyhow::bail!("{n} unexpected bytes on an idle connection"),
        p => Ok(p == util::Peek::Closed),
    }
}

/// Light background traffic: one exchange at a time, each under `lock`, so
/// whoever holds the lock knows no request is in flight.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Background {
    fn start(client: Arc<Mutex<Client>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || -> Result<u64> {
            let deadline = Instant::now() + Duration::from_mins(1);
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline && n < 5_000 {
                {
                    let mut c = client.lock().unwrap();
                    if n.is_multiple_of(2) {
                        c.one_shot("/size/333")?;
                    } else {
                        c.keep_alive(2, "/size/42")?;
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(n)
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop; the number of exchanges made.
    fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow::anyhow!("traffic thread panicked"))?
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn worker_crash() -> Result<()> {
    const WORKERS: usize = 2;
    const IDLE: usize = 8;
    let scene = Scene::start(WORKERS as u32)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let base = agent.scrape()?;

    // Idle connections spread over the workers; some die with the victim.
    let client = Arc::new(Mutex::new(scene.client()));
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(client.lock().unwrap().idle_connection()?);
    }
    let owners = idle
        .iter()
        .map(|c| worker_of(&scene, c))
        .collect::<Result<Vec<u32>>>()?;
    let victim = *scene
        .nginx
        .worker_pids()
        .iter()
        .max_by_key(|w| owners.iter().filter(|o| o == w).count())
        .context("no workers")?;
    let on_victim = owners.iter().filter(|o| **o == victim).count();

    let bg = Background::start(client.clone());
    std::thread::sleep(Duration::from_millis(700));
    let before = {
        // No exchange in flight while the worker dies.
        let c = client.lock().unwrap();
        util::signal(victim, libc::SIGKILL)?;
        util::poll(Duration::from_secs(5), "the victim to die", || {
            Ok((!util::is_alive(victim)).then_some(()))
        })?;
        c.totals()
    };
    let respawned = util::poll(Duration::from_secs(10), "nginx to respawn a worker", || {
        let w = scene.nginx.worker_pids();
        Ok((w.len() == WORKERS && !w.contains(&victim)).then_some(w))
    })
    .with_context(|| scene.nginx.diagnostics())?;
    std::thread::sleep(Duration::from_millis(700));
    let exchanges = bg.finish()?;
    let after = client.lock().unwrap().totals();
    ensure!(
        before.requests > 0 && after.requests > before.requests,
        "traffic before the crash {before:?}, in all {after:?} ({exchanges} exchanges)"
    );

    // The kernel closed the victim's connections; the survivors' are still open.
    let mut dead = 0;
    for c in &idle {
        if closed_by_peer(c)? {
            dead += 1;
        }
    }
    ensure!(
        dead == on_victim,
        "{dead} idle connections closed by the crash, {on_victim} were on worker {victim}"
    );
    let live = scene.nginx.process_count();
    ensure!(live == 1 + WORKERS, "nginx has {live} processes");
    let s = agent.wait_all(
        &[
            Expect::new(TARGET_PROCESSES, &[], live as f64),
            Expect::new(
                DOWN_CONNS,
                &[("state", "active")],
                base.get_or_zero(DOWN_CONNS, &[("state", "active")])? + (IDLE - dead) as f64,
            ),
        ],
        SETTLE_TIMEOUT,
    )?;
    drop(idle);

    let c = client.lock().unwrap();
    let s2 = settle(&agent, &base, &scene, &c, live)?;
    eprintln!(
        "worker_crash: killed {victim} (held {on_victim}/{IDLE} idle connections), respawned \
         {respawned:?}; client {after:?}; targets {} then {}; requests_all {}",
        s.require(TARGET_PROCESSES, &[])?,
        s2.require(TARGET_PROCESSES, &[])?,
        s2.require(REQUESTS_ALL, &[])?
    );
    Ok(())
}

#[test]
fn gains_workers() -> Result<()> {
    let mut scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let base = agent.scrape()?;
    let mut client = scene.client();
    mixed_traffic(&mut client)?;
    settle(&agent, &base, &scene, &client, 3)?;

    scene.nginx.set_workers(4)?;
    let new = scene.nginx.reload()?;
    ensure!(new.len() == 4, "new workers {new:?}");
    ensure!(scene.nginx.process_count() == 5);
    settle(&agent, &base, &scene, &client, 5)?;

    // Concurrent clients, so the connections spread over the new workers; each
    // keeps one connection open until all are open, so at least two workers serve.
    let port = scene.nginx.listen_port();
    let mut held = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut c = Client::new(port);
        held.push(c.idle_connection()?);
        handles.push(std::thread::spawn(move || -> Result<Client> {
            for _ in 0..5 {
                mixed_traffic(&mut c)?;
            }
            Ok(c)
        }));
    }
    let owners: BTreeSet<u32> = held
        .iter()
        .map(|c| worker_of(&scene, c))
        .collect::<Result<_>>()?;
    ensure!(
        owners.iter().all(|w| new.contains(w)),
        "connections on {owners:?}, new workers {new:?}"
    );
    drop(held);
    let mut all = Client::new(port);
    for h in handles {
        let c = h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        // Includes the held connection: one connection, no bytes.
        all.add_totals(c.totals());
    }
    all.add_totals(client.totals());
    let s = settle(&agent, &base, &scene, &all, 5)?;
    eprintln!(
        "gains_workers: workers {new:?}, idle connections landed on {owners:?}; \
         client {:?}; accepted {}",
        all.totals(),
        s.require(ACCEPTED, &[])?
    );
    Ok(())
}

/// Stops being a child subreaper on drop.
struct Subreaper;

impl Subreaper {
    fn on() -> Result<Self> {
        util::set_child_subreaper(true)?;
        Ok(Self)
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        let _ = util::set_child_subreaper(false);
    }
}

#[test]
fn binary_upgrade_style_restart() -> Result<()> {
    // Declared first, dropped last: nginx is stopped (and reaped) before.
    let _reaper = Subreaper::on()?;
    let mut scene = Scene::start_tuned(
        2,
        &Tuning {
            daemon: true,
            ..Tuning::default()
        },
    )?;
    let old = scene.nginx.master_pid();
    let agent = Agent::start(&[old], &[])?;
    let base = agent.scrape()?;
    let mut client = scene.client();
    mixed_traffic(&mut client)?;
    settle(&agent, &base, &scene, &client, 3)?;

    // USR2: old master + 2 workers, new master + 2 workers.
    let new = scene.nginx.upgrade_begin()?;
    let new_workers = util::children_of(new);
    mixed_traffic(&mut client)?;
    settle(&agent, &base, &scene, &client, 6)?;

    // WINCH + QUIT the old master: only the new generation is left.
    scene.nginx.upgrade_finish(new)?;
    ensure!(!util::is_alive(old), "old master {old} still alive");
    ensure!(scene.nginx.master_pid() == new);
    ensure!(scene.nginx.worker_pids() == new_workers);
    settle(&agent, &base, &scene, &client, 3)?;
    mixed_traffic(&mut client)?;
    let s = settle(&agent, &base, &scene, &client, 3)?;
    eprintln!(
        "binary_upgrade: master {old} -> {new} (workers {new_workers:?}); client {:?}; \
         accepted {}",
        client.totals(),
        s.require(ACCEPTED, &[])?
    );
    Ok(())
}

/// One scraper thread's tally.
#[derive(Debug, Default)]
struct ScrapeTally {
    ok: u64,
    /// Connection failures after SIGTERM was sent (the agent is going away).
    after_stop: u64,
}

#[test]
fn sigterm_under_load() -> Result<()> {
    let scene = Scene::start_tuned(
        2,
        &Tuning {
            upstream_keepalive: 64,
            ..Tuning::default()
        },
    )?;
    let mut agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let ours = bpftool::prog_ids_held_by(agent.pid())?;
    ensure!(!ours.is_empty(), "the agent holds no programs");
    let wrk = Wrk::spawn(
        &format!("http://127.0.0.1:{}/size/100", scene.nginx.listen_port()),
        2,
        50,
        10,
    )?;
    let started = Instant::now();

    let sigterm_sent = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let scrapers: Vec<_> = (0..4)
        .map(|i| {
            let (sent, stop, addr) = (sigterm_sent.clone(), stop.clone(), agent.addr().to_string());
            std::thread::spawn(move || -> Result<ScrapeTally> {
                let mut t = ScrapeTally::default();
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && t.ok < 100_000 {
                    match http_get(&addr, "/metrics") {
                        Ok((200, body)) => {
                            Scrape::parse(&body)
                                .with_context(|| format!("scraper {i}: unparsable scrape"))?;
                            t.ok += 1;
                        }
                        Ok((code, body)) => anyhow::bail!("scraper {i}: HTTP {code}: {body}"),
                        Err(_) if sent.load(Ordering::SeqCst) => {
                            t.after_stop += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => return Err(e.context(format!("scraper {i} before SIGTERM"))),
                    }
                }
                Ok(t)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(3));
    let s = agent.scrape()?;
    let accepted_at_stop = s.require(ACCEPTED, &[])?;
    sigterm_sent.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let stopped = agent.stop_ok();
    let exit_time = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut tallies = Vec::new();
    for h in scrapers {
        tallies.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("scraper panicked"))??,
        );
    }
    stopped?;
    // README: exit 0 within 2 s under load, the bound this asserts (and the
    // DaemonSet's terminationGracePeriodSeconds, 10, leaves room above). The
    // "about 0.4 s" there is a measurement of this machine (printed below),
    // not asserted: it is mostly the kernel's RCU grace periods, which the
    // host's load stretches.
    ensure!(
        exit_time <= Duration::from_secs(2),
        "exit took {exit_time:?}"
    );
    for (i, t) in tallies.iter().enumerate() {
        ensure!(t.ok >= 5, "scraper {i} got only {} scrapes in 3 s", t.ok);
    }

    // Program release after the last fd closes is asynchronous in the kernel.
    let left = util::poll(Duration::from_secs(3), "agent programs to unload", || {
        let now: BTreeSet<u32> = bpftool::progs()?.iter().map(|p| p.id).collect();
        let left: Vec<u32> = ours.intersection(&now).copied().collect();
        Ok(left.is_empty().then_some(left))
    });
    ensure!(
        left.is_ok(),
        "programs {ours:?} still loaded 3 s after exit"
    );

    let (sum, out) = wrk.wait()?;
    ensure!(
        sum.errors() == 0 && sum.requests > 0,
        "wrk saw errors: {sum:?}\n{out}"
    );
    ensure!(
        accepted_at_stop >= 50.0,
        "the agent saw only {accepted_at_stop} accepts under load"
    );
    for line in agent.stderr().lines().filter(|l| l.contains("elapsed")) {
        eprintln!("sigterm_under_load: agent: {line}");
    }
    eprintln!(
        "sigterm_under_load: exit 0 after {exit_time:?} ({:?} into the run); scrapes {:?}; \
         {} programs unloaded; wrk {sum:?}",
        t0.duration_since(started),
        tallies,
        ours.len()
    );
    Ok(())
}

#[test]
fn many_idle_connections() -> Result<()> {
    const N: usize = 50_000;
    /// Descriptors per process: the hard RLIMIT_NOFILE on our machines, which
    /// cannot be raised without CAP_SYS_RESOURCE. So nginx's side is spread
    /// over workers and the client's over processes, each under it.
    const NOFILE: u32 = 20_000;
    /// reuseport spreads connections evenly: 12,500 each, give or take ~100.
    const WORKERS: u32 = 4;
    const PER_CLIENT_PROCESS: usize = 12_500;
    /// The connections open, and close, as one burst: 50,000 in under a
    /// second, about 10 MB of records opening and 20 MB closing (README,
    /// "Bursts"). The default 4 MiB ring holds a fifth of that, and on two
    /// shared cores the agent does not drain it fast enough (measured: tens of
    /// thousands of records lost). 32 MiB holds a whole burst even if the
    /// agent read nothing meanwhile.
    const RING_BYTES: u32 = 32 << 20;
    /// The ring is mapped into the agent twice (2 x 32 MiB of VmRSS from the
    /// start); the rest is the agent's own.
    const RSS_LIMIT_KIB: u64 = 160 * 1024;
    /// README: at most 1 KiB of the agent's own memory per idle connection
    /// (measured 200 to 650 bytes).
    const PER_CONN_BYTES: u64 = 1024;
    /// README: not given back after they close, within this.
    const KEPT_SLACK_KIB: u64 = 2 * 1024;
    let hard = util::nofile_hard_limit()?;
    ensure!(
        hard >= u64::from(NOFILE),
        "RLIMIT_NOFILE hard limit {hard}: nginx's workers and the client processes \
         need {NOFILE} descriptors each for {N} connections"
    );
    let scene = Scene::start_tuned(
        WORKERS,
        &Tuning {
            worker_connections: NOFILE - 500,
            worker_rlimit_nofile: Some(NOFILE),
            reuseport: true,
            // Opening and settling must not race nginx closing idle
            // connections that never sent a request.
            client_header_timeout_s: Some(600),
            ..Tuning::default()
        },
    )?;
    let agent = Agent::start(
        &[scene.nginx.master_pid()],
        &["--ring-buffer-bytes", &RING_BYTES.to_string()],
    )?;
    let base = agent.scrape()?;
    for (map, cap) in [
        ("targets", 16_384.0),
        ("sockets", 262_144.0),
        ("args", 16_384.0),
        ("listen_ports", 1_024.0),
        ("ring_buffer_bytes", f64::from(RING_BYTES)),
    ] {
        let v = base.require(MAP_CAPACITY, &[("map", map)])?;
        ensure!(v == cap, "{MAP_CAPACITY}{{map={map:?}}} = {v}, want {cap}");
    }
    let active = [("state", "active")];
    let tracked = [("role", "downstream")];
    let b_active = base.get_or_zero(DOWN_CONNS, &active)?;
    let b_tracked = base.get_or_zero(CONNS_TRACKED, &tracked)?;
    let b_accepted = base.get_or_zero(ACCEPTED, &[])?;
    let no_loss = losses_from(&base, &[])?;
    ensure!(
        no_loss.iter().all(|e| e.value == 0.0),
        "losses before the test:\n{}",
        base.text
    );
    // (VmRSS, RssAnon): everything, and the agent's own heap and stacks.
    let rss = || -> Result<(u64, u64)> {
        Ok((
            util::vm_rss_kib(agent.pid())?,
            util::status_kib(agent.pid(), "RssAnon")?,
        ))
    };
    let rss_before = rss()?;

    let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, scene.nginx.listen_port());
    let t0 = Instant::now();
    let holders = Holders::open(
        Path::new(env!("CARGO_BIN_EXE_hold_conns")),
        dst,
        N,
        PER_CLIENT_PROCESS,
        Duration::from_mins(2),
    )?;
    let open_time = t0.elapsed();
    let mut exp = vec![
        Expect::new(DOWN_CONNS, &active, b_active + N as f64),
        Expect::new(CONNS_TRACKED, &tracked, b_tracked + N as f64),
        Expect::new(ACCEPTED, &[], b_accepted + N as f64),
    ];
    exp.extend(no_loss.iter().cloned());
    agent.wait_all(&exp, Duration::from_mins(1))?;
    let settle_time = t0.elapsed();
    let rss_open = rss()?;
    // README, "Bounded memory": at most 1 KiB of the agent's own memory per
    // open connection. RssAnon (heap and stacks, not the ring buffer's shared
    // mapping) may grow by no more than that.
    let growth_kib = rss_open.1.saturating_sub(rss_before.1);
    ensure!(
        growth_kib * 1024 <= PER_CONN_BYTES * N as u64,
        "agent RssAnon grew {growth_kib} KiB for {N} idle connections ({} B each, \
         limit {PER_CONN_BYTES} B): {rss_before:?} -> {rss_open:?} (VmRSS, RssAnon) KiB",
        growth_kib * 1024 / N as u64
    );
    ensure!(
        rss_open.0 < RSS_LIMIT_KIB,
        "agent VmRSS {} KiB with {N} idle connections (limit {RSS_LIMIT_KIB} KiB)",
        rss_open.0
    );
    let per_worker: Vec<(u32, usize)> = scene
        .nginx
        .worker_pids()
        .into_iter()
        .map(|w| (w, util::socket_inodes(w).len()))
        .collect();

    let t1 = Instant::now();
    holders.close()?;
    let mut exp = vec![
        Expect::new(DOWN_CONNS, &active, b_active),
        Expect::new(CONNS_TRACKED, &tracked, b_tracked),
        Expect::new(ACCEPTED, &[], b_accepted + N as f64),
    ];
    exp.extend(no_loss);
    agent.wait_all(&exp, Duration::from_mins(1))?;
    let close_time = t1.elapsed();
    let rss_after = rss()?;
    // README: after the connections close, the agent's memory is within the
    // same 1 KiB per connection over where it started (the burst of closes
    // may raise the high-water mark, but no further), and is not given back
    // (the table's allocation is kept for reuse).
    let kib = |r: (u64, u64)| r.1;
    ensure!(
        kib(rss_after).saturating_sub(kib(rss_before)) * 1024 <= PER_CONN_BYTES * N as u64,
        "agent RssAnon {} KiB after closing {N} connections, {} KiB before they opened: more \
         than {PER_CONN_BYTES} B per connection ({} KiB with them open)",
        kib(rss_after),
        kib(rss_before),
        kib(rss_open)
    );
    ensure!(
        kib(rss_after) + KEPT_SLACK_KIB >= kib(rss_open),
        "agent RssAnon {} KiB after closing {N} connections, {} KiB with them open: given \
         back, not kept at the high-water mark within {KEPT_SLACK_KIB} KiB",
        kib(rss_after),
        kib(rss_open)
    );
    ensure!(
        rss_after.0 < RSS_LIMIT_KIB,
        "agent VmRSS {} KiB after closing (limit {RSS_LIMIT_KIB} KiB)",
        rss_after.0
    );
    eprintln!(
        "many_idle_connections: {N} opened in {open_time:?} (counted by {settle_time:?}), \
         sockets per worker {per_worker:?}; agent (VmRSS, RssAnon) KiB: {rss_before:?} \
         before, {rss_open:?} with them open, {rss_after:?} after closing (closed and \
         settled in {close_time:?})"
    );
    Ok(())
}

/// Clients that send a request and reset before the gateway accepted them
/// (health probes with a short timeout, impatient clients). When nginx
/// accepts such a socket the kernel has already closed it, yet nginx still
/// reads the request queued before the reset. Each is counted accepted and
/// handled, its bytes downstream, and none stays active.
#[test]
fn client_resets_before_the_gateway_reads() -> Result<()> {
    const N: usize = 20;
    let scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let base = agent.scrape()?;
    let request = "GET /size/100 HTTP/1.1\r\nHost: gatescope\r\n\r\n";

    // Workers stopped: the kernel completes each handshake and queues the
    // request, then the reset closes the socket, all before any accept().
    scene.nginx.freeze_workers(true)?;
    let sent = (|| -> Result<()> {
        for _ in 0..N {
            let mut s = TcpStream::connect(scene.nginx.listen_addr())?;
            s.write_all(request.as_bytes())?;
            util::set_linger_zero(s.as_raw_fd())?;
        }
        Ok(())
    })();
    scene.nginx.freeze_workers(false)?;
    sent?;

    let listener = [("listener", scene.nginx.listen_addr())];
    let lb = |dir: &'static str| [("direction", dir), ("listener", listener[0].1.as_str())];
    let expect = |name: &str, labels: &[(&str, &str)], delta: f64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            labels,
            base.get_or_zero(name, labels)? + delta,
        ))
    };
    let found = [("kind", "conn_found")];
    agent
        .wait_all(
            &[
                expect(ACCEPTED, &[], N as f64)?,
                expect(HANDLED, &[], N as f64)?,
                expect(DOWN_BYTES, &lb("ingress"), (N * request.len()) as f64)?,
                expect(DOWN_BYTES, &lb("egress"), 0.0)?,
                expect(DOWN_CONNS, &[("state", "active")], 0.0)?,
                expect(CONNS_TRACKED, &[("role", "downstream")], 0.0)?,
                expect(EVENTS_RECEIVED, &found, 0.0)?,
                // Each request as nginx logs it: read, abandoned (499).
                expect(REQUESTS_ALL, &[], N as f64)?,
            ],
            SETTLE_TIMEOUT,
        )
        .with_context(|| scene.nginx.diagnostics())?;
    let s = agent.scrape()?;
    no_losses(&s)?;
    let codes = sum_by_code(&s, HTTP_REQUESTS);
    ensure!(
        codes == [("499".to_owned(), N as f64)].into(),
        "requests by code: {codes:?}"
    );
    // nginx's own account agrees: it read every request in full, after the
    // client had gone (499), and sent nothing.
    let log = scene.nginx.wait_access_log(N, SETTLE_TIMEOUT)?;
    ensure!(
        log.len() == N
            && log.iter().all(|e| e.status == 499
                && e.request_length == request.len() as u64
                && e.bytes_sent == 0),
        "access log: {log:?}"
    );
    Ok(())
}
