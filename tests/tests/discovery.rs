//! `--discover NAME` (issue 4: the gateway is restarted): processes whose
//! command name is NAME are observed with their descendants, whether they run
//! when the agent starts or start later, including a new master that is not a
//! descendant of the old one after a full stop and start. A gateway that
//! starts later is observed from its exec by the kernel programs alone: the
//! agent is stopped (SIGSTOP) from before it starts until its traffic ends.
//!
//! nginx runs from a copy of its binary under a name unique to this test
//! ([`RenamedBinary`]), so other nginx processes on the machine (other
//! people's tests) are never discovered.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{run_to_exit, Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::Client;
use gatescope_tests::expect::{
    mixed_traffic, no_losses, nothing_untracked, settled_upstream, traffic_deltas,
};
use gatescope_tests::metrics::*;
use gatescope_tests::nginx::{Nginx, NginxConfig, RenamedBinary, Tuning};
use gatescope_tests::prom::Scrape;
use gatescope_tests::upstream::Upstream;
use gatescope_tests::{util, Scene};
use std::time::Duration;

const WORKERS: u32 = 2;

/// Upstream plus nginx run from `bin` on `listen_port`.
fn start_scene(upstream: Upstream, bin: &RenamedBinary, listen_port: u16) -> Result<Scene> {
    let nginx = start_nginx(&upstream, bin, listen_port)?;
    Ok(Scene { upstream, nginx })
}

fn start_nginx(upstream: &Upstream, bin: &RenamedBinary, listen_port: u16) -> Result<Nginx> {
    Nginx::start_tuned(
        &NginxConfig {
            workers: WORKERS,
            listen_port,
            upstream_port: upstream.port(),
        },
        &Tuning {
            bin: Some(bin.path().to_path_buf()),
            ..Tuning::default()
        },
    )
}

fn agent_discovering(bin: &RenamedBinary) -> Result<Agent> {
    Agent::start(&[], &["--discover", bin.name()])
}

/// Everything the client's and the upstream's counts since `base` determine,
/// every connection handled and none predating the agent, nothing lost, and
/// the agent's view of the gateway: `procs` processes, one listening socket.
fn settle(agent: &Agent, base: &Scrape, scene: &Scene, c: &Client, procs: usize) -> Result<Scrape> {
    let t = c.totals();
    let up = settled_upstream(scene, t.requests)?;
    let (l, p) = (scene.nginx.listen_addr(), scene.upstream.addr());
    let mut exp = traffic_deltas(base, &l, &p, &t, &up)?;
    let plus = |name: &str, n: u64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            &[],
            base.get_or_zero(name, &[])? + n as f64,
        ))
    };
    exp.push(plus(REQUESTS_ALL, t.requests)?);
    exp.push(plus(HANDLED, t.connections)?);
    exp.extend(nothing_untracked(base)?);
    exp.push(Expect::new(TARGET_PROCESSES, &[], procs as f64));
    exp.push(Expect::new(LISTEN_SOCKETS, &[], 1.0));
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    no_losses(&s)?;
    Ok(s)
}

fn events(s: &Scrape, kind: &str) -> Result<f64> {
    s.get_or_zero(EVENTS_RECEIVED, &[("kind", kind)])
}

