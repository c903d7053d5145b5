//! The HTTP families: requests by status, latencies and bandwidth per
//! service and route, upstream requests per peer, and the parser's anomalies.
//!
//! Native names are in seconds with `_total` counters; Kong mode uses the
//! Kong Prometheus plugin's names, labels, help texts and bucket boundaries
//! (milliseconds). Families are registered only when their group is on, as
//! Kong's plugin does. Metric handles are cached per (service, route) and per
//! (peer, code), so a repeat exchange costs no label hashing by the registry.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use super::register;
use crate::{
    correlate::UpstreamLeg,
    http::{Anomaly, Exchange},
};

/// Optional metric groups, switched like the Kong plugin's
/// `status_code_metrics`, `latency_metrics`, `bandwidth_metrics` and
/// `upstream_health_metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricGroups {
    /// Requests by status code per service and route.
    pub status_code: bool,
    /// Request, upstream and gateway-added latency histograms.
    pub latency: bool,
    /// Request and response bytes per service and route.
    pub bandwidth: bool,
    /// Upstream requests per peer and status code.
    pub upstream_health: bool,
}

impl Default for MetricGroups {
    fn default() -> Self {
        MetricGroups {
            status_code: true,
            latency: true,
            bandwidth: true,
            upstream_health: true,
        }
    }
}

/// Kong's `request_latency_ms` and `upstream_latency_ms` buckets (ms).
pub const KONG_UPSTREAM_BUCKETS: [f64; 13] = [
    25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];
/// Kong's `kong_latency_ms` buckets (ms).
pub const KONG_LATENCY_BUCKETS: [f64; 13] = [
    5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
];
/// Native latency buckets (seconds).
pub const NATIVE_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
];

/// Label values Kong's `source` takes.
const SOURCE_SERVICE: &str = "service";
const SOURCE_GATEWAY: &str = "kong";

/// Cached (peer, code) handles kept; beyond it the registry is asked each time.
const MAX_PEER_HANDLES: usize = 4096;

/// The handles of one (service, route), created on first use so that only
/// observed series are exported (as Kong does).
#[derive(Default)]
struct RouteHandles {
    /// (status, from the service, counter)
    codes: Vec<(u16, bool, IntCounter)>,
    request_latency: Option<Histogram>,
    upstream_latency: Option<Histogram>,
    kong_latency: Option<Histogram>,
    ingress: Option<IntCounter>,
    egress: Option<IntCounter>,
}

pub struct HttpMetrics {
    kong: bool,
    /// `[service, route, code, source(, consumer)]`
    requests: Option<IntCounterVec>,
    request_latency: Option<HistogramVec>,
    /// Native: per the upstream exchange's own service/route; Kong: per the
    /// downstream exchange's, from its upstream leg.
    upstream_latency: Option<HistogramVec>,
    kong_latency: Option<HistogramVec>,
    /// `[service, route, direction(, consumer)]`
    bytes: Option<IntCounterVec>,
    upstream_requests: Option<IntCounterVec>,
    anomalies: [IntCounter; 3],
    overflow: IntCounterVec,
    routes: HashMap<(Arc<str>, Arc<str>), RouteHandles>,
    peers: HashMap<(SocketAddr, u16), IntCounter>,
    overflows: HashMap<Arc<str>, IntCounter>,
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &["service", "route"],
    )
    .expect("valid metric")
}

