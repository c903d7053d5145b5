//! TLS the agent cannot decrypt (issue 11): a gateway with no OpenSSL to
//! probe, and an agent started with `--tls=false`. Its TLS bytes are counted
//! as bytes and as `gatescope_*_tls_unparsed_bytes_total`, never parsed (no
//! request, no anomaly), and no handshake result is made up; the gateway's
//! clear-text legs are still parsed. One log line says why.

use anyhow::{ensure, Result};
use gatescope_tests::accuracy::{HTTP_ANOMALIES, HTTP_UPSTREAM_REQUESTS};
use gatescope_tests::agent::Agent;
use gatescope_tests::caddy::Caddy;
use gatescope_tests::client::{Conn, Endpoint, Req};
use gatescope_tests::metrics::{DOWN_BYTES, REQUESTS_ALL};
use gatescope_tests::prom::Scrape;
use gatescope_tests::tls::{Forwarder, SelfSigned};
use gatescope_tests::upstream::Upstream;
use gatescope_tests::util::{self, free_port};
use gatescope_tests::workload::{check_sent, poll_last};
use gatescope_tests::AccuracyScene;
use std::time::Duration;

const UNPARSED: &str = "gatescope_downstream_tls_unparsed_bytes_total";
const HANDSHAKES: &str = "gatescope_downstream_tls_handshakes_total";

/// Requests over two TLS keep-alive connections: how many, and the
/// plaintext bytes (written, read) the client counted.
fn traffic(ep: Endpoint) -> Result<(usize, [f64; 2])> {
    let mut n = 0;
    let mut plain = [0.0; 2];
    for _ in 0..2 {
        let mut c = Conn::open_at(ep)?;
        for r in [
            Req::get("/size/100"),
            Req::get("/size/100000"),
            Req::post("/size/10", 50_000),
        ] {
            let sent = c.exchange(r)?;
            check_sent(&sent)?;
            n += 1;
            plain[0] += sent.written as f64;
            plain[1] += sent.read as f64;
        }
        c.close()?;
    }
    Ok((n, plain))
}

/// Once the agent has counted every byte of the client connections, each
/// direction's unparsed TLS bytes equal its bytes: all of it, and more than
/// the plaintext the client moved (`plain`, ingress and egress).
fn all_unparsed(agent: &Agent, listener: &str, plain: [f64; 2]) -> Result<Scrape> {
    let (done, (s, seen)) = poll_last(Duration::from_secs(10), || {
        let s = agent.scrape()?;
        let mut seen = Vec::new();
        for (dir, floor) in ["ingress", "egress"].into_iter().zip(plain) {
            let labels = [("listener", listener), ("direction", dir)];
            let bytes = s.get_or_zero(DOWN_BYTES, &labels)?;
            let unparsed = s.get_or_zero(UNPARSED, &labels)?;
            seen.push((dir, floor, bytes, unparsed));
        }
        let same = seen
            .iter()
            .all(|&(_, floor, bytes, unparsed)| bytes > floor && unparsed == bytes);
        Ok((same, (s, seen)))
    })?;
    ensure!(
        done,
        "(direction, plaintext, bytes, unparsed) {seen:?} on {listener}, want unparsed = bytes > plaintext\n{}",
        util::tail(&agent.stderr(), 20)
    );
    Ok(s)
}

/// Nothing parsed downstream, nothing misread, no handshake result.
fn nothing_parsed(s: &Scrape, listener: &str) -> Result<()> {
    ensure!(s.get_or_zero(REQUESTS_ALL, &[])? == 0.0, "requests parsed");
    for x in s.matching(HTTP_ANOMALIES, &[]) {
        ensure!(x.value == 0.0, "anomalies {:?} = {}", x.labels, x.value);
    }
    for r in ["ok", "failed", "closed"] {
        let v = s.get_or_zero(HANDSHAKES, &[("listener", listener), ("result", r)])?;
        ensure!(v == 0.0, "{v} handshakes {r}");
    }
    Ok(())
}

/// Caddy terminates TLS with Go's crypto/tls: no libssl, no `SSL_read` in
/// its executable. Its client side is unparsed TLS; its upstream calls
/// (clear text) are parsed, each one, as the upstream counted them.
#[test]
fn a_gateway_without_openssl_has_its_tls_counted_as_unparsed() -> Result<()> {
    let upstream = Upstream::start()?;
    let cert = SelfSigned::generate()?;
    let caddy = Caddy::start_tls(free_port()?, upstream.port(), free_port()?, &cert)?;
    let forwarder = Forwarder::start(caddy.listen_port(), &cert.cert())?;
    let agent = Agent::start(&[caddy.pid()], &[])?;
    let said = format!("pid={}", caddy.pid());
    util::poll(Duration::from_secs(10), "the agent's TLS line", || {
        let err = agent.stderr();
        Ok(err
            .lines()
            .any(|l| l.contains("TLS: no plaintext from this target") && l.contains(&said))
            .then_some(()))
    })?;
    let ep = Endpoint::Tls {
        forwarder: forwarder.port(),
        server: caddy.listen_port(),
    };
    let (n, plain) = traffic(ep)?;
    let listener = caddy.listen_addr();
    let s = all_unparsed(&agent, &listener, plain)?;
    nothing_parsed(&s, &listener)?;
    let peer = upstream.addr();
    let up = util::poll(Duration::from_secs(10), "upstream calls", || {
        let s = agent.scrape()?;
        let v: f64 = s
            .matching(HTTP_UPSTREAM_REQUESTS, &[("peer", peer.as_str())])
            .map(|x| x.value)
            .sum();
        Ok((v >= n as f64).then_some(v))
    })?;
    ensure!(
        up == n as f64 && upstream.stats().requests == n as u64,
        "upstream calls: agent {up}, upstream {}, sent {n}",
        upstream.stats().requests
    );
    Ok(())
}

/// nginx has OpenSSL, but the agent is told not to decrypt (`--tls=false`):
/// the same accounting, on a gateway whose TLS it could read.
#[test]
fn tls_off_counts_tls_as_unparsed() -> Result<()> {
    let scene = AccuracyScene::start_tls(1)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &["--tls", "false"])?;
    let (_, plain) = traffic(scene.endpoint())?;
    let listener = scene.nginx.listen_addr();
    let s = all_unparsed(&agent, &listener, plain)?;
    nothing_parsed(&s, &listener)?;
    Ok(())
}
