//! Every metric family gatescope exports, described once as data.
//!
//! Each has its name, help, label names, type and buckets, per naming schema
//! (native or Kong's) where the schemas differ. Registration reads these descriptions ([`Family::counter`] and friends);
//! no other file spells a family's name. Kong's names, labels, help texts and
//! bucket boundaries are the Kong Prometheus plugin's, so existing Kong
//! dashboards (Grafana 7424) work unchanged. Kong types
//! `kong_nginx_connections_total` and `kong_nginx_requests_total` as gauges
//! and `kong_bandwidth_bytes` as a counter without `_total`; we keep that,
//! lint warnings included. Families without a Kong equivalent keep
//! gatescope's names in both modes.

use prometheus::{
    core::Collector, CounterVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

mod genai;
pub use genai::{
    GenAi, GENAI_ERRORS, GENAI_MODELS_OVERFLOW, GENAI_TPOT, GENAI_TTFT, GENAI_USAGE_UNAVAILABLE,
};

/// A family's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    /// With its bucket upper bounds, in the family's unit.
    Histogram(&'static [f64]),
}

/// One metric family.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// Label names, in the order values are given.
    pub labels: &'static [&'static str],
    pub kind: Kind,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: &C) {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
}

impl Family {
    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }

    /// Registers a labelled counter family.
    pub fn counter(&self, registry: &Registry) -> IntCounterVec {
        debug_assert_eq!(self.kind, Kind::Counter, "{}", self.name);
        let c = IntCounterVec::new(self.opts(), self.labels).expect("valid metric");
        register(registry, &c);
        c
    }

    /// Registers a labelled counter family of fractional values (costs).
    pub fn float_counter(&self, registry: &Registry) -> CounterVec {
        debug_assert_eq!(self.kind, Kind::Counter, "{}", self.name);
        let c = CounterVec::new(self.opts(), self.labels).expect("valid metric");
        register(registry, &c);
        c
    }

    /// Registers a labelled gauge family.
    pub fn gauge(&self, registry: &Registry) -> IntGaugeVec {
        debug_assert_eq!(self.kind, Kind::Gauge, "{}", self.name);
        let g = IntGaugeVec::new(self.opts(), self.labels).expect("valid metric");
        register(registry, &g);
        g
    }

    /// Registers a histogram family.
    pub fn histogram(&self, registry: &Registry) -> HistogramVec {
        let Kind::Histogram(buckets) = self.kind else {
            panic!("{} is not a histogram", self.name);
        };
        let h = HistogramVec::new(
            HistogramOpts::new(self.name, self.help).buckets(buckets.to_vec()),
            self.labels,
        )
        .expect("valid metric");
        register(registry, &h);
        h
    }

    /// Registers an unlabelled counter.
    pub fn single_counter(&self, registry: &Registry) -> IntCounter {
        debug_assert!(self.kind == Kind::Counter && self.labels.is_empty());
        let c = IntCounter::with_opts(self.opts()).expect("valid metric");
        register(registry, &c);
        c
    }

    /// Registers an unlabelled gauge.
    pub fn single_gauge(&self, registry: &Registry) -> IntGauge {
        debug_assert!(self.kind == Kind::Gauge && self.labels.is_empty());
        let g = IntGauge::with_opts(self.opts()).expect("valid metric");
        register(registry, &g);
        g
    }
}

const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Family {
    Family {
        name,
        help,
        labels,
        kind: Kind::Counter,
    }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
    Family {
        name,
        help,
        labels,
        kind: Kind::Gauge,
    }
}

const fn histogram(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
) -> Family {
    Family {
        name,
        help,
        labels,
        kind: Kind::Histogram(buckets),
    }
}

// --- Downstream connections as stub_status counts them --------------------

/// What stub_status counts. Each schema says which series each one moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Accepted,
    Handled,
    /// Client requests read, whatever became of them.
    Requests,
    Active,
    Reading,
    Writing,
    Waiting,
    /// Always 1: a series that carries metadata in its labels.
    Info,
}

/// How many [`Stat`]s there are (array sizes).
pub const STATS: usize = Stat::Info as usize + 1;

