//! Metric names of the contract (/tmp/spec.md, "Metrics").

pub const ACCEPTED: &str = "gatescope_downstream_connections_accepted_total";
pub const HANDLED: &str = "gatescope_downstream_connections_handled_total";
pub const DOWN_CONNS: &str = "gatescope_downstream_connections";
pub const DOWN_BYTES: &str = "gatescope_downstream_bytes_total";
pub const UP_CONNS: &str = "gatescope_upstream_connections";
pub const UP_OPENED: &str = "gatescope_upstream_connections_opened_total";
pub const UP_BYTES: &str = "gatescope_upstream_bytes_total";
pub const UNTRACKED_BYTES: &str = "gatescope_untracked_bytes_total";
pub const LOST_OPENS: &str = "gatescope_lost_opens_total";
pub const BUILD_INFO: &str = "gatescope_build_info";
pub const EVENTS_RECEIVED: &str = "gatescope_events_received_total";
pub const EVENTS_LOST: &str = "gatescope_events_lost_total";
pub const CONNS_TRACKED: &str = "gatescope_connections_tracked";
pub const TARGET_PROCESSES: &str = "gatescope_target_processes";
pub const LISTEN_SOCKETS: &str = "gatescope_listen_sockets";
pub const PROGRAMS_ATTACHED: &str = "gatescope_programs_attached";
pub const MAP_CAPACITY: &str = "gatescope_map_capacity";
pub const DOWN_WIRE_PACKETS: &str = "gatescope_downstream_wire_packets_total";
pub const DOWN_WIRE_BYTES: &str = "gatescope_downstream_wire_bytes_total";
pub const DOWN_WIRE_RESETS: &str = "gatescope_downstream_wire_resets_total";
pub const DOWN_WIRE_SYNS: &str = "gatescope_downstream_wire_syn_total";
pub const UP_WIRE_PACKETS: &str = "gatescope_upstream_wire_packets_total";
pub const UP_WIRE_BYTES: &str = "gatescope_upstream_wire_bytes_total";
pub const UP_WIRE_RESETS: &str = "gatescope_upstream_wire_resets_total";
pub const HANDSHAKE_SECONDS: &str = "gatescope_downstream_tcp_handshake_seconds";
pub const DOWN_TCP_EVENTS: &str = "gatescope_downstream_tcp_events_total";
pub const UP_TCP_EVENTS: &str = "gatescope_upstream_tcp_events_total";
pub const HANDSHAKES_UNTIMED: &str = "gatescope_downstream_tcp_handshakes_untimed_total";
pub const WIRE_INTERFACES: &str = "gatescope_wire_interfaces";
pub const REQUESTS_ALL: &str = "gatescope_http_requests_all_total";

pub const KONG_CONNS: &str = "kong_nginx_connections_total";
pub const KONG_BANDWIDTH: &str = "kong_bandwidth_bytes";
pub const KONG_NODE_INFO: &str = "kong_node_info";

/// The losses of the OpenSSL probes (issue 11): each must stay 0 where
/// every `SSL*` is tied to its socket.
pub const TLS_LOSSES: [&str; 4] = [
    "tls_unbound",
    "tls_mismatch",
    "tls_calls_map_full",
    "tls_unreadable",
];
/// The kernel's `reason` values of `gatescope_events_lost_total`; all are
/// always present.
pub const LOST_REASONS: [&str; 6] = [
    "ringbuf_full",
    "targets_map_full",
    "sockets_map_full",
    "args_map_full",
    "wire_map_full",
    "peers_map_full",
];
