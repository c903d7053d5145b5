//! IPv6 on both legs: nginx listening on `[::1]`, clients over `::1`, and
//! nginx proxying to an upstream on `[::1]`. Connections, bytes and the wire
//! view against the client's, the upstream's and tcpdump's own counts;
//! requests by code, source and service against nginx's access log; the
//! upstream's requests by code against the upstream's own record. Every
//! label names the IPv6 address as README does for IPv4, `[::1]:port`.

use anyhow::{ensure, Context, Result};
use gatescope_tests::accuracy::{HTTP_REQUESTS, HTTP_UPSTREAM_REQUESTS};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::client::{Client, Transfer};
use gatescope_tests::expect::{
    client_handshakes, no_losses, nothing_untracked, traffic_deltas, wire_deltas,
};
use gatescope_tests::metrics::*;
use gatescope_tests::nginx::{Nginx, NginxConfig, Tuning};
use gatescope_tests::pcap;
use gatescope_tests::prom::Scrape;
use gatescope_tests::upstream::Upstream;
use gatescope_tests::util;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// One `Connection: close` GET to `server`, read to EOF, whatever its status:
/// (status, what the client wrote and read).
fn raw_get(server: SocketAddr, path: &str) -> Result<(u16, Transfer)> {
    let mut s = TcpStream::connect(server).with_context(|| format!("connecting to {server}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let head = String::from_utf8_lossy(&resp);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((
        status,
        Transfer {
            connections: 1,
            requests: 1,
            written: req.len() as u64,
            read: resp.len() as u64,
        },
    ))
}

