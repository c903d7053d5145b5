//! The same facts under the Kong Prometheus plugin's exact names, labels and
//! help texts (see ../shared/seeds: Kong's `/metrics` example), so existing
//! Kong dashboards (Grafana 7424) work unchanged. Kong types
//! `kong_nginx_connections_total` as a gauge and `kong_bandwidth_bytes` as a
//! counter without `_total`; we keep that, lint warnings included.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{register, Downstream};
use crate::capture::decode::Direction;

/// Kong's `subsystem` label: the HTTP subsystem is what we observe.
const SUBSYSTEM: &str = "http";

pub struct Kong {
    node_id: String,
    connections: IntGaugeVec,
    bandwidth: IntCounterVec,
    accepted: u64,
    handled: u64,
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
        let bandwidth = IntCounterVec::new(
            Opts::new(
                "kong_bandwidth_bytes",
                "Total bandwidth (ingress/egress) throughput in bytes",
            ),
            &["service", "route", "direction", "consumer"],
        )
        .expect("valid metric");
        let node_info = IntGaugeVec::new(
            Opts::new("kong_node_info", "Kong Gateway Node metadata information"),
            &["node_id", "version"],
        )
        .expect("valid metric");
        register(registry, &connections);
        register(registry, &bandwidth);
        register(registry, &node_info);
        node_info.with_label_values(&[node_id, version]).set(1);
        let mut kong = Kong {
            node_id: node_id.to_owned(),
            connections,
            bandwidth,
            accepted: 0,
            handled: 0,
        };
        for state in ["accepted", "handled", "active"] {
            kong.set(state, 0);
        }
        kong
    }

    fn set(&mut self, state: &str, value: u64) {
        self.connections
            .with_label_values(&[&self.node_id, SUBSYSTEM, state])
            .set(value as i64);
    }
}

impl Downstream for Kong {
    fn accepted(&mut self) {
        self.accepted += 1;
        self.set("accepted", self.accepted);
    }
    fn handled(&mut self) {
        self.handled += 1;
        self.set("handled", self.handled);
    }
    fn active(&mut self, value: u64) {
        self.set("active", value);
    }
    /// Without HTTP routing, the service is the listening socket and the
    /// route is empty; consumers are a Kong concept we cannot see.
    fn bytes(&mut self, listener: &str, dir: Direction, len: u64) {
        self.bandwidth
            .with_label_values(&[listener, "", dir.as_str(), ""])
            .inc_by(len);
    }
}
