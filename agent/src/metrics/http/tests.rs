//! Tests of the HTTP families through the export stage, and promtool's lint
//! of both schemas.

use std::{io::Write as _, path::Path, process::Command};

use super::*;
use crate::http::TraceHeaders;
use crate::{
    cli::Compat,
    config::Config,
    correlate::Completed,
    http::Anomaly,
    label::{Labeller, Router},
    metrics::{render, Identity, Metrics},
    sinks::Sinks,
};

const ID: Identity = Identity {
    node_id: "node-1",
    version: "0.1.0",
    kernel: "6.18.0",
};
const MS: u64 = 1_000_000;

fn exchange(method: &str, path: &str, status: u16, last_ms: u64) -> Exchange {
    Exchange {
        method: method.into(),
        path: path.into(),
        host: Some("api.example.com".into()),
        status,
        request_bytes: 100,
        response_bytes: if status == 499 { 0 } else { 250 },
        request_first_ns: 1000 * MS,
        request_last_ns: 1000 * MS,
        response_first_ns: if last_ms == 0 {
            0
        } else {
            (1000 + last_ms) * MS
        },
        response_last_ns: if last_ms == 0 {
            0
        } else {
            (1000 + last_ms) * MS
        },
        // The client gave up after 100 ms.
        closed_ns: if status == 499 { 1100 * MS } else { 0 },
        upgraded: false,
        version: 1,
        trace: TraceHeaders::default(),
        grpc: None,
        genai: None,
    }
}

fn listener() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

fn peer() -> SocketAddr {
    "127.0.0.1:9000".parse().unwrap()
}

/// A proxied 200 (40 ms, of which 30 ms upstream), a 404 the gateway
/// answered itself (2 ms), a client that gave up (499), the upstream
/// exchange of the 200, and a few anomalies and phases.
fn feed(m: &mut Metrics, groups: MetricGroups, router: Router) {
    let mut sinks = Sinks::default();
    sinks.push(m.http(groups));
    let mut labeller = Labeller::new(router, sinks.needs());
    let client = "10.0.0.7:40000".parse().unwrap();
    let mut export = |done| sinks.exchange(&labeller.label(done, client, 1));
    let leg = UpstreamLeg {
        peer: peer(),
        status: 200,
        first_ns: 1005 * MS,
        last_ns: 1035 * MS,
    };
    let downstream = [
        (exchange("GET", "/orders/12", 200, 40), Some(leg)),
        (exchange("GET", "/missing", 404, 2), None),
        (exchange("POST", "/orders/13", 499, 0), None),
    ];
    for (exchange, upstream) in downstream {
        export(Completed::Downstream {
            exchange,
            listener: listener(),
            upstream,
            attempts: Vec::new(),
        });
    }
    let mut up = exchange("GET", "/orders/12", 200, 35);
    up.request_first_ns = 1005 * MS;
    up.host = Some("backend".into());
    export(Completed::Upstream {
        exchange: up,
        peer: peer(),
    });
    m.record_anomaly(&Anomaly::NonHttp { bytes: 10 });
    m.record_anomaly(&Anomaly::Desync);
    m.record_anomaly(&Anomaly::Desync);
    m.set_phases(1, 2, 3);
}