/// Stands for the node's id among a series' label values.
pub const NODE_ID: &str = "\0node_id";
/// Stands for gatescope's version among a series' label values.
pub const VERSION: &str = "\0version";

/// One series of a downstream family and the stat it shows.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    pub stat: Stat,
    pub family: &'static Family,
    /// Label values ([`NODE_ID`] and [`VERSION`] are filled in).
    pub values: &'static [&'static str],
}

const fn series(stat: Stat, family: &'static Family, values: &'static [&'static str]) -> Series {
    Series {
        stat,
        family,
        values,
    }
}

/// One naming schema: the downstream series, the HTTP families and the
/// GenAI families.
#[derive(Debug)]
pub struct Schema {
    /// Created at start (so they read 0 before any traffic), in this order.
    pub downstream: &'static [Series],
    pub http: Http,
    pub genai: GenAi,
}

/// Where a schema's upstream latency comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamTime {
    /// Each upstream exchange, labelled by its own service and route.
    UpstreamExchange,
    /// The upstream leg of each downstream exchange, labelled by the
    /// downstream exchange's service and route.
    DownstreamLeg,
}

/// The HTTP families of one schema. Those with an equivalent in both schemas
/// (upstream requests, route overflow) are the same in both.
#[derive(Debug)]
pub struct Http {
    /// `[service, route, code, source, tail…]`
    pub requests: Family,
    /// `[service, route]`, from a request's first byte to its response's last.
    pub request_latency: Family,
    /// `[service, route]`
    pub upstream_latency: Family,
    pub upstream_time: UpstreamTime,
    /// `[service, route]`, latency the gateway added; native has none.
    pub gateway_latency: Option<Family>,
    /// `[service, route, direction, tail…]`
    pub bytes: Family,
    /// Label values that end every requests and bytes series (Kong's
    /// `consumer`: a Kong concept we cannot see, always empty).
    pub tail: &'static [&'static str],
    /// Nanoseconds in the latency families' unit.
    pub ns_per_unit: f64,
}

const NATIVE_ACCEPTED: Family = counter(
    "gatescope_downstream_connections_accepted_total",
    "Connections accepted by the gateway (accept() calls that returned one), as stub_status counts them",
    &[],
);
const NATIVE_HANDLED: Family = counter(
    "gatescope_downstream_connections_handled_total",
    "Downstream connections the gateway read from at least once",
    &[],
);
const NATIVE_REQUESTS_ALL: Family = counter(
    "gatescope_http_requests_all_total",
    "Client requests the gateway read, whatever became of them (stub_status's requests)",
    &[],
);
const NATIVE_CONNECTIONS: Family = gauge(
    "gatescope_downstream_connections",
    "Downstream connections by stub_status state: active = established and not yet closed by the gateway; reading = reading a request head; writing = request read, response not finished; waiting = keep-alive, no request in progress",
    &["state"],
);

/// Native latency buckets (seconds).
const NATIVE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
];

/// gatescope's own names, following Prometheus conventions (base units,
/// `_total` counters).
pub const NATIVE: Schema = Schema {
    downstream: &[
        series(Stat::Accepted, &NATIVE_ACCEPTED, &[]),
        series(Stat::Handled, &NATIVE_HANDLED, &[]),
        series(Stat::Requests, &NATIVE_REQUESTS_ALL, &[]),
        series(Stat::Active, &NATIVE_CONNECTIONS, &["active"]),
        series(Stat::Reading, &NATIVE_CONNECTIONS, &["reading"]),
        series(Stat::Writing, &NATIVE_CONNECTIONS, &["writing"]),
        series(Stat::Waiting, &NATIVE_CONNECTIONS, &["waiting"]),
    ],
    http: Http {
        requests: counter(
            "gatescope_http_requests_total",
            "HTTP requests answered by the gateway, by service, route, status code (499: the client gave up first) and source (service: an upstream answered; kong: the gateway answered itself)",
            &["service", "route", "code", "source"],
        ),
        request_latency: histogram(
            "gatescope_http_request_duration_seconds",
            "Time from a request's first byte to its response's last byte, as the gateway read and wrote them, per service and route",
            &["service", "route"],
            NATIVE_BUCKETS,
        ),
        upstream_latency: histogram(
            "gatescope_http_upstream_duration_seconds",
            "Time from the gateway's first request byte to an upstream until the upstream's last response byte, per service and route",
            &["service", "route"],
            NATIVE_BUCKETS,
        ),
        upstream_time: UpstreamTime::UpstreamExchange,
        gateway_latency: None,
        bytes: counter(
            "gatescope_http_bytes_total",
            "HTTP bytes (head and body) of requests from clients (ingress) and of the gateway's responses (egress), per service and route",
            &["service", "route", "direction"],
        ),
        tail: &[],
        ns_per_unit: 1e9,
    },
    genai: genai::NATIVE,
};

