//! gatescope's own names for the families that have a Kong equivalent,
//! following Prometheus conventions (base units, `_total` counters).

use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use super::{register, Downstream};

pub struct Native {
    accepted: IntCounter,
    handled: IntCounter,
    requests: IntCounter,
    active: IntGauge,
    reading: IntGauge,
    writing: IntGauge,
    waiting: IntGauge,
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
        let requests = IntCounter::new(
            "gatescope_http_requests_all_total",
            "Client requests the gateway read, whatever became of them (stub_status's requests)",
        )
        .expect("valid metric");
        let connections = IntGaugeVec::new(
            Opts::new(
                "gatescope_downstream_connections",
                "Downstream connections by stub_status state: active = established and not yet closed by the gateway; reading = reading a request head; writing = request read, response not finished; waiting = keep-alive, no request in progress",
            ),
            &["state"],
        )
        .expect("valid metric");
        register(registry, &accepted);
        register(registry, &handled);
        register(registry, &requests);
        register(registry, &connections);
        let state = |s: &str| connections.with_label_values(&[s]);
        Native {
            accepted,
            handled,
            requests,
            active: state("active"),
            reading: state("reading"),
            writing: state("writing"),
            waiting: state("waiting"),
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
        self.active.set(value as i64);
    }
    fn phases(&mut self, reading: u64, writing: u64, waiting: u64) {
        self.reading.set(reading as i64);
        self.writing.set(writing as i64);
        self.waiting.set(waiting as i64);
    }
    fn request(&mut self) {
        self.requests.inc();
    }
}
