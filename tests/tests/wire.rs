//! The wire view (AF_PACKET socket filter) against an independent witness:
//! tcpdump capturing the same ports on loopback, counted packet by packet.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::{reset_clients, Conn, Req};
use gatescope_tests::expect::mixed_traffic;
use gatescope_tests::metrics::*;
use gatescope_tests::pcap::{self, Wire};
use gatescope_tests::prom::Scrape;
use gatescope_tests::Scene;
use std::time::Duration;

/// Expectations that `side`'s families grew by exactly `ingress`/`egress`.
fn wire_deltas(
    base: &Scrape,
    families: [&str; 3],
    labels: &[(&str, &str)],
    ingress: Wire,
    egress: Wire,
) -> Result<Vec<Expect>> {
    let mut out = Vec::new();
    for (dir, w) in [("ingress", ingress), ("egress", egress)] {
        let mut l = labels.to_vec();
        l.push(("direction", dir));
        for (family, n) in families.iter().zip([w.packets, w.bytes, w.resets]) {
            out.push(Expect::new(
                family,
                &l,
                base.get_or_zero(family, &l)? + n as f64,
            ));
        }
    }
    Ok(out)
}

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
    exp.push(Expect::new(
        DOWN_WIRE_SYNS,
        &down,
        base.get_or_zero(DOWN_WIRE_SYNS, &down)? + syns as f64,
    ));
    let count = format!("{HANDSHAKE_SECONDS}_count");
    exp.push(Expect::new(
        &count,
        &down,
        base.get_or_zero(&count, &down)? + connections as f64,
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
