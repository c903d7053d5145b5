//! Scrapes pass `promtool check metrics`: cleanly in native mode; in Kong mode with
//! exactly the naming lints that Kong's own metric names draw.

use anyhow::{ensure, Result};
use gatescope_tests::agent::{http_get, Agent, Expect, SETTLE_TIMEOUT};
use gatescope_tests::metrics::*;
use gatescope_tests::{promtool, Scene};
use std::collections::BTreeSet;

fn traffic(scene: &Scene) -> Result<gatescope_tests::client::Client> {
    let mut c = scene.client();
    c.one_shot("/size/1000")?;
    c.one_shot_post("/size/3", 4000)?;
    c.keep_alive(3, "/size/20000")?;
    Ok(c)
}

#[test]
fn native_scrape_passes_promtool() -> Result<()> {
    let scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let base = agent.scrape()?.get_or_zero(ACCEPTED, &[])?;
    let c = traffic(&scene)?;
    agent.wait_for(
        ACCEPTED,
        &[],
        base + c.totals().connections as f64,
        SETTLE_TIMEOUT,
    )?;
    let text = agent.scrape_text()?;
    let (code, out) = promtool::check_metrics(&text)?;
    ensure!(
        code == 0 && out.trim().is_empty(),
        "promtool check metrics: exit {code}, output:\n{out}\n--- scrape ---\n{text}"
    );
    // Every family of the contract is there.
    let s = agent.scrape()?;
    for name in [
        ACCEPTED,
        HANDLED,
        DOWN_CONNS,
        DOWN_BYTES,
        UP_CONNS,
        UP_OPENED,
        UP_BYTES,
        BUILD_INFO,
        EVENTS_RECEIVED,
        EVENTS_LOST,
        CONNS_TRACKED,
        TARGET_PROCESSES,
        LISTEN_SOCKETS,
        PROGRAMS_ATTACHED,
    ] {
        ensure!(
            s.matching(name, &[]).next().is_some(),
            "no {name} in native scrape:\n{text}"
        );
    }
    ensure!(
        s.matching("kong_", &[]).next().is_none() && !text.contains("\nkong_"),
        "kong_ families in native mode:\n{text}"
    );
    // `/` is the status page (tests/tests/status_page.rs); any other path
    // is not found.
    let (code, page) = http_get(agent.addr(), "/")?;
    ensure!(
        code == 200 && page.starts_with("<!DOCTYPE html>"),
        "GET / answered {code}: {page}"
    );
    for path in ["/metrics/x", "/favicon.ico", "/index.html"] {
        let (code, _) = http_get(agent.addr(), path)?;
        ensure!(
            code == 404,
            "GET {path} answered {code}, want 404 (spec: any other path)"
        );
    }
    Ok(())
}

