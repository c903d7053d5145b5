//! `cargo xtask demo --stack`: a real Prometheus (Debian's) next to the demo, scraping
//! gatescope every second with deploy/prometheus's alert rules loaded. After the demo's
//! traffic it prints each alert's state and a few of deploy/grafana/gatescope.json's queries
//! as Grafana would send them, with every variable at All.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::{Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use gatescope_tests::{
    agent::http_get,
    grafana,
    prom::Scrape,
    prometheus::{Client, Sample},
    util::free_port,
};

use crate::{
    stack,
    util::{self, Guard},
    Compat,
};

/// Scrape and rule-evaluation interval, short so that a demo of a few seconds has samples.
const INTERVAL_SECS: u64 = 1;
/// Rule evaluations to wait for after the traffic, so the states reflect all of it.
const EVALUATIONS: f64 = 3.0;
/// The `node` label the scrape job gives the agent, as deploy/prometheus/prometheus.yml's
/// relabelling does from the pod's node.
const NODE: &str = "demo";
const RULE_FILES: [&str; 2] = [
    "deploy/prometheus/gatescope-rules.yml",
    "deploy/prometheus/genai-rules.yml",
];
const DASHBOARD_PATH: &str = "deploy/grafana/gatescope.json";
const DASHBOARD: &str = include_str!("../../deploy/grafana/gatescope.json");
const READY: Duration = Duration::from_secs(30);
/// Rounds of traffic for Prometheus, after the demo's checks (see [`Stack::report`]).
const ROUNDS: u32 = 5;

/// A dashboard query the demo prints: what it shows, the panel it comes from, and how its
/// expression starts (to pick one of a panel's several targets).
struct Pick {
    what: &'static str,
    panel: &'static str,
    prefix: &'static str,
}

const PICKS: [Pick; 5] = [
    Pick {
        what: "requests/s by service",
        panel: "Requests per second by service",
        prefix: "",
    },
    Pick {
        what: "p99 duration (s) by route",
        panel: "Duration p50 / p95 / p99 by route",
        prefix: "histogram_quantile(0.99,",
    },
    Pick {
        what: "5xx ratio by service",
        panel: "5xx ratio by service",
        prefix: "",
    },
    Pick {
        what: "upstream answers/s by peer and status",
        panel: "Upstream answers by peer and status",
        prefix: "",
    },
    Pick {
        what: "events lost/s by reason",
        panel: "Events lost by reason",
        prefix: "",
    },
];

/// Prometheus, stopped when dropped (the [`Guard`]), on every path out of the demo.
pub struct Stack {
    prometheus: Guard,
    client: Client,
    /// When Prometheus first scraped the agent: the dashboard's rates span from here.
    first_scrape: Instant,
}

/// prometheus.yml for the demo: deploy/prometheus/prometheus.yml's job and rules, with the
/// agent as a static target in place of Kubernetes discovery.
fn config(metrics: SocketAddr, root: &Path) -> String {
    let mut text = format!(
        "# Written by `cargo xtask demo --stack`.\n\
         global:\n  scrape_interval: {INTERVAL_SECS}s\n  evaluation_interval: {INTERVAL_SECS}s\n\
         rule_files:\n"
    );
    for file in RULE_FILES {
        // A Rust string literal is a valid YAML double-quoted scalar for a path.
        let _ = writeln!(text, "  - {:?}", root.join(file).display().to_string());
    }
    let _ = write!(
        text,
        "scrape_configs:\n  - job_name: gatescope\n    static_configs:\n      \
         - targets: ['{metrics}']\n        labels:\n          node: {NODE}\n"
    );
    text
}

