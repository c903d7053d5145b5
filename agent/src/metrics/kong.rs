//! The same facts under the Kong Prometheus plugin's exact names, labels and
//! help texts (see ../shared/seeds: Kong's `/metrics` example), so existing
//! Kong dashboards (Grafana 7424) work unchanged. Kong types
//! `kong_nginx_connections_total` and `kong_nginx_requests_total` as gauges
//! and `kong_bandwidth_bytes` (metrics/http.rs) as a counter without
//! `_total`; we keep that, lint warnings included.

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use super::{register, Downstream};

/// Kong's `subsystem` label: the HTTP subsystem is what we observe.
const SUBSYSTEM: &str = "http";

pub struct Kong {
    accepted: IntGauge,
    handled: IntGauge,
    /// `state="total"`: requests, as stub_status counts them.
    total: IntGauge,
    active: IntGauge,
    reading: IntGauge,
    writing: IntGauge,
    waiting: IntGauge,
    /// `kong_nginx_requests_total`, the same number as `total`.
    requests: IntGauge,
}

impl Kong {
    pub fn new(registry: &Registry, node_id: &str, version: &str) -> Self {
        let connections = IntGaugeVec::new(
            Opts::new(
                "kong_nginx_connections_total",
                "Number of connections by subsystem",
            ),
            &["node_id", "subsystem", "state"],
        )
        .expect("valid metric");
        let requests = IntGaugeVec::new(
            Opts::new("kong_nginx_requests_total", "Total number of requests"),
            &["node_id", "subsystem"],
        )
        .expect("valid metric");
        let node_info = IntGaugeVec::new(
            Opts::new("kong_node_info", "Kong Gateway Node metadata information"),
            &["node_id", "version"],
        )
        .expect("valid metric");
        register(registry, &connections);
        register(registry, &requests);
        register(registry, &node_info);
        node_info.with_label_values(&[node_id, version]).set(1);
        let state = |s: &str| connections.with_label_values(&[node_id, SUBSYSTEM, s]);
        Kong {
            accepted: state("accepted"),
            handled: state("handled"),
            total: state("total"),
            active: state("active"),
            reading: state("reading"),
            writing: state("writing"),
            waiting: state("waiting"),
            requests: requests.with_label_values(&[node_id, SUBSYSTEM]),
        }
    }
}

impl Downstream for Kong {
    fn accepted(&mut self) {
        self.accepted.inc();
    }
    fn handled(&mut self) {
        self.handled.inc();
    }
    fn active(&mut self, value: u64) {
        self.active.set(value as i64);
    }
    fn phases(&mut self, reading: u64, writing: u64, waiting: u64) {
        self.reading.set(reading as i64);
        self.writing.set(writing as i64);
        self.waiting.set(waiting as i64);
    }
    fn request(&mut self) {
        self.total.inc();
        self.requests.inc();
    }
}
