//! Resets on the gateway's connections are counted per listener and per
//! upstream peer (tcp:tcp_receive_reset on tracked sockets), exactly.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::{reset_clients, Conn, Req};
use gatescope_tests::metrics::{REQUESTS_ALL, UP_BYTES};
use gatescope_tests::{util, Scene};
use std::time::Duration;

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

/// An upstream that answers in full and then resets: the gateway reads the
/// response from a socket the kernel has already closed (its workers are
/// held stopped until then). The upstream call counts with its real status,
/// its bytes as the upstream's own count, as nginx's access log has it.
#[test]
fn upstream_reply_then_reset_is_read_after_the_close() -> Result<()> {
    const UP_REQUESTS: &str = "gatescope_http_upstream_requests_total";
    let scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let peer = scene.upstream.addr();
    let base = agent.scrape()?;
    let up_base = scene.upstream.stats();

    let port = scene.nginx.listen_port();
    let client = std::thread::spawn(move || -> Result<u16> {
        let mut conn = Conn::open(port)?;
        Ok(conn.exchange(Req::get("/reply-reset/300"))?.status)
    });
    // Once the request is with the upstream (which answers 300 ms later and
    // resets), the workers stop: the answer and the reset wait in the kernel.
    util::poll(
        Duration::from_secs(5),
        "the request to reach the upstream",
        || Ok((scene.upstream.stats().bytes_received > up_base.bytes_received).then_some(())),
    )?;
    scene.nginx.freeze_workers(true)?;
    std::thread::sleep(Duration::from_millis(500));
    scene.nginx.freeze_workers(false)?;
    let status = client.join().expect("client thread")?;
    ensure!(status == 200, "the client got {status}");
    let up = scene.upstream.stats();
    let response = up.bytes_sent - up_base.bytes_sent;

    let code = |c: &'static str| [("peer", peer.as_str()), ("code", c)];
    let up_in = [("direction", "ingress"), ("peer", peer.as_str())];
    let delta = |name: &str, labels: &[(&str, &str)], d: f64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            labels,
            base.get_or_zero(name, labels)? + d,
        ))
    };
    agent.wait_all(
        &[
            delta(UP_REQUESTS, &code("200"), 1.0)?,
            delta(UP_REQUESTS, &code("0"), 0.0)?,
            delta(UP_BYTES, &up_in, response as f64)?,
            delta(REQUESTS_ALL, &[], 1.0)?,
        ],
        SETTLE_TIMEOUT,
    )?;
    // The client's request is joined with that upstream call.
    let s = agent.scrape()?;
    let from_service: f64 = s
        .matching(
            "gatescope_http_requests_total",
            &[("code", "200"), ("source", "service")],
        )
        .map(|x| x.value)
        .sum();
    ensure!(
        from_service == 1.0,
        "requests answered by the upstream: {from_service}"
    );
    let log = scene.nginx.wait_access_log(1, SETTLE_TIMEOUT)?;
    ensure!(
        log.len() == 1 && log[0].status == 200 && log[0].upstream_bytes_received == response,
        "access log {log:?}, upstream sent {response}"
    );
    Ok(())
}
