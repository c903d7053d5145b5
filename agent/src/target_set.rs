//! Keeps the kernel's TARGETS and LISTEN_PORTS maps in line with /proc. The
//! kernel follows forks and exits by itself; this seeds the maps at start and
//! repairs them once a second (an exit missed while the agent started, a
//! listening socket added by a reload).

use std::{collections::BTreeSet, net::SocketAddr};

use aya::maps::{HashMap, MapData};

use crate::targets::Proc;

pub struct TargetSet {
    proc: Proc,
    roots: Vec<u32>,
}

/// What a reconciliation found.
#[derive(Debug, Default)]
pub struct Summary {
    pub processes: usize,
    pub listeners: Vec<SocketAddr>,
    /// Targets that could not be added because the map is full.
    pub map_full: u64,
}

impl TargetSet {
    pub fn new(proc: Proc, roots: Vec<u32>) -> Self {
        TargetSet { proc, roots }
    }

    /// Adds the roots and all their descendants. Run after the fork program
    /// is attached and repeated until stable, so that a worker forked during
    /// the scan is either seen here or by the kernel.
    pub fn seed(&self, targets: &mut HashMap<MapData, u32, u32>) -> u64 {
        let mut full = 0;
        let mut seen = BTreeSet::new();
        loop {
            let tree = self.proc.with_descendants(&self.roots);
            let new: Vec<u32> = tree.difference(&seen).copied().collect();
            if new.is_empty() {
                return full;
            }
            for pid in new {
                if targets.insert(pid, 1, 0).is_err() {
                    full += 1;
                }
                seen.insert(pid);
            }
        }
    }

    pub fn reconcile(
        &self,
        targets: &mut HashMap<MapData, u32, u32>,
        listen_ports: &mut HashMap<MapData, u16, u32>,
    ) -> Summary {
        let ids: Vec<u32> = targets.keys().filter_map(Result::ok).collect();
        let mut live = BTreeSet::new();
        for id in ids {
            if !self.proc.task_exists(id) {
                // Its exit happened while we were not attached yet.
                let _ = targets.remove(&id);
            } else if self.proc.is_process(id) {
                live.insert(id);
            }
        }
        // Listening sockets belong to the top of each target tree (nginx's
        // master, Envoy's single process); workers share the same sockets,
        // and scanning only the tops keeps the /proc work small when workers
        // hold many thousands of client connections.
        let parents = self.proc.parents();
        let mut listeners: Vec<SocketAddr> = live
            .iter()
            .filter(|pid| parents.get(pid).is_none_or(|ppid| !live.contains(ppid)))
            .flat_map(|&pid| self.proc.listening_sockets(pid))
            .collect();
        listeners.sort();
        listeners.dedup();

        let wanted: BTreeSet<u16> = listeners.iter().map(SocketAddr::port).collect();
        let present: Vec<u16> = listen_ports.keys().filter_map(Result::ok).collect();
        for port in &present {
            if !wanted.contains(port) {
                let _ = listen_ports.remove(port);
            }
        }
        let mut map_full = 0;
        for port in wanted {
            if !present.contains(&port) && listen_ports.insert(port, 1, 0).is_err() {
                map_full += 1;
            }
        }
        Summary {
            processes: live.len(),
            listeners,
            map_full,
        }
    }
}