/// (a) The agent starts first, with nothing to observe; nginx starts later
/// and is observed from its exec on. (b) nginx is stopped completely and a new
/// one (a new master, child of this test, not of the old master) starts on
/// the same port: the old processes leave the target set, the new ones join,
/// and the traffic of both generations is counted exactly once.
#[test]
fn discovers_a_gateway_started_later_and_restarted() -> Result<()> {
    let bin = RenamedBinary::new("gsng")?;
    let agent = agent_discovering(&bin)?;
    let base = agent.wait_all(
        &[
            Expect::new(TARGET_PROCESSES, &[], 0.0),
            Expect::new(LISTEN_SOCKETS, &[], 0.0),
        ],
        SETTLE_TIMEOUT,
    )?;

    // (a) Traffic right after nginx listens: the kernel made its master a
    // target at exec and learnt its port at listen(), whenever the agent's
    // next /proc reconcile comes. The agent is stopped from before nginx
    // starts until the traffic ends, so its once-a-second /proc scan cannot
    // have found nginx in time: the exact counts below hold only if the
    // kernel programs made nginx and its workers targets by themselves. Their
    // records wait in the ring buffer (4 MiB by default; a few hundred KB for
    // this traffic), and no loss is asserted.
    let port = util::free_port()?;
    let upstream = Upstream::start()?;
    agent.freeze(true)?;
    let frozen = (|| -> Result<(Scene, Client)> {
        let scene = start_scene(upstream, &bin, port)?;
        let mut client = scene.client();
        mixed_traffic(&mut client)?;
        Ok((scene, client))
    })();
    agent.freeze(false)?;
    let (mut scene, mut client) = frozen?;
    let first = scene.nginx.process_count();
    ensure!(first == 1 + WORKERS as usize, "nginx has {first} processes");
    let s = settle(&agent, &base, &scene, &client, first)?;
    ensure!(
        events(&s, "exec")? == 1.0,
        "one nginx started, one exec discovered:\n{}",
        s.text
    );

    // (b) A full stop: the master and its workers are gone before the next
    // nginx starts.
    let mut old = scene.nginx.worker_pids();
    old.push(scene.nginx.master_pid());
    scene.nginx.stop();
    ensure!(
        old.iter().all(|p| !util::is_alive(*p)),
        "nginx {old:?} still running after stop"
    );
    let up = settled_upstream(&scene, client.totals().requests)?;
    ensure!(
        up.open == 0,
        "the old workers left {up:?} upstream connections"
    );
    let peer = scene.upstream.addr();
    agent.wait_all(
        &[
            Expect::new(TARGET_PROCESSES, &[], 0.0),
            Expect::new(LISTEN_SOCKETS, &[], 0.0),
            Expect::new(UP_CONNS, &[("peer", peer.as_str())], 0.0),
        ],
        SETTLE_TIMEOUT,
    )?;

    // Stopped again from before the new nginx starts until its traffic ends.
    agent.freeze(true)?;
    let frozen = (|| -> Result<Nginx> {
        let nginx = start_nginx(&scene.upstream, &bin, port)?;
        mixed_traffic(&mut client)?;
        mixed_traffic(&mut client)?;
        Ok(nginx)
    })();
    agent.freeze(false)?;
    scene.nginx = frozen?;
    let master = scene.nginx.master_pid();
    ensure!(!old.contains(&master), "pid {master} reused");
    let parent = util::proc_stat(master).map(|s| s.ppid);
    ensure!(
        parent == Some(std::process::id()),
        "the new master {master} is a child of {parent:?}, not of this test"
    );
    let now = scene.nginx.process_count();
    ensure!(now == 1 + WORKERS as usize, "nginx has {now} processes");
    let s = settle(&agent, &base, &scene, &client, now)?;
    ensure!(
        events(&s, "exec")? == 2.0,
        "two nginx starts, two execs discovered:\n{}",
        s.text
    );
    eprintln!(
        "discovery: {} ({first} processes) stopped, then {master} and workers {:?}; \
         client {:?}; accepted {}",
        old.last().unwrap_or(&0),
        scene.nginx.worker_pids(),
        client.totals(),
        s.require(ACCEPTED, &[])?
    );
    Ok(())
}

/// A gateway already running when the agent starts is found by its command
/// name in /proc, master and workers.
#[test]
fn discovers_a_gateway_running_at_start() -> Result<()> {
    let bin = RenamedBinary::new("gsnr")?;
    let scene = start_scene(Upstream::start()?, &bin, util::free_port()?)?;
    let agent = agent_discovering(&bin)?;
    let base = agent.scrape()?;
    let mut client = scene.client();
    mixed_traffic(&mut client)?;
    let procs = scene.nginx.process_count();
    ensure!(procs == 1 + WORKERS as usize, "nginx has {procs} processes");
    let s = settle(&agent, &base, &scene, &client, procs)?;
    ensure!(
        events(&s, "exec")? == 0.0,
        "nothing exec'd since the agent started:\n{}",
        s.text
    );
    Ok(())
}

/// Neither `--pid` nor `--discover`: a usage error naming both, before
/// anything is loaded.
#[test]
fn needs_a_pid_or_a_name() -> Result<()> {
    let listen = format!("127.0.0.1:{}", util::free_port()?);
    let args = ["--listen".to_string(), listen];
    let (st, err) = run_to_exit(&[], &args, Duration::from_secs(30))?;
    ensure!(
        st.code() == Some(2),
        "exit status {st}, want 2; stderr:\n{err}"
    );
    ensure!(
        err.lines().any(|l| l.starts_with("error: "))
            && err.contains("--pid")
            && err.contains("--discover"),
        "stderr:\n{err}"
    );
    let (st, err) = run_to_exit(
        &[],
        &["--discover".into(), "sixteen-bytes-xy".into()],
        Duration::from_secs(30),
    )?;
    ensure!(
        st.code() == Some(2),
        "exit status {st}, want 2; stderr:\n{err}"
    );
    ensure!(err.contains("at most 15"), "stderr:\n{err}");
    Ok(())
}
