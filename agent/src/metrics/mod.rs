//! Last stage, export: facts from the connection table and finished HTTP
//! exchanges become Prometheus families, under gatescope's names or Kong's
//! (`--metrics-compat kong`). Families without a Kong equivalent keep
//! gatescope's names in both modes.

mod health;
mod http;
mod kong;
mod native;
mod wire;

#[cfg(test)]
mod golden;

use std::{collections::HashMap, net::SocketAddr};

use prometheus::{
    core::Collector, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Cached counter handles per family, at most (bounded like the labels).
const HANDLE_CACHE_MAX: usize = 4096;

pub use health::Health;
pub use http::MetricGroups;

use gatescope_common::{WireCounts, WireKey};

use self::{http::HttpMetrics, wire::WireMetrics};
use crate::{
    capture::decode::Direction,
    cli::Compat,
    conntrack::{Fact, Gauges},
    correlate::Completed,
    http::Anomaly,
    routes::{Role, RouteInput, Router},
};

/// The downstream connection families that exist in both naming schemes.
trait Downstream: Send {
    fn accepted(&mut self);
    fn handled(&mut self);
    fn active(&mut self, value: u64);
    /// stub_status's reading / writing / waiting connections.
    fn phases(&mut self, reading: u64, writing: u64, waiting: u64);
    /// One more client request (stub_status's requests).
    fn request(&mut self);
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: &C) {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
}

pub struct Identity<'a> {
    pub node_id: &'a str,
    pub version: &'a str,
    pub kernel: &'a str,
}

/// Owned by the pipeline (the only writer); the server renders a clone of
/// the registry.
pub struct Metrics {
    registry: Registry,
    downstream: Box<dyn Downstream>,
    /// Per listening socket, in both modes (Kong's bandwidth is per route).
    downstream_bytes: IntCounterVec,
    http: HttpMetrics,
    upstream_open: IntGaugeVec,
    upstream_opened: IntCounterVec,
    upstream_bytes: IntCounterVec,
    untracked_bytes: IntCounterVec,
    downstream_tcp: IntCounterVec,
    upstream_tcp: IntCounterVec,
    wire: WireMetrics,
    pub health: Health,
    /// Listening port -> the listening socket's address, as the label shows it.
    listeners: HashMap<u16, String>,
    /// Counter handles of the per-record byte families, so the hot path
    /// neither formats labels nor hashes them per record.
    downstream_bytes_by: HashMap<(u16, Direction), IntCounter>,
    upstream_bytes_by: HashMap<(SocketAddr, Direction), IntCounter>,
}

