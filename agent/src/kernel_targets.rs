//! The kernel's target maps (TARGETS, LISTEN_PORTS), kept in line with
//! /proc (`procfs.rs`). The kernel follows forks, exits and execs of
//! `--discover` programs, and adds ports a target starts listening on; this
//! seeds the maps at start and repairs them once a second (an exit missed
//! while the agent started, a listening socket added by a reload or closed).

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::SocketAddr,
};

use gatescope_common::ListenKey;

use crate::{
    capture::{ListenPorts, TargetMap},
    procfs::Proc,
};

/// A listening socket of a target, in its network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listening {
    /// The kernel's key: namespace (0 when the programs cannot read it)
    /// and port.
    pub key: ListenKey,
    pub addr: SocketAddr,
    /// A target process holding it (the first found).
    pub pid: u32,
}

pub struct TargetSet {
    proc: Proc,
    /// `--pid`: these processes and their descendants.
    roots: Vec<u32>,
    /// `--discover`: processes running these programs (by comm) and their
    /// descendants; the kernel adds the ones started later at exec.
    names: Vec<String>,
    /// The listening sockets each target below the top of its tree held when
    /// last scanned ([`RESCAN_ROUNDS`]), and the reconcile round.
    below_top: StdHashMap<u32, Vec<Listening>>,
    round: u64,
    /// Whether the programs key listeners by network namespace
    /// ([`gatescope_common::SockOffsets::knows_netns`]); if not, every key
    /// is in namespace 0, as theirs are.
    by_netns: bool,
}

/// A process below the top of its tree is scanned for listening sockets when
/// first seen, then every this many rounds (staggered by pid), so a listener
/// it closed stops counting within that many seconds. Tops are scanned every
/// round. See [`TargetSet::reconcile`].
const RESCAN_ROUNDS: u64 = 10;

/// What a reconciliation found.
#[derive(Debug, Default)]
pub struct Summary {
    pub processes: usize,
    /// The target processes (not threads) alive now.
    pub live: Vec<u32>,
    pub listeners: Vec<Listening>,
    /// Targets that could not be added because the map is full.
    pub map_full: u64,
    /// Connections waiting in the accept queues of the targets' network
    /// namespaces, by listening port (see [`crate::procfs::accept_queues`]):
    /// established but not yet accepted by the gateway.
    pub accept_queues: StdHashMap<u16, u32>,
}

impl TargetSet {
    /// `by_netns`: see [`TargetSet::by_netns`].
    pub fn new(proc: Proc, roots: Vec<u32>, names: Vec<String>, by_netns: bool) -> Self {
        TargetSet {
            proc,
            roots,
            names,
            below_top: StdHashMap::new(),
            round: 0,
            by_netns,
        }
    }

    /// The listening sockets `pid` holds, keyed as the kernel keys them.
    fn listening(&self, pid: u32) -> Vec<Listening> {
        let netns = if self.by_netns {
            self.proc.net_inode(pid)
        } else {
            Some(0)
        };
        // A process gone between the reads holds nothing.
        let Some(netns) = netns else {
            return Vec::new();
        };
        self.proc
            .listening_sockets(pid)
            .into_iter()
            .map(|addr| Listening {
                key: ListenKey::new(netns, addr.port()),
                addr,
                pid,
            })
            .collect()
    }

    /// Adds the roots, the processes running a `--discover` program, and all
    /// their descendants. Run after the fork and exec programs are attached
    /// and repeated until stable, so that a worker forked or a gateway
    /// started during the scan is either seen here or by the kernel.
    pub fn seed(&self, targets: &mut TargetMap) -> u64 {
        let mut full = 0;
        let mut seen = BTreeSet::new();
        loop {
            let mut roots = self.roots.clone();
            roots.extend(self.proc.with_comm(&self.names));
            let tree = self.proc.with_descendants(&roots);
            let new: Vec<u32> = tree.difference(&seen).copied().collect();
            if new.is_empty() {
                return full;
            }
            for pid in new {
                if !targets.insert(pid) {
                    full += 1;
                }
                seen.insert(pid);
            }
        }
    }

