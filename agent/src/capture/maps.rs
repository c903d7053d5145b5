//! The maps the agent works with, taken out of the loaded object, and the
//! two it keeps in step with a companion array the programs check first
//! (TARGETS with TARGET_BITS, LISTEN_PORTS with LISTEN_PORT_BITS).

use std::os::fd::OwnedFd;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap};
use gatescope_common::{ListenKey, SockInfo, WireCounts, WireKey, TARGET_BITS_LEN};

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
