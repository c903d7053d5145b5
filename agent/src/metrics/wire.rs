//! The wire view's families: packets, IP bytes, resets and connection
//! attempts per interface and listening socket or upstream peer, and the
//! clients' TCP handshake times. The kernel keeps running totals; each sync
//! exports their growth.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use gatescope_common::{Direction, Role, WireCounts, WireKey, AF_INET6};
use prometheus::{HistogramVec, IntCounterVec, Registry};

use super::{
    families::{self, WireSide},
    ListenerName,
};

/// One family per (side, quantity), labelled by interface, the listener or
/// peer, and direction.
struct Side {
    packets: IntCounterVec,
    bytes: IntCounterVec,
    resets: IntCounterVec,
}

impl Side {
    fn new(registry: &Registry, side: &WireSide) -> Self {
        Side {
            packets: side.packets.counter(registry),
            bytes: side.bytes.counter(registry),
            resets: side.resets.counter(registry),
        }
    }
}

pub struct WireMetrics {
    downstream: Side,
    upstream: Side,
    syns: IntCounterVec,
    handshake: HistogramVec,
    untimed: IntCounterVec,
    /// Totals already exported, per key.
    seen: HashMap<WireKey, WireCounts>,
}

/// Names a key's labels: the interface, and the listener or peer.
pub trait Labels {
    fn interface(&self, ifindex: u32) -> String;
    fn listener(&self, port: u16) -> ListenerName;
}

impl WireMetrics {
    pub fn new(registry: &Registry) -> Self {
        WireMetrics {
            downstream: Side::new(registry, &families::DOWNSTREAM_WIRE),
            upstream: Side::new(registry, &families::UPSTREAM_WIRE),
            syns: families::WIRE_SYNS.counter(registry),
            handshake: families::HANDSHAKE.histogram(registry),
            untimed: families::HANDSHAKES_UNTIMED.counter(registry),
            seen: HashMap::new(),
        }
    }

    /// Exports the growth of the kernel's running totals.
    pub fn sync(&mut self, totals: &[(WireKey, WireCounts)], labels: &dyn Labels) {
        for (key, now) in totals {
            let before = self.seen.insert(*key, *now).unwrap_or_default();
            let grew = |now: u64, before: u64| now.saturating_sub(before);
            let (packets, bytes, resets, syns) = (
                grew(now.packets, before.packets),
                grew(now.bytes, before.bytes),
                grew(now.resets, before.resets),
                grew(now.syns, before.syns),
            );
            if packets == 0 && resets == 0 && syns == 0 {
                continue;
            }
            let interface = labels.interface(key.ifindex);
            let dir = if key.dir == Direction::INGRESS {
                "ingress"
            } else {
                "egress"
            };
            let downstream = key.role == Role::DOWNSTREAM;
            let listener = downstream.then(|| labels.listener(key.port));
            let peer = (!downstream).then(|| peer(key).to_string());
            let (side, mut l) = match (&listener, &peer) {
                (Some(name), _) => (&self.downstream, name.with(&[])),
                (None, peer) => (&self.upstream, vec![peer.as_deref().unwrap_or_default()]),
            };
            l.insert(0, interface.as_str());
            // The gateway's own SYNs to its upstreams are not client attempts.
            if syns > 0 && downstream && key.dir == Direction::INGRESS {
                self.syns.with_label_values(&l).inc_by(syns);
            }
            l.push(dir);
            side.packets.with_label_values(&l).inc_by(packets);
            side.bytes.with_label_values(&l).inc_by(bytes);
            side.resets.with_label_values(&l).inc_by(resets);
        }
    }

    pub fn handshake(&self, interface: &str, listener: &ListenerName, seconds: f64) {
        let mut l = listener.with(&[]);
        l.insert(0, interface);
        self.handshake.with_label_values(&l).observe(seconds);
    }

    pub fn untimed(&self, listener: &ListenerName) {
        self.untimed.with_label_values(&listener.with(&[])).inc();
    }
}

fn peer(key: &WireKey) -> SocketAddr {
    let ip = if key.family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(key.addr))
    } else {
        let a = key.addr;
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    };
    SocketAddr::new(ip, key.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render;
    use gatescope_common::AF_INET;

    struct Names;
    impl Labels for Names {
        fn interface(&self, ifindex: u32) -> String {
            format!("if{ifindex}")
        }
        fn listener(&self, port: u16) -> ListenerName {
            ListenerName {
                listener: format!("0.0.0.0:{port}"),
                ..ListenerName::default()
            }
        }
    }

    fn counts(packets: u64, bytes: u64, resets: u64, syns: u64) -> WireCounts {
        WireCounts {
            packets,
            bytes,
            resets,
            syns,
        }
    }

    #[test]
    fn exports_growth_of_running_totals() {
        let registry = Registry::new();
        let mut m = WireMetrics::new(&registry);
        let down = WireKey {
            ifindex: 1,
            role: Role::DOWNSTREAM,
            dir: Direction::INGRESS,
            port: 8080,
            ..WireKey::default()
        };
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let up = WireKey {
            ifindex: 1,
            role: Role::UPSTREAM,
            dir: Direction::EGRESS,
            port: 9000,
            family: AF_INET,
            addr,
        };
        m.sync(
            &[(down, counts(3, 180, 0, 1)), (up, counts(2, 100, 1, 0))],
            &Names,
        );
        m.sync(
            &[(down, counts(5, 300, 1, 1)), (up, counts(2, 100, 1, 0))],
            &Names,
        );
        let name = Names.listener(8080);
        m.handshake("if1", &name, 0.05);
        m.untimed(&name);
        let text = render(&registry);
        for line in [
            r#"gatescope_downstream_wire_packets_total{container_id="",direction="ingress",interface="if1",listener="0.0.0.0:8080",namespace="",netns="",pod=""} 5"#,
            r#"gatescope_downstream_wire_bytes_total{container_id="",direction="ingress",interface="if1",listener="0.0.0.0:8080",namespace="",netns="",pod=""} 300"#,
            r#"gatescope_downstream_wire_resets_total{container_id="",direction="ingress",interface="if1",listener="0.0.0.0:8080",namespace="",netns="",pod=""} 1"#,
            r#"gatescope_downstream_wire_syn_total{container_id="",interface="if1",listener="0.0.0.0:8080",namespace="",netns="",pod=""} 1"#,
            r#"gatescope_upstream_wire_packets_total{direction="egress",interface="if1",peer="127.0.0.1:9000"} 2"#,
            r#"gatescope_upstream_wire_resets_total{direction="egress",interface="if1",peer="127.0.0.1:9000"} 1"#,
            r#"gatescope_downstream_tcp_handshake_seconds_bucket{container_id="",interface="if1",listener="0.0.0.0:8080",namespace="",netns="",pod="",le="0.05"} 1"#,
            r#"gatescope_downstream_tcp_handshake_seconds_bucket{container_id="",interface="if1",listener="0.0.0.0:8080",namespace="",netns="",pod="",le="0.025"} 0"#,
            r#"gatescope_downstream_tcp_handshake_seconds_count{container_id="",interface="if1",listener="0.0.0.0:8080",namespace="",netns="",pod=""} 1"#,
            r#"gatescope_downstream_tcp_handshakes_untimed_total{container_id="",listener="0.0.0.0:8080",namespace="",netns="",pod=""} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