const KONG_CONNECTIONS: Family = gauge(
    "kong_nginx_connections_total",
    "Number of connections by subsystem",
    &["node_id", "subsystem", "state"],
);
const KONG_REQUESTS: Family = gauge(
    "kong_nginx_requests_total",
    "Total number of requests",
    &["node_id", "subsystem"],
);
const KONG_NODE_INFO: Family = gauge(
    "kong_node_info",
    "Kong Gateway Node metadata information",
    &["node_id", "version"],
);

/// Kong's `request_latency_ms` and `upstream_latency_ms` buckets (ms).
const KONG_UPSTREAM_BUCKETS: &[f64] = &[
    25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];
/// Kong's `kong_latency_ms` buckets (ms).
const KONG_LATENCY_BUCKETS: &[f64] = &[
    5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
];

/// The Kong Prometheus plugin's names (`--metrics-compat kong`). Its
/// `subsystem` label is `http`: the HTTP subsystem is what we observe.
pub const KONG: Schema = Schema {
    downstream: &[
        series(Stat::Accepted, &KONG_CONNECTIONS, &[NODE_ID, "http", "accepted"]),
        series(Stat::Handled, &KONG_CONNECTIONS, &[NODE_ID, "http", "handled"]),
        // `state="total"`: requests, as stub_status counts them.
        series(Stat::Requests, &KONG_CONNECTIONS, &[NODE_ID, "http", "total"]),
        series(Stat::Active, &KONG_CONNECTIONS, &[NODE_ID, "http", "active"]),
        series(Stat::Reading, &KONG_CONNECTIONS, &[NODE_ID, "http", "reading"]),
        series(Stat::Writing, &KONG_CONNECTIONS, &[NODE_ID, "http", "writing"]),
        series(Stat::Waiting, &KONG_CONNECTIONS, &[NODE_ID, "http", "waiting"]),
        series(Stat::Requests, &KONG_REQUESTS, &[NODE_ID, "http"]),
        series(Stat::Info, &KONG_NODE_INFO, &[NODE_ID, VERSION]),
    ],
    http: Http {
        requests: counter(
            "kong_http_requests_total",
            "HTTP status codes per Consumer/Service/Route in Kong Gateway",
            &["service", "route", "code", "source", "consumer"],
        ),
        request_latency: histogram(
            "kong_request_latency_ms",
            "Total latency incurred during requests for each Service/Route in Kong Gateway",
            &["service", "route"],
            KONG_UPSTREAM_BUCKETS,
        ),
        upstream_latency: histogram(
            "kong_upstream_latency_ms",
            "Latency added by upstream response for each Service/Route in Kong Gateway",
            &["service", "route"],
            KONG_UPSTREAM_BUCKETS,
        ),
        upstream_time: UpstreamTime::DownstreamLeg,
        gateway_latency: Some(histogram(
            "kong_kong_latency_ms",
            "Latency added by Kong Gateway and enabled plugins for each Service/Route in Kong Gateway",
            &["service", "route"],
            KONG_LATENCY_BUCKETS,
        )),
        bytes: counter(
            "kong_bandwidth_bytes",
            "Total bandwidth (ingress/egress) throughput in bytes",
            &["service", "route", "direction", "consumer"],
        ),
        tail: &[""],
        ns_per_unit: 1e6,
    },
    genai: genai::KONG,
};

// --- HTTP families the same in both schemas -------------------------------