#[test]
fn kong_scrape_has_only_kongs_own_lints() -> Result<()> {
    let scene = Scene::start(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &["--metrics-compat", "kong"])?;
    let listener = scene.nginx.listen_addr();
    let base = agent.scrape()?;
    let accepted = [("subsystem", "http"), ("state", "accepted")];
    let handled = [("subsystem", "http"), ("state", "handled")];
    let active = [("subsystem", "http"), ("state", "active")];
    let ingress = [
        ("service", listener.as_str()),
        // Every request of `traffic` is /size/N: one route template.
        ("route", "/size/{id}"),
        ("direction", "ingress"),
        ("consumer", ""),
    ];
    let egress = [
        ("service", listener.as_str()),
        // Every request of `traffic` is /size/N: one route template.
        ("route", "/size/{id}"),
        ("direction", "egress"),
        ("consumer", ""),
    ];
    let c = traffic(&scene)?;
    let t = c.totals();
    let s = agent.wait_all(
        &[
            Expect::new(
                KONG_CONNS,
                &accepted,
                base.get_or_zero(KONG_CONNS, &accepted)? + t.connections as f64,
            ),
            Expect::new(
                KONG_CONNS,
                &handled,
                base.get_or_zero(KONG_CONNS, &handled)? + t.connections as f64,
            ),
            Expect::new(KONG_CONNS, &active, base.get_or_zero(KONG_CONNS, &active)?),
            Expect::new(
                KONG_BANDWIDTH,
                &ingress,
                base.get_or_zero(KONG_BANDWIDTH, &ingress)? + t.written as f64,
            ),
            Expect::new(
                KONG_BANDWIDTH,
                &egress,
                base.get_or_zero(KONG_BANDWIDTH, &egress)? + t.read as f64,
            ),
        ],
        SETTLE_TIMEOUT,
    )?;
    // The renamed families are gone, the node id is consistent. (Bytes per
    // listener stay under their native name: Kong's bandwidth is per service
    // and route, from HTTP exchanges.)
    for gone in [ACCEPTED, HANDLED, DOWN_CONNS] {
        ensure!(
            s.matching(gone, &[]).next().is_none(),
            "{gone} still present in kong mode:\n{}",
            s.text
        );
    }
    let info: Vec<_> = s.matching(KONG_NODE_INFO, &[]).collect();
    ensure!(
        info.len() == 1 && info[0].value == 1.0,
        "kong_node_info:\n{}",
        s.text
    );
    let node_id = info[0].labels.get("node_id").cloned().unwrap_or_default();
    ensure!(!node_id.is_empty(), "empty node_id:\n{}", s.text);
    for st in ["accepted", "handled", "active"] {
        s.require(
            KONG_CONNS,
            &[("node_id", &node_id), ("subsystem", "http"), ("state", st)],
        )?;
    }
    ensure!(
        s.types.get(KONG_CONNS).map(String::as_str) == Some("gauge")
            && s.types.get(KONG_BANDWIDTH).map(String::as_str) == Some("counter"),
        "kong TYPE lines: {:?}",
        s.types
    );
    s.require(
        UP_BYTES,
        &[("peer", &scene.upstream.addr()), ("direction", "ingress")],
    )?;

    let (code, out) = promtool::check_metrics(&s.text)?;
    let got: BTreeSet<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let want: BTreeSet<&str> = [
        r#"kong_bandwidth_bytes counter metrics should have "_total" suffix"#,
        r#"kong_nginx_connections_total non-counter metrics should not have "_total" suffix"#,
        r#"kong_nginx_requests_total non-counter metrics should not have "_total" suffix"#,
        "kong_request_latency_ms metric names should not contain abbreviated units",
        "kong_upstream_latency_ms metric names should not contain abbreviated units",
        "kong_kong_latency_ms metric names should not contain abbreviated units",
    ]
    .into_iter()
    .collect();
    ensure!(
        code == 3 && got == want,
        "promtool check metrics: exit {code} (want 3), lines {got:#?} (want {want:#?})\n--- scrape ---\n{}",
        s.text
    );
    Ok(())
}

/// The agent's golden expositions (agent/src/metrics/golden/), which hold
/// every family with series, GenAI ones included: native passes cleanly;
/// Kong mode draws exactly Kong's own names' lints, its AI latency's too.
#[test]
fn golden_expositions_pass_promtool() -> Result<()> {
    let golden =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent/src/metrics/golden");
    let native = std::fs::read_to_string(golden.join("native.prom"))?;
    ensure!(native.contains("\ngen_ai_client_token_usage_bucket{"));
    let (code, out) = promtool::check_metrics(&native)?;
    ensure!(
        code == 0 && out.trim().is_empty(),
        "promtool check metrics native.prom: exit {code}, output:\n{out}"
    );
    let kong = std::fs::read_to_string(golden.join("kong.prom"))?;
    ensure!(kong.contains("\nkong_ai_llm_provider_latency_ms_bucket{"));
    let (code, out) = promtool::check_metrics(&kong)?;
    let got: BTreeSet<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let want: BTreeSet<&str> = [
        r#"kong_bandwidth_bytes counter metrics should have "_total" suffix"#,
        r#"kong_nginx_connections_total non-counter metrics should not have "_total" suffix"#,
        r#"kong_nginx_requests_total non-counter metrics should not have "_total" suffix"#,
        "kong_request_latency_ms metric names should not contain abbreviated units",
        "kong_upstream_latency_ms metric names should not contain abbreviated units",
        "kong_kong_latency_ms metric names should not contain abbreviated units",
        "kong_ai_llm_provider_latency_ms metric names should not contain abbreviated units",
    ]
    .into_iter()
    .collect();
    ensure!(
        code == 3 && got == want,
        "promtool check metrics kong.prom: exit {code} (want 3), lines {got:#?} (want {want:#?})"
    );
    Ok(())
}
