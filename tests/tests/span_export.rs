//! Span export under faults (issue 9, section 4): the agent exports
//! straight to a receiver the test controls, which is down, slow or
//! refusing: memory bounded by the queue, every drop counted, export resumes;
//! the per-trace cap with an exact drop count; SIGTERM with a stuck
//! collector. The span-by-span checks are in spans.rs.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::Agent;
use gatescope_tests::client::Client;
use gatescope_tests::nginx::Nginx;
use gatescope_tests::otlp::{Mode, Receiver};
use gatescope_tests::span_scene::{
    caller, get, SpanScene, DROPPED, EXPORTED, EXPORT_ERRORS, SPAN_TIMEOUT,
};
use gatescope_tests::upstream::Upstream;
use gatescope_tests::util;
use std::time::Duration;

/// Spans the agent built: one SERVER per access-log line and one CLIENT per
/// upstream call.
fn built(nginx: &Nginx, upstream: &Upstream) -> Result<u64> {
    Ok((nginx.acc_log()?.len() + upstream.exchanges().len()) as u64)
}

/// exported + dropped (every reason) from a scrape.
fn accounted(agent: &Agent) -> Result<(f64, f64)> {
    let s = agent.scrape()?;
    let mut dropped = 0.0;
    for reason in ["queue_full", "export_failed", "trace_cap", "shutdown"] {
        dropped += s.require(DROPPED, &[("reason", reason)])?;
    }
    Ok((s.require(EXPORTED, &[])?, dropped))
}

/// Sends `n` requests from `threads` threads, each on keep-alive
/// connections of at most 1000 requests (nginx's `keepalive_requests`).
fn load(port: u16, threads: usize, n: usize) -> Result<()> {
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> Result<()> {
                let mut left = n / threads;
                while left > 0 {
                    let k = left.min(1000);
                    Client::new(port).keep_alive(k, "/size/100")?;
                    left -= k;
                }
                Ok(())
            })
        })
        .collect();
    for h in hs {
        h.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    Ok(())
}

/// Waits until every built span is exported or counted as dropped.
fn settle(agent: &Agent, scene: &SpanScene, what: &str) -> Result<(f64, f64)> {
    let mut last = (0.0, 0.0);
    let done = util::poll(Duration::from_secs(40), what, || {
        let b = built(&scene.nginx, &scene.upstream)? as f64;
        last = accounted(agent)?;
        Ok((last.0 + last.1 == b).then_some(last))
    });
    done.with_context(|| {
        format!(
            "{what}: exported+dropped {last:?}; agent:\n{}",
            util::tail(&agent.stderr(), 20)
        )
    })
}

#[test]
fn collector_faults_cost_bounded_memory_and_export_resumes() -> Result<()> {
    const QUEUE: &str = "2048";
    let scene = SpanScene::start()?;
    let mut receiver = Receiver::start()?;
    let endpoint = receiver.traces_url();
    // One export call (with the exporter's own retries) gives up after 1 s,
    // so a fault held for 3 s fails calls; the standard variable, inherited.
    std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1000");
    let agent = Agent::start(
        &[scene.nginx.master_pid()],
        &["--otlp-endpoint", &endpoint, "--span-queue", QUEUE],
    )?;
    std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT");
    let port = scene.nginx.listen_port();
    let rss = |what: &str| -> Result<u64> {
        let kib = util::status_kib(agent.pid(), "RssAnon")?;
        println!("{what}: agent RssAnon {kib} KiB");
        Ok(kib)
    };

    // Up: everything arrives.
    load(port, 1, 200)?;
    let (exported, dropped) = settle(&agent, &scene, "the first 200 requests' spans")?;
    ensure!(
        dropped == 0.0 && exported == receiver.span_count() as f64,
        "up: {exported} exported, {dropped} dropped, {} received",
        receiver.span_count()
    );
    let base = rss("after warm-up")?;

    let mut peak = base;
    for (fault, mode) in [
        ("down", None),
        ("slow", Some(Mode::Slow(Duration::from_millis(500)))),
        ("refusing", Some(Mode::Refusing)),
    ] {
        match mode {
            None => receiver.down(),
            Some(m) => receiver.set_mode(m),
        }
        // 20k requests: 40k spans, about 40 MB if nothing bounded them.
        load(port, 4, 20_000)?;
        peak = peak.max(rss(&format!("after load with the collector {fault}"))?);
        std::thread::sleep(Duration::from_secs(3));
        peak = peak.max(rss(&format!("3 s later, the collector still {fault}"))?);
        let before = accounted(&agent)?;
        // Back up: what is queued goes out, then new requests' spans.
        match mode {
            None => receiver.up()?,
            Some(_) => receiver.set_mode(Mode::Up),
        }
        let (exported, dropped) = settle(
            &agent,
            &scene,
            &format!("spans after the collector was {fault}"),
        )?;
        let received = receiver.span_count() as f64;
        println!("{fault}: exported {exported} (received {received}), dropped {dropped} (at the end of the load: {before:?})");
        ensure!(
            dropped > 0.0,
            "{fault}: nothing dropped with a {QUEUE}-span queue"
        );
        ensure!(
            exported == received,
            "{fault}: exported {exported} but the receiver got {received}"
        );
        let marker_from = receiver.span_count();
        for k in 0..10 {
            Client::new(port).one_shot(&format!("/size/{}", 9000 + k))?;
        }
        receiver
            .wait_spans(marker_from + 20, SPAN_TIMEOUT)
            .with_context(|| format!("export did not resume after {fault}"))?;
        let s = agent.scrape()?;
        let reasons: Vec<(String, f64)> = ["queue_full", "export_failed"]
            .iter()
            .map(|r| Ok(((*r).to_owned(), s.require(DROPPED, &[("reason", r)])?)))
            .collect::<Result<_>>()?;
        let errors: Vec<(String, f64)> = ["http_status", "network", "other"]
            .iter()
            .map(|k| Ok(((*k).to_owned(), s.require(EXPORT_ERRORS, &[("kind", k)])?)))
            .collect::<Result<_>>()?;
        println!("{fault}: dropped {reasons:?}, export errors {errors:?}");
        if fault == "refusing" {
            ensure!(
                errors[0].1 > 0.0,
                "503s not counted as http_status errors: {errors:?}"
            );
        }
        if fault == "down" {
            ensure!(
                errors[1].1 > 0.0,
                "refused connections not counted as network errors: {errors:?}"
            );
        }
    }
    ensure!(
        peak < base + 16 * 1024,
        "RssAnon grew from {base} KiB to {peak} KiB with a {QUEUE}-span queue"
    );
    let s = agent.scrape()?;
    ensure!(
        s.require("gatescope_events_lost_total", &[("reason", "ringbuf_full")])
            .unwrap_or(0.0)
            == 0.0,
        "the capture lost events: the span counts cannot be exact"
    );
    Ok(())
}