    pub fn reconcile(
        &mut self,
        targets: &mut TargetMap,
        listen_ports: &mut ListenPorts,
    ) -> Summary {
        // Ports the kernel adds from now on (a target's listen(), stamped
        // with bpf_ktime_get_ns) may be missing from the /proc read below;
        // they must survive this round.
        let scan_start = monotonic_ns();
        self.round += 1;
        let ids = targets.ids();
        let mut live = BTreeSet::new();
        for id in ids {
            if !self.proc.task_exists(id) {
                // Its exit happened while we were not attached yet.
                targets.remove(id);
            } else if self.proc.is_process(id) {
                live.insert(id);
            }
        }
        self.below_top.retain(|pid, _| live.contains(pid));
        let present = listen_ports.keys();

        // The top of each target tree (nginx's master, Envoy's single
        // process) is scanned every round. The processes below it usually
        // share the top's listeners, and scanning each of them every round
        // would read every client connection's fd once a second. But some
        // gateways' tops hold none: HAProxy's master (`haproxy -W`) binds
        // the listeners, forks the worker and closes its own copies. So the
        // rest are scanned when first seen (a worker holds its listeners
        // from the fork) and then every RESCAN_ROUNDS rounds.
        let parents = self.proc.parents();
        let (tops, rest): (Vec<u32>, Vec<u32>) = live
            .iter()
            .partition(|pid| parents.get(pid).is_none_or(|ppid| !live.contains(ppid)));
        let mut listeners: Vec<Listening> =
            tops.iter().flat_map(|&pid| self.listening(pid)).collect();
        // One read per network namespace, through its first top.
        let mut accept_queues = StdHashMap::new();
        let mut namespaces = BTreeSet::new();
        for &pid in &tops {
            if namespaces.insert(self.proc.net_namespace(pid)) {
                for (port, queued) in self.proc.accept_queues(pid) {
                    *accept_queues.entry(port).or_default() += queued;
                }
            }
        }
        // A port the kernel saw a target listen on that no top holds may
        // belong to a process below (a worker that binds its own): every
        // process is scanned before the port is given up.
        // (Found held, a port's stamp is set to 0 below, so this fires once
        // per listen().)
        let known: BTreeSet<ListenKey> = listeners
            .iter()
            .chain(self.below_top.values().flatten())
            .map(|l| l.key)
            .collect();
        let orphan_port = present.iter().any(|key| {
            !known.contains(key) && listen_ports.added(*key).is_some_and(|added| added != 0)
        });
        for pid in rest {
            let due = orphan_port || rescan_due(pid, self.round);
            if due || !self.below_top.contains_key(&pid) {
                let held = self.listening(pid);
                self.below_top.insert(pid, held);
            }
            listeners.extend(self.below_top[&pid].iter().copied());
        }
        // One entry per socket: the first holder (lowest pid) names it.
        listeners.sort_by_key(|l| (l.key, l.addr, l.pid));
        listeners.dedup_by_key(|l| (l.key, l.addr));

        let wanted: BTreeSet<ListenKey> = listeners.iter().map(|l| l.key).collect();
        for key in &present {
            if !wanted.contains(key)
                && listen_ports
                    .added(*key)
                    .is_some_and(|added| removable(added, scan_start))
            {
                listen_ports.remove(*key);
            }
        }
        let mut map_full = 0;
        for key in wanted {
            if !present.contains(&key) {
                if !listen_ports.insert(key) {
                    map_full += 1;
                }
            } else if listen_ports.added(key).is_some_and(|added| added != 0) {
                // Held, as /proc shows: the kernel's stamp has done its job.
                let _ = listen_ports.insert(key);
            }
        }
        Summary {
            processes: live.len(),
            live: live.into_iter().collect(),
            listeners,
            map_full,
            accept_queues,
        }
    }
}

/// Whether a process below the top of its tree is read again this round:
/// once every [`RESCAN_ROUNDS`], staggered by pid so that a gateway's workers
/// are not all read in the same round.
fn rescan_due(pid: u32, round: u64) -> bool {
    (u64::from(pid) + round).is_multiple_of(RESCAN_ROUNDS)
}

/// A listening port missing from /proc goes, unless the kernel added it
/// (`added` is its bpf_ktime_get_ns) after the /proc read began: that read
/// may have come before the listen(). The next round decides.
fn removable(added: u64, scan_start: u64) -> bool {
    added < scan_start
}

/// CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_below_a_top_is_read_once_every_rescan_rounds() {
        for pid in [1, 7, 4_194_303] {
            for start in [1, 13] {
                let due = (start..start + RESCAN_ROUNDS)
                    .filter(|&round| rescan_due(pid, round))
                    .count();
                assert_eq!(due, 1, "pid {pid} from round {start}");
            }
        }
        // Staggered: workers with consecutive pids are read in different rounds.
        assert!(rescan_due(9, 1) && !rescan_due(10, 1));
    }

    #[test]
    fn ports_the_kernel_added_during_a_scan_survive_it() {
        let scan_start = monotonic_ns();
        // Added by the agent (0), or by the kernel before the scan: /proc decides.
        assert!(removable(0, scan_start));
        assert!(removable(scan_start - 1, scan_start));
        // Added by the kernel once the scan began: kept for the next round.
        assert!(!removable(scan_start, scan_start));
        assert!(!removable(monotonic_ns() + 1, scan_start));
    }
}