fn rendered(compat: Compat, groups: MetricGroups, router: Router) -> String {
    let mut m = Metrics::new(compat, &ID, &["bytes"]);
    m.set_listeners(&[crate::metrics::listener_at(listener())]);
    feed(&mut m, groups, router);
    render(&m.registry())
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// The `le` values of `family`'s buckets for one series, in order.
fn buckets(text: &str, family: &str, series: &str) -> Vec<String> {
    let prefix = format!("{family}_bucket{{{series},le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

#[test]
fn native_http_families() {
    let text = rendered(
        Compat::None,
        MetricGroups::default(),
        Router::from_config(None, 100),
    );
    let s = "route=\"/orders/{id}\",service=\"127.0.0.1:8080\"";
    assert_lines(
            &text,
            &[
                "# TYPE gatescope_http_requests_total counter",
                "gatescope_http_requests_total{code=\"200\",route=\"/orders/{id}\",service=\"127.0.0.1:8080\",source=\"service\"} 1",
                "gatescope_http_requests_total{code=\"404\",route=\"/missing\",service=\"127.0.0.1:8080\",source=\"kong\"} 1",
                "gatescope_http_requests_total{code=\"499\",route=\"/orders/{id}\",service=\"127.0.0.1:8080\",source=\"kong\"} 1",
                "# TYPE gatescope_http_request_duration_seconds histogram",
                &format!("gatescope_http_request_duration_seconds_bucket{{{s},le=\"0.025\"}} 0"),
                &format!("gatescope_http_request_duration_seconds_bucket{{{s},le=\"0.05\"}} 1"),
                // The 499 lasted until the client closed, 100 ms.
                &format!("gatescope_http_request_duration_seconds_bucket{{{s},le=\"0.1\"}} 2"),
                &format!("gatescope_http_request_duration_seconds_bucket{{{s},le=\"+Inf\"}} 2"),
                &format!("gatescope_http_request_duration_seconds_count{{{s}}} 2"),
                &format!("gatescope_http_request_duration_seconds_sum{{{s}}} 0.14"),
                "gatescope_http_request_duration_seconds_sum{route=\"/missing\",service=\"127.0.0.1:8080\"} 0.002",
                // Upstream latency from the upstream exchange, named by its peer.
                "gatescope_http_upstream_duration_seconds_bucket{route=\"/orders/{id}\",service=\"127.0.0.1:9000\",le=\"0.025\"} 0",
                "gatescope_http_upstream_duration_seconds_bucket{route=\"/orders/{id}\",service=\"127.0.0.1:9000\",le=\"0.05\"} 1",
                "gatescope_http_upstream_duration_seconds_sum{route=\"/orders/{id}\",service=\"127.0.0.1:9000\"} 0.03",
                "gatescope_http_upstream_requests_total{code=\"200\",peer=\"127.0.0.1:9000\"} 1",
                &format!("gatescope_http_bytes_total{{direction=\"ingress\",{s}}} 200"),
                &format!("gatescope_http_bytes_total{{direction=\"egress\",{s}}} 250"),
                "gatescope_http_requests_all_total 3",
                "gatescope_downstream_connections{state=\"reading\"} 1",
                "gatescope_downstream_connections{state=\"writing\"} 2",
                "gatescope_downstream_connections{state=\"waiting\"} 3",
                "gatescope_http_anomalies_total{kind=\"non_http\"} 1",
                "gatescope_http_anomalies_total{kind=\"desync\"} 2",
                "gatescope_http_anomalies_total{kind=\"resync\"} 0",
            ],
        );
    assert_eq!(
        buckets(&text, "gatescope_http_request_duration_seconds", s),
        [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "15",
            "30", "60", "+Inf"
        ]
    );
    assert!(!text.contains("kong_"), "{text}");
    // No overflow, no series (a family without series is not rendered).
    assert!(!text.contains("gatescope_route_overflow_total"), "{text}");
    // The upstream exchange is not a client request.
    assert!(
        !text.contains("service=\"127.0.0.1:9000\",source"),
        "{text}"
    );
}

#[test]
fn kong_http_families_with_config() {
    let config = Config::parse(
            "[[service]]\nname = \"orders\"\nupstream = \"127.0.0.1:9000\"\n[[service.route]]\nname = \"orders-route\"\npaths = [\"/orders\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
    let router = Router::from_config(Some(config), 100);
    let text = rendered(Compat::Kong, MetricGroups::default(), router);
    let s = "route=\"orders-route\",service=\"orders\"";
    assert_lines(
            &text,
            &[
                "# HELP kong_http_requests_total HTTP status codes per Consumer/Service/Route in Kong Gateway",
                "# TYPE kong_http_requests_total counter",
                "kong_http_requests_total{code=\"200\",consumer=\"\",route=\"orders-route\",service=\"orders\",source=\"service\"} 1",
                "kong_http_requests_total{code=\"499\",consumer=\"\",route=\"orders-route\",service=\"orders\",source=\"kong\"} 1",
                "kong_http_requests_total{code=\"404\",consumer=\"\",route=\"/missing\",service=\"127.0.0.1:8080\",source=\"kong\"} 1",
                "# HELP kong_request_latency_ms Total latency incurred during requests for each Service/Route in Kong Gateway",
                "# TYPE kong_request_latency_ms histogram",
                &format!("kong_request_latency_ms_bucket{{{s},le=\"25\"}} 0"),
                &format!("kong_request_latency_ms_bucket{{{s},le=\"50\"}} 1"),
                &format!("kong_request_latency_ms_bucket{{{s},le=\"100\"}} 2"),
                &format!("kong_request_latency_ms_count{{{s}}} 2"),
                &format!("kong_request_latency_ms_sum{{{s}}} 140"),
                "# HELP kong_upstream_latency_ms Latency added by upstream response for each Service/Route in Kong Gateway",
                "# TYPE kong_upstream_latency_ms histogram",
                &format!("kong_upstream_latency_ms_bucket{{{s},le=\"25\"}} 0"),
                &format!("kong_upstream_latency_ms_bucket{{{s},le=\"50\"}} 1"),
                &format!("kong_upstream_latency_ms_sum{{{s}}} 30"),
                "# HELP kong_kong_latency_ms Latency added by Kong Gateway and enabled plugins for each Service/Route in Kong Gateway",
                "# TYPE kong_kong_latency_ms histogram",
                &format!("kong_kong_latency_ms_bucket{{{s},le=\"7\"}} 0"),
                &format!("kong_kong_latency_ms_bucket{{{s},le=\"10\"}} 1"),
                // The 200's 10 ms plus the abandoned request's 100 ms.
                &format!("kong_kong_latency_ms_sum{{{s}}} 110"),
                // Answered by the gateway: all of it is gateway latency.
                "kong_kong_latency_ms_sum{route=\"/missing\",service=\"127.0.0.1:8080\"} 2",
                "# HELP kong_bandwidth_bytes Total bandwidth (ingress/egress) throughput in bytes",
                "# TYPE kong_bandwidth_bytes counter",
                &format!("kong_bandwidth_bytes{{consumer=\"\",direction=\"ingress\",{s}}} 200"),
                &format!("kong_bandwidth_bytes{{consumer=\"\",direction=\"egress\",{s}}} 250"),
                "# HELP kong_nginx_requests_total Total number of requests",
                "# TYPE kong_nginx_requests_total gauge",
                "kong_nginx_requests_total{node_id=\"node-1\",subsystem=\"http\"} 3",
                "kong_nginx_connections_total{node_id=\"node-1\",state=\"total\",subsystem=\"http\"} 3",
                "kong_nginx_connections_total{node_id=\"node-1\",state=\"reading\",subsystem=\"http\"} 1",
                "kong_nginx_connections_total{node_id=\"node-1\",state=\"writing\",subsystem=\"http\"} 2",
                "kong_nginx_connections_total{node_id=\"node-1\",state=\"waiting\",subsystem=\"http\"} 3",
                // No Kong equivalent: native names.
                "gatescope_http_upstream_requests_total{code=\"200\",peer=\"127.0.0.1:9000\"} 1",
                "gatescope_http_anomalies_total{kind=\"desync\"} 2",
            ],
        );
    let upstream = [
        "25", "50", "80", "100", "250", "400", "700", "1000", "2000", "5000", "10000", "30000",
        "60000", "+Inf",
    ];
    assert_eq!(buckets(&text, "kong_request_latency_ms", s), upstream);
    assert_eq!(buckets(&text, "kong_upstream_latency_ms", s), upstream);
    assert_eq!(
        buckets(&text, "kong_kong_latency_ms", s),
        [
            "5", "7", "10", "15", "20", "30", "50", "75", "100", "200", "500", "750", "1000",
            "+Inf"
        ]
    );
    // Upstream latency only where an upstream answered.
    assert!(
        !text.contains("kong_upstream_latency_ms_sum{route=\"/missing\""),
        "{text}"
    );
    for native in [
        "gatescope_http_requests_total",
        "gatescope_http_request_duration",
        "gatescope_http_upstream_duration",
        "gatescope_http_bytes_total",
        "gatescope_http_requests_all_total",
    ] {
        assert!(!text.contains(native), "{native} in Kong mode:\n{text}");
    }
}

#[test]
fn groups_switch_families_off() {
    let off = MetricGroups {
        status_code: false,
        latency: false,
        bandwidth: false,
        upstream_health: false,
    };
    for compat in [Compat::None, Compat::Kong] {
        let router = Router::from_config(None, 100);
        let text = rendered(compat, off, router);
        for family in [
            "kong_http_requests_total",
            "_latency_ms",
            "kong_bandwidth_bytes",
            "gatescope_http_requests_total",
            "_duration_seconds",
            "gatescope_http_bytes_total",
            "gatescope_http_upstream_requests_total",
        ] {
            assert!(!text.contains(family), "{family} with groups off:\n{text}");
        }
        // Always on.
        assert!(text.contains("gatescope_http_anomalies_total{kind=\"desync\"} 2"));
        let all = match compat {
            Compat::None => "gatescope_http_requests_all_total 3",
            Compat::Kong => "kong_nginx_requests_total{node_id=\"node-1\",subsystem=\"http\"} 3",
        };
        assert_lines(&text, &[all]);
    }
    let only_latency = MetricGroups {
        latency: true,
        ..off
    };
    let text = rendered(Compat::Kong, only_latency, Router::from_config(None, 100));
    assert!(text.contains("kong_request_latency_ms_count"), "{text}");
    assert!(!text.contains("kong_http_requests_total"), "{text}");
}

#[test]
fn route_overflow_is_counted() {
    let router = Router::from_config(None, 1);
    let text = rendered(Compat::None, MetricGroups::default(), router);
    // "/orders/{id}" took the only slot; "/missing" overflowed.
    assert_lines(
            &text,
            &[
                "gatescope_http_requests_total{code=\"404\",route=\"other\",service=\"127.0.0.1:8080\",source=\"kong\"} 1",
                "gatescope_route_overflow_total{service=\"127.0.0.1:8080\"} 1",
            ],
        );
}

/// promtool's lint problems for `text` (empty when clean). Fails without
/// promtool, as the integration tests do: a lint that is not run proves nothing.
fn promtool_problems(text: &str) -> Vec<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool not runnable ({e}): `cargo xtask setup` installs it \
                 (Debian package prometheus)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut problems: Vec<String> = all
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    problems.sort();
    assert_eq!(
        out.status.success(),
        problems.is_empty(),
        "promtool exit {:?}: {all}",
        out.status
    );
    problems
}

#[test]
fn promtool_accepts_both_modes() {
    let router = Router::from_config(None, 100);
    let native = rendered(Compat::None, MetricGroups::default(), router);
    let problems = promtool_problems(&native);
    assert!(problems.is_empty(), "native mode lints: {problems:#?}");

    let router = Router::from_config(None, 100);
    let kong = rendered(Compat::Kong, MetricGroups::default(), router);
    let problems = promtool_problems(&kong);
    // Kong's own names and types, kept so its dashboards work: a counter
    // without `_total`, two gauges with it, milliseconds.
    let mut inherent = vec![
        "kong_bandwidth_bytes counter metrics should have \"_total\" suffix",
        "kong_nginx_connections_total non-counter metrics should not have \"_total\" suffix",
        "kong_nginx_requests_total non-counter metrics should not have \"_total\" suffix",
        "kong_kong_latency_ms metric names should not contain abbreviated units",
        "kong_request_latency_ms metric names should not contain abbreviated units",
        "kong_upstream_latency_ms metric names should not contain abbreviated units",
    ];
    inherent.sort_unstable();
    assert_eq!(problems, inherent, "Kong mode:\n{kong}");
}
