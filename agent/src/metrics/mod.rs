//! The Prometheus registry and the families not fed by exchanges.
//!
//! Facts from the connection table, the parser's anomalies, the wire view
//! and the agent's health become families under
//! gatescope's names or Kong's (`--metrics-compat kong`); finished exchanges
//! reach the HTTP families through the metrics sink (sinks/metrics.rs). Each
//! family is described once, in families.rs.

mod downstream;
mod families;
mod genai;
mod grpc;
mod health;
mod http;
mod links;
mod spans;
mod status;
mod wire;

#[cfg(test)]
mod golden;

use std::collections::HashMap;

use gatescope_common::ListenKey;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Registry, TextEncoder};
use rustc_hash::FxHashMap;

/// Cached counter handles per family, at most (bounded like the labels).
const HANDLE_CACHE_MAX: usize = 4096;

pub use genai::GenAiMetrics;
pub use health::Health;
pub use http::{HttpMetrics, MetricGroups};
pub use links::Links;
pub use spans::SpanMetrics;
pub use status::{Names as StatusNames, StatusPage, SAMPLE_EVERY as STATUS_SAMPLE_EVERY};

use gatescope_common::{WireCounts, WireKey};

use self::{
    downstream::Downstream,
    families::{Schema, Stat, KONG, NATIVE},
    wire::WireMetrics,
};
use crate::{
    capture::decode::Direction,
    cli::Compat,
    conntrack::{Fact, Gauges, Peer},
    http::Anomaly,
    pods::Gateway,
};

pub struct Identity<'a> {
    pub node_id: &'a str,
    pub version: &'a str,
    pub kernel: &'a str,
}

/// Owned by the pipeline (the only writer); the server renders a clone of
/// the registry.
pub struct Metrics {
    registry: Registry,
    /// The naming schema (`--metrics-compat`).
    schema: &'static Schema,
    /// stub_status's families, under the schema's names.
    downstream: Downstream,
    /// Per listening socket, in both modes (Kong's bandwidth is per route).
    downstream_bytes: IntCounterVec,
    /// non_http, desync, resync.
    anomalies: [IntCounter; 3],
    /// The same family, for HTTP/2's kinds (`h2_…`), created when first seen.
    anomaly_kinds: IntCounterVec,
    upstream_open: IntGaugeVec,
    upstream_opened: IntCounterVec,
    upstream_bytes: IntCounterVec,
    untracked_bytes: IntCounterVec,
    downstream_tcp: IntCounterVec,
    downstream_tls: IntCounterVec,
    upstream_tls: IntCounterVec,
    downstream_tls_unparsed: IntCounterVec,
    upstream_tls_unparsed: IntCounterVec,
    upstream_tcp: IntCounterVec,
    wire: WireMetrics,
    pub health: Health,
    /// `gatescope_gateway_info`, native mode only (Kong's label sets stay
    /// Kong's, for dashboard 7424).
    gateways: Option<IntGaugeVec>,
    /// The span exporter's counts (spans/).
    pub spans: SpanMetrics,
    /// How upstream calls were linked to client requests.
    pub links: Links,
    /// Listening port in its network namespace -> how its series name it.
    listeners: HashMap<ListenKey, ListenerName>,
    /// Counter handles of the per-record byte families, so the hot path
    /// neither formats labels nor hashes them per record.
    downstream_bytes_by: FxHashMap<(ListenKey, Direction), IntCounter>,
    upstream_bytes_by: FxHashMap<(Peer, Direction), IntCounter>,
}