pub const HTTP_UPSTREAM_REQUESTS: Family = counter(
    "gatescope_http_upstream_requests_total",
    "Requests the gateway made to each upstream peer, by response status code (0: the connection closed without a response)",
    &["peer", "code"],
);
pub const HTTP_ANOMALIES: Family = counter(
    "gatescope_http_anomalies_total",
    "What the HTTP parser could not attribute to a request: non_http (bytes that are not HTTP/1.x), desync (framing lost in uncaptured bytes), resync (a connection joined mid-stream); HTTP/2: h2_bad_preface, h2_desync (a frame header in uncaptured bytes), h2_resync, h2_headers_lost, h2_hpack_error, h2_unknown_stream, h2_unknown_fields (a method or path not known: HPACK state lost), h2_too_many_streams",
    &["kind"],
);
// gRPC calls (HTTP/2 with content-type application/grpc*), both schemas:
// Kong's plugin has no gRPC family.
pub const GRPC_REQUESTS: Family = counter(
    "gatescope_grpc_requests_total",
    "gRPC calls from clients, by service, route and grpc-status (the numeric code from the trailers or a Trailers-Only response; unknown when none was seen: the call did not finish or its trailers could not be decoded)",
    &["service", "route", "grpc_status"],
);
pub const GRPC_UPSTREAM_REQUESTS: Family = counter(
    "gatescope_grpc_upstream_requests_total",
    "gRPC calls the gateway made to each upstream peer, by grpc-status (unknown when none was seen)",
    &["peer", "grpc_status"],
);
pub const ROUTE_OVERFLOW: Family = counter(
    "gatescope_route_overflow_total",
    "Exchanges labelled route=\"other\" because their service already had --max-routes-per-service path templates",
    &["service"],
);

// --- Connections and bytes (both schemas) ---------------------------------

/// The labels of every per-listener family (see
/// [`crate::metrics::ListenerName`]), before the family's own.
#[cfg(test)]
pub const LISTENER_LABELS: [&str; 5] = ["listener", "netns", "namespace", "pod", "container_id"];

pub const DOWNSTREAM_BYTES: Family = counter(
    "gatescope_downstream_bytes_total",
    "TCP payload bytes the gateway received (ingress) or sent (egress) on client connections, per listening socket",
    &["listener", "netns", "namespace", "pod", "container_id", "direction"],
);
pub const UPSTREAM_CONNECTIONS: Family = gauge(
    "gatescope_upstream_connections",
    "Open connections from the gateway to each upstream peer (connecting, established, or half-closed by the peer)",
    &["peer", "netns", "namespace", "pod", "container_id"],
);
pub const UPSTREAM_OPENED: Family = counter(
    "gatescope_upstream_connections_opened_total",
    "Connections the gateway started to each upstream peer",
    &["peer", "netns", "namespace", "pod", "container_id"],
);
pub const UPSTREAM_BYTES: Family = counter(
    "gatescope_upstream_bytes_total",
    "TCP payload bytes the gateway received from (ingress) or sent to (egress) each upstream peer",
    &[
        "peer",
        "netns",
        "namespace",
        "pod",
        "container_id",
        "direction",
    ],
);
pub const UNTRACKED_BYTES: Family = counter(
    "gatescope_untracked_bytes_total",
    "Bytes the gateway moved on TCP sockets whose connection gatescope did not see open (e.g. open before it started)",
    &["direction"],
);
pub const DOWNSTREAM_TCP_EVENTS: Family = counter(
    "gatescope_downstream_tcp_events_total",
    "Retransmissions and resets on client connections, per listening socket (tcp:* tracepoints)",
    &[
        "listener",
        "netns",
        "namespace",
        "pod",
        "container_id",
        "event",
    ],
);
pub const DOWNSTREAM_TLS_HANDSHAKES: Family = counter(
    "gatescope_downstream_tls_handshakes_total",
    "TLS handshakes on client connections, per listening socket, as their bytes show: ok (plaintext flowed), failed (a TLS alert in the clear first, e.g. no shared protocol or cipher), closed (the connection closed first: an encrypted TLS 1.3 alert such as a rejected certificate, or a client that never sent a request); version: the server's choice in its ServerHello (TLSv1 to TLSv1.3, unknown when none was seen)",
    &["listener", "netns", "namespace", "pod", "container_id", "result", "version"],
);
pub const UPSTREAM_TLS_HANDSHAKES: Family = counter(
    "gatescope_upstream_tls_handshakes_total",
    "TLS handshakes on connections to each upstream peer, as their bytes show (see gatescope_downstream_tls_handshakes_total)",
    &["peer", "netns", "namespace", "pod", "container_id", "result", "version"],
);
pub const DOWNSTREAM_TLS_UNPARSED: Family = counter(
    "gatescope_downstream_tls_unparsed_bytes_total",
    "TLS bytes on client connections that are counted but not parsed, per listening socket and direction: the gateway process has no OpenSSL with probes (none mapped, OpenSSL the probes cannot attach to, or --tls=false); also in gatescope_downstream_bytes_total",
    &["listener", "netns", "namespace", "pod", "container_id", "direction"],
);
pub const UPSTREAM_TLS_UNPARSED: Family = counter(
    "gatescope_upstream_tls_unparsed_bytes_total",
    "TLS bytes on connections to each upstream peer that are counted but not parsed (see gatescope_downstream_tls_unparsed_bytes_total)",
    &["peer", "netns", "namespace", "pod", "container_id", "direction"],
);
pub const UPSTREAM_TCP_EVENTS: Family = counter(
    "gatescope_upstream_tcp_events_total",
    "Retransmissions and resets on connections to each upstream peer (tcp:* tracepoints)",
    &["peer", "netns", "namespace", "pod", "container_id", "event"],
);

