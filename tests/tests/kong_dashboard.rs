//! Kong's Grafana dashboard 7424 ("Kong (official)", kept in Kong/kong as
//! kong/plugins/prometheus/grafana/kong-official.json) against a real
//! Prometheus scraping a real agent in Kong mode (`--metrics-compat kong`)
//! that observes real nginx traffic, as tests/tests/dashboard.rs does for our
//! own dashboard.
//!
//! Kong's JSON is not ours to ship, so [`PANELS`] restates in our words what
//! each of its panels asks Prometheus: the same family, label matchers,
//! groupings, functions and `[1m]` windows, with its template variables
//! (`$service`, `$route`, `$instance`, `$upstream`, each a `label_values`
//! query: [`VARIABLES`]) substituted as Grafana does, once at "All" (`.*`)
//! and once at the busiest value (regex-escaped). Panels on families the
//! agent provides must return data without an error; the others (Lua
//! memory, upstream target health) must return nothing, without an error,
//! and the README must list exactly those.
//!
//! The traffic: 200s through the upstream, a 404 from nginx itself, a 502
//! from a closed upstream port, and a keep-alive connection, so that the
//! status-code panels have more than one code.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::Agent;
use gatescope_tests::client::{Conn, Req};
use gatescope_tests::grafana::{self, regex_value};
use gatescope_tests::prometheus::Prometheus;
use gatescope_tests::util::poll;
use gatescope_tests::AccuracyScene;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Whether a 7424 panel or variable has data from gatescope.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Has {
    Data,
    /// Its family is Kong-internal state the traffic does not show.
    NothingByDesign,
}

/// One of 7424's template variables: `label_values(selector, label)`.
struct Variable {
    name: &'static str,
    selector: &'static str,
    label: &'static str,
    has: Has,
}

const VARIABLES: [Variable; 4] = [
    // $service and $route: the request counter's labels.
    Variable {
        name: "service",
        selector: "kong_http_requests_total",
        label: "service",
        has: Has::Data,
    },
    Variable {
        name: "route",
        selector: "kong_http_requests_total",
        label: "route",
        has: Has::Data,
    },
    // $instance: the scrape targets that have nginx connection gauges.
    Variable {
        name: "instance",
        selector: "kong_nginx_connections_total",
        label: "instance",
        has: Has::Data,
    },
    // $upstream: the upstreams of Kong's health checker.
    Variable {
        name: "upstream",
        selector: "kong_upstream_target_health",
        label: "upstream",
        has: Has::NothingByDesign,
    },
];

/// 7424 draws p90, p95 and p99 in each latency panel; `{q}` in a query
/// stands for each.
const QUANTILES: [&str; 3] = ["0.90", "0.95", "0.99"];

/// One 7424 panel: its row, its title, and its queries in our words.
struct Panel {
    row: &'static str,
    title: &'static str,
    has: Has,
    queries: &'static [&'static str],
}

