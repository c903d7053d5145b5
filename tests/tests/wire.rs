//! The wire view (AF_PACKET socket filter) against independent witnesses:
//! tcpdump capturing the same ports on loopback, counted packet by packet,
//! and a user-space TCP client on a TUN interface that counts every packet
//! it writes and reads and controls its handshakes, ACKs and resets.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::{reset_clients, Conn, Req};
use gatescope_tests::expect::{client_handshakes, mixed_traffic, wire_deltas};
use gatescope_tests::metrics::*;
use gatescope_tests::nginx::Tuning;
use gatescope_tests::pcap::{self, Wire};
use gatescope_tests::prom::Scrape;
use gatescope_tests::tun::{complete_response, TunNet, WireCount};
use gatescope_tests::Scene;
use std::time::Duration;

#[test]
fn loopback_counts_equal_tcpdump() -> Result<()> {
    let scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let (port, up_port) = (scene.nginx.listen_port(), scene.upstream.port());
    let listener = scene.nginx.listen_addr();
    let peer = scene.upstream.addr();
    let base = agent.scrape()?;
    ensure!(
        base.require(WIRE_INTERFACES, &[])? >= 1.0,
        "no interface tapped:\n{}",
        base.text
    );

    let capture = pcap::Capture::start("lo", &[port, up_port])?;
    let mut client = scene.client();
    mixed_traffic(&mut client)?;
    mixed_traffic(&mut client)?;
    // Resets both ways: clients that reset, and an upstream that resets the
    // gateway's connection (nginx answers 502).
    reset_clients(port, 3)?;
    let mut conn = Conn::open(port)?;
    for _ in 0..2 {
        ensure!(conn.exchange(Req::get("/reset"))?.status == 502);
    }
    conn.close()?;
    // Let delayed ACKs and closing handshakes finish before the witness
    // stops. (The upstream's request count is not needed: nginx may retry a
    // reset request on a fresh connection.)
    std::thread::sleep(Duration::from_millis(500));
    let packets = capture.finish()?;

    let (d_in, d_out) = pcap::count(&packets, port, true);
    let (u_in, u_out) = pcap::count(&packets, up_port, false);
    let syns = pcap::syns_to(&packets, port);
    // The client's own count: every connection it made completed a handshake.
    let connections = client.totals().connections + 3 + 1;
    ensure!(
        syns == connections,
        "tcpdump saw {syns} SYNs to {port}, the client made {connections} connections"
    );
    ensure!(
        d_in.resets == 3 && u_in.resets >= 2,
        "tcpdump saw resets: downstream {d_in:?}, upstream {u_in:?}"
    );

    let lo = ("interface", "lo");
    let down = [lo, ("listener", listener.as_str())];
    let up = [lo, ("peer", peer.as_str())];
    let mut exp = wire_deltas(
        &base,
        [DOWN_WIRE_PACKETS, DOWN_WIRE_BYTES, DOWN_WIRE_RESETS],
        &down,
        d_in,
        d_out,
    )?;
    exp.extend(wire_deltas(
        &base,
        [UP_WIRE_PACKETS, UP_WIRE_BYTES, UP_WIRE_RESETS],
        &up,
        u_in,
        u_out,
    )?);
    exp.extend(client_handshakes(&base, &down, syns, connections)?);
    // Every handshake was timed.
    let by_listener = [("listener", listener.as_str())];
    exp.push(Expect::new(
        HANDSHAKES_UNTIMED,
        &by_listener,
        base.get_or_zero(HANDSHAKES_UNTIMED, &by_listener)?,
    ));
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    let sum = s.require(&format!("{HANDSHAKE_SECONDS}_sum"), &down)?
        - base.get_or_zero(&format!("{HANDSHAKE_SECONDS}_sum"), &down)?;
    // Loopback handshakes take microseconds; a generous bound still catches
    // a clock that starts at the wrong packet.
    let mean = sum / connections as f64;
    ensure!(
        sum > 0.0 && mean < 0.005,
        "mean loopback handshake {mean} s"
    );
    eprintln!(
        "wire on lo: downstream in {d_in:?} out {d_out:?}; upstream in {u_in:?} out {u_out:?}; \
         {syns} SYNs; mean handshake {:.1} us",
        mean * 1e6
    );
    Ok(())
}

