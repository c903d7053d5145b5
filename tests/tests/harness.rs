//! Self-test of the harness without the agent: the client's and the upstream's own
//! byte counts must equal what nginx itself logs ($request_length, $bytes_sent,
//! $upstream_bytes_sent, $upstream_bytes_received), and reload must swap workers.

use anyhow::{ensure, Context, Result};
use gatescope_tests::{util, Scene};
use std::time::Duration;

#[test]
fn byte_counts_match_nginx_access_log() -> Result<()> {
    let scene = Scene::start(2)?;
    let mut client = scene.client();
    let one_shots = [
        client.one_shot("/size/1234")?,
        client.one_shot("/size/0")?,
        client.one_shot_post("/size/100", 5000)?,
        client.one_shot("/size/70000")?,
    ];
    let ka = client.keep_alive(4, "/size/300")?;
    let log = scene
        .nginx
        .wait_access_log(one_shots.len() + 4, Duration::from_secs(5))?;
    ensure!(log.len() == 8, "access log: {log:?}");
    ensure!(log.iter().all(|e| e.status == 200), "access log: {log:?}");
    // Each one-shot has its own line, whatever the order: nginx logs a
    // request with a body after its lingering close, which can end after
    // the next connection's request was logged by the other worker (CI saw
    // the POST's line after the next GET's).
    let mut ka_log = log.clone();
    for (i, t) in one_shots.iter().enumerate() {
        let at = ka_log
            .iter()
            .position(|e| t.written == e.request_length && t.read == e.bytes_sent)
            .with_context(|| {
                format!(
                    "one-shot {i}: client wrote {} read {}, no such line in {log:?}",
                    t.written, t.read
                )
            })?;
        ka_log.remove(at);
    }
    let ka_log = &ka_log[..];
    ensure!(
        ka_log.iter().all(|e| e.connection == ka_log[0].connection),
        "keep-alive requests on several connections: {ka_log:?}"
    );
    let sum = |f: fn(&gatescope_tests::nginx::AccessLogEntry) -> u64, l: &[_]| -> u64 {
        l.iter().map(f).sum()
    };
    ensure!(
        ka.written == sum(|e| e.request_length, ka_log),
        "keep-alive written {ka:?} vs {ka_log:?}"
    );
    ensure!(
        ka.read == sum(|e| e.bytes_sent, ka_log),
        "keep-alive read {ka:?} vs {ka_log:?}"
    );

    let tot = client.totals();
    ensure!(tot.connections == 5 && tot.requests == 8, "{tot:?}");
    // The upstream's own counts against nginx's view of the upstream leg.
    let st = util::poll(Duration::from_secs(5), "upstream counts", || {
        let st = scene.upstream.stats();
        Ok((st.requests == 8).then_some(st))
    })?;
    ensure!(
        st.bytes_received == sum(|e| e.upstream_bytes_sent, &log),
        "upstream received {} but nginx logged {} sent: {log:?}",
        st.bytes_received,
        sum(|e| e.upstream_bytes_sent, &log)
    );
    ensure!(
        st.bytes_sent == sum(|e| e.upstream_bytes_received, &log),
        "upstream sent {} but nginx logged {} received",
        st.bytes_sent,
        sum(|e| e.upstream_bytes_received, &log)
    );
    // nginx keeps its upstream connections alive and idle.
    ensure!(st.accepted >= 1 && st.accepted <= 8, "{st:?}");
    ensure!(
        st.open == st.accepted,
        "upstream closed idle keep-alive conns: {st:?}"
    );
    Ok(())
}

#[test]
fn reload_replaces_workers() -> Result<()> {
    let mut scene = Scene::start(3)?;
    let old = scene.nginx.worker_pids();
    ensure!(old.len() == 3, "{old:?}");
    traffic(&scene)?;
    let new = scene.nginx.reload()?;
    ensure!(
        new.len() == 3 && new.iter().all(|p| !old.contains(p)),
        "{old:?} -> {new:?}"
    );
    ensure!(scene.nginx.process_count() == 4);
    traffic(&scene)?;
    Ok(())
}

fn traffic(scene: &Scene) -> Result<()> {
    let mut c = scene.client();
    c.one_shot("/size/10")?;
    c.keep_alive(2, "/size/20")?;
    Ok(())
}
