//! The agent's own health, in every mode: what it received, what it lost and
//! why, what it tracks, and what it is.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::register;

/// Loss reasons counted by the agent itself (the kernel's come from
/// `gatescope_common::LOST_REASON_NAMES`).
pub const AGENT_LOSS_REASONS: [&str; 2] = ["undecodable", "conntrack_full"];

pub struct Health {
    pub events_received: IntCounterVec,
    pub events_lost: IntCounterVec,
    pub connections_tracked: IntGaugeVec,
    pub target_processes: IntGauge,
    pub listen_sockets: IntGauge,
    pub programs_attached: IntGauge,
    /// Connections dropped because their close record was lost.
    pub lost_closes: IntCounter,
    /// Interfaces the wire view taps.
    pub wire_interfaces: IntGauge,
    /// Capacities of the kernel maps and the ring buffer size, by `map`.
    pub map_capacity: IntGaugeVec,
}

impl Health {
    pub fn new(registry: &Registry, version: &str, kernel: &str, kinds: &[&str]) -> Self {
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gatescope_build_info",
                "gatescope version and the kernel it runs on",
            ),
            &["version", "kernel"],
        )
        .expect("valid metric");
        let events_received = IntCounterVec::new(
            Opts::new(
                "gatescope_events_received_total",
                "Events received from the kernel, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let events_lost = IntCounterVec::new(
            Opts::new(
                "gatescope_events_lost_total",
                "Events lost, by reason (ring buffer full, a kernel map full, undecodable, connection table full)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let connections_tracked = IntGaugeVec::new(
            Opts::new(
                "gatescope_connections_tracked",
                "Connections in the agent's connection table",
            ),
            &["role"],
        )
        .expect("valid metric");
        let target_processes = IntGauge::new(
            "gatescope_target_processes",
            "Gateway processes being observed",
        )
        .expect("valid metric");
        let listen_sockets = IntGauge::new(
            "gatescope_listen_sockets",
            "TCP listening sockets of the observed gateway",
        )
        .expect("valid metric");
        let programs_attached =
            IntGauge::new("gatescope_programs_attached", "eBPF programs attached")
                .expect("valid metric");
        register(registry, &build_info);
        register(registry, &events_received);
        register(registry, &events_lost);
        register(registry, &connections_tracked);
        register(registry, &target_processes);
        register(registry, &listen_sockets);
        let map_capacity = IntGaugeVec::new(
            Opts::new(
                "gatescope_map_capacity",
                "Capacity of each kernel map (entries) and of the ring buffer (bytes)",
            ),
            &["map"],
        )
        .expect("valid metric");
        register(registry, &programs_attached);
        register(registry, &map_capacity);

        build_info.with_label_values(&[version, kernel]).set(1);
        for kind in kinds {
            events_received.with_label_values(&[kind]);
        }
        for reason in gatescope_common::LOST_REASON_NAMES
            .iter()
            .chain(&AGENT_LOSS_REASONS)
        {
            events_lost.with_label_values(&[reason]);
        }
        for role in ["downstream", "upstream"] {
            connections_tracked.with_label_values(&[role]);
        }
        let lost_closes = IntCounter::new(
            "gatescope_lost_closes_total",
            "Connections dropped from the table because their close record was lost with a full ring buffer (the kernel no longer tracked them)",
        )
        .expect("valid metric");
        register(registry, &lost_closes);
        let wire_interfaces = IntGauge::new(
            "gatescope_wire_interfaces",
            "Network interfaces the wire view (AF_PACKET socket filter) taps",
        )
        .expect("valid metric");
        register(registry, &wire_interfaces);
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
            target_processes,
            listen_sockets,
            programs_attached,
            lost_closes,
            wire_interfaces,
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
