//! deploy/grafana/gatescope.json against a real Prometheus scraping a real
//! agent that observes real nginx traffic (issue 14): every template
//! variable's query finds values, and every query of every panel, with the
//! variables substituted as Grafana substitutes them (each once at "All" and
//! once at its busiest value), returns data without an error.
//!
//! The agent runs with tracing on (to the test's OTLP receiver) so that the
//! span panel has its families; the traffic includes a 404 from nginx, a 502
//! from a closed upstream port (a reset on the upstream side) and a
//! keep-alive connection, so that every panel has series.

use anyhow::{bail, ensure, Context, Result};
use gatescope_tests::agent::Agent;
use gatescope_tests::client::{Conn, Req};
use gatescope_tests::grafana::{self, panel_queries, regex_value};
use gatescope_tests::otlp::Receiver;
use gatescope_tests::prometheus::Prometheus;
use gatescope_tests::AccuracyScene;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What Grafana puts for `$__rate_interval`: at least four scrape intervals
/// (1 s here).
const RATE_INTERVAL: &str = "10s";
/// The `node` label the scrape job gives the agent (prometheus.yml's
/// relabelling does so from the pod's node).
const NODE: &str = "node-a";

fn dashboard() -> Result<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/gatescope.json");
    let text = std::fs::read_to_string(&path)?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `label_values(SELECTOR, LABEL)`, as a query variable's definition.
fn label_values(definition: &str) -> Result<(&str, &str)> {
    let inner = definition
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .with_context(|| format!("not label_values(...): {definition}"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .with_context(|| format!("no label: {definition}"))?;
    Ok((selector.trim(), label.trim()))
}

/// [`grafana::substitute`] with this test's `$__rate_interval`.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    grafana::substitute(expr, values, RATE_INTERVAL)
}

#[test]
fn every_panel_query_returns_data() -> Result<()> {
    let dash = dashboard()?;
    let scene = AccuracyScene::start(1)?;
    let receiver = Receiver::start()?;
    let agent = Agent::start(
        &[scene.nginx.master_pid()],
        &["--otlp-endpoint", &receiver.traces_url()],
    )?;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: gatescope\n    static_configs:\n      \
         - targets: ['{}']\n        labels:\n          node: {NODE}\n",
        agent.addr()
    );
    let prom = Prometheus::start(&config, &[])?;

    // Each request on its own connection, its status as the scene makes it.
    let ep = scene.endpoint();
    let request = |path: &str, want: u16| -> Result<()> {
        let mut c = Conn::open_at(ep)?;
        let s = c.exchange(Req::get(path).close())?;
        ensure!(s.status == want, "{path}: {} (want {want})", s.status);
        c.close()?;
        Ok(())
    };
    for (path, status) in [("/size/100", 200), ("/size/20000", 200), ("/missing", 404)] {
        request(path, status)?;
    }
    let mut c = Conn::open_at(ep)?;
    for _ in 0..5 {
        let s = c.exchange(Req::get("/size/10"))?;
        ensure!(s.status == 200, "keep-alive: {}", s.status);
    }
    c.close()?;
    // Traffic goes on while Prometheus scrapes, so that every rate over the
    // last RATE_INTERVAL has samples on both sides of some requests.
    let until = std::time::Instant::now() + Duration::from_secs(12);
    while std::time::Instant::now() < until {
        request("/size/100", 200)?;
        request("/down", 502)?;
        reset_after_request(scene.nginx.listen_port())?;
        std::thread::sleep(Duration::from_millis(200));
    }

    // The variables, in order: each query's values with the earlier ones at
    // "All" (`.*`, the dashboard's allValue), as Grafana resolves them.
    let vars = dash["templating"]["list"]
        .as_array()
        .context("no templating")?;
    let mut all: BTreeMap<String, String> = BTreeMap::new();
    let mut busiest: BTreeMap<String, String> = BTreeMap::new();
    for v in vars {
        let name = v["name"].as_str().context("variable name")?;
        match v["type"].as_str() {
            Some("datasource") => continue,
            Some("query") => {}
            other => bail!("variable {name}: type {other:?}"),
        }
        ensure!(
            v["allValue"] == ".*" && v["includeAll"] == true,
            "variable {name}: All must be .*"
        );
        let definition = v["definition"].as_str().context("definition")?;
        let (selector, label) = label_values(definition)?;
        let values = prom.label_values(label, &substitute(selector, &all))?;
        ensure!(
            !values.is_empty(),
            "variable {name} ({definition}): no values"
        );
        // The single value a user would pick: the one with the most behind
        // it (the largest sum of its series), given the earlier picks.
        let top = format!(
            "topk(1, sum by ({label}) ({}))",
            substitute(selector, &busiest)
        );
        let picked = prom.query(&top)?;
        let value = picked
            .first()
            .and_then(|(l, _)| l.get(label))
            .with_context(|| format!("variable {name}: {top}: {picked:?}"))?;
        ensure!(values.contains(value), "{value} not among {values:?}");
        all.insert(name.to_owned(), ".*".to_owned());
        busiest.insert(name.to_owned(), regex_value(value));
    }
    ensure!(all.contains_key("node") && all.contains_key("service") && all.contains_key("route"));

    let queries = panel_queries(&dash);
    ensure!(queries.len() >= 19, "{} queries", queries.len());
    let mut problems = Vec::new();
    for (choice, values) in [("All", &all), ("busiest values", &busiest)] {
        for (title, expr) in &queries {
            let q = substitute(expr, values);
            ensure!(!q.contains('$'), "{title}: unsubstituted variable in {q}");
            match prom.query(&q) {
                Ok(r) if r.is_empty() => problems.push(format!("{choice}: {title}: no data: {q}")),
                Ok(_) => {}
                Err(e) => problems.push(format!("{choice}: {title}: {e:#}: {q}")),
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "{} of {} queries:\n{}\nagent scrape:\n{}",
        problems.len(),
        queries.len() * 2,
        problems.join("\n"),
        agent.scrape_text().unwrap_or_default()
    );
    Ok(())
}

/// A client that sends a request and resets the connection (SO_LINGER 0)
/// before reading the answer: a reset the gateway receives, for the client
/// TCP events panel.
fn reset_after_request(port: u16) -> Result<()> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"GET /size/100 HTTP/1.1\r\nHost: gw\r\n\r\n")?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger` (its size given) on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    Ok(())
}

/// (Substitution and escaping are tested in grafana.rs.)
#[test]
fn label_values_queries_are_split() {
    assert_eq!(
        label_values("label_values(up{job=~\"$j\"}, instance)").unwrap(),
        ("up{job=~\"$j\"}", "instance")
    );
}
