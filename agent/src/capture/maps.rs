//! The maps the agent works with, taken out of the loaded object, and the
//! two it keeps in step with a companion array the programs check first
//! (TARGETS with TARGET_BITS, LISTEN_PORTS with LISTEN_PORT_BITS).

use std::{net::SocketAddr, os::fd::OwnedFd};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap};
use aya::Ebpf;
use gatescope_common::{
    ListenKey, PeerKey, SockInfo, WireCounts, WireKey, AF_INET, AF_INET6, MAP_GENAI_PEERS,
    TARGET_BITS_LEN,
};

use super::map_err;
use crate::error::StartError;

/// The target processes (and threads) in the kernel: TARGETS and the
/// TARGET_BITS slots the programs check first (common's MAP_TARGET_BITS).
pub struct TargetMap {
    pub(super) map: HashMap<MapData, u32, u32>,
    pub(super) bits: Array<MapData, u8>,
}

impl TargetMap {
    /// Adds `id`, its slot first so that no program misses it; false when
    /// TARGETS is full.
    pub fn insert(&mut self, id: u32) -> bool {
        // Without its slot the programs would never look `id` up: a failed
        // slot write is a failed insert.
        self.bits.set(id & (TARGET_BITS_LEN - 1), 1, 0).is_ok() && self.map.insert(id, 1, 0).is_ok()
    }

    /// Removes `id` (its slot stays: others may share it).
    pub fn remove(&mut self, id: u32) {
        let _ = self.map.remove(&id);
    }

    /// Every id in TARGETS.
    pub fn ids(&self) -> Vec<u32> {
        self.map.keys().filter_map(Result::ok).collect()
    }
}

/// The gateway's listening ports in the kernel: LISTEN_PORTS (port -> when
/// the kernel added it, 0 when the agent did) and the LISTEN_PORT_BITS slots
/// mirroring it for the wire view.
pub struct ListenPorts {
    pub(super) map: HashMap<MapData, ListenKey, u64>,
    pub(super) bits: Array<MapData, u8>,
}

impl ListenPorts {
    /// Every listening port held, each in its network namespace.
    pub fn keys(&self) -> Vec<ListenKey> {
        self.map.keys().filter_map(Result::ok).collect()
    }

    /// When the kernel added `key` (0: the agent did); `None` if absent.
    pub fn added(&self, key: ListenKey) -> Option<u64> {
        self.map.get(&key, 0).ok()
    }

    /// Holds `key` (stamp 0: the agent's); false when the map is full.
    pub fn insert(&mut self, key: ListenKey) -> bool {
        let held = self.map.insert(key, 0, 0).is_ok();
        if held {
            // A failed slot write only hides the port from the wire view.
            let _ = self.bits.set(u32::from(key.port), 1, 0);
        }
        held
    }

    /// Gives `key` up. The port's bit (the wire view's, and the passive
    /// open's first check) stays while another namespace listens on it.
    pub fn remove(&mut self, key: ListenKey) {
        let _ = self.map.remove(&key);
        if !self.keys().iter().any(|k| k.port == key.port) {
            let _ = self.bits.set(u32::from(key.port), 0, 0);
        }
    }
}

/// The maps the agent works with, taken out of the loaded object.
pub struct Maps {
    pub targets: TargetMap,
    pub listen_ports: ListenPorts,
    pub lost: PerCpuArray<MapData, u64>,
    /// Client connections the kernel could not track, counted as accepted.
    pub refused: PerCpuArray<MapData, u64>,
    /// The kernel's tracked sockets: read only to recover from lost closes.
    pub socks: HashMap<MapData, u64, SockInfo>,
    /// Bumped after removing `socks` entries (see [`Maps::released`]).
    pub releases: Array<MapData, u32>,
    /// The wire view's counters (socket filter `wire`).
    pub wire: PerCpuHashMap<MapData, WireKey, WireCounts>,
    /// The loaded `wire` socket filter, for the taps to attach; `None` when
    /// this host does not load socket filters.
    pub wire_program: Option<OwnedFd>,
}

impl Maps {
    /// Tells the length programs that `socks` entries were removed: their
    /// per-socket record that a socket is tracked is stale, so each socket
    /// is looked up, and claimed again if it must be, at its next transfer
    /// (ebpf/src/bytes.rs).
    pub fn released(&mut self) {
        let now = self.releases.get(&0, 0).unwrap_or(0);
        // A failure leaves stale records trusted: the sockets' bytes stay
        // untracked until they close, as without the fast path.
        let _ = self.releases.set(0, now.wrapping_add(1), 0);
    }
}

/// Puts the GenAI providers' upstreams in `MAP_GENAI_PEERS`, keyed as the
/// kernel's `inet_sock_set_state` gives a connection's peer (ebpf/src/conn.rs):
/// an IPv4 address in the first 4 bytes, and also as `::ffff:a.b.c.d` for an
/// IPv6 socket connecting to it.
pub(super) fn fill_genai_peers(ebpf: &mut Ebpf, peers: &[SocketAddr]) -> Result<(), StartError> {
    if peers.is_empty() {
        return Ok(());
    }
    let mut map: HashMap<_, PeerKey, u8> = HashMap::try_from(
        ebpf.map_mut(MAP_GENAI_PEERS)
            .ok_or_else(|| StartError::MapMissing(MAP_GENAI_PEERS.into()))?,
    )
    .map_err(|source| map_err(MAP_GENAI_PEERS, source))?;
    for key in peers.iter().flat_map(|p| genai_peer_keys(*p)) {
        map.insert(key, 1, 0)
            .map_err(|source| map_err(MAP_GENAI_PEERS, source))?;
    }
    Ok(())
}

/// The kernel's keys for one peer address (see [`fill_genai_peers`]).
fn genai_peer_keys(peer: SocketAddr) -> Vec<PeerKey> {
    let port = peer.port();
    match peer.ip() {
        std::net::IpAddr::V4(ip) => {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&ip.octets());
            vec![
                PeerKey {
                    family: AF_INET,
                    port,
                    addr,
                },
                PeerKey {
                    family: AF_INET6,
                    port,
                    addr: ip.to_ipv6_mapped().octets(),
                },
            ]
        }
        std::net::IpAddr::V6(ip) => vec![PeerKey {
            family: AF_INET6,
            port,
            addr: ip.octets(),
        }],
    }
}

#[cfg(test)]
mod genai_peer_tests {
    use super::*;

    #[test]
    fn a_v4_peer_is_keyed_as_v4_and_as_mapped_v6() {
        let keys = genai_peer_keys("10.1.2.3:8443".parse().unwrap());
        let mut v4 = [0; 16];
        v4[..4].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            keys,
            vec![
                PeerKey {
                    family: AF_INET,
                    port: 8443,
                    addr: v4
                },
                PeerKey {
                    family: AF_INET6,
                    port: 8443,
                    addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
                },
            ]
        );
        let v6 = genai_peer_keys("[::1]:443".parse().unwrap());
        assert_eq!(v6.len(), 1);
        assert_eq!(
            (v6[0].family, v6[0].port, v6[0].addr[15]),
            (AF_INET6, 443, 1)
        );
    }
}