/// nginx listening on every address (the TUN client reaches it at the
/// interface's), an agent on it, and a TUN interface; returns once the agent
/// has tapped the interface (its 1 s reconciliation follows interfaces as
/// they come up), with that scrape.
fn tun_setup(tuning: Tuning) -> Result<(Scene, Agent, TunNet, Scrape)> {
    let scene = Scene::start_tuned(
        1,
        &Tuning {
            listen_host: "0.0.0.0",
            ..tuning
        },
    )?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let before = agent.scrape()?.require(WIRE_INTERFACES, &[])?;
    let net = TunNet::create()?;
    let base = agent.wait_all(
        &[Expect::new(WIRE_INTERFACES, &[], before + 1.0)],
        SETTLE_TIMEOUT,
    )?;
    Ok((scene, agent, net, base))
}

/// The ingress/egress [`Wire`] of one port as the TUN client counted it.
fn tun_wire(c: &WireCount) -> (Wire, Wire) {
    (
        Wire {
            packets: c.packets_in,
            bytes: c.bytes_in,
            resets: c.rst_in,
        },
        Wire {
            packets: c.packets_out,
            bytes: c.bytes_out,
            resets: c.rst_out,
        },
    )
}

/// A user-space TCP client on a TUN interface created after the agent
/// started: handshakes of a known length, a retransmission the client
/// forces by withholding an ACK, a reset nginx sends (reset_timedout_connection)
/// and one the client sends. Every packet is the client's own to count.
#[test]
fn tun_client_handshakes_retransmission_and_resets() -> Result<()> {
    const T: Duration = Duration::from_secs(5);
    let (scene, agent, net, base) = tun_setup(Tuning {
        server_extra: "reset_timedout_connection on;",
        client_header_timeout_s: Some(1),
        ..Tuning::default()
    })?;
    let port = scene.nginx.listen_port();
    let listener = scene.nginx.listen_addr();
    let request = format!(
        "GET /size/2000 HTTP/1.1\r\nHost: {}:{port}\r\n\r\n",
        net.kernel_addr()
    );

    // Handshakes whose final ACK the client holds back 30, 60 and 90 ms,
    // each checked on its own: the agent's time for it (the histogram's
    // `_sum` step when its `_count` steps by one) must lie in the window the
    // client's clock readings around its SYN and ACK writes allow (see
    // `TunConn::handshake_window`), give or take 1 us of rounding (the kernel
    // and `Instant` both read CLOCK_MONOTONIC, in ns; the agent's sum is
    // seconds in an f64).
    let down = [("interface", net.name()), ("listener", listener.as_str())];
    let count = format!("{HANDSHAKE_SECONDS}_count");
    let sum = format!("{HANDSHAKE_SECONDS}_sum");
    let mut handshakes = Vec::new();
    let mut windows = Vec::new();
    let mut prev = base.clone();
    for delay_ms in [30, 60, 90] {
        let mut c = net.connect(port, Duration::from_millis(delay_ms))?;
        c.send(request.as_bytes())?;
        c.recv(complete_response, T)?;
        c.close()?;
        handshakes.push(c.handshake());
        let (lo, hi) = c.handshake_window();
        let n = prev.get_or_zero(&count, &down)? + 1.0;
        let s = agent.wait_all(&[Expect::new(&count, &down, n)], SETTLE_TIMEOUT)?;
        let agent_s = s.require(&sum, &down)? - prev.get_or_zero(&sum, &down)?;
        const ROUNDING: f64 = 1e-6;
        ensure!(
            lo.as_secs_f64() - ROUNDING <= agent_s && agent_s <= hi.as_secs_f64() + ROUNDING,
            "handshake held {delay_ms} ms: the agent measured {:.1} us, outside the client's \
             window [{:.1} us, {:.1} us] around its SYN and ACK writes",
            agent_s * 1e6,
            lo.as_secs_f64() * 1e6,
            hi.as_secs_f64() * 1e6
        );
        windows.push((agent_s, lo, hi));
        prev = s;
    }
    // A response segment the client does not acknowledge: the kernel
    // retransmits it (RTO, about 200 ms here).
    let mut c = net.connect(port, Duration::ZERO)?;
    c.send(request.as_bytes())?;
    c.recv_dropping_first(complete_response, T)?;
    c.close()?;
    let retransmits = c.retransmits_seen();
    ensure!(retransmits >= 1, "no retransmission seen");
    // Half a request head, then silence: after client_header_timeout nginx
    // closes with SO_LINGER 0, a reset.
    let mut c = net.connect(port, Duration::ZERO)?;
    c.send(b"GET /size/1 HTTP/1.1\r\n")?;
    c.wait_reset(T)?;
    // The client resets a connection after a request.
    let mut c = net.connect(port, Duration::ZERO)?;
    c.send(request.as_bytes())?;
    c.recv(complete_response, T)?;
    c.reset()?;
    net.settle(Duration::from_millis(300))?;
    let counted = net.totals(port);
    let connections = 6;
    ensure!(
        counted.syn_in == connections && counted.rst_out == 1 && counted.rst_in == 1,
        "the client's own counts: {counted:?}"
    );

    let (ingress, egress) = tun_wire(&counted);
    let mut exp = wire_deltas(
        &base,
        [DOWN_WIRE_PACKETS, DOWN_WIRE_BYTES, DOWN_WIRE_RESETS],
        &down,
        ingress,
        egress,
    )?;
    let plus = |name: &str, labels: &[(&str, &str)], n: f64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            labels,
            base.get_or_zero(name, labels)? + n,
        ))
    };
    exp.push(plus(DOWN_WIRE_SYNS, &down, connections as f64)?);
    exp.push(plus(
        HANDSHAKES_UNTIMED,
        &[("listener", listener.as_str())],
        0.0,
    )?);
    // Each handshake in its histogram bucket: 30 ms <= 0.05, 60 and 90 ms
    // <= 0.1; the other three took microseconds.
    let bucket = format!("{HANDSHAKE_SECONDS}_bucket");
    for (le, n) in [("0.025", 3.0), ("0.05", 4.0), ("0.1", 6.0)] {
        let mut l = down.to_vec();
        l.push(("le", le));
        exp.push(plus(&bucket, &l, n)?);
    }
    let tcp = [("listener", listener.as_str())];
    for (event, n) in [
        ("retransmit", retransmits),
        ("reset_sent", 1),
        ("reset_received", 1),
    ] {
        let mut l = tcp.to_vec();
        l.push(("event", event));
        exp.push(plus(DOWN_TCP_EVENTS, &l, n as f64)?);
    }
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;

    // The kernel's handshake times against the client's own clocks (taken
    // just before its SYN and ACK writes; the tap sees each within
    // microseconds).
    let measured = s.require(&sum, &down)? - base.get_or_zero(&sum, &down)?;
    let client: f64 = handshakes.iter().map(Duration::as_secs_f64).sum();
    ensure!(
        (measured - client).abs() < 0.003 + 0.001 * connections as f64,
        "handshakes: agent {measured:.6} s, client {client:.6} s (delayed ones {handshakes:?})"
    );
    eprintln!(
        "wire on {}: ingress {ingress:?}, egress {egress:?}; handshakes agent {:.3} ms, \
         client {:.3} ms; delayed ones (agent, client's window) {windows:?}; \
         {retransmits} retransmission(s)",
        net.name(),
        measured * 1e3,
        client * 1e3
    );
    Ok(())
}

