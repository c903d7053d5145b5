//! Connections open before the agent started are picked up the first time the
//! gateway moves bytes on them (addresses read from the socket with offsets
//! from the kernel's BTF): from then on their bytes count per listener and
//! per peer, their requests are parsed from the next message boundary, and
//! they count as active, but not as accepted or opened (that happened before).

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::metrics::*;
use gatescope_tests::{util, Scene};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request on an open keep-alive connection; (written, read).
fn request(s: &mut TcpStream, port: u16, size: usize) -> Result<(u64, u64)> {
    let req = format!("GET /size/{size} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let n = s.read(&mut chunk)?;
        ensure!(n > 0, "EOF");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let cl: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .context("no Content-Length")?
                .trim()
                .parse()?;
            if buf.len() >= end + 4 + cl {
                ensure!(buf.len() == end + 4 + cl, "extra bytes");
                return Ok((req.len() as u64, buf.len() as u64));
            }
        }
    }
}

#[test]
fn preexisting_connections_are_picked_up() -> Result<()> {
    let scene = Scene::start(2)?;
    let port = scene.nginx.listen_port();
    // Before the agent: a keep-alive client connection, and (through it) an idle
    // keep-alive upstream connection in the same worker.
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    request(&mut conn, port, 10)?;
    let up0 = util::poll(Duration::from_secs(5), "upstream", || {
        let st = scene.upstream.stats();
        Ok((st.requests == 1).then_some(st))
    })?;

    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let base = agent.scrape()?;
    let b = |name: &str, labels: &[(&str, &str)]| base.get_or_zero(name, labels);

    let (mut written, mut read) = (0, 0);
    for size in [100, 5000, 70_000] {
        let (w, r) = request(&mut conn, port, size)?;
        written += w;
        read += r;
    }
    let up = util::poll(Duration::from_secs(5), "upstream", || {
        let st = scene.upstream.stats();
        Ok((st.requests == 4).then_some(st))
    })?;
    // nginx reused its cached upstream connection (truth from the upstream side).
    ensure!(
        up.accepted == up0.accepted && up.open == up0.open,
        "{up0:?} -> {up:?}"
    );
    let up_in = up.bytes_received - up0.bytes_received;
    let up_out = up.bytes_sent - up0.bytes_sent;
    let l = scene.nginx.listen_addr();
    let p = scene.upstream.addr();
    let same = |name: &str, labels: &[(&str, &str)]| -> Result<Expect> {
        Ok(Expect::new(name, labels, b(name, labels)?))
    };
    let plus = |name: &str, labels: &[(&str, &str)], n: u64| -> Result<Expect> {
        Ok(Expect::new(name, labels, b(name, labels)? + n as f64))
    };
    agent.wait_all(
        &[
            // Every byte after the start is attributed; none is untracked.
            plus(
                DOWN_BYTES,
                &[("listener", &l), ("direction", "ingress")],
                written,
            )?,
            plus(
                DOWN_BYTES,
                &[("listener", &l), ("direction", "egress")],
                read,
            )?,
            plus(UP_BYTES, &[("peer", &p), ("direction", "egress")], up_in)?,
            plus(UP_BYTES, &[("peer", &p), ("direction", "ingress")], up_out)?,
            same(UNTRACKED_BYTES, &[("direction", "ingress")])?,
            same(UNTRACKED_BYTES, &[("direction", "egress")])?,
            // Both connections were found, not opened while we watched.
            plus(
                "gatescope_events_received_total",
                &[("kind", "conn_found")],
                2,
            )?,
            same(ACCEPTED, &[])?,
            same(UP_OPENED, &[("peer", &p)])?,
            Expect::new(DOWN_CONNS, &[("state", "active")], 1.0),
            Expect::new(UP_CONNS, &[("peer", &p)], up.open as f64),
            // The three requests after the start are parsed (the first one
            // starts at a message boundary), each with its upstream call.
            plus("gatescope_http_requests_all_total", &[], 3)?,
            plus(
                "gatescope_http_upstream_requests_total",
                &[("peer", &p), ("code", "200")],
                3,
            )?,
        ],
        SETTLE_TIMEOUT,
    )?;
    Ok(())
}