/// Starts Prometheus on a free port with its configuration, storage and log in `dir`, and
/// waits until it has scraped the agent on `metrics` once.
pub fn start(dir: &Path, metrics: SocketAddr) -> Result<Stack> {
    let conf = dir.join("prometheus.yml");
    fs::write(&conf, config(metrics, &util::workspace_root()))
        .with_context(|| format!("writing {}", conf.display()))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mut prometheus = Guard::spawn(
        "prometheus",
        Command::new("prometheus").args([
            format!("--config.file={}", conf.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address={addr}"),
        ]),
        &dir.join("prometheus.log"),
    )
    .context("starting Prometheus for --stack (`cargo xtask setup` installs Debian's)")?;
    let client = Client::new(addr.to_string());
    let took = util::wait_for(
        &format!("Prometheus on http://{addr}/ (ready, rules loaded)"),
        &mut prometheus,
        READY,
        || client.ready(),
    )?;
    util::wait_for(
        &format!("Prometheus' first scrape of gatescope on {metrics}"),
        &mut prometheus,
        READY,
        || {
            client
                .active_targets()
                .is_ok_and(|targets| targets.iter().any(|t| t["health"] == "up"))
        },
    )?;
    let version = client
        .api("/api/v1/status/buildinfo")
        .ok()
        .and_then(|b| b["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "(version unknown)".to_owned());
    println!(
        "demo: Prometheus {version} on http://{addr}/ ready after {took:.1?}, scraping \
         gatescope every {INTERVAL_SECS}s (node=\"{NODE}\") with {} loaded",
        RULE_FILES.join(" and ")
    );
    Ok(Stack {
        prometheus,
        client,
        first_scrape: Instant::now(),
    })
}

impl Stack {
    pub fn url(&self) -> String {
        format!("http://{}/", self.client.addr())
    }

    /// Some(status) if Prometheus has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.prometheus.exited()
    }

    pub fn died(&self, status: ExitStatus) -> anyhow::Error {
        self.prometheus.died(status)
    }

    pub fn stop(mut self) -> Result<ExitStatus> {
        self.prometheus.stop(stack::STOP_GRACE)
    }

    /// Runs `more` (a round of the demo's HTTP traffic) [`ROUNDS`] times a second apart,
    /// waits for a few rule evaluations after it, then prints the alerts' states and the
    /// dashboard's picked queries.
    pub fn report(&mut self, compat: Compat, mut more: impl FnMut() -> Result<()>) -> Result<()> {
        // A burst shorter than a scrape interval makes its series with their whole count at
        // the first scrape, which rate() cannot tell from a count older than Prometheus:
        // rounds spread over several scrapes give it increases to see.
        println!(
            "demo: Prometheus: {ROUNDS} more rounds of the demo's HTTP traffic, one a second, \
             so that the rates see increases"
        );
        for _ in 0..ROUNDS {
            more()?;
            util::check_interrupted()?;
            thread::sleep(Duration::from_secs(INTERVAL_SECS));
        }
        let start = self.iterations()?;
        let deadline = Instant::now() + READY;
        while self.iterations()? < start + EVALUATIONS {
            if let Some(status) = self.prometheus.exited()? {
                return Err(self.prometheus.died(status));
            }
            util::check_interrupted()?;
            if Instant::now() > deadline {
                bail!("Prometheus did not evaluate its rules {EVALUATIONS} times in {READY:?}");
            }
            thread::sleep(Duration::from_millis(200));
        }
        let url = self.url();
        println!(
            "demo: Prometheus: alerts after {EVALUATIONS} evaluations past the traffic \
             (also at {url}alerts):"
        );
        for line in alert_lines(&self.client.rules()?) {
            println!("  {line}");
        }
        // Grafana's $__rate_interval depends on the time range; spanning the whole run
        // averages over all of the demo's traffic, which is over in seconds. Two intervals
        // more take in the first scrape, which began before it was seen up.
        let window = self.first_scrape.elapsed().as_secs() + 2 * INTERVAL_SECS;
        println!(
            "demo: Prometheus: queries of {DASHBOARD_PATH} with node, service and route at \
             All and $__rate_interval = {window}s (since the first scrape):"
        );
        let dash: Value = serde_json::from_str(DASHBOARD).context(DASHBOARD_PATH)?;
        for (pick, expr) in picked_queries(&dash, &format!("{window}s"))? {
            println!("  {} (panel \"{}\"):", pick.what, pick.panel);
            println!("    {expr}");
            let samples = self
                .client
                .query(&expr)
                .with_context(|| format!("{DASHBOARD_PATH}: {}: {expr}", pick.panel))?;
            for line in result_lines(samples, compat) {
                println!("    {line}");
            }
        }
        Ok(())
    }

    /// The fewest evaluations any rule group has had (Prometheus' own counter, read from
    /// its /metrics: it does not scrape itself here).
    fn iterations(&self) -> Result<f64> {
        let (status, body) = http_get(self.client.addr(), "/metrics")?;
        anyhow::ensure!(status == 200, "Prometheus' /metrics answered {status}");
        let lines: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("prometheus_rule_group_iterations_total"))
            .collect();
        Scrape::parse(&lines.join("\n"))?
            .samples
            .iter()
            .map(|s| s.value)
            .reduce(f64::min)
            .context("Prometheus' /metrics has no prometheus_rule_group_iterations_total")
    }
}

/// The dashboard's queries of [`PICKS`], every variable at its All value (`.*`).
fn picked_queries(dash: &Value, rate_interval: &str) -> Result<Vec<(&'static Pick, String)>> {
    let mut all = BTreeMap::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let name = v["name"].as_str().context("a variable without a name")?;
            let value = v["allValue"].as_str().unwrap_or(".*");
            all.insert(name.to_owned(), value.to_owned());
        }
    }
    let queries = grafana::panel_queries(dash);
    PICKS
        .iter()
        .map(|pick| {
            let (_, expr) = queries
                .iter()
                .find(|(title, expr)| title == pick.panel && expr.starts_with(pick.prefix))
                .with_context(|| {
                    format!(
                        "{DASHBOARD_PATH} has no panel \"{}\" with a query starting {:?}",
                        pick.panel, pick.prefix
                    )
                })?;
            Ok((pick, grafana::substitute(expr, &all, rate_interval)))
        })
        .collect()
}