/// A client whose SYN is retransmitted (it sends the same SYN again 60 ms
/// after the first, as a client does when its SYN-ACK is lost): both SYNs
/// are counted, and the handshake is timed from the first (README: a
/// retransmitted SYN keeps the first one's time), against the client's own
/// clocks.
#[test]
fn tun_retransmitted_syn_keeps_the_first_time() -> Result<()> {
    const T: Duration = Duration::from_secs(5);
    const AGAIN: Duration = Duration::from_millis(60);
    let (scene, agent, net, base) = tun_setup(Tuning::default())?;
    let port = scene.nginx.listen_port();
    let listener = scene.nginx.listen_addr();
    let mut c = net.connect_with(port, Some(AGAIN), || Ok(()))?;
    c.send(
        format!(
            "GET /size/10 HTTP/1.1\r\nHost: {}:{port}\r\n\r\n",
            net.kernel_addr()
        )
        .as_bytes(),
    )?;
    c.recv(complete_response, T)?;
    c.close()?;
    let handshake = c.handshake();
    net.settle(Duration::from_millis(300))?;
    let counted = net.totals(port);
    ensure!(
        counted.syn_in == 2 && handshake >= AGAIN,
        "the client's own counts: {counted:?}, handshake {handshake:?}"
    );

    let down = [("interface", net.name()), ("listener", listener.as_str())];
    let (ingress, egress) = tun_wire(&counted);
    let mut exp = wire_deltas(
        &base,
        [DOWN_WIRE_PACKETS, DOWN_WIRE_BYTES, DOWN_WIRE_RESETS],
        &down,
        ingress,
        egress,
    )?;
    let plus = |name: &str, labels: &[(&str, &str)], n: f64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            labels,
            base.get_or_zero(name, labels)? + n,
        ))
    };
    exp.push(plus(DOWN_WIRE_SYNS, &down, 2.0)?);
    exp.push(plus(
        HANDSHAKES_UNTIMED,
        &[("listener", listener.as_str())],
        0.0,
    )?);
    // One handshake of 60 ms and a little: in the 0.1 s bucket, not the 0.05
    // s one (timed from the second SYN it would take microseconds).
    let bucket = format!("{HANDSHAKE_SECONDS}_bucket");
    for (le, n) in [("0.05", 0.0), ("0.1", 1.0)] {
        let mut l = down.to_vec();
        l.push(("le", le));
        exp.push(plus(&bucket, &l, n)?);
    }
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    let sum = format!("{HANDSHAKE_SECONDS}_sum");
    let measured = s.require(&sum, &down)? - base.get_or_zero(&sum, &down)?;
    let client = handshake.as_secs_f64();
    ensure!(
        (measured - client).abs() < 0.001,
        "handshake: agent {measured:.6} s, client {client:.6} s from its first SYN"
    );
    eprintln!(
        "retransmitted SYN on {}: handshake agent {:.3} ms, client {:.3} ms",
        net.name(),
        measured * 1e3,
        client * 1e3
    );
    Ok(())
}