impl HttpMetrics {
    pub fn new(registry: &Registry, kong: bool, groups: MetricGroups) -> Self {
        let requests = groups.status_code.then(|| {
            let (name, help, labels): (_, _, &[&str]) = if kong {
                (
                    "kong_http_requests_total",
                    "HTTP status codes per Consumer/Service/Route in Kong Gateway",
                    &["service", "route", "code", "source", "consumer"],
                )
            } else {
                (
                    "gatescope_http_requests_total",
                    "HTTP requests answered by the gateway, by service, route, status code (499: the client gave up first) and source (service: an upstream answered; kong: the gateway answered itself)",
                    &["service", "route", "code", "source"],
                )
            };
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        });
        let (request_latency, upstream_latency, kong_latency) = match (groups.latency, kong) {
            (false, _) => (None, None, None),
            (true, true) => (
                Some(histogram(
                    "kong_request_latency_ms",
                    "Total latency incurred during requests for each Service/Route in Kong Gateway",
                    &KONG_UPSTREAM_BUCKETS,
                )),
                Some(histogram(
                    "kong_upstream_latency_ms",
                    "Latency added by upstream response for each Service/Route in Kong Gateway",
                    &KONG_UPSTREAM_BUCKETS,
                )),
                Some(histogram(
                    "kong_kong_latency_ms",
                    "Latency added by Kong Gateway and enabled plugins for each Service/Route in Kong Gateway",
                    &KONG_LATENCY_BUCKETS,
                )),
            ),
            (true, false) => (
                Some(histogram(
                    "gatescope_http_request_duration_seconds",
                    "Time from a request's first byte to its response's last byte, as the gateway read and wrote them, per service and route",
                    &NATIVE_BUCKETS,
                )),
                Some(histogram(
                    "gatescope_http_upstream_duration_seconds",
                    "Time from the gateway's first request byte to an upstream until the upstream's last response byte, per service and route",
                    &NATIVE_BUCKETS,
                )),
                None,
            ),
        };
        let bytes = groups.bandwidth.then(|| {
            let (name, help, labels): (_, _, &[&str]) = if kong {
                (
                    "kong_bandwidth_bytes",
                    "Total bandwidth (ingress/egress) throughput in bytes",
                    &["service", "route", "direction", "consumer"],
                )
            } else {
                (
                    "gatescope_http_bytes_total",
                    "HTTP bytes (head and body) of requests from clients (ingress) and of the gateway's responses (egress), per service and route",
                    &["service", "route", "direction"],
                )
            };
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        });
        let upstream_requests = groups.upstream_health.then(|| {
            IntCounterVec::new(
                Opts::new(
                    "gatescope_http_upstream_requests_total",
                    "Requests the gateway made to each upstream peer, by response status code (0: the connection closed without a response)",
                ),
                &["peer", "code"],
            )
            .expect("valid metric")
        });
        let anomalies = IntCounterVec::new(
            Opts::new(
                "gatescope_http_anomalies_total",
                "What the HTTP parser could not attribute to a request: non_http (bytes that are not HTTP/1.x), desync (framing lost in uncaptured bytes), resync (a connection joined mid-stream)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let overflow = IntCounterVec::new(
            Opts::new(
                "gatescope_route_overflow_total",
                "Exchanges labelled route=\"other\" because their service already had --max-routes-per-service path templates",
            ),
            &["service"],
        )
        .expect("valid metric");
        for family in [&requests, &bytes, &upstream_requests]
            .into_iter()
            .flatten()
        {
            register(registry, family);
        }
        for family in [&request_latency, &upstream_latency, &kong_latency]
            .into_iter()
            .flatten()
        {
            register(registry, family);
        }
        register(registry, &anomalies);
        register(registry, &overflow);
        let anomalies = ["non_http", "desync", "resync"].map(|k| anomalies.with_label_values(&[k]));
        HttpMetrics {
            kong,
            requests,
            request_latency,
            upstream_latency,
            kong_latency,
            bytes,
            upstream_requests,
            anomalies,
            overflow,
            routes: HashMap::new(),
            peers: HashMap::new(),
            overflows: HashMap::new(),
        }
    }

    /// Whether downstream exchanges need a service and route at all.
    pub fn wants_downstream_route(&self) -> bool {
        self.requests.is_some() || self.request_latency.is_some() || self.bytes.is_some()
    }

    /// Whether upstream exchanges need a service and route (native upstream
    /// latency; Kong's comes from the downstream exchange's leg).
    pub fn wants_upstream_route(&self) -> bool {
        !self.kong && self.upstream_latency.is_some()
    }

    pub fn anomaly(&mut self, a: &Anomaly) {
        let i = match a {
            Anomaly::NonHttp { .. } => 0,
            Anomaly::Desync => 1,
            Anomaly::Resync { .. } => 2,
        };
        self.anomalies[i].inc();
    }

    pub fn overflowed(&mut self, service: &Arc<str>) {
        if let Some(c) = self.overflows.get(&**service) {
            c.inc();
            return;
        }
        let c = self.overflow.with_label_values(&[service]);
        c.inc();
        self.overflows.insert(service.clone(), c);
    }

    /// A client's exchange with the gateway, labelled `service`/`route`.
    pub fn downstream(
        &mut self,
        ex: &Exchange,
        leg: Option<&UpstreamLeg>,
        service: &Arc<str>,
        route: &Arc<str>,
    ) {
        let HttpMetrics {
            kong,
            requests,
            request_latency,
            upstream_latency,
            kong_latency,
            bytes,
            routes,
            ..
        } = self;
        let kong = *kong;
        let h = handles(routes, service, route);
        let with_labels = |family: &IntCounterVec, extra: &[&str]| {
            let mut values: Vec<&str> = vec![service, route];
            values.extend_from_slice(extra);
            if kong {
                values.push(""); // consumer: a Kong concept we cannot see
            }
            family.with_label_values(&values)
        };

        if let Some(family) = requests {
            let from_service = leg.is_some() && ex.status != 499;
            let found = h
                .codes
                .iter()
                .position(|(code, s, _)| *code == ex.status && *s == from_service);
            let i = found.unwrap_or_else(|| {
                let source = if from_service {
                    SOURCE_SERVICE
                } else {
                    SOURCE_GATEWAY
                };
                let counter = with_labels(family, &[&ex.status.to_string(), source]);
                h.codes.push((ex.status, from_service, counter));
                h.codes.len() - 1
            });
            h.codes[i].2.inc();
        }

        if let Some(family) = bytes {
            for (len, slot, dir) in [
                (ex.request_bytes, &mut h.ingress, "ingress"),
                (ex.response_bytes, &mut h.egress, "egress"),
            ] {
                // Kong adds only non-zero sizes.
                if len > 0 {
                    slot.get_or_insert_with(|| with_labels(family, &[dir]))
                        .inc_by(len);
                }
            }
        }

        // An abandoned request (499) lasts until the connection closed, as
        // nginx's $request_time counts it.
        let Some(total_ns) = duration(ex.request_first_ns, ex.end_ns()) else {
            return;
        };
        let unit = |ns: u64| {
            if kong {
                ns as f64 / 1e6
            } else {
                ns as f64 / 1e9
            }
        };
        let pair = [service.as_ref(), route.as_ref()];
        if let Some(family) = request_latency {
            h.request_latency
                .get_or_insert_with(|| family.with_label_values(&pair))
                .observe(unit(total_ns));
        }
        if !kong {
            // Native upstream latency comes from the upstream exchanges.
            return;
        }
        let upstream_ns = leg.and_then(|l| duration(l.first_ns, l.last_ns));
        if let (Some(family), Some(up)) = (upstream_latency, upstream_ns) {
            h.upstream_latency
                .get_or_insert_with(|| family.with_label_values(&pair))
                .observe(unit(up));
        }
        // Gateway-added: the rest when an upstream was involved (until it
        // answered or was given up on), all of it when none was.
        let added = match (leg, upstream_ns) {
            (None, _) => Some(total_ns),
            (Some(_), Some(up)) => Some(total_ns.saturating_sub(up)),
            (Some(_), None) => None,
        };
        if let (Some(family), Some(added)) = (kong_latency, added) {
            h.kong_latency
                .get_or_insert_with(|| family.with_label_values(&pair))
                .observe(unit(added));
        }
    }

    /// The gateway's exchange with upstream `peer`.
    pub fn upstream_request(&mut self, peer: SocketAddr, status: u16) {
        let Some(family) = &self.upstream_requests else {
            return;
        };
        if let Some(c) = self.peers.get(&(peer, status)) {
            c.inc();
            return;
        }
        let c = family.with_label_values(&[&peer.to_string(), &status.to_string()]);
        c.inc();
        if self.peers.len() < MAX_PEER_HANDLES {
            self.peers.insert((peer, status), c);
        }
    }

    /// Native upstream latency of an upstream exchange, labelled by its own
    /// service/route.
    pub fn upstream_latency(&mut self, ex: &Exchange, service: &Arc<str>, route: &Arc<str>) {
        if self.kong {
            return;
        }
        let Some(family) = &self.upstream_latency else {
            return;
        };
        // An upstream that never answered counts until the gateway gave up
        // on it, as nginx's $upstream_response_time does.
        let Some(ns) = duration(ex.request_first_ns, ex.end_ns()) else {
            return;
        };
        handles(&mut self.routes, service, route)
            .upstream_latency
            .get_or_insert_with(|| family.with_label_values(&[service, route]))
            .observe(ns as f64 / 1e9);
    }
}

/// The cached handles of (`service`, `route`): one hash of the two names.
fn handles<'a>(
    routes: &'a mut HashMap<(Arc<str>, Arc<str>), RouteHandles>,
    service: &Arc<str>,
    route: &Arc<str>,
) -> &'a mut RouteHandles {
    routes.entry((service.clone(), route.clone())).or_default()
}

