//! Capacities (issue 4): a full socket map refuses new connections and counts
//! each refusal, never evicting a tracked one; closed connections free their
//! entries, so a flood of short connections far larger than the cap is
//! tracked and counted exactly.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::Client;
use gatescope_tests::expect::{losses_from, nothing_untracked, settled_upstream, traffic_deltas};
use gatescope_tests::metrics::*;
use gatescope_tests::{util, Scene};
use std::time::Instant;

#[test]
fn connection_flood() -> Result<()> {
    const CAP: usize = 1_000;
    const IDLE: usize = 1_200;
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2_500;
    /// Holds every record of the flood (about 2 KB per one-shot exchange)
    /// even if the agent read nothing meanwhile: on two cores shared with
    /// other builds and tests the agent may get little CPU while the clients
    /// run, and with the default 4 MiB ring a 10,000-exchange flood lost tens
    /// of thousands of records here. Ring sizing is not what this test is
    /// about (README, "Bursts").
    const RING_BYTES: u32 = 32 << 20;
    /// The agent's whole VmRSS: the ring is mapped twice (64 MiB from the
    /// start), the rest is its own.
    const RSS_LIMIT_KIB: u64 = 128 * 1024;
    let full = [("reason", "sockets_map_full")];
    let active = [("state", "active")];
    let down = [("role", "downstream")];
    let up = [("role", "upstream")];
    // This process holds the idle connections itself.
    util::raise_nofile(IDLE as u64 + 1_000)?;
    let scene = Scene::start(2)?;
    let agent = Agent::start(
        &[scene.nginx.master_pid()],
        &[
            "--max-sockets",
            &CAP.to_string(),
            "--ring-buffer-bytes",
            &RING_BYTES.to_string(),
        ],
    )?;
    let base = agent.scrape()?;
    let cap = base.require(MAP_CAPACITY, &[("map", "sockets")])?;
    ensure!(
        cap == CAP as f64,
        "{MAP_CAPACITY}{{map=\"sockets\"}} = {cap}"
    );
    // Nothing tracked yet, so the cap leaves room for exactly CAP.
    for role in [down, up] {
        let v = base.get_or_zero(CONNS_TRACKED, &role)?;
        ensure!(v == 0.0, "{CONNS_TRACKED}{role:?} = {v} before any traffic");
    }
    let b_active = base.get_or_zero(DOWN_CONNS, &active)?;
    let b_accepted = base.get_or_zero(ACCEPTED, &[])?;

    // More idle connections than the cap: the first CAP are tracked, the rest
    // refused and counted once each; every one is still accepted (the accept
    // count does not use the socket map).
    let mut client = scene.client();
    let idle = (0..IDLE)
        .map(|i| {
            client
                .idle_connection()
                .with_context(|| format!("idle connection {i}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let refused = (IDLE - CAP) as u64;
    let mut exp = vec![
        Expect::new(CONNS_TRACKED, &down, CAP as f64),
        Expect::new(DOWN_CONNS, &active, b_active + CAP as f64),
        Expect::new(ACCEPTED, &[], b_accepted + IDLE as f64),
    ];
    exp.extend(losses_from(&base, &[("sockets_map_full", refused)])?);
    let with_idle = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    let rss_full = util::vm_rss_kib(agent.pid())?;

    // Closing them frees every entry.
    drop(idle);
    let mut exp = vec![
        Expect::new(CONNS_TRACKED, &down, 0.0),
        Expect::new(DOWN_CONNS, &active, b_active),
        Expect::new(ACCEPTED, &[], b_accepted + IDLE as f64),
    ];
    exp.extend(losses_from(&base, &[("sockets_map_full", refused)])?);
    let closed = agent.wait_all(&exp, SETTLE_TIMEOUT)?;

    // The flood: concurrent one-shot exchanges (connect, request, response,
    // close), several times the cap in all but never many open at once.
    let port = scene.nginx.listen_port();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || -> Result<Client> {
                let mut c = Client::new(port);
                for _ in 0..PER_THREAD {
                    c.one_shot("/size/100")?;
                }
                Ok(c)
            })
        })
        .collect();
    let mut flood = Client::new(port);
    for h in handles {
        let c = h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        flood.add_totals(c.totals());
    }
    let flood_time = t0.elapsed();
    let t = flood.totals();
    ensure!(
        t.connections as usize == THREADS * PER_THREAD && t.connections as usize > CAP,
        "flood made {t:?}"
    );
    let upstream = settled_upstream(&scene, t.requests)?;
    let (l, p) = (scene.nginx.listen_addr(), scene.upstream.addr());
    let mut exp = traffic_deltas(&closed, &l, &p, &t, &upstream)?;
    exp.push(Expect::new(
        REQUESTS_ALL,
        &[],
        closed.get_or_zero(REQUESTS_ALL, &[])? + t.requests as f64,
    ));
    // (Upstream connections nginx closed stay tracked until the upstream
    // closes its end too, so only the open ones are exact: in the deltas.)
    exp.push(Expect::new(CONNS_TRACKED, &down, 0.0));
    exp.extend(nothing_untracked(&closed)?);
    // No new loss of any kind.
    exp.extend(losses_from(&closed, &[])?);
    let after = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    let rss = util::vm_rss_kib(agent.pid())?;
    ensure!(
        rss_full < RSS_LIMIT_KIB && rss < RSS_LIMIT_KIB,
        "agent VmRSS {rss_full} KiB with the map full, {rss} KiB after the flood \
         (limit {RSS_LIMIT_KIB} KiB)"
    );
    eprintln!(
        "connection_flood: cap {CAP}; {IDLE} idle: tracked {}, refused {}, accepted {}; \
         flood of {} one-shot connections ({} requests) in {flood_time:?}: accepted {}, \
         requests {}, upstream connections {}; agent VmRSS {rss_full} KiB with the map \
         full, {rss} KiB after",
        with_idle.require(CONNS_TRACKED, &down)?,
        with_idle.require(EVENTS_LOST, &full)?,
        with_idle.require(ACCEPTED, &[])? - b_accepted,
        t.connections,
        t.requests,
        after.require(ACCEPTED, &[])? - closed.require(ACCEPTED, &[])?,
        after.require(REQUESTS_ALL, &[])? - closed.get_or_zero(REQUESTS_ALL, &[])?,
        upstream.accepted,
    );
    Ok(())
}
