//! Resets on the gateway's connections are counted per listener and per
//! upstream peer (tcp:tcp_receive_reset on tracked sockets), exactly.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::{reset_clients, Conn, Req};
use gatescope_tests::Scene;

const DOWN_TCP: &str = "gatescope_downstream_tcp_events_total";
const UP_TCP: &str = "gatescope_upstream_tcp_events_total";

#[test]
fn resets_are_counted_per_listener_and_peer() -> Result<()> {
    let scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let listener = scene.nginx.listen_addr();
    let peer = scene.upstream.addr();
    let base = agent.scrape()?;

    // Clients that reset their connections to the gateway.
    reset_clients(scene.nginx.listen_port(), 5)?;
    // Requests whose upstream resets the gateway's connection: nginx answers
    // 502 to the client.
    let mut conn = Conn::open(scene.nginx.listen_port())?;
    for _ in 0..3 {
        let sent = conn.exchange(Req::get("/reset"))?;
        ensure!(
            sent.status == 502,
            "/reset through nginx gave {}",
            sent.status
        );
    }

    let down = [("listener", listener.as_str()), ("event", "reset_received")];
    let up = [("peer", peer.as_str()), ("event", "reset_received")];
    agent.wait_all(
        &[
            Expect::new(DOWN_TCP, &down, base.get_or_zero(DOWN_TCP, &down)? + 5.0),
            Expect::new(UP_TCP, &up, base.get_or_zero(UP_TCP, &up)? + 3.0),
        ],
        SETTLE_TIMEOUT,
    )?;
    Ok(())
}