impl Metrics {
    pub fn new(compat: Compat, id: &Identity, event_kinds: &[&str], groups: MetricGroups) -> Self {
        let registry = Registry::new();
        let downstream: Box<dyn Downstream> = match compat {
            Compat::None => Box::new(native::Native::new(&registry)),
            Compat::Kong => Box::new(kong::Kong::new(&registry, id.node_id, id.version)),
        };
        let http = HttpMetrics::new(&registry, compat == Compat::Kong, groups);
        let downstream_bytes = IntCounterVec::new(
            Opts::new(
                "gatescope_downstream_bytes_total",
                "TCP payload bytes the gateway received (ingress) or sent (egress) on client connections, per listening socket",
            ),
            &["listener", "direction"],
        )
        .expect("valid metric");
        register(&registry, &downstream_bytes);
        let upstream_open = IntGaugeVec::new(
            Opts::new(
                "gatescope_upstream_connections",
                "Open connections from the gateway to each upstream peer (connecting, established, or half-closed by the peer)",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let upstream_opened = IntCounterVec::new(
            Opts::new(
                "gatescope_upstream_connections_opened_total",
                "Connections the gateway started to each upstream peer",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let upstream_bytes = IntCounterVec::new(
            Opts::new(
                "gatescope_upstream_bytes_total",
                "TCP payload bytes the gateway received from (ingress) or sent to (egress) each upstream peer",
            ),
            &["peer", "direction"],
        )
        .expect("valid metric");
        let untracked_bytes = IntCounterVec::new(
            Opts::new(
                "gatescope_untracked_bytes_total",
                "Bytes the gateway moved on TCP sockets whose connection gatescope did not see open (e.g. open before it started)",
            ),
            &["direction"],
        )
        .expect("valid metric");
        register(&registry, &upstream_open);
        register(&registry, &upstream_opened);
        register(&registry, &upstream_bytes);
        register(&registry, &untracked_bytes);
        let downstream_tcp = IntCounterVec::new(
            Opts::new(
                "gatescope_downstream_tcp_events_total",
                "Retransmissions and resets on client connections, per listening socket (tcp:* tracepoints)",
            ),
            &["listener", "event"],
        )
        .expect("valid metric");
        let upstream_tcp = IntCounterVec::new(
            Opts::new(
                "gatescope_upstream_tcp_events_total",
                "Retransmissions and resets on connections to each upstream peer (tcp:* tracepoints)",
            ),
            &["peer", "event"],
        )
        .expect("valid metric");
        register(&registry, &downstream_tcp);
        register(&registry, &upstream_tcp);
        for dir in [Direction::Ingress, Direction::Egress] {
            untracked_bytes.with_label_values(&[dir.as_str()]);
        }
        let wire = WireMetrics::new(&registry);
        let health = Health::new(&registry, id.version, id.kernel, event_kinds);
        Metrics {
            registry,
            downstream,
            downstream_bytes,
            http,
            upstream_open,
            upstream_opened,
            upstream_bytes,
            untracked_bytes,
            downstream_tcp,
            upstream_tcp,
            wire,
            health,
            listeners: HashMap::new(),
            downstream_bytes_by: HashMap::new(),
            upstream_bytes_by: HashMap::new(),
        }
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn set_listeners(&mut self, sockets: &[SocketAddr]) {
        let listeners: HashMap<u16, String> =
            sockets.iter().map(|s| (s.port(), s.to_string())).collect();
        if listeners != self.listeners {
            // Labels may have changed (a listener opened or closed).
            self.downstream_bytes_by.clear();
            self.listeners = listeners;
        }
        self.health.listen_sockets.set(sockets.len() as i64);
    }

    /// The listening socket of `port` as labels show it; `*:port` when the
    /// listener closed since the connection opened.
    fn listener_label(&self, port: u16) -> String {
        listener_label(&self.listeners, port)
    }

    /// Exports the wire view's counters (running totals from the kernel);
    /// `interface` names an interface index.
    pub fn sync_wire(
        &mut self,
        totals: &[(WireKey, WireCounts)],
        interface: &dyn Fn(u32) -> String,
    ) {
        struct Names<'a> {
            listeners: &'a HashMap<u16, String>,
            interface: &'a dyn Fn(u32) -> String,
        }
        impl wire::Labels for Names<'_> {
            fn interface(&self, ifindex: u32) -> String {
                (self.interface)(ifindex)
            }
            fn listener(&self, port: u16) -> String {
                listener_label(self.listeners, port)
            }
        }
        let names = Names {
            listeners: &self.listeners,
            interface,
        };
        self.wire.sync(totals, &names);
    }

    /// A client connection on `port` whose handshake the wire view did not
    /// time (while it was on).
    pub fn handshake_untimed(&self, port: u16) {
        self.wire.untimed(&self.listener_label(port));
    }

    /// One client's TCP handshake on listening port `port`.
    pub fn handshake(&self, interface: &str, port: u16, seconds: f64) {
        self.wire
            .handshake(interface, &self.listener_label(port), seconds);
    }

    pub fn record(&mut self, fact: &Fact) {
        match *fact {
            Fact::Accepted => self.downstream.accepted(),
            Fact::Handled => self.downstream.handled(),
            Fact::DownstreamBytes { port, dir, len } => {
                if let Some(counter) = self.downstream_bytes_by.get(&(port, dir)) {
                    counter.inc_by(len);
                    return;
                }
                let counter = self
                    .downstream_bytes
                    .with_label_values(&[&self.listener_label(port), dir.as_str()]);
                counter.inc_by(len);
                if self.downstream_bytes_by.len() < HANDLE_CACHE_MAX {
                    self.downstream_bytes_by.insert((port, dir), counter);
                }
            }
            Fact::UpstreamOpened { peer } => {
                self.upstream_opened
                    .with_label_values(&[&peer.to_string()])
                    .inc();
            }
            Fact::UpstreamBytes { peer, dir, len } => {
                if let Some(counter) = self.upstream_bytes_by.get(&(peer, dir)) {
                    counter.inc_by(len);
                    return;
                }
                let counter = self
                    .upstream_bytes
                    .with_label_values(&[&peer.to_string(), dir.as_str()]);
                counter.inc_by(len);
                if self.upstream_bytes_by.len() < HANDLE_CACHE_MAX {
                    self.upstream_bytes_by.insert((peer, dir), counter);
                }
            }
            Fact::UntrackedBytes { dir, len } => {
                self.untracked_bytes
                    .with_label_values(&[dir.as_str()])
                    .inc_by(len);
            }
            Fact::DownstreamTcp { port, event } => {
                self.downstream_tcp
                    .with_label_values(&[&self.listener_label(port), event.as_str()])
                    .inc();
            }
            Fact::UpstreamTcp { peer, event } => {
                self.upstream_tcp
                    .with_label_values(&[&peer.to_string(), event.as_str()])
                    .inc();
            }
            Fact::TableFull => {
                self.health
                    .events_lost
                    .with_label_values(&["conntrack_full"])
                    .inc();
            }
        }
    }

    /// One finished exchange: requests, latencies and bandwidth per service
    /// and route (named by `router`), upstream requests per peer.
    pub fn record_exchange(&mut self, done: &Completed, router: &mut Router) {
        match done {
            Completed::Downstream {
                exchange,
                listener,
                upstream,
            } => {
                self.downstream.request();
                if !self.http.wants_downstream_route() {
                    return;
                }
                let routed = router.route(&RouteInput {
                    role: Role::Downstream,
                    listener: Some(*listener),
                    peer: None,
                    host: exchange.host.as_deref(),
                    method: &exchange.method,
                    path: &exchange.path,
                });
                if routed.overflow {
                    self.http.overflowed(&routed.service);
                }
                self.http
                    .downstream(exchange, upstream.as_ref(), &routed.service, &routed.route);
            }
            Completed::Upstream { exchange, peer } => {
                self.http.upstream_request(*peer, exchange.status);
                if !self.http.wants_upstream_route() {
                    return;
                }
                let routed = router.route(&RouteInput {
                    role: Role::Upstream,
                    listener: None,
                    peer: Some(*peer),
                    host: exchange.host.as_deref(),
                    method: &exchange.method,
                    path: &exchange.path,
                });
                if routed.overflow {
                    self.http.overflowed(&routed.service);
                }
                self.http
                    .upstream_latency(exchange, &routed.service, &routed.route);
            }
        }
    }

    /// stub_status's reading / writing / waiting downstream connections.
    pub fn set_phases(&mut self, reading: u64, writing: u64, waiting: u64) {
        self.downstream.phases(reading, writing, waiting);
    }

    pub fn record_anomaly(&mut self, a: &Anomaly) {
        self.http.anomaly(a);
    }

    /// Copies the connection table's gauges.
    pub fn set_gauges(&mut self, gauges: &Gauges) {
        self.downstream.active(gauges.downstream_active);
        for (peer, open) in &gauges.upstream_open {
            self.upstream_open
                .with_label_values(&[&peer.to_string()])
                .set(*open as i64);
        }
        let tracked = &self.health.connections_tracked;
        tracked
            .with_label_values(&["downstream"])
            .set(gauges.tracked_downstream as i64);
        tracked
            .with_label_values(&["upstream"])
            .set(gauges.tracked_upstream as i64);
    }
}

/// The listening socket of `port` as labels show it; `*:port` when the
/// listener closed since the connection opened.
fn listener_label(listeners: &HashMap<u16, String>, port: u16) -> String {
    match listeners.get(&port) {
        Some(label) => label.clone(),
        None => format!("*:{port}"),
    }
}

/// The Prometheus text exposition (format 0.0.4) of `registry`.
pub fn render(registry: &Registry) -> String {
    TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity = Identity {
        node_id: "node-1",
        version: "0.1.0",
        kernel: "6.18.0",
    };

    fn metrics(compat: Compat) -> Metrics {
        let mut m = Metrics::new(compat, &ID, &["bytes"], MetricGroups::default());
        m.set_listeners(&["127.0.0.1:8080".parse().unwrap()]);
        let peer = "127.0.0.1:9000".parse().unwrap();
        for fact in [
            Fact::Accepted,
            Fact::Accepted,
            Fact::Handled,
            Fact::DownstreamBytes {
                port: 8080,
                dir: Direction::Ingress,
                len: 100,
            },
            Fact::DownstreamBytes {
                port: 8080,
                dir: Direction::Egress,
                len: 250,
            },
            Fact::UpstreamOpened { peer },
            Fact::UpstreamBytes {
                peer,
                dir: Direction::Egress,
                len: 120,
            },
        ] {
            m.record(&fact);
        }
        let gauges = Gauges {
            downstream_active: 2,
            upstream_open: [(peer, 1)].into(),
            tracked_downstream: 2,
            tracked_upstream: 1,
        };
        m.set_gauges(&gauges);
        m
    }

    #[test]
    fn native_rendering() {
        let text = render(&metrics(Compat::None).registry());
        for line in [
            "gatescope_downstream_connections_accepted_total 2",
            "gatescope_downstream_connections_handled_total 1",
            "gatescope_downstream_connections{state=\"active\"} 2",
            "gatescope_downstream_bytes_total{direction=\"ingress\",listener=\"127.0.0.1:8080\"} 100",
            "gatescope_downstream_bytes_total{direction=\"egress\",listener=\"127.0.0.1:8080\"} 250",
            "gatescope_upstream_connections{peer=\"127.0.0.1:9000\"} 1",
            "gatescope_upstream_connections_opened_total{peer=\"127.0.0.1:9000\"} 1",
            "gatescope_upstream_bytes_total{direction=\"egress\",peer=\"127.0.0.1:9000\"} 120",
            "gatescope_events_lost_total{reason=\"ringbuf_full\"} 0",
            "gatescope_build_info{kernel=\"6.18.0\",version=\"0.1.0\"} 1",
            "# TYPE gatescope_downstream_bytes_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("kong_"), "{text}");
    }

    #[test]
    fn kong_rendering_uses_kong_names_and_labels() {
        let text = render(&metrics(Compat::Kong).registry());
        for line in [
            "# TYPE kong_nginx_connections_total gauge",
            "# HELP kong_nginx_connections_total Number of connections by subsystem",
            "kong_nginx_connections_total{node_id=\"node-1\",state=\"accepted\",subsystem=\"http\"} 2",
            "kong_nginx_connections_total{node_id=\"node-1\",state=\"handled\",subsystem=\"http\"} 1",
            "kong_nginx_connections_total{node_id=\"node-1\",state=\"active\",subsystem=\"http\"} 2",
            "kong_nginx_connections_total{node_id=\"node-1\",state=\"total\",subsystem=\"http\"} 0",
            "kong_nginx_connections_total{node_id=\"node-1\",state=\"reading\",subsystem=\"http\"} 0",
            "kong_nginx_requests_total{node_id=\"node-1\",subsystem=\"http\"} 0",
            "kong_node_info{node_id=\"node-1\",version=\"0.1.0\"} 1",
            // No Kong equivalent: native names kept. Kong's bandwidth is
            // per service/route (metrics/http.rs), not per listener.
            "gatescope_downstream_bytes_total{direction=\"ingress\",listener=\"127.0.0.1:8080\"} 100",
            "gatescope_upstream_connections{peer=\"127.0.0.1:9000\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        for native in [
            "gatescope_downstream_connections",
            "gatescope_http_requests_all_total",
        ] {
            assert!(!text.contains(native), "{native} in\n{text}");
        }
        // No exchange yet: no per-route series.
        assert!(!text.contains("kong_bandwidth_bytes{"), "{text}");
    }

    #[test]
    fn unknown_listener_port_is_still_counted() {
        let mut m = Metrics::new(Compat::None, &ID, &[], MetricGroups::default());
        m.record(&Fact::DownstreamBytes {
            port: 81,
            dir: Direction::Ingress,
            len: 7,
        });
        let text = render(&m.registry());
        assert!(text.contains("listener=\"*:81\"} 7"), "{text}");
    }
}
