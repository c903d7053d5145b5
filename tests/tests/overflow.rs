//! The ring buffer overrun: a burst the frozen agent cannot read is lost and
//! counted, and what follows it is counted exactly again (connections whose
//! open or close records were lost are healed).

use anyhow::{ensure, Context, Result};
use gatescope_tests::accuracy::{sum_by_code, HTTP_REQUESTS, HTTP_UPSTREAM_REQUESTS};
use gatescope_tests::agent::{Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::expect::settled_upstream;
use gatescope_tests::metrics::*;
use gatescope_tests::prom::Scrape;
use gatescope_tests::wrk::Wrk;
use gatescope_tests::{util, Scene};
use std::time::Duration;

#[test]
fn ring_buffer_overrun() -> Result<()> {
    const QUIET: usize = 50;
    let ringbuf = [("reason", "ringbuf_full")];
    let scene = Scene::start(2)?;
    // Small enough that wrk's burst overflows it many times over, large
    // enough to hold one one-shot exchange's records (about 3 KB with the
    // connection records) in the quiet phase.
    let agent = Agent::start(
        &[scene.nginx.master_pid()],
        &["--ring-buffer-bytes", "16384"],
    )?;
    let s = agent.scrape()?;
    let base = s.clone();
    ensure!(
        s.require(MAP_CAPACITY, &[("map", "ring_buffer_bytes")])? == 16384.0,
        "ring buffer capacity:\n{}",
        s.text
    );
    ensure!(s.require(EVENTS_LOST, &ringbuf)? == 0.0);
    let active = [("state", "active")];
    let tracked = [("role", "downstream")];
    let b_accepted = s.require(ACCEPTED, &[])?;
    let (b_active, b_tracked) = (
        s.get_or_zero(DOWN_CONNS, &active)?,
        s.get_or_zero(CONNS_TRACKED, &tracked)?,
    );

    // Frozen during the burst, the extreme of the CPU starvation CI's two
    // cores once caused: the ring keeps the burst's first records (the
    // connections' opens), everything after is lost (their closes among it),
    // and on waking the agent may read its losses before those opens.
    agent.freeze(true)?;
    let wrk = Wrk::spawn(
        &format!("http://127.0.0.1:{}/size/100", scene.nginx.listen_port()),
        2,
        50,
        3,
    )?;
    let (sum, out) = wrk.wait()?;
    agent.freeze(false)?;
    ensure!(sum.errors() == 0 && sum.requests > 0, "wrk: {sum:?}\n{out}");

    // The burst is over; wait until the agent's counters hold still for
    // longer than the 1 s period at which it exports the kernel's losses.
    let mut last = None;
    let after_burst = util::poll(Duration::from_secs(15), "counters to settle", || {
        let s = agent.scrape()?;
        let key = (s.require(ACCEPTED, &[])?, s.require(EVENTS_LOST, &ringbuf)?);
        if last == Some(key) {
            return Ok(Some(s));
        }
        last = Some(key);
        std::thread::sleep(Duration::from_millis(1200));
        Ok(None)
    })?;
    let lost = after_burst.require(EVENTS_LOST, &ringbuf)?;
    ensure!(
        lost > 0.0,
        "no ring buffer loss after a {}-request burst into a 16 KiB ring:\n{}",
        sum.requests,
        after_burst.text
    );
    let accepted = after_burst.require(ACCEPTED, &[])?;
    // The upstream once the burst's last requests (some answered after wrk
    // stopped counting) are done: its counters hold still.
    let mut last = None;
    let up0 = util::poll(Duration::from_secs(10), "upstream to settle", || {
        let st = scene.upstream.stats();
        if last == Some(st) {
            return Ok(Some(st));
        }
        last = Some(st);
        std::thread::sleep(Duration::from_millis(300));
        Ok(None)
    })?;

    // The agent's sweeps after the loss: the gauges heal (connections whose
    // close record was lost are dropped once the kernel shows they are gone,
    // so every client connection, all closed now, has left the active and
    // tracked gauges), and the kernel's entries for connections whose open
    // record was lost (nginx's pooled upstream connections opened in the
    // burst) are released so the kernel finds them again at their next
    // transfer. The quiet phase starts once both are done: the gauges back
    // to base and the released count holding still past a sweep.
    let active_gauges = [
        Expect::new(DOWN_CONNS, &active, b_active),
        Expect::new(CONNS_TRACKED, &tracked, b_tracked),
    ];
    agent.wait_all(&active_gauges, SETTLE_TIMEOUT)?;
    let mut last = None;
    let q0 = util::poll(
        Duration::from_secs(15),
        "lost-open releases to settle",
        || {
            let s = agent.scrape()?;
            let key = s.get_or_zero(LOST_OPENS, &[])?;
            if last == Some(key) {
                return Ok(Some(s));
            }
            last = Some(key);
            std::thread::sleep(Duration::from_millis(1200));
            Ok(None)
        },
    )?;

    // Quiet phase: one request at a time, each counted exactly: bytes and
    // connections from the client's and the upstream's own counts, requests
    // and their code 200 downstream and upstream (the upstream ones on the
    // pooled connections whose open was lost), and the gauges stay healed.
    // Each exchange is given time to be drained before the next: the
    // 16 KiB ring holds about five one-shots' records, and an agent kept off
    // the CPU for a few milliseconds lost the next ones (once in eight CI
    // runs on 2026-12-02, more often with busy loops on both cores). This
    // phase is about counting exactly after the losses, not about the
    // agent's scheduling; a loss in it still fails the test below.
    let mut client = scene.client();
    for _ in 0..QUIET {
        client.one_shot("/size/100")?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = client.totals();
    ensure!(t.requests == QUIET as u64, "client: {t:?}");
    let up1 = settled_upstream(&scene, up0.requests + QUIET as u64)?;
    // nginx mostly reuses its pooled upstream connections here; one it
    // replaced (a pooled connection closed meanwhile: once in a CI run on
    // 2026-12-02) is counted as the upstream accepted it.
    let opened = up1.accepted - up0.accepted;
    let (l, p) = (scene.nginx.listen_addr(), scene.upstream.addr());
    let code = |name: &str| sum_by_code(&q0, name).get("200").copied().unwrap_or(0.0);
    let quiet = QUIET as f64;
    let plus = |name: &str, labels: &[(&str, &str)], n: u64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            labels,
            q0.get_or_zero(name, labels)? + n as f64,
        ))
    };
    let exp = [
        plus(ACCEPTED, &[], QUIET as u64)?,
        plus(
            DOWN_BYTES,
            &[("listener", &l), ("direction", "ingress")],
            t.written,
        )?,
        plus(
            DOWN_BYTES,
            &[("listener", &l), ("direction", "egress")],
            t.read,
        )?,
        plus(REQUESTS_ALL, &[], t.requests)?,
        // The upstream's own counts: what nginx sent it and what it answered.
        plus(
            UP_BYTES,
            &[("peer", &p), ("direction", "egress")],
            up1.bytes_received - up0.bytes_received,
        )?,
        plus(
            UP_BYTES,
            &[("peer", &p), ("direction", "ingress")],
            up1.bytes_sent - up0.bytes_sent,
        )?,
        // the upstream connections nginx opened (the upstream's count)
        plus(UP_OPENED, &[("peer", &p)], opened)?,
        Expect::new(EVENTS_LOST, &ringbuf, lost),
        Expect::new(DOWN_CONNS, &active, b_active),
        Expect::new(CONNS_TRACKED, &tracked, b_tracked),
    ];
    let s = agent
        .wait_all(&exp, SETTLE_TIMEOUT)
        // Whether the kernel still holds connections the agent counts tells
        // a gauge that failed to heal from connections really still open.
        .with_context(|| {
            format!(
                "the kernel's view of port {}:\n{}",
                scene.nginx.listen_port(),
                util::sockets_on_port(scene.nginx.listen_port())
            )
        })?;
    let got = sum_by_code(&s, HTTP_REQUESTS)
        .get("200")
        .copied()
        .unwrap_or(0.0);
    ensure!(
        got == code(HTTP_REQUESTS) + quiet,
        "{HTTP_REQUESTS}{{code=\"200\"}} = {got}, want {} after the burst plus {QUIET}:\n{}",
        code(HTTP_REQUESTS),
        s.text
    );
    let up_requests = (up1.requests - up0.requests) as f64;
    let got_up = sum_by_code(&s, HTTP_UPSTREAM_REQUESTS)
        .get("200")
        .copied()
        .unwrap_or(0.0);
    ensure!(
        up_requests == quiet && got_up == code(HTTP_UPSTREAM_REQUESTS) + up_requests,
        "{HTTP_UPSTREAM_REQUESTS}{{code=\"200\"}} = {got_up}, want {} after the sweeps plus the \
         upstream's {up_requests}:\n{}",
        code(HTTP_UPSTREAM_REQUESTS),
        s.text
    );
    // Lost closes: which records fit in the frozen ring depends on how the
    // burst's first records interleave, so the exact count is not knowable;
    // its bounds are. Every downstream connection the agent saw accepted in
    // the burst had its close lost (wrk keeps its connections to the end,
    // long after the ring filled), so all of them were dropped; and nothing
    // is dropped that the agent did not see opened (a client's connection,
    // or one to the upstream) in the burst.
    let lost_closes = s.require("gatescope_lost_closes_total", &[])?;
    let seen = |s: &Scrape, kind: &str| s.get_or_zero(EVENTS_RECEIVED, &[("kind", kind)]);
    // Opens of both roles: client connections and upstream connects.
    let opened_in_burst = seen(&after_burst, "conn_open")? - seen(&base, "conn_open")?;
    let accepted_in_burst = accepted - b_accepted;
    ensure!(
        accepted_in_burst > 0.0
            && accepted_in_burst <= lost_closes
            && lost_closes <= opened_in_burst,
        "lost closes {lost_closes}, want between the {accepted_in_burst} connections accepted \
         in the burst and the {opened_in_burst} the agent saw opened in it:\n{}",
        s.text
    );
    eprintln!(
        "ring_buffer_overrun: wrk {} requests; accepted after burst {accepted}; lost \
         (ringbuf_full) {lost}; {} connections dropped after lost closes, {} kernel entries \
         released after lost opens; quiet phase {QUIET} one-shots counted exactly downstream \
         and upstream, no new loss, gauges back to base",
        sum.requests,
        s.require("gatescope_lost_closes_total", &[])?,
        s.require(LOST_OPENS, &[])?
    );
    Ok(())
}
