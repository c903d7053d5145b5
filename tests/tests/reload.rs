//! Totals survive `nginx -s reload` (SIGHUP): the agent follows the new workers
//! forked by the master and counts traffic before and after exactly.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::Client;
use gatescope_tests::expect::{
    mixed_traffic, no_losses, nothing_untracked, settled_upstream, traffic_deltas,
};
use gatescope_tests::metrics::*;
use gatescope_tests::prom::Scrape;
use gatescope_tests::upstream::UpstreamStats;
use gatescope_tests::Scene;

/// The shared deltas plus what this test also holds: every connection was
/// handled, and none predates the agent.
fn expectations(
    base: &Scrape,
    l: &str,
    p: &str,
    c: &Client,
    up: &UpstreamStats,
) -> Result<Vec<Expect>> {
    let t = c.totals();
    let mut exp = traffic_deltas(base, l, p, &t, up)?;
    exp.push(Expect::new(
        HANDLED,
        &[],
        base.get_or_zero(HANDLED, &[])? + t.connections as f64,
    ));
    exp.extend(nothing_untracked(base)?);
    Ok(exp)
}

#[test]
fn reload() -> Result<()> {
    const WORKERS: u32 = 2;
    let mut scene = Scene::start(WORKERS)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let l = scene.nginx.listen_addr();
    let p = scene.upstream.addr();
    let base = agent.scrape()?;
    let procs = |n: usize| Expect::new(TARGET_PROCESSES, &[], n as f64);

    let mut client = scene.client();
    mixed_traffic(&mut client)?;
    let up = settled_upstream(&scene, client.totals().requests)?;
    let mut exp = expectations(&base, &l, &p, &client, &up)?;
    exp.push(procs(1 + WORKERS as usize));
    agent.wait_all(&exp, SETTLE_TIMEOUT)?;

    // All client connections are closed, so the old workers exit promptly.
    let old = scene.nginx.worker_pids();
    let new = scene.nginx.reload()?;
    ensure!(new.iter().all(|w| !old.contains(w)), "{old:?} -> {new:?}");
    let live = scene.nginx.process_count();
    ensure!(live == 1 + WORKERS as usize, "nginx has {live} processes");
    let up = settled_upstream(&scene, client.totals().requests)?;
    let mut exp = expectations(&base, &l, &p, &client, &up)?;
    exp.push(procs(live));
    agent.wait_all(&exp, SETTLE_TIMEOUT)?;

    mixed_traffic(&mut client)?;
    let up = settled_upstream(&scene, client.totals().requests)?;
    let mut exp = expectations(&base, &l, &p, &client, &up)?;
    exp.push(procs(scene.nginx.process_count()));
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    no_losses(&s)?;

    // A second reload, with traffic on the new generation only.
    scene.nginx.reload()?;
    mixed_traffic(&mut client)?;
    let up = settled_upstream(&scene, client.totals().requests)?;
    let mut exp = expectations(&base, &l, &p, &client, &up)?;
    exp.push(procs(scene.nginx.process_count()));
    agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    Ok(())
}