/// A SYN flood that never completes pushes only untimed handshakes out of
/// `HANDSHAKES` (an LRU): a client whose first SYN came before a flood three
/// times the map's capacity and whose final ACK came after it is counted as
/// untimed, never timed wrongly; a client after the flood is timed as its
/// own clocks say; every SYN of the flood is counted.
#[test]
fn tun_syn_flood_pushes_out_only_untimed_handshakes() -> Result<()> {
    const T: Duration = Duration::from_secs(5);
    let (scene, agent, net, base) = tun_setup(Tuning::default())?;
    let capacity = base.require(MAP_CAPACITY, &[("map", "handshakes")])?;
    let flood = 3 * capacity as u32;
    let port = scene.nginx.listen_port();
    let listener = scene.nginx.listen_addr();
    let request = format!(
        "GET /size/10 HTTP/1.1\r\nHost: {}:{port}\r\n\r\n",
        net.kernel_addr()
    );
    let started = std::time::Instant::now();
    let mut early = net.connect_with(port, None, || net.syn_flood(port, flood))?;
    let flood_time = started.elapsed();
    early.send(request.as_bytes())?;
    early.recv(complete_response, T)?;
    early.close()?;
    // After the flood: a handshake whose final ACK is held 30 ms.
    let mut late = net.connect(port, Duration::from_millis(30))?;
    late.send(request.as_bytes())?;
    late.recv(complete_response, T)?;
    late.close()?;
    net.settle(Duration::from_millis(300))?;
    let counted = net.totals(port);
    ensure!(
        counted.syn_in == u64::from(flood) + 2,
        "the client's own counts: {counted:?}"
    );

    let down = [("interface", net.name()), ("listener", listener.as_str())];
    let plus = |name: &str, labels: &[(&str, &str)], n: f64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            labels,
            base.get_or_zero(name, labels)? + n,
        ))
    };
    let mut exp = vec![
        plus(DOWN_WIRE_SYNS, &down, counted.syn_in as f64)?,
        plus(HANDSHAKES_UNTIMED, &[("listener", listener.as_str())], 1.0)?,
        plus(&format!("{HANDSHAKE_SECONDS}_count"), &down, 1.0)?,
    ];
    let bucket = format!("{HANDSHAKE_SECONDS}_bucket");
    for (le, n) in [("0.025", 0.0), ("0.05", 1.0)] {
        let mut l = down.to_vec();
        l.push(("le", le));
        exp.push(plus(&bucket, &l, n)?);
    }
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT)?;
    let sum = format!("{HANDSHAKE_SECONDS}_sum");
    let measured = s.require(&sum, &down)? - base.get_or_zero(&sum, &down)?;
    let client = late.handshake().as_secs_f64();
    ensure!(
        (measured - client).abs() < 0.001,
        "handshake after the flood: agent {measured:.6} s, client {client:.6} s"
    );
    eprintln!(
        "SYN flood of {flood} on {} in {flood_time:?}: the early handshake untimed, the late one \
         agent {:.3} ms, client {:.3} ms",
        net.name(),
        measured * 1e3,
        client * 1e3
    );
    Ok(())
}