impl Metrics {
    pub fn new(compat: Compat, id: &Identity, event_kinds: &[&str]) -> Self {
        let registry = Registry::new();
        let schema = match compat {
            Compat::None => &NATIVE,
            Compat::Kong => &KONG,
        };
        let downstream = Downstream::new(&registry, schema, id.node_id, id.version);
        let anomalies = families::HTTP_ANOMALIES.counter(&registry);
        let untracked_bytes = families::UNTRACKED_BYTES.counter(&registry);
        for dir in [Direction::Ingress, Direction::Egress] {
            untracked_bytes.with_label_values(&[dir.as_str()]);
        }
        Metrics {
            schema,
            downstream,
            downstream_bytes: families::DOWNSTREAM_BYTES.counter(&registry),
            anomalies: ["non_http", "desync", "resync"].map(|k| anomalies.with_label_values(&[k])),
            anomaly_kinds: anomalies,
            upstream_open: families::UPSTREAM_CONNECTIONS.gauge(&registry),
            upstream_opened: families::UPSTREAM_OPENED.counter(&registry),
            upstream_bytes: families::UPSTREAM_BYTES.counter(&registry),
            untracked_bytes,
            downstream_tcp: families::DOWNSTREAM_TCP_EVENTS.counter(&registry),
            downstream_tls: families::DOWNSTREAM_TLS_HANDSHAKES.counter(&registry),
            upstream_tls: families::UPSTREAM_TLS_HANDSHAKES.counter(&registry),
            downstream_tls_unparsed: families::DOWNSTREAM_TLS_UNPARSED.counter(&registry),
            upstream_tls_unparsed: families::UPSTREAM_TLS_UNPARSED.counter(&registry),
            upstream_tcp: families::UPSTREAM_TCP_EVENTS.counter(&registry),
            wire: WireMetrics::new(&registry),
            health: Health::new(&registry, id.version, id.kernel, event_kinds),
            gateways: matches!(compat, Compat::None)
                .then(|| families::GATEWAY_INFO.gauge(&registry)),
            spans: SpanMetrics::new(&registry),
            links: Links::new(&registry),
            registry,
            listeners: HashMap::new(),
            downstream_bytes_by: FxHashMap::default(),
            upstream_bytes_by: FxHashMap::default(),
        }
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// The families the status page reads, under this schema's names.
    pub fn status_names(&self) -> StatusNames {
        StatusNames::of(self.schema)
    }

    /// Registers the HTTP families of the `groups` that are on, for the
    /// metrics sink (sinks/metrics.rs). Call once.
    pub fn http(&self, groups: MetricGroups) -> HttpMetrics {
        HttpMetrics::new(
            &self.registry,
            &self.schema.http,
            self.downstream.clone(),
            groups,
        )
    }

    /// Registers the GenAI families, for their sink (sinks/metrics.rs).
    /// Call once.
    pub fn genai(
        &self,
        providers: std::sync::Arc<crate::label::Providers>,
        max_models_per_provider: usize,
    ) -> GenAiMetrics {
        GenAiMetrics::new(
            &self.registry,
            &self.schema.genai,
            providers,
            max_models_per_provider,
        )
    }

    /// The observed gateway processes, as `gatescope_gateway_info` (native
    /// mode), replacing the last set.
    pub fn set_gateways<'a>(&self, gateways: impl Iterator<Item = (u32, &'a Gateway)>) {
        let Some(info) = &self.gateways else {
            return;
        };
        info.reset();
        for (pid, g) in gateways {
            let id = &g.identity;
            info.with_label_values(&[
                pid.to_string().as_str(),
                &g.comm,
                &id.container_id,
                &id.pod_uid,
                &id.namespace,
                &id.pod,
            ])
            .set(1);
        }
    }

    /// The gateway's listening sockets, each in its network namespace.
    /// One entry per socket: `0.0.0.0:80` and `[::]:80` in one namespace
    /// are two sockets under one key (the last named keeps the key).
    pub fn set_listeners(&mut self, sockets: &[(ListenKey, ListenerName)]) {
        let listeners: HashMap<ListenKey, ListenerName> = sockets.iter().cloned().collect();
        if listeners != self.listeners {
            // Labels may have changed (a listener opened or closed).
            self.downstream_bytes_by.clear();
            self.listeners = listeners;
        }
        self.health.listen_sockets.set(sockets.len() as i64);
    }

    /// How the series of upstream `peer` name it: its address, and the
    /// namespace and pod of the gateway that reaches it (as its listeners
    /// in that namespace show them).
    fn peer_name(&self, peer: Peer) -> ListenerName {
        let pod = (peer.netns != 0)
            .then(|| {
                self.listeners
                    .iter()
                    .find(|(k, _)| k.netns == peer.netns)
                    .map(|(_, name)| name.clone())
            })
            .flatten()
            .unwrap_or_default();
        ListenerName {
            listener: peer.addr.to_string(),
            netns: netns_label(peer.netns),
            ..pod
        }
    }

    /// How the series of listener `key` name it; see [`listener_name`].
    fn listener_name(&self, key: ListenKey) -> ListenerName {
        listener_name(&self.listeners, key)
    }

    /// Exports the wire view's counters (running totals from the kernel);
    /// `interface` names an interface index.
    pub fn sync_wire(
        &mut self,
        totals: &[(WireKey, WireCounts)],
        interface: &dyn Fn(u32) -> String,
    ) {
        struct Names<'a> {
            listeners: &'a HashMap<ListenKey, ListenerName>,
            interface: &'a dyn Fn(u32) -> String,
        }
        impl wire::Labels for Names<'_> {
            fn interface(&self, ifindex: u32) -> String {
                (self.interface)(ifindex)
            }
            fn listener(&self, port: u16) -> ListenerName {
                wire_listener_name(self.listeners, port)
            }
        }
        let names = Names {
            listeners: &self.listeners,
            interface,
        };
        self.wire.sync(totals, &names);
    }

    /// A client connection on `listener` whose handshake the wire view did
    /// not time (while it was on).
    pub fn handshake_untimed(&self, listener: ListenKey) {
        self.wire.untimed(&self.listener_name(listener));
    }

    /// One client's TCP handshake on `listener`.
    pub fn handshake(&self, interface: &str, listener: ListenKey, seconds: f64) {
        self.wire
            .handshake(interface, &self.listener_name(listener), seconds);
    }

    pub fn record(&mut self, fact: &Fact) {
        match *fact {
            Fact::Accepted => self.downstream.add(Stat::Accepted, 1),
            Fact::Handled => self.downstream.add(Stat::Handled, 1),
            Fact::DownstreamBytes { listener, dir, len } => {
                if let Some(counter) = self.downstream_bytes_by.get(&(listener, dir)) {
                    counter.inc_by(len);
                    return;
                }
                let counter = self
                    .downstream_bytes
                    .with_label_values(&self.listener_name(listener).with(&[dir.as_str()]));
                counter.inc_by(len);
                if self.downstream_bytes_by.len() < HANDLE_CACHE_MAX {
                    self.downstream_bytes_by.insert((listener, dir), counter);
                }
            }
            Fact::UpstreamOpened { peer } => {
                self.upstream_opened
                    .with_label_values(&self.peer_name(peer).with(&[]))
                    .inc();
            }
            Fact::UpstreamBytes { peer, dir, len } => {
                if let Some(counter) = self.upstream_bytes_by.get(&(peer, dir)) {
                    counter.inc_by(len);
                    return;
                }
                let counter = self
                    .upstream_bytes
                    .with_label_values(&self.peer_name(peer).with(&[dir.as_str()]));
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
            Fact::DownstreamTls {
                listener,
                result,
                version,
            } => {
                self.downstream_tls
                    .with_label_values(
                        &self
                            .listener_name(listener)
                            .with(&[result.as_str(), version.as_str()]),
                    )
                    .inc();
            }
            Fact::UpstreamTls {
                peer,
                result,
                version,
            } => {
                self.upstream_tls
                    .with_label_values(
                        &self
                            .peer_name(peer)
                            .with(&[result.as_str(), version.as_str()]),
                    )
                    .inc();
            }
            Fact::DownstreamTlsUnparsed { listener, dir, len } => {
                self.downstream_tls_unparsed
                    .with_label_values(&self.listener_name(listener).with(&[dir.as_str()]))
                    .inc_by(len);
            }
            Fact::UpstreamTlsUnparsed { peer, dir, len } => {
                self.upstream_tls_unparsed
                    .with_label_values(&self.peer_name(peer).with(&[dir.as_str()]))
                    .inc_by(len);
            }
            Fact::DownstreamTcp { listener, event } => {
                self.downstream_tcp
                    .with_label_values(&self.listener_name(listener).with(&[event.as_str()]))
                    .inc();
            }
            Fact::UpstreamTcp { peer, event } => {
                self.upstream_tcp
                    .with_label_values(&self.peer_name(peer).with(&[event.as_str()]))
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

    /// stub_status's reading / writing / waiting downstream connections.
    pub fn set_phases(&mut self, reading: u64, writing: u64, waiting: u64) {
        self.downstream.set(Stat::Reading, reading);
        self.downstream.set(Stat::Writing, writing);
        self.downstream.set(Stat::Waiting, waiting);
    }

    pub fn record_anomaly(&mut self, a: &Anomaly) {
        let i = match a {
            Anomaly::NonHttp { .. } => 0,
            Anomaly::Desync => 1,
            Anomaly::Resync { .. } => 2,
            Anomaly::H2(_) => {
                self.anomaly_kinds.with_label_values(&[a.kind()]).inc();
                return;
            }
        };
        self.anomalies[i].inc();
    }

    /// Copies the connection table's gauges.
    pub fn set_gauges(&mut self, gauges: &Gauges) {
        self.downstream.set(Stat::Active, gauges.downstream_active);
        for (peer, open) in &gauges.upstream_open {
            self.upstream_open
                .with_label_values(&self.peer_name(*peer).with(&[]))
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

/// How the series of a listening socket name it: its address, and which
/// network namespace, pod and container it is in. Two gateway pods on one
/// node both listen on port 80; these keep their series apart. Upstream
/// peers' series are named the same way, `listener` then holding the
/// peer's address ([`Metrics::peer_name`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerName {
    /// The socket's address (`0.0.0.0:80`); `*:port` when unknown.
    pub listener: String,
    /// The namespace's inode; empty when the kernel's layout is unknown.
    pub netns: String,
    /// The pod's namespace, name and container, when the gateway process
    /// runs in a Kubernetes pod (pods.rs); else empty.
    pub namespace: String,
    pub pod: String,
    pub container_id: String,
}

impl ListenerName {
    /// A listener known by port alone (closed since, or unknown).
    pub fn port(netns: u32, port: u16) -> Self {
        ListenerName {
            listener: format!("*:{port}"),
            netns: netns_label(netns),
            ..ListenerName::default()
        }
    }

    /// The label values, in [`families::LISTENER_LABELS`] order, then `rest`.
    pub fn with<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            self.listener.as_str(),
            &self.netns,
            &self.namespace,
            &self.pod,
            &self.container_id,
        ];
        v.extend_from_slice(rest);
        v
    }
}

/// A listener at `addr` in namespace 0 (unknown), as unit tests name one.
#[cfg(test)]
pub fn listener_at(addr: std::net::SocketAddr) -> (ListenKey, ListenerName) {
    (
        ListenKey::new(0, addr.port()),
        ListenerName {
            listener: addr.to_string(),
            ..ListenerName::default()
        },
    )
}

/// A namespace inode as labels show it; empty for 0 (unknown).
pub fn netns_label(netns: u32) -> String {
    if netns == 0 {
        String::new()
    } else {
        netns.to_string()
    }
}

/// The name of listener `key`. A key in namespace 0 (unknown: a reset on
/// a socket no longer tracked, or no BTF) takes the one listener on its
/// port if there is one; otherwise, or when the listener closed since the
/// connection opened, `*:port`.
fn listener_name(listeners: &HashMap<ListenKey, ListenerName>, key: ListenKey) -> ListenerName {
    if let Some(name) = listeners.get(&key) {
        return name.clone();
    }
    if key.netns == 0 {
        let mut on_port = listeners.iter().filter(|(k, _)| k.port == key.port);
        if let (Some((_, name)), None) = (on_port.next(), on_port.next()) {
            return name.clone();
        }
    }
    ListenerName::port(key.netns, key.port)
}

/// The wire view counts packets by port on the host's interfaces: it
/// cannot tell which namespace a port is in. The one listener on `port`
/// when there is one; `*:port` with no namespace when several namespaces
/// listen on it.
fn wire_listener_name(listeners: &HashMap<ListenKey, ListenerName>, port: u16) -> ListenerName {
    listener_name(listeners, ListenKey::new(0, port))
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

    /// [`ListenerName::with`] gives values in the order every per-listener
    /// family names its labels.
    #[test]
    fn per_listener_families_start_with_the_listener_labels() {
        let wire = &families::DOWNSTREAM_WIRE;
        for f in [
            &families::DOWNSTREAM_BYTES,
            &families::DOWNSTREAM_TCP_EVENTS,
            &families::DOWNSTREAM_TLS_HANDSHAKES,
            &families::DOWNSTREAM_TLS_UNPARSED,
            &families::HANDSHAKES_UNTIMED,
        ] {
            assert_eq!(f.labels[..5], families::LISTENER_LABELS, "{}", f.name);
        }
        for f in [
            &wire.packets,
            &wire.bytes,
            &wire.resets,
            &families::WIRE_SYNS,
            &families::HANDSHAKE,
        ] {
            assert_eq!(f.labels[0], "interface", "{}", f.name);
            assert_eq!(f.labels[1..6], families::LISTENER_LABELS, "{}", f.name);
        }
        // Peers are named the same way, `peer` first (Metrics::peer_name).
        for f in [
            &families::UPSTREAM_CONNECTIONS,
            &families::UPSTREAM_OPENED,
            &families::UPSTREAM_BYTES,
            &families::UPSTREAM_TLS_HANDSHAKES,
            &families::UPSTREAM_TLS_UNPARSED,
            &families::UPSTREAM_TCP_EVENTS,
        ] {
            assert_eq!(f.labels[0], "peer", "{}", f.name);
            assert_eq!(f.labels[1..5], families::LISTENER_LABELS[1..], "{}", f.name);
        }
    }

    /// Two namespaces on one port never share a name; a key whose
    /// namespace is unknown takes the port's only listener, else `*:port`.
    #[test]
    fn listeners_are_named_per_namespace() {
        let name = |l: &str, ns: &str| ListenerName {
            listener: l.into(),
            netns: ns.into(),
            ..ListenerName::default()
        };
        let mut listeners = HashMap::new();
        listeners.insert(ListenKey::new(11, 80), name("0.0.0.0:80", "11"));
        listeners.insert(ListenKey::new(12, 80), name("0.0.0.0:80", "12"));
        listeners.insert(ListenKey::new(11, 443), name("0.0.0.0:443", "11"));
        let of = |ns, port| listener_name(&listeners, ListenKey::new(ns, port));
        assert_eq!(of(11, 80), name("0.0.0.0:80", "11"));
        assert_eq!(of(12, 80), name("0.0.0.0:80", "12"));
        assert_eq!(of(0, 443), name("0.0.0.0:443", "11"));
        assert_eq!(of(0, 80), name("*:80", ""));
        assert_eq!(of(13, 80), name("*:80", "13"));
        assert_eq!(wire_listener_name(&listeners, 80), name("*:80", ""));
        assert_eq!(
            wire_listener_name(&listeners, 443),
            name("0.0.0.0:443", "11")
        );
    }

    const ID: Identity = Identity {
        node_id: "node-1",
        version: "0.1.0",
        kernel: "6.18.0",
    };

    fn metrics(compat: Compat) -> Metrics {
        let mut m = Metrics::new(compat, &ID, &["bytes"]);
        m.set_listeners(&[listener_at("127.0.0.1:8080".parse().unwrap())]);
        let peer = Peer {
            netns: 0,
            addr: "127.0.0.1:9000".parse().unwrap(),
        };
        for fact in [
            Fact::Accepted,
            Fact::Accepted,
            Fact::Handled,
            Fact::DownstreamBytes {
                listener: ListenKey::new(0, 8080),
                dir: Direction::Ingress,
                len: 100,
            },
            Fact::DownstreamBytes {
                listener: ListenKey::new(0, 8080),
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
            "gatescope_downstream_bytes_total{container_id=\"\",direction=\"ingress\",listener=\"127.0.0.1:8080\",namespace=\"\",netns=\"\",pod=\"\"} 100",
            "gatescope_downstream_bytes_total{container_id=\"\",direction=\"egress\",listener=\"127.0.0.1:8080\",namespace=\"\",netns=\"\",pod=\"\"} 250",
            "gatescope_upstream_connections{container_id=\"\",namespace=\"\",netns=\"\",peer=\"127.0.0.1:9000\",pod=\"\"} 1",
            "gatescope_upstream_connections_opened_total{container_id=\"\",namespace=\"\",netns=\"\",peer=\"127.0.0.1:9000\",pod=\"\"} 1",
            "gatescope_upstream_bytes_total{container_id=\"\",direction=\"egress\",namespace=\"\",netns=\"\",peer=\"127.0.0.1:9000\",pod=\"\"} 120",
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
            "gatescope_downstream_bytes_total{container_id=\"\",direction=\"ingress\",listener=\"127.0.0.1:8080\",namespace=\"\",netns=\"\",pod=\"\"} 100",
            "gatescope_upstream_connections{container_id=\"\",namespace=\"\",netns=\"\",peer=\"127.0.0.1:9000\",pod=\"\"} 1",
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
        let mut m = Metrics::new(Compat::None, &ID, &[]);
        m.record(&Fact::DownstreamBytes {
            listener: ListenKey::new(0, 81),
            dir: Direction::Ingress,
            len: 7,
        });
        let text = render(&m.registry());
        assert!(
            text.contains("listener=\"*:81\",namespace=\"\",netns=\"\",pod=\"\"} 7"),
            "{text}"
        );
    }
}