/// `name`'s samples by (code, source) whose labels include `labels`, zeros dropped.
fn by_code_source(
    s: &Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> BTreeMap<(String, String), f64> {
    let mut m = BTreeMap::new();
    for x in s.matching(name, labels) {
        let l = |k: &str| x.labels.get(k).cloned().unwrap_or_default();
        *m.entry((l("code"), l("source"))).or_insert(0.0) += x.value;
    }
    m.retain(|_, v| *v != 0.0);
    m
}

#[test]
fn ipv6_listener_and_peer() -> Result<()> {
    let upstream = Upstream::start_on(Ipv6Addr::LOCALHOST.into())?;
    let nginx = Nginx::start_tuned(
        &NginxConfig {
            workers: 2,
            listen_port: util::free_port()?,
            upstream_port: upstream.port(),
        },
        &Tuning {
            listen_host: "::1",
            upstream_host: Some("::1".into()),
            server_extra: "location = /missing { return 404; }",
            ..Tuning::default()
        },
    )?;
    let agent = Agent::start(&[nginx.master_pid()], &[])?;
    let (port, up_port) = (nginx.listen_port(), upstream.port());
    let server = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    // The labels: the address as `SocketAddr` writes it, brackets and all.
    let listener = nginx.listen_addr();
    let peer = upstream.addr();
    ensure!(listener == format!("[::1]:{port}") && peer == format!("[::1]:{up_port}"));
    let base = agent.scrape()?;
    ensure!(
        base.require(LISTEN_SOCKETS, &[])? >= 1.0,
        "the IPv6 listener was not found:\n{}",
        base.text
    );

    let capture = pcap::Capture::start("lo", &[port, up_port])?;
    // Bodies of at most 16 KB: loopback's TCP then sends each as packets of
    // one segment (larger transfers go out as GSO packets of several, which
    // tcpdump sees as one; wire_gso.rs tests those against a per-segment
    // witness).
    let mut client = Client::of(server);
    for size in [0, 1234, 16_000] {
        client.one_shot(&format!("/size/{size}"))?;
    }
    client.one_shot_post("/size/10", 16_000)?;
    client.keep_alive(3, "/size/4096")?;
    client.keep_alive(2, "/size/12000")?;
    // A 404 from the upstream (source "service") and one from nginx itself
    // (source "kong").
    for (path, want) in [("/nothing", 404), ("/missing", 404), ("/missing", 404)] {
        let (status, t) = raw_get(server, path)?;
        ensure!(status == want, "{path}: status {status}");
        client.add_totals(t);
    }
    let t = client.totals();
    let log = nginx.wait_access_log(t.requests as usize, Duration::from_secs(5))?;
    ensure!(
        log.len() as u64 == t.requests,
        "{} log lines for {t:?}",
        log.len()
    );
    let up_requests = log.iter().filter(|e| e.upstream_bytes_received > 0).count() as u64;
    let up = util::poll(Duration::from_secs(5), "upstream request count", || {
        let st = upstream.stats();
        Ok((st.requests == up_requests).then_some(st))
    })?;
    // Let delayed ACKs and closing handshakes finish before the witness stops.
    std::thread::sleep(Duration::from_millis(500));
    let packets = capture.finish()?;

    // Connections and bytes on both legs from the client's and the upstream's counts.
    let mut exp = traffic_deltas(&base, &listener, &peer, &t, &up)?;
    exp.push(Expect::new(
        HANDLED,
        &[],
        base.get_or_zero(HANDLED, &[])? + t.connections as f64,
    ));
    exp.extend(nothing_untracked(&base)?);
    // The wire view on lo against tcpdump; every handshake timed.
    // One segment each: no packet longer than the largest write plus headers.
    let longest = packets.iter().map(|p| p.ip_len).max().unwrap_or(0);
    ensure!(
        longest < 17_000,
        "a packet of {longest} bytes: several segments"
    );
    let (d_in, d_out) = pcap::count(&packets, port, true);
    let (u_in, u_out) = pcap::count(&packets, up_port, false);
    let syns = pcap::syns_to(&packets, port);
    ensure!(
        syns == t.connections,
        "tcpdump saw {syns} SYNs to {port}, the client made {} connections",
        t.connections
    );
    let lo = ("interface", "lo");
    let down = [lo, ("listener", listener.as_str())];
    exp.extend(wire_deltas(
        &base,
        [DOWN_WIRE_PACKETS, DOWN_WIRE_BYTES, DOWN_WIRE_RESETS],
        &down,
        d_in,
        d_out,
    )?);
    exp.extend(wire_deltas(
        &base,
        [UP_WIRE_PACKETS, UP_WIRE_BYTES, UP_WIRE_RESETS],
        &[lo, ("peer", peer.as_str())],
        u_in,
        u_out,
    )?);
    exp.extend(client_handshakes(&base, &down, syns, t.connections)?);
    let s = agent.wait_all(&exp, SETTLE_TIMEOUT).with_context(|| {
        let from_peer: Vec<_> = packets
            .iter()
            .filter(|p| p.sport == up_port)
            .map(|p| (p.flags, p.ip_len))
            .collect();
        format!("tcpdump: (flags, length) of the packets from the upstream: {from_peer:?}")
    })?;
    no_losses(&s)?;

    // Requests by code and source, all under the IPv6 listener's service,
    // against nginx's access log (source "service" exactly when the upstream
    // answered).
    let mut want = BTreeMap::new();
    for e in &log {
        let source = if e.upstream_bytes_received > 0 {
            "service"
        } else {
            "kong"
        };
        *want
            .entry((e.status.to_string(), source.to_owned()))
            .or_insert(0.0) += 1.0;
    }
    let got = util::poll(SETTLE_TIMEOUT, "requests by code", || {
        let s = agent.scrape()?;
        let got = by_code_source(&s, HTTP_REQUESTS, &[("service", listener.as_str())]);
        Ok((got == want && by_code_source(&s, HTTP_REQUESTS, &[]) == want).then_some(got))
    })
    .with_context(|| {
        let s = agent.scrape().map(|s| s.text).unwrap_or_default();
        format!("want {want:?} under service {listener}:\n{s}")
    })?;
    // The upstream's requests by code, per the IPv6 peer, from its own record.
    let mut want_up = BTreeMap::new();
    for x in upstream.exchanges() {
        *want_up
            .entry((x.status.to_string(), String::new()))
            .or_insert(0.0) += 1.0;
    }
    let s = agent.scrape()?;
    let got_up = by_code_source(&s, HTTP_UPSTREAM_REQUESTS, &[("peer", peer.as_str())]);
    ensure!(
        got_up == want_up && by_code_source(&s, HTTP_UPSTREAM_REQUESTS, &[]) == want_up,
        "upstream requests by code: {got_up:?}, the upstream's record {want_up:?}:\n{}",
        s.text
    );
    eprintln!(
        "ipv6: {t:?}; upstream {up:?}; requests {got:?}; wire down in {d_in:?} out {d_out:?}, \
         up in {u_in:?} out {u_out:?}"
    );
    Ok(())
}
