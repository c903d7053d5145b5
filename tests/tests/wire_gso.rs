//! The wire view counts a GSO/GRO packet as the segments it stands for
//! (README, "The wire view"). A veth pair into a network namespace the test
//! creates offloads segmentation, so bulk transfers both ways cross the tap
//! as packets of many segments. The witnesses: the client's sockets' own
//! `tcpi_segs_out` / `tcpi_segs_in` (TCP_INFO, counted per segment), the
//! namespace's `Tcp: OutSegs`, and tcpdump on the same interface (which sees
//! the unsegmented packets: fewer than the segments, with one set of headers
//! for all of a packet's segments).

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::expect::wire_deltas;
use gatescope_tests::metrics::*;
use gatescope_tests::netns::{snmp_tcp_here, VethNs};
use gatescope_tests::nginx::Tuning;
use gatescope_tests::pcap::{self, Packet, Wire};
use gatescope_tests::Scene;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The veth's MTU: a captured packet longer than this is several segments.
const MTU: u64 = 1500;
/// `tcpi_state` of a closed socket (include/net/tcp_states.h).
const TCP_CLOSE: u8 = 7;

fn tcp_info(s: &TcpStream) -> Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &raw mut len,
        )
    };
    ensure!(rc == 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    Ok(info)
}

/// What the client's sockets counted.
#[derive(Debug, Default)]
struct Seen {
    connections: u64,
    segs_out: u64,
    segs_in: u64,
    /// The namespace's `Tcp: OutSegs` growth over the same time.
    ns_out_segs: u64,
}

/// One `Connection: close` request with a `body`-byte body (POST when not 0)
/// to `server`, read to EOF; then the client's FIN, and once the socket is
/// closed (every packet of the connection has crossed), its segment counts.
fn exchange(server: SocketAddr, path: &str, body: usize, seen: &mut Seen) -> Result<()> {
    let mut s = TcpStream::connect(server).with_context(|| format!("connecting to {server}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let method = if body > 0 { "POST" } else { "GET" };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {server}\r\nContent-Length: {body}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    req.resize(req.len() + body, b'x');
    s.write_all(&req)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    ensure!(
        resp.starts_with(b"HTTP/1.1 200 "),
        "{path}: {:?}",
        String::from_utf8_lossy(&resp[..resp.len().min(200)])
    );
    s.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let info = loop {
        let info = tcp_info(&s)?;
        if info.tcpi_state == TCP_CLOSE {
            break info;
        }
        ensure!(
            Instant::now() < deadline,
            "{path}: socket state {}",
            info.tcpi_state
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    seen.connections += 1;
    seen.segs_out += u64::from(info.tcpi_segs_out);
    seen.segs_in += u64::from(info.tcpi_segs_in);
    Ok(())
}

/// IP bytes of `packets`' segments had each been sent alone: one more set of
/// headers per segment beyond the packet (all multi-segment packets must
/// have the same headers, so that `segments` alone says how many sets).
fn segment_bytes(packets: &[&Packet], wire: Wire, segments: u64) -> Result<u64> {
    let big: Vec<u64> = packets
        .iter()
        .filter(|p| p.ip_len > MTU)
        .map(|p| p.headers)
        .collect();
    ensure!(!big.is_empty(), "no packet longer than {MTU} bytes: no GSO");
    ensure!(
        big.iter().all(|h| *h == big[0]),
        "multi-segment packets with different headers: {big:?}"
    );
    ensure!(segments > wire.packets, "{segments} segments in {wire:?}");
    Ok(wire.bytes + (segments - wire.packets) * big[0])
}

#[test]
fn gso_packets_count_as_their_segments() -> Result<()> {
    let scene = Scene::start_tuned(
        1,
        &Tuning {
            listen_host: "0.0.0.0",
            ..Tuning::default()
        },
    )?;
    let net = VethNs::create()?;
    let iface = net.interface().to_owned();
    let agent = Agent::start(&[scene.nginx.master_pid()], &["--interface", &iface])?;
    let port = scene.nginx.listen_port();
    let listener = scene.nginx.listen_addr();
    let base = agent.scrape()?;
    let capture = pcap::Capture::start(&iface, &[port])?;

    let server = SocketAddr::from((net.local_addr(), port));
    let seen = net.run(move || {
        let mut seen = Seen::default();
        // OutSegs leaves out retransmitted segments, which the sockets'
        // tcpi_segs_out counts (a retransmission on a loaded CI machine
        // made them differ by 33 once): both counters, as the sockets count.
        let sent_here =
            || -> Result<u64> { Ok(snmp_tcp_here("OutSegs")? + snmp_tcp_here("RetransSegs")?) };
        let before = sent_here()?;
        // A 1 MB upload (GSO packets towards nginx), a 2 MB download (from it).
        exchange(server, "/size/10", 1_000_000, &mut seen)?;
        exchange(server, "/size/2000000", 0, &mut seen)?;
        seen.ns_out_segs = sent_here()? - before;
        Ok(seen)
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let packets = capture.finish()?;
    // The namespace holds nothing else: every segment it sent was the client's.
    ensure!(
        seen.ns_out_segs == seen.segs_out,
        "the namespace sent {} segments, the client's sockets {}",
        seen.ns_out_segs,
        seen.segs_out
    );
    let (d_in, d_out) = pcap::count(&packets, port, true);
    let to: Vec<&Packet> = packets.iter().filter(|p| p.dport == port).collect();
    let from: Vec<&Packet> = packets.iter().filter(|p| p.sport == port).collect();
    ensure!(
        to.len() as u64 == d_in.packets && from.len() as u64 == d_out.packets,
        "capture of other ports' packets"
    );
    let ingress = Wire {
        packets: seen.segs_out,
        bytes: segment_bytes(&to, d_in, seen.segs_out)?,
        resets: d_in.resets,
    };
    let egress = Wire {
        packets: seen.segs_in,
        bytes: segment_bytes(&from, d_out, seen.segs_in)?,
        resets: d_out.resets,
    };
    let down = [
        ("interface", iface.as_str()),
        ("listener", listener.as_str()),
    ];
    let mut exp = wire_deltas(
        &base,
        [DOWN_WIRE_PACKETS, DOWN_WIRE_BYTES, DOWN_WIRE_RESETS],
        &down,
        ingress,
        egress,
    )?;
    exp.push(Expect::new(
        DOWN_WIRE_SYNS,
        &down,
        base.get_or_zero(DOWN_WIRE_SYNS, &down)? + seen.connections as f64,
    ));
    agent
        .wait_all(&exp, SETTLE_TIMEOUT)
        .with_context(|| format!("client {seen:?}; tcpdump in {d_in:?} out {d_out:?}"))?;
    eprintln!(
        "gso: client {seen:?}; tcpdump packets in {} out {}; segments in {ingress:?} out {egress:?}",
        d_in.packets, d_out.packets
    );
    Ok(())
}