// --- The wire view --------------------------------------------------------

/// Handshake times from a loopback client (tens of microseconds) to a
/// client across the world with SYN retransmissions (seconds).
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The wire families of one side: downstream (per listener) or upstream (per
/// peer), each `[interface, listener|peer, direction]`.
#[derive(Debug)]
pub struct WireSide {
    pub packets: Family,
    pub bytes: Family,
    pub resets: Family,
}

pub const DOWNSTREAM_WIRE: WireSide = WireSide {
    packets: counter(
        "gatescope_downstream_wire_packets_total",
        "TCP segments on the wire of the gateway's client connections, per interface (socket filter on AF_PACKET; ingress = towards the gateway)",
        &["interface", "listener", "netns", "namespace", "pod", "container_id", "direction"],
    ),
    bytes: counter(
        "gatescope_downstream_wire_bytes_total",
        "IP bytes (headers included) on the wire of the gateway's client connections, per interface",
        &["interface", "listener", "netns", "namespace", "pod", "container_id", "direction"],
    ),
    resets: counter(
        "gatescope_downstream_wire_resets_total",
        "TCP segments with RST set on the wire of the gateway's client connections, per interface (egress = sent by the gateway)",
        &["interface", "listener", "netns", "namespace", "pod", "container_id", "direction"],
    ),
};
pub const UPSTREAM_WIRE: WireSide = WireSide {
    packets: counter(
        "gatescope_upstream_wire_packets_total",
        "TCP segments on the wire between the gateway and each upstream peer, per interface (socket filter on AF_PACKET; ingress = towards the gateway)",
        &["interface", "peer", "direction"],
    ),
    bytes: counter(
        "gatescope_upstream_wire_bytes_total",
        "IP bytes (headers included) on the wire between the gateway and each upstream peer, per interface",
        &["interface", "peer", "direction"],
    ),
    resets: counter(
        "gatescope_upstream_wire_resets_total",
        "TCP segments with RST set on the wire between the gateway and each upstream peer, per interface (egress = sent by the gateway)",
        &["interface", "peer", "direction"],
    ),
};
pub const WIRE_SYNS: Family = counter(
    "gatescope_downstream_wire_syn_total",
    "Connection attempts (SYN without ACK) from clients on the wire, per interface and listening socket",
    &["interface", "listener", "netns", "namespace", "pod", "container_id"],
);
pub const HANDSHAKE: Family = histogram(
    "gatescope_downstream_tcp_handshake_seconds",
    "Client TCP handshakes from the first SYN to the final ACK as the gateway's interface saw them (the connect latency a client sees), per listening socket",
    &["interface", "listener", "netns", "namespace", "pod", "container_id"],
    HANDSHAKE_BUCKETS,
);
pub const HANDSHAKES_UNTIMED: Family = counter(
    "gatescope_downstream_tcp_handshakes_untimed_total",
    "Client connections whose handshake the wire view did not time: its first SYN crossed no tapped interface, or was pushed out of the HANDSHAKES map (LRU) by a flood of handshakes that never completed",
    &["listener", "netns", "namespace", "pod", "container_id"],
);

// --- The agent's own health -----------------------------------------------

pub const BUILD_INFO: Family = gauge(
    "gatescope_build_info",
    "gatescope version and the kernel it runs on",
    &["version", "kernel"],
);
pub const EVENTS_RECEIVED: Family = counter(
    "gatescope_events_received_total",
    "Events received from the kernel, by kind",
    &["kind"],
);
pub const EVENTS_LOST: Family = counter(
    "gatescope_events_lost_total",
    "Events lost, by reason (ring buffer full, a kernel map full, undecodable, connection table full)",
    &["reason"],
);
pub const CONNECTIONS_TRACKED: Family = gauge(
    "gatescope_connections_tracked",
    "Connections in the agent's connection table",
    &["role"],
);
pub const GATEWAY_INFO: Family = gauge(
    "gatescope_gateway_info",
    "Each observed gateway process (native mode): its pid and command name, and, when it runs in a container, the container id, and in a Kubernetes pod the pod's UID, namespace and name (from its cgroup, its service account and its hostname); empty where unknown",
    &["pid", "comm", "container_id", "pod_uid", "namespace", "pod"],
);
pub const TARGET_PROCESSES: Family = gauge(
    "gatescope_target_processes",
    "Gateway processes being observed",
    &[],
);
pub const LISTEN_SOCKETS: Family = gauge(
    "gatescope_listen_sockets",
    "TCP listening sockets of the observed gateway",
    &[],
);
pub const PROGRAMS_ATTACHED: Family =
    gauge("gatescope_programs_attached", "eBPF programs attached", &[]);
pub const MAP_CAPACITY: Family = gauge(
    "gatescope_map_capacity",
    "Capacity of each kernel map (entries) and of the ring buffer (bytes)",
    &["map"],
);
pub const LOST_CLOSES: Family = counter(
    "gatescope_lost_closes_total",
    "Connections dropped from the table because their close record was lost with a full ring buffer (the kernel no longer tracked them)",
    &[],
);
pub const LOST_OPENS: Family = counter(
    "gatescope_lost_opens_total",
    "Kernel socket-map entries released so the kernel finds their connection again, because its open record was lost with a full ring buffer",
    &[],
);
pub const TRACE_LINKS: Family = counter(
    "gatescope_trace_links_total",
    "Upstream calls by how they were tied to the client request they were made for: evidence (the same traceparent or X-Request-ID on both legs), inferred (the worker thread's order of I/O), ambiguous or none (left unlinked)",
    &["result"],
);
pub const WIRE_INTERFACES: Family = gauge(
    "gatescope_wire_interfaces",
    "Network interfaces the wire view (AF_PACKET socket filter) taps",
    &[],
);

// --- Spans over OTLP (agent/src/spans/) ------------------------------------

pub const SPANS_EXPORTED: Family = counter(
    "gatescope_spans_exported_total",
    "Spans the OTLP collector accepted",
    &[],
);
pub const SPANS_DROPPED: Family = counter(
    "gatescope_spans_dropped_total",
    "Spans built but not exported, by reason: queue_full (the export queue was full), export_failed (the collector did not accept the batch), trace_cap (the incoming trace was over its cap), shutdown (still queued at the exit deadline)",
    &["reason"],
);
pub const SPAN_EXPORT_ERRORS: Family = counter(
    "gatescope_span_export_errors_total",
    "Failed OTLP export calls, by kind: http_status (the collector answered with an error status), network (no connection, reset, or timeout), other",
    &["kind"],
);