/// Every panel of 7424 (23), by row, with what each asks.
const PANELS: &[Panel] = &[
    // Row "Request rate": the request counter's rate over 1m, all of it,
    // then per service and per route, then per service and route by code.
    Panel {
        row: "Request rate",
        title: "Total requests per second (RPS)",
        has: Has::Data,
        queries: &[r#"sum(rate(kong_http_requests_total{instance=~"$instance"}[1m]))"#],
    },
    Panel {
        row: "Request rate",
        title: "RPS per route/service ($service)",
        has: Has::Data,
        queries: &[
            r#"sum by (service) (rate(kong_http_requests_total{instance=~"$instance",service=~"$service",route=~"$route"}[1m]))"#,
            r#"sum by (route) (rate(kong_http_requests_total{instance=~"$instance",service=~"$service",route=~"$route"}[1m]))"#,
        ],
    },
    Panel {
        row: "Request rate",
        title: "RPS per route/service by status code",
        has: Has::Data,
        queries: &[
            r#"sum by (service, code) (rate(kong_http_requests_total{instance=~"$instance",service=~"$service",route=~"$route"}[1m]))"#,
            r#"sum by (route, code) (rate(kong_http_requests_total{instance=~"$instance",service=~"$service",route=~"$route"}[1m]))"#,
        ],
    },
    // Row "Latencies": quantiles of the three millisecond histograms. The
    // "across all services" panels of request and upstream time filter on
    // nothing, not even $instance; the others on all three variables.
    Panel {
        row: "Latencies",
        title: "Kong Proxy Latency across all services",
        has: Has::Data,
        queries: &[
            r#"histogram_quantile({q}, sum by (le) (rate(kong_kong_latency_ms_bucket{instance=~"$instance"}[1m])))"#,
        ],
    },
    Panel {
        row: "Latencies",
        title: "Kong Proxy Latency per Service",
        has: Has::Data,
        queries: &[
            r#"histogram_quantile({q}, sum by (le, service) (rate(kong_kong_latency_ms_bucket{instance=~"$instance",service=~"$service",route=~"$route"}[1m])))"#,
        ],
    },
    Panel {
        row: "Latencies",
        title: "Kong Proxy Latency per Route",
        has: Has::Data,
        queries: &[
            r#"histogram_quantile({q}, sum by (le, route) (rate(kong_kong_latency_ms_bucket{instance=~"$instance",service=~"$service",route=~"$route"}[1m])))"#,
        ],
    },
    Panel {
        row: "Latencies",
        title: "Request Time across all services",
        has: Has::Data,
        queries: &[
            r"histogram_quantile({q}, sum by (le) (rate(kong_request_latency_ms_bucket[1m])))",
        ],
    },
    Panel {
        row: "Latencies",
        title: "Request Time per service",
        has: Has::Data,
        queries: &[
            r#"histogram_quantile({q}, sum by (le, service) (rate(kong_request_latency_ms_bucket{instance=~"$instance",service=~"$service",route=~"$route"}[1m])))"#,
        ],
    },
    Panel {
        row: "Latencies",
        title: "Request Time per Route",
        has: Has::Data,
        queries: &[
            r#"histogram_quantile({q}, sum by (le, route) (rate(kong_request_latency_ms_bucket{instance=~"$instance",service=~"$service",route=~"$route"}[1m])))"#,
        ],
    },
    Panel {
        row: "Latencies",
        title: "Upstream time across all services",
        has: Has::Data,
        queries: &[
            r"histogram_quantile({q}, sum by (le) (rate(kong_upstream_latency_ms_bucket[1m])))",
        ],
    },
    Panel {
        row: "Latencies",
        title: "Upstream Time across per service",
        has: Has::Data,
        queries: &[
            r#"histogram_quantile({q}, sum by (le, service) (rate(kong_upstream_latency_ms_bucket{instance=~"$instance",service=~"$service",route=~"$route"}[1m])))"#,
        ],
    },
    Panel {
        row: "Latencies",
        title: "Upstream Time across per Route",
        has: Has::Data,
        queries: &[
            r#"histogram_quantile({q}, sum by (le, route) (rate(kong_upstream_latency_ms_bucket{instance=~"$instance",service=~"$service",route=~"$route"}[1m])))"#,
        ],
    },
    // Row "Bandwidth": irate of the byte counter. The total groups by
    // `type`, the label's name before Kong 3.0; Kong's family (and ours)
    // now says `direction`, so the panel draws one line of all bytes.
    Panel {
        row: "Bandwidth",
        title: "Total Bandwidth",
        has: Has::Data,
        queries: &[r#"sum by (type) (irate(kong_bandwidth_bytes{instance=~"$instance"}[1m]))"#],
    },
    Panel {
        row: "Bandwidth",
        title: "Egress per service/route",
        has: Has::Data,
        queries: &[
            r#"sum by (service) (irate(kong_bandwidth_bytes{direction="egress",instance=~"$instance",service=~"$service",route=~"$route"}[1m]))"#,
            r#"sum by (route) (irate(kong_bandwidth_bytes{direction="egress",instance=~"$instance",service=~"$service",route=~"$route"}[1m]))"#,
        ],
    },
    Panel {
        row: "Bandwidth",
        title: "Ingress per service/route",
        has: Has::Data,
        // Per service only, and filtered on $service alone.
        queries: &[
            r#"sum by (service) (irate(kong_bandwidth_bytes{direction="ingress",service=~"$service"}[1m]))"#,
        ],
    },
    // Row "Caching": the Lua VMs' memory, repeated per $instance.
    Panel {
        row: "Caching",
        title: "Kong shared memory usage by Node ($instance)",
        has: Has::NothingByDesign,
        queries: &[
            r#"100 * kong_memory_lua_shared_dict_bytes{instance=~"$instance"} / kong_memory_lua_shared_dict_total_bytes{instance=~"$instance"}"#,
        ],
    },
    Panel {
        row: "Caching",
        title: "Kong worker Lua VM usage by Node ($instance)",
        has: Has::NothingByDesign,
        queries: &[r#"kong_memory_workers_lua_vms_bytes{instance=~"$instance"}"#],
    },
    // Row "Upstream": Kong's health checker's view of each target.
    Panel {
        row: "Upstream",
        title: "Healthy status",
        has: Has::NothingByDesign,
        // Unhealthy (or DNS error) targets up, healthy ones down.
        queries: &[
            r#"sum by (upstream, target, address) (kong_upstream_target_health{upstream=~"$upstream",state=~"unhealthy|dns_error"}) - sum by (upstream, target, address) (kong_upstream_target_health{upstream=~"$upstream",state="healthy"})"#,
        ],
    },
    Panel {
        row: "Upstream",
        // Kong's table of targets has no title.
        title: "",
        has: Has::NothingByDesign,
        // Each target's state as a number in a `state_value` label.
        queries: &[concat!(
            r#"sum by (upstream, target, address, state, state_value) ("#,
            r#"label_replace(label_replace(label_replace(kong_upstream_target_health{upstream=~"$upstream"}, "#,
            r#""state_value", "1", "state", "healthy"), "#,
            r#""state_value", "0", "state", "healthchecks_off"), "#,
            r#""state_value", "-1", "state", "dns_error|unhealthy")) > 0"#
        )],
    },
    // Row "Nginx": stub_status's gauges, summed over $instance.
    Panel {
        row: "Nginx",
        title: "Nginx connection state",
        has: Has::Data,
        queries: &[
            r#"sum by (state) (kong_nginx_connections_total{instance=~"$instance",state=~"active|reading|writing|waiting"})"#,
        ],
    },
    Panel {
        row: "Nginx",
        title: "Total Connections",
        has: Has::Data,
        queries: &[r#"sum(kong_nginx_connections_total{instance=~"$instance",state="total"})"#],
    },
    Panel {
        row: "Nginx",
        title: "Handled Connections",
        has: Has::Data,
        queries: &[r#"sum(kong_nginx_connections_total{instance=~"$instance",state="handled"})"#],
    },
    Panel {
        row: "Nginx",
        title: "Accepted Connections",
        has: Has::Data,
        queries: &[r#"sum(kong_nginx_connections_total{instance=~"$instance",state="accepted"})"#],
    },
];

/// Each query of `p`, its `{q}` expanded.
fn expanded(p: &Panel) -> Vec<String> {
    p.queries
        .iter()
        .flat_map(|q| {
            if q.contains("{q}") {
                QUANTILES.iter().map(|v| q.replace("{q}", v)).collect()
            } else {
                vec![(*q).to_owned()]
            }
        })
        .collect()
}

/// 7424's windows are a fixed `[1m]`; it has no `$__rate_interval`.
fn substitute(expr: &str, values: &Values) -> String {
    grafana::substitute(expr, values, "1m")
}

/// The `kong_*` family names in `text` (`_bucket` stripped).
fn families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("kong_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        let name = name.strip_suffix("_bucket").unwrap_or(&name);
        if name.len() > "kong_".len() {
            out.insert(name.to_owned());
        }
    }
    out
}

/// What the client sent: requests, and connections they came on.
struct Sent {
    requests: u32,
    connections: u32,
}

/// 200s through the upstream, a 404 from nginx, 502s from the closed port,
/// and a keep-alive connection, going on while Prometheus scrapes so that
/// each rate and irate over the last minute has samples on both sides of
/// some requests.
fn traffic(scene: &AccuracyScene) -> Result<Sent> {
    let mut sent = Sent {
        requests: 0,
        connections: 0,
    };
    let ep = scene.endpoint();
    let mut request = |path: &str, want: u16| -> Result<()> {
        let mut c = Conn::open_at(ep)?;
        let s = c.exchange(Req::get(path).close())?;
        ensure!(s.status == want, "{path}: {} (want {want})", s.status);
        c.close()?;
        sent.requests += 1;
        sent.connections += 1;
        Ok(())
    };
    for (path, status) in [("/size/100", 200), ("/size/20000", 200), ("/missing", 404)] {
        request(path, status)?;
    }
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        request("/size/100", 200)?;
        request("/down", 502)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = Conn::open_at(ep)?;
    for _ in 0..5 {
        let s = c.exchange(Req::get("/size/10"))?;
        ensure!(s.status == 200, "keep-alive: {}", s.status);
    }
    c.close()?;
    sent.requests += 5;
    sent.connections += 1;
    Ok(sent)
}

/// `sum(kong_nginx_connections_total{state=...})`, as the Nginx row's
/// stat panels show it.
fn connection_stat(prom: &Prometheus, state: &str) -> Result<Option<f64>> {
    let r = prom.query(&format!(
        "sum(kong_nginx_connections_total{{state=\"{state}\"}})"
    ))?;
    Ok(r.first().map(|(_, v)| *v))
}

/// Each variable's substitution.
type Values = BTreeMap<String, String>;

/// The variables as Grafana resolves them: `label_values` for the list,
/// `.*` for All (7424's allValue), and the value with the most requests or
/// connections behind it for a single pick. Returns (All, busiest).
fn variables(prom: &Prometheus) -> Result<(Values, Values)> {
    let mut all = Values::new();
    let mut busiest = Values::new();
    for v in &VARIABLES {
        let values = prom.label_values(v.label, v.selector)?;
        if v.has == Has::NothingByDesign {
            ensure!(values.is_empty(), "${}: {values:?}, want none", v.name);
            // With no values Grafana sends `""` or `()`; `.*` is wider, so
            // that any series of the family would show.
            all.insert(v.name.to_owned(), ".*".to_owned());
            busiest.insert(v.name.to_owned(), ".*".to_owned());
            continue;
        }
        ensure!(
            !values.is_empty(),
            "${} ({}): no values",
            v.name,
            v.selector
        );
        let top = format!("topk(1, sum by ({}) ({}))", v.label, v.selector);
        let picked = prom.query(&top)?;
        let value = picked
            .first()
            .and_then(|(l, _)| l.get(v.label))
            .with_context(|| format!("${}: {top}: {picked:?}", v.name))?;
        ensure!(values.contains(value), "{value} not among {values:?}");
        println!("${}: {values:?}, busiest {value}", v.name);
        all.insert(v.name.to_owned(), ".*".to_owned());
        busiest.insert(v.name.to_owned(), regex_value(value));
    }
    Ok((all, busiest))
}

/// Every panel's queries at All and at the busiest values: what went wrong,
/// and how many queries there are.
fn run_panels(prom: &Prometheus, all: &Values, busiest: &Values) -> Result<(Vec<String>, usize)> {
    let mut problems = Vec::new();
    let mut queries = 0;
    for p in PANELS {
        for expr in expanded(p) {
            queries += 1;
            for (choice, values) in [("All", all), ("busiest", busiest)] {
                let q = substitute(&expr, values);
                ensure!(
                    !q.contains('$'),
                    "{}: unsubstituted variable in {q}",
                    p.title
                );
                let what = format!("{choice}: {} / {:?}", p.row, p.title);
                match (prom.query(&q), p.has) {
                    (Err(e), _) => problems.push(format!("{what}: {e:#}: {q}")),
                    (Ok(r), Has::Data) if r.is_empty() => {
                        problems.push(format!("{what}: no data: {q}"));
                    }
                    (Ok(r), Has::NothingByDesign) if !r.is_empty() => {
                        problems.push(format!("{what}: data where none is expected: {r:?}: {q}"));
                    }
                    (Ok(_), _) => {}
                }
            }
        }
    }
    Ok((problems, queries))
}

/// The label `label` of each series `promql` returns.
fn label_set(prom: &Prometheus, promql: &str, label: &str) -> Result<BTreeSet<String>> {
    Ok(prom
        .query(promql)?
        .into_iter()
        .filter_map(|(mut l, _)| l.remove(label))
        .collect())
}

/// What some panels show, exactly: the codes sent, stub_status's four
/// states, the connections and requests counted, and Total Bandwidth's one
/// line; and no series at all of the families the empty panels draw.
fn exact_checks(prom: &Prometheus, all: &Values, busiest: &Values, sent: &Sent) -> Result<()> {
    let codes = label_set(
        prom,
        &substitute(
            r#"sum by (code) (rate(kong_http_requests_total{instance=~"$instance",service=~"$service",route=~"$route"}[1m]))"#,
            all,
        ),
        "code",
    )?;
    ensure!(
        codes == BTreeSet::from(["200", "404", "502"].map(String::from)),
        "codes {codes:?}"
    );
    let states = label_set(
        prom,
        &substitute(
            r#"sum by (state) (kong_nginx_connections_total{instance=~"$instance",state=~"active|reading|writing|waiting"})"#,
            busiest,
        ),
        "state",
    )?;
    ensure!(
        states == BTreeSet::from(["active", "reading", "waiting", "writing"].map(String::from)),
        "connection states {states:?}"
    );
    let want = f64::from(sent.connections);
    for state in ["accepted", "handled"] {
        let got = connection_stat(prom, state)?;
        ensure!(got == Some(want), "{state}: {got:?}, want {want}");
    }
    let total_bw = prom.query(&substitute(
        r#"sum by (type) (irate(kong_bandwidth_bytes{instance=~"$instance"}[1m]))"#,
        all,
    ))?;
    ensure!(
        total_bw.len() == 1 && total_bw[0].0.is_empty(),
        "Total Bandwidth: one unlabelled line expected (no `type` label): {total_bw:?}"
    );
    // Nothing at all of these families, not just nothing under the panels'
    // matchers.
    let absent: Vec<String> = nothing_by_design().into_iter().collect();
    let any = prom.query(&format!("count({{__name__=~\"{}\"}})", absent.join("|")))?;
    ensure!(any.is_empty(), "{absent:?}: {any:?}");
    Ok(())
}

#[test]
fn every_7424_panel_query_returns_data_or_nothing_by_design() -> Result<()> {
    let scene = AccuracyScene::start(1)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &["--metrics-compat", "kong"])?;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: kong\n    static_configs:\n      \
         - targets: ['{}']\n",
        agent.addr()
    );
    let prom = Prometheus::start(&config, &[])?;
    let sent = traffic(&scene)?;

    // Prometheus has the agent's final counts: the requests must all be in
    // Total Connections. This also makes sure it scraped the agent before
    // any "nothing" below can mean anything.
    let want = f64::from(sent.requests);
    poll(
        Duration::from_secs(15),
        "Prometheus to scrape every request",
        || Ok((connection_stat(&prom, "total")? == Some(want)).then_some(())),
    )
    .with_context(|| format!("total: {:?}, want {want}", connection_stat(&prom, "total")))?;

    let (all, busiest) = variables(&prom)?;
    let (problems, queries) = run_panels(&prom, &all, &busiest)?;
    ensure!(
        problems.is_empty(),
        "{} of {} queries:\n{}\nagent scrape:\n{}",
        problems.len(),
        queries * 2,
        problems.join("\n"),
        agent.scrape_text().unwrap_or_default()
    );
    exact_checks(&prom, &all, &busiest, &sent)?;

    let data = PANELS.iter().filter(|p| p.has == Has::Data).count();
    println!(
        "7424: {} panels, {queries} queries, each at All and at the busiest values: \
         {data} panels with data, {} empty by design:",
        PANELS.len(),
        PANELS.len() - data
    );
    for p in PANELS.iter().filter(|p| p.has == Has::NothingByDesign) {
        println!(
            "  {} / {:?}: {:?}",
            p.row,
            p.title,
            families(&p.queries.concat())
        );
    }
    Ok(())
}

/// The families of the panels that stay empty.
fn nothing_by_design() -> BTreeSet<String> {
    PANELS
        .iter()
        .filter(|p| p.has == Has::NothingByDesign)
        .flat_map(|p| families(&p.queries.concat()))
        .collect()
}

/// The README's list of the 7424 panels that stay empty is this test's:
/// each such panel's title (when it has one) and exactly their families.
#[test]
fn readme_lists_the_empty_7424_panels() -> Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path)?;
    // The paragraph and its list, up to the next blank line.
    let start = readme
        .find("Kong's dashboard 7424 works")
        .context("README: no paragraph on 7424's panels")?;
    let section = readme[start..]
        .split("\n\n")
        .next()
        .context("README: empty 7424 section")?;
    // Titles may wrap across lines.
    let flat = section.split_whitespace().collect::<Vec<_>>().join(" ");
    for p in PANELS.iter().filter(|p| p.has == Has::NothingByDesign) {
        ensure!(
            flat.contains(p.title),
            "README's 7424 list lacks {:?}:\n{section}",
            p.title
        );
    }
    let named = families(section);
    let want = nothing_by_design();
    ensure!(
        named == want,
        "README's 7424 list names {named:?}, the empty panels draw {want:?}:\n{section}"
    );
    Ok(())
}

#[test]
fn quantile_panels_expand_to_three_queries() {
    let p = &PANELS[3];
    assert_eq!(p.title, "Kong Proxy Latency across all services");
    let q = expanded(p);
    assert_eq!(q.len(), 3);
    assert!(q[0].starts_with("histogram_quantile(0.90, "));
    assert_eq!(PANELS.len(), 23);
    assert_eq!(
        families("a{kong_memory_x_bytes} kong_kong_latency_ms_bucket{}"),
        BTreeSet::from(["kong_kong_latency_ms".into(), "kong_memory_x_bytes".into()])
    );
}
