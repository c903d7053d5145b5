//! Downstream and upstream connection and byte counters against the client's and
//! the upstream's own exact counts (nginx with 2 workers, agent on the master).

use anyhow::{ensure, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::expect::{no_losses, nothing_untracked, traffic_deltas};
use gatescope_tests::metrics::*;
use gatescope_tests::{util, Scene};
use std::time::Duration;

#[test]
fn connections_and_bytes() -> Result<()> {
    let scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let listener = scene.nginx.listen_addr();
    let peer = scene.upstream.addr();
    let l = listener.as_str();
    let p = peer.as_str();

    let base = agent.scrape()?;
    for reason in LOST_REASONS {
        base.require(EVENTS_LOST, &[("reason", reason)])?;
    }
    let b = |name: &str, labels: &[(&str, &str)]| base.get_or_zero(name, labels);

    // C one-shot connections (GETs of several sizes and POSTs with bodies) and K
    // keep-alive connections with several requests each.
    let mut client = scene.client();
    let one_shot_sizes = [0usize, 1, 1234, 16384, 100_000];
    for s in one_shot_sizes {
        client.one_shot(&format!("/size/{s}"))?;
    }
    client.one_shot_post("/size/10", 3000)?;
    client.one_shot_post("/size/50000", 70_000)?;
    let c = one_shot_sizes.len() as u64 + 2;
    let keep_alive = [
        (3usize, "/size/100"),
        (5, "/size/4096"),
        (2, "/size/200000"),
    ];
    for (n, path) in keep_alive {
        client.keep_alive(n, path)?;
    }
    let k = keep_alive.len() as u64;
    // Concurrent clients, so both workers and interleaved syscalls are exercised.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let mut c = scene.client();
            std::thread::spawn(move || -> Result<_> {
                for j in 0..3 {
                    c.one_shot(&format!("/size/{}", 1000 * i + j))?;
                    c.keep_alive(3, &format!("/size/{}", 20_000 + i))?;
                }
                Ok(c.totals())
            })
        })
        .collect();
    let mut t = client.totals();
    for th in threads {
        t += th.join().expect("client thread panicked")?;
    }
    let (c, k) = (c + 12, k + 12);
    ensure!(t.connections == c + k);

    // The upstream has answered every request once the client has its responses;
    // wait for its counters to settle (the last write is counted after write_all).
    let up = util::poll(Duration::from_secs(5), "upstream request count", || {
        let st = scene.upstream.stats();
        Ok((st.requests == t.requests).then_some(st))
    })?;
    ensure!(
        up.open >= 1,
        "nginx kept no idle upstream connection: {up:?}"
    );

    // Accepted, bytes both ways on both legs, upstream connections and active
    // back to its base; plus every connection handled and none untracked.
    let mut exp = traffic_deltas(&base, l, p, &t, &up)?;
    exp.push(Expect::new(HANDLED, &[], b(HANDLED, &[])? + (c + k) as f64));
    exp.extend(nothing_untracked(&base)?);
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    no_losses(&s)?;
    ensure!(
        s.require(TARGET_PROCESSES, &[])? == scene.nginx.process_count() as f64,
        "target processes vs nginx's {} processes:\n{}",
        scene.nginx.process_count(),
        s.text
    );
    // The upstream still holds exactly the idle keep-alive connections it had.
    ensure!(
        scene.upstream.stats() == up,
        "upstream changed: {:?} vs {up:?}",
        scene.upstream.stats()
    );
    Ok(())
}
