//! The agent's own health, in every mode: what it received, what it lost and
//! why, what it tracks, and what it is.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::families;

/// Loss reasons counted by the agent itself (the kernel's come from
/// `gatescope_common::LOST_REASON_NAMES`).
pub const AGENT_LOSS_REASONS: [&str; 3] = ["undecodable", "unjoined_piece", "conntrack_full"];

pub struct Health {
    pub events_received: IntCounterVec,
    pub events_lost: IntCounterVec,
    pub connections_tracked: IntGaugeVec,
    pub target_processes: IntGauge,
    pub listen_sockets: IntGauge,
    pub programs_attached: IntGauge,
    /// Connections dropped because their close record was lost.
    pub lost_closes: IntCounter,
    /// Kernel socket entries released because their open record was lost.
    pub lost_opens: IntCounter,
    /// Interfaces the wire view taps.
    pub wire_interfaces: IntGauge,
    /// Capacities of the kernel maps and the ring buffer size, by `map`.
    pub map_capacity: IntGaugeVec,
}

impl Health {
    pub fn new(registry: &Registry, version: &str, kernel: &str, kinds: &[&str]) -> Self {
        let build_info = families::BUILD_INFO.gauge(registry);
        build_info.with_label_values(&[version, kernel]).set(1);
        let events_received = families::EVENTS_RECEIVED.counter(registry);
        for kind in kinds {
            events_received.with_label_values(&[kind]);
        }
        let events_lost = families::EVENTS_LOST.counter(registry);
        for reason in gatescope_common::LOST_REASON_NAMES
            .iter()
            .chain(&AGENT_LOSS_REASONS)
        {
            events_lost.with_label_values(&[reason]);
        }
        let connections_tracked = families::CONNECTIONS_TRACKED.gauge(registry);
        for role in ["downstream", "upstream"] {
            connections_tracked.with_label_values(&[role]);
        }
        let map_capacity = families::MAP_CAPACITY.gauge(registry);
        for (map, cap) in [
            ("targets", gatescope_common::TARGETS_MAX),
            ("sockets", gatescope_common::SOCKS_MAX),
            ("args", gatescope_common::ARGS_MAX),
            ("listen_ports", gatescope_common::LISTEN_PORTS_MAX),
            ("wire", gatescope_common::WIRE_MAX),
            ("peers", gatescope_common::PEERS_MAX),
            ("handshakes", gatescope_common::HANDSHAKES_MAX),
            ("ring_buffer_bytes", gatescope_common::EVENTS_DEFAULT_BYTES),
        ] {
            map_capacity.with_label_values(&[map]).set(i64::from(cap));
        }
        Health {
            events_received,
            events_lost,
            connections_tracked,
            target_processes: families::TARGET_PROCESSES.single_gauge(registry),
            listen_sockets: families::LISTEN_SOCKETS.single_gauge(registry),
            programs_attached: families::PROGRAMS_ATTACHED.single_gauge(registry),
            lost_closes: families::LOST_CLOSES.single_counter(registry),
            lost_opens: families::LOST_OPENS.single_counter(registry),
            wire_interfaces: families::WIRE_INTERFACES.single_gauge(registry),
            map_capacity,
        }
    }

    /// A capacity set at load time (`--ring-buffer-bytes`, `--max-sockets`).
    pub fn set_capacity(&self, map: &str, cap: u32) {
        self.map_capacity
            .with_label_values(&[map])
            .set(i64::from(cap));
    }
}
