//! TCP events and the wire view attributed to an UPSTREAM peer on a
//! non-loopback interface, with exact numbers: nginx proxies to the fake peer
//! of a TUN interface (`gatescope_tests::tun`), which accepts nginx's upstream
//! connections itself, withholds an ACK to force a kernel retransmission,
//! resets a connection, and counts every packet that crossed. Needs root and a
//! usable /dev/net/tun; it fails (never skips) without them.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::{Conn, Req};
use gatescope_tests::metrics::*;
use gatescope_tests::nginx::{Nginx, NginxConfig, Tuning};
use gatescope_tests::tun::TunNet;
use gatescope_tests::util;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);
/// The upstream's port on the TUN peer (any port: the address is ours alone).
const UP_PORT: u16 = 8080;

fn head_complete(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n")
}

/// A valid HTTP/1.1 response nginx keeps the connection open after.
fn response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn upstream_retransmission_reset_and_wire_counts_on_tun() -> Result<()> {
    let net = TunNet::create()?;
    net.listen(UP_PORT)?;
    let nginx = Nginx::start_tuned(
        &NginxConfig {
            workers: 1,
            listen_port: util::free_port()?,
            upstream_port: UP_PORT,
        },
        &Tuning {
            upstream_host: Some(net.peer_addr().to_string()),
            ..Tuning::default()
        },
    )?;
    let agent = Agent::start(&[nginx.master_pid()], &[])?;
    // The TUN interface is up before the agent starts, so its start-up sync
    // taps it (or the 1 s reconciliation does); wait for the agent to say so
    // for this very interface: other tests on the machine may add or remove
    // interfaces meanwhile, so a change in the gauge alone would not prove it.
    util::poll(
        SETTLE_TIMEOUT,
        "the agent tapping the TUN interface",
        || {
            Ok(agent
                .stderr()
                .lines()
                .any(|l| l.contains("wire view: tapping") && l.contains(net.name()))
                .then_some(()))
        },
    )
    .with_context(|| agent.stderr())?;
    let base = agent.scrape()?;
    ensure!(
        base.require(WIRE_INTERFACES, &[])? >= 1.0,
        "no interface counted:\n{}",
        base.text
    );
    let peer = format!("{}:{UP_PORT}", net.peer_addr());
    let peer_l = [("peer", peer.as_str())];
    ensure!(
        base.get_or_zero(UP_OPENED, &peer_l)? == 0.0,
        "a fresh peer address already has connections:\n{}",
        base.text
    );

    // 1. A request whose upstream leg the peer does not acknowledge at first:
    // the kernel retransmits nginx's request (RTO, about 200 ms).
    let mut client = Conn::open(nginx.listen_port())?;
    client.send(&[Req::get("/first")])?;
    let mut up1 = net.accept(UP_PORT, T)?;
    let req1 = up1.recv_dropping_first(head_complete, T)?;
    let resp1 = response("first");
    up1.send(&resp1)?;
    let r1 = client.recv()?;
    ensure!(
        r1.status == 200,
        "first response {r1:?}; upstream request:\n{}",
        String::from_utf8_lossy(&req1)
    );

    // 2. The peer resets the idle keep-alive connection. Nothing answers a
    // valid RST; nginx notices and drops the connection from its cache. The
    // pause lets it do so before the next request (if it did not, its write
    // would fail on the reset socket, sending nothing, and it would retry on
    // a new connection: the peer's counts would be the same).
    up1.reset()?;
    net.settle(Duration::from_millis(200))?;

    // 3. The next request: nginx opens a new connection, answered at once.
    client.send(&[Req::get("/second")])?;
    let mut up2 = net.accept(UP_PORT, T)?;
    let req2 = up2.recv(head_complete, T)?;
    let resp2 = response("second");
    up2.send(&resp2)?;
    let r2 = client.recv()?;
    ensure!(
        r2.status == 200,
        "second response {r2:?}; upstream request:\n{}",
        String::from_utf8_lossy(&req2)
    );
    client.close()?;
    // Late packets (none expected: nginx keeps the second connection idle).
    net.settle(Duration::from_millis(300))?;

    let counted = net.peer_totals(UP_PORT);
    let accepted = 2u64;
    let retransmits = up1.retransmits_seen() + up2.retransmits_seen();
    eprintln!(
        "peer {peer} on {}: {counted:?}; retransmissions seen {} + {}; conn 1 {:?}, conn 2 {:?}",
        net.name(),
        up1.retransmits_seen(),
        up2.retransmits_seen(),
        up1.counts(),
        up2.counts()
    );
    ensure!(
        up1.retransmits_seen() >= 1,
        "the withheld ACK forced no retransmission"
    );
    ensure!(
        counted.syn_out == accepted && counted.syn_in == accepted,
        "the peer's own counts: {counted:?}"
    );
    ensure!(
        counted.rst_in == 1 && counted.rst_out == 0,
        "the peer's own counts: {counted:?}"
    );
    ensure!(
        counted == up1.counts() + up2.counts(),
        "packets to or from port {UP_PORT} outside the two connections: {counted:?}"
    );

    let plus = |name: &str, labels: &[(&str, &str)], n: u64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            labels,
            base.get_or_zero(name, labels)? + n as f64,
        ))
    };
    let mut exp = vec![
        plus(UP_OPENED, &peer_l, accepted)?,
        // The first connection is gone (reset), the second idle in nginx's cache.
        Expect::new(UP_CONNS, &peer_l, 1.0),
    ];
    // Payload bytes, each counted once whatever crossed twice.
    for (dir, n) in [
        ("egress", req1.len() + req2.len()),
        ("ingress", resp1.len() + resp2.len()),
    ] {
        exp.push(plus(
            UP_BYTES,
            &[("peer", peer.as_str()), ("direction", dir)],
            n as u64,
        )?);
    }
    for (event, n) in [
        ("retransmit", retransmits),
        ("reset_received", counted.rst_in),
        ("reset_sent", counted.rst_out),
    ] {
        exp.push(plus(
            UP_TCP_EVENTS,
            &[("peer", peer.as_str()), ("event", event)],
            n,
        )?);
    }
    // "in" = written by the peer = ingress; "out" = sent by the gateway = egress.
    for (dir, packets, bytes, resets) in [
        (
            "ingress",
            counted.packets_in,
            counted.bytes_in,
            counted.rst_in,
        ),
        (
            "egress",
            counted.packets_out,
            counted.bytes_out,
            counted.rst_out,
        ),
    ] {
        let l = [
            ("interface", net.name()),
            ("peer", peer.as_str()),
            ("direction", dir),
        ];
        exp.push(plus(UP_WIRE_PACKETS, &l, packets)?);
        exp.push(plus(UP_WIRE_BYTES, &l, bytes)?);
        exp.push(plus(UP_WIRE_RESETS, &l, resets)?);
    }
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    for line in s
        .text
        .lines()
        .filter(|l| l.starts_with("gatescope_upstream_") && l.contains(&peer))
    {
        eprintln!("  {line}");
    }
    Ok(())
}