/// `last - first`, or `None` when there is no `last` (0) or it is earlier.
fn duration(first_ns: u64, last_ns: u64) -> Option<u64> {
    (last_ns != 0 && last_ns >= first_ns).then(|| last_ns - first_ns)
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, path::Path, process::Command};

    use super::*;
    use crate::{
        cli::Compat,
        config::Config,
        correlate::Completed,
        metrics::{render, Identity, Metrics},
        routes::Router,
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
            traceparent: None,
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
    fn feed(m: &mut Metrics, router: &mut Router) {
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
            m.record_exchange(
                &Completed::Downstream {
                    exchange,
                    listener: listener(),
                    upstream,
                },
                router,
            );
        }
        let mut up = exchange("GET", "/orders/12", 200, 35);
        up.request_first_ns = 1005 * MS;
        up.host = Some("backend".into());
        m.record_exchange(
            &Completed::Upstream {
                exchange: up,
                peer: peer(),
            },
            router,
        );
        m.record_anomaly(&Anomaly::NonHttp { bytes: 10 });
        m.record_anomaly(&Anomaly::Desync);
        m.record_anomaly(&Anomaly::Desync);
        m.set_phases(1, 2, 3);
    }

    fn rendered(compat: Compat, groups: MetricGroups, router: &mut Router) -> String {
        let mut m = Metrics::new(compat, &ID, &["bytes"], groups);
        m.set_listeners(&[listener()]);
        feed(&mut m, router);
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
            &mut Router::from_config(None, 100),
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
                "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
                "15", "30", "60", "+Inf"
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
        let mut router = Router::from_config(Some(config), 100);
        let text = rendered(Compat::Kong, MetricGroups::default(), &mut router);
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
            let mut router = Router::from_config(None, 100);
            let text = rendered(compat, off, &mut router);
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
                Compat::Kong => {
                    "kong_nginx_requests_total{node_id=\"node-1\",subsystem=\"http\"} 3"
                }
            };
            assert_lines(&text, &[all]);
        }
        let only_latency = MetricGroups {
            latency: true,
            ..off
        };
        let text = rendered(
            Compat::Kong,
            only_latency,
            &mut Router::from_config(None, 100),
        );
        assert!(text.contains("kong_request_latency_ms_count"), "{text}");
        assert!(!text.contains("kong_http_requests_total"), "{text}");
    }

    #[test]
    fn route_overflow_is_counted() {
        let mut router = Router::from_config(None, 1);
        let text = rendered(Compat::None, MetricGroups::default(), &mut router);
        // "/orders/{id}" took the only slot; "/missing" overflowed.
        assert_lines(
            &text,
            &[
                "gatescope_http_requests_total{code=\"404\",route=\"other\",service=\"127.0.0.1:8080\",source=\"kong\"} 1",
                "gatescope_route_overflow_total{service=\"127.0.0.1:8080\"} 1",
            ],
        );
    }

    /// promtool's lint problems for `text` (empty when clean), or `None`
    /// without promtool.
    fn promtool_problems(text: &str) -> Option<Vec<String>> {
        let promtool = Path::new("/usr/bin/promtool");
        if !promtool.exists() {
            eprintln!("no /usr/bin/promtool: lint check skipped");
            return None;
        }
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs");
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
        Some(problems)
    }

    #[test]
    fn promtool_accepts_both_modes() {
        let mut router = Router::from_config(None, 100);
        let native = rendered(Compat::None, MetricGroups::default(), &mut router);
        let Some(problems) = promtool_problems(&native) else {
            return;
        };
        assert!(problems.is_empty(), "native mode lints: {problems:#?}");

        let mut router = Router::from_config(None, 100);
        let kong = rendered(Compat::Kong, MetricGroups::default(), &mut router);
        let problems = promtool_problems(&kong).unwrap();
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
        inherent.sort();
        assert_eq!(problems, inherent, "Kong mode:\n{kong}");
    }
}