#[test]
fn one_incoming_trace_is_capped_and_the_drops_counted() -> Result<()> {
    let scene = SpanScene::start()?;
    let receiver = Receiver::start()?;
    let endpoint = receiver.traces_url();
    let agent = Agent::start(
        &[scene.nginx.master_pid()],
        &["--otlp-endpoint", &endpoint, "--max-spans-per-trace", "5"],
    )?;
    let port = scene.nginx.listen_port();
    let (t, s) = caller(300);
    let same = format!("00-{t}-{s}-01");
    // Two spans per request: the first two requests fit in 5, the other
    // four are refused whole.
    for i in 0..6 {
        get(port, &format!("/size/{}", 800 + i), Some(&same))?;
    }
    let (t2, s2) = caller(301);
    get(port, "/size/900", Some(&format!("00-{t2}-{s2}-01")))?;
    let (exported, dropped) = settle(&agent, &scene, "the capped trace's spans")?;
    let sc = agent.scrape()?;
    let capped = sc.require(DROPPED, &[("reason", "trace_cap")])?;
    let spans = receiver.wait_spans(6, SPAN_TIMEOUT)?;
    let in_trace = spans.iter().filter(|sp| sp.trace_id == t).count();
    println!("trace cap 5: {exported} exported, {capped} dropped by the cap, {in_trace} in the capped trace");
    ensure!(
        exported == 6.0 && dropped == 8.0 && capped == 8.0,
        "exported {exported}, dropped {dropped}, capped {capped}"
    );
    ensure!(
        in_trace == 4 && spans.len() == 6,
        "{in_trace} spans in the capped trace, {} in all",
        spans.len()
    );
    Ok(())
}

#[test]
fn sigterm_with_a_stuck_collector_exits_under_two_seconds() -> Result<()> {
    let scene = SpanScene::start()?;
    let receiver = Receiver::start()?;
    receiver.set_mode(Mode::Slow(Duration::from_secs(30)));
    let endpoint = receiver.traces_url();
    let mut agent = Agent::start(&[scene.nginx.master_pid()], &["--otlp-endpoint", &endpoint])?;
    let port = scene.nginx.listen_port();
    let loader = std::thread::spawn(move || load(port, 2, 4000));
    std::thread::sleep(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    agent.stop_ok()?;
    let took = t0.elapsed();
    let _ = loader.join();
    println!("exit with the collector stuck: {took:?}");
    ensure!(took < Duration::from_secs(2), "exit took {took:?}");
    ensure!(
        agent.stderr().contains("did not take the last spans"),
        "no word of the spans left behind:\n{}",
        util::tail(&agent.stderr(), 20)
    );
    Ok(())
}
