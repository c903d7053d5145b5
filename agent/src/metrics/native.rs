//! gatescope's own names for the families that have a Kong equivalent,
//! following Prometheus conventions (base units, `_total` counters).

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{register, Downstream};
use crate::capture::decode::Direction;

pub struct Native {
    accepted: IntCounter,
    handled: IntCounter,
    connections: IntGaugeVec,
    bytes: IntCounterVec,
}

impl Native {
    pub fn new(registry: &Registry) -> Self {
        let accepted = IntCounter::new(
            "gatescope_downstream_connections_accepted_total",
            "Connections accepted by the gateway (accept() calls that returned one), as stub_status counts them",
        )
        .expect("valid metric");
        let handled = IntCounter::new(
            "gatescope_downstream_connections_handled_total",
            "Downstream connections the gateway read from at least once",
        )
        .expect("valid metric");
        let connections = IntGaugeVec::new(
            Opts::new(
                "gatescope_downstream_connections",
                "Downstream connections by stub_status state; active = established and not yet closed by the gateway",
            ),
            &["state"],
        )
        .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                "gatescope_downstream_bytes_total",
                "TCP payload bytes the gateway received (ingress) or sent (egress) on client connections, per listening socket",
            ),
            &["listener", "direction"],
        )
        .expect("valid metric");
        register(registry, &accepted);
        register(registry, &handled);
        register(registry, &connections);
        register(registry, &bytes);
        connections.with_label_values(&["active"]).set(0);
        Native {
            accepted,
            handled,
            connections,
            bytes,
        }
    }
}

impl Downstream for Native {
    fn accepted(&mut self) {
        self.accepted.inc();
    }
    fn handled(&mut self) {
        self.handled.inc();
    }
    fn active(&mut self, value: u64) {
        self.connections
            .with_label_values(&["active"])
            .set(value as i64);
    }
    fn bytes(&mut self, listener: &str, dir: Direction, len: u64) {
        self.bytes
            .with_label_values(&[listener, dir.as_str()])
            .inc_by(len);
    }
}