/// One line per alerting rule: its state, name and `for`, then one line per active alert
/// (pending or firing) with its labels and value.
fn alert_lines(rules: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules.iter().filter(|r| r["type"] == "alerting") {
        let name = r["name"].as_str().unwrap_or("?");
        let state = r["state"].as_str().unwrap_or("?");
        let hold = r["duration"].as_f64().map_or(String::new(), |s| {
            if s == 0.0 {
                String::new()
            } else {
                format!("for {}", duration(s))
            }
        });
        let mut line = format!("{state:<8}  {name:<30}  {hold}");
        if r["health"] != "ok" {
            let _ = write!(
                line,
                "  (health {}: {})",
                r["health"].as_str().unwrap_or("?"),
                r["lastError"].as_str().unwrap_or("")
            );
        }
        out.push(line.trim_end().to_owned());
        for a in r["alerts"].as_array().into_iter().flatten() {
            let labels: BTreeMap<String, String> = a["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let value = a["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .map_or_else(|| "?".to_owned(), number);
            out.push(format!(
                "          {} {} = {value}",
                a["state"].as_str().unwrap_or("?"),
                braces(&labels)
            ));
        }
    }
    if out.is_empty() {
        out.push("(no alerting rules loaded)".to_owned());
    }
    out
}

/// Series shown per query, the largest first.
const MAX_SERIES: usize = 8;

/// A query's result, one series a line; none is said so, and why in Kong mode.
fn result_lines(mut samples: Vec<Sample>, compat: Compat) -> Vec<String> {
    if samples.is_empty() {
        return vec![match compat {
            Compat::None => "no data".to_owned(),
            Compat::Kong => "no data (native names; this run is Kong mode)".to_owned(),
        }];
    }
    // NaN (0/0: no requests in the window) last.
    samples.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    samples.sort_by_key(|s| s.1.is_nan());
    let mut out: Vec<String> = samples
        .iter()
        .take(MAX_SERIES)
        .map(|(labels, v)| format!("{} {}", braces(labels), number(*v)))
        .collect();
    if samples.len() > MAX_SERIES {
        out.push(format!("({} more)", samples.len() - MAX_SERIES));
    }
    out
}

/// `{k="v", ...}`, as Prometheus prints a series' labels.
fn braces(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Four significant digits, without trailing zeros.
fn number(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return format!("{v}");
    }
    let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Seconds as a Prometheus duration (`5m`, `90s`).
fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_dashboards_queries_at_all() {
        let dash: Value = serde_json::from_str(DASHBOARD).unwrap();
        let picked = picked_queries(&dash, "42s").unwrap();
        assert_eq!(picked.len(), PICKS.len());
        for (pick, expr) in &picked {
            assert!(!expr.contains('$'), "{}: {expr}", pick.panel);
            assert!(expr.contains("[42s]"), "{}: {expr}", pick.panel);
        }
        assert_eq!(
            picked[0].1,
            "sum by (service) (rate(gatescope_http_requests_total\
             {node=~\".*\",service=~\".*\",route=~\".*\"}[42s]))"
        );
        assert!(picked[1].1.starts_with("histogram_quantile(0.99,"));
    }

    #[test]
    fn alerts_show_state_hold_and_active_series() {
        let rules: Vec<Value> = serde_json::from_str(
            r#"[
              {"type": "alerting", "name": "GatewayHigh5xxRatio", "state": "inactive",
               "duration": 300, "health": "ok", "alerts": []},
              {"type": "recording", "name": "job:x:rate5m", "health": "ok"},
              {"type": "alerting", "name": "GatescopeEventsLost", "state": "pending",
               "duration": 600, "health": "ok",
               "alerts": [{"state": "pending", "value": "0.25",
                           "labels": {"alertname": "GatescopeEventsLost", "severity": "warning",
                                      "instance": "127.0.0.1:9", "reason": "ringbuf_full"}}]},
              {"type": "alerting", "name": "Broken", "state": "inactive", "duration": 90,
               "health": "err", "lastError": "bad", "alerts": []}
            ]"#,
        )
        .unwrap();
        assert_eq!(
            alert_lines(&rules),
            [
                "inactive  GatewayHigh5xxRatio             for 5m",
                "pending   GatescopeEventsLost             for 10m",
                "          pending {instance=\"127.0.0.1:9\", reason=\"ringbuf_full\"} = 0.25",
                "inactive  Broken                          for 90s  (health err: bad)",
            ]
        );
    }

    #[test]
    fn results_are_sorted_and_empty_ones_explained() {
        let s = |svc: &str, v: f64| (BTreeMap::from([("service".into(), svc.into())]), v);
        assert_eq!(
            result_lines(
                vec![s("a", f64::NAN), s("b", 0.5), s("c", 12.345_67)],
                Compat::None
            ),
            [
                "{service=\"c\"} 12.35",
                "{service=\"b\"} 0.5",
                "{service=\"a\"} NaN"
            ]
        );
        assert_eq!(
            result_lines(Vec::new(), Compat::Kong),
            ["no data (native names; this run is Kong mode)"]
        );
        assert_eq!(number(0.001_234_56), "0.001235");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(12_345.6), "12346");
    }

    #[test]
    fn config_scrapes_the_agent_with_the_rules() {
        let text = config("127.0.0.1:9100".parse().unwrap(), Path::new("/r"));
        assert!(text.contains("  - \"/r/deploy/prometheus/gatescope-rules.yml\"\n"));
        assert!(
            text.contains("- targets: ['127.0.0.1:9100']\n        labels:\n          node: demo\n")
        );
        assert!(text.contains("scrape_interval: 1s\n  evaluation_interval: 1s\n"));
    }
}
