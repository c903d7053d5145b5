//! Resets on the gateway's connections are counted per listener and per
//! upstream peer (tcp:tcp_receive_reset on tracked sockets), exactly.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::{Conn, Req};
use gatescope_tests::Scene;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

const DOWN_TCP: &str = "gatescope_downstream_tcp_events_total";
const UP_TCP: &str = "gatescope_upstream_tcp_events_total";

/// Client connections that send half a request head, then reset.
fn reset_clients(port: u16, n: usize) -> Result<()> {
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"GET /partial HTTP/1.1\r\n")?;
        // Let nginx read it, so the connection is one it is serving.
        std::thread::sleep(Duration::from_millis(50));
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a linger struct of the size given.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
        drop(s); // close with a zero linger time: a reset, not a FIN
    }
    Ok(())
}

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
