//! Totals survive `nginx -s reload` (SIGHUP): the agent follows the new workers
//! forked by the master and counts traffic before and after exactly.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::Client;
use gatescope_tests::metrics::*;
use gatescope_tests::upstream::UpstreamStats;
use gatescope_tests::{util, Scene};
use std::time::Duration;

fn traffic(client: &mut Client) -> Result<()> {
    client.one_shot("/size/777")?;
    client.one_shot_post("/size/10", 2048)?;
    client.keep_alive(3, "/size/5000")?;
    client.keep_alive(2, "/size/1")?;
    Ok(())
}

/// Upstream counters once every request was answered and the open count held
/// still for 300 ms (old workers close their idle upstream connections on exit).
fn settled_upstream(scene: &Scene, requests: u64) -> Result<UpstreamStats> {
    let mut last = None;
    util::poll(Duration::from_secs(10), "upstream to settle", || {
        let st = scene.upstream.stats();
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

fn expectations(
    base: &gatescope_tests::prom::Scrape,
    l: &str,
    p: &str,
    c: &Client,
    up: &UpstreamStats,
) -> Result<Vec<Expect>> {
    let b = |name: &str, labels: &[(&str, &str)]| base.get_or_zero(name, labels);
    let t = c.totals();
    let f = |x: u64| x as f64;
    Ok(vec![
        Expect::new(ACCEPTED, &[], b(ACCEPTED, &[])? + f(t.connections)),
        Expect::new(HANDLED, &[], b(HANDLED, &[])? + f(t.connections)),
        Expect::new(
            DOWN_BYTES,
            &[("listener", l), ("direction", "ingress")],
            b(DOWN_BYTES, &[("listener", l), ("direction", "ingress")])? + f(t.written),
        ),
        Expect::new(
            DOWN_BYTES,
            &[("listener", l), ("direction", "egress")],
            b(DOWN_BYTES, &[("listener", l), ("direction", "egress")])? + f(t.read),
        ),
        Expect::new(
            UP_BYTES,
            &[("peer", p), ("direction", "egress")],
            b(UP_BYTES, &[("peer", p), ("direction", "egress")])? + f(up.bytes_received),
        ),
        Expect::new(
            UP_BYTES,
            &[("peer", p), ("direction", "ingress")],
            b(UP_BYTES, &[("peer", p), ("direction", "ingress")])? + f(up.bytes_sent),
        ),
        Expect::new(
            UP_OPENED,
            &[("peer", p)],
            b(UP_OPENED, &[("peer", p)])? + f(up.accepted),
        ),
        Expect::new(UP_CONNS, &[("peer", p)], f(up.open)),
        Expect::new(
            DOWN_CONNS,
            &[("state", "active")],
            b(DOWN_CONNS, &[("state", "active")])?,
        ),
        // Every socket was opened after the agent started.
        Expect::new(
            UNTRACKED_BYTES,
            &[("direction", "ingress")],
            b(UNTRACKED_BYTES, &[("direction", "ingress")])?,
        ),
        Expect::new(
            UNTRACKED_BYTES,
            &[("direction", "egress")],
            b(UNTRACKED_BYTES, &[("direction", "egress")])?,
        ),
    ])
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
    traffic(&mut client)?;
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

    traffic(&mut client)?;
    let up = settled_upstream(&scene, client.totals().requests)?;
    let mut exp = expectations(&base, &l, &p, &client, &up)?;
    exp.push(procs(scene.nginx.process_count()));
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    for reason in LOST_REASONS {
        let v = s.require(EVENTS_LOST, &[("reason", reason)])?;
        ensure!(v == 0.0, "events lost ({reason}) = {v}\n{}", s.text);
    }

    // A second reload, with traffic on the new generation only.
    scene.nginx.reload()?;
    traffic(&mut client)?;
    let up = settled_upstream(&scene, client.totals().requests)?;
    let mut exp = expectations(&base, &l, &p, &client, &up)?;
    exp.push(procs(scene.nginx.process_count()));
    agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    Ok(())
}
