//! Wires the stages together: ring buffer -> decode -> connection table ->
//! metrics, plus a once-a-second reconciliation of targets and loss counters.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use gatescope_common::{LOST_REASONS, LOST_REASON_NAMES};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::watch,
};
use tracing::{debug, warn};

use crate::{
    capture::{
        decode::{decode, KINDS},
        Maps,
    },
    conntrack::{ConnTable, Fact},
    metrics::Metrics,
    target_set::TargetSet,
};

pub struct Pipeline {
    pub table: ConnTable,
    pub metrics: Metrics,
    pub targets: TargetSet,
    maps: Maps,
    lost_seen: [u64; LOST_REASONS as usize],
    facts: Vec<Fact>,
}

impl Pipeline {
    pub fn new(table: ConnTable, metrics: Metrics, targets: TargetSet, maps: Maps) -> Self {
        Pipeline {
            table,
            metrics,
            targets,
            maps,
            lost_seen: [0; LOST_REASONS as usize],
            facts: Vec::with_capacity(1024),
        }
    }

    /// Adds the gateway's processes to the kernel's target set and learns its
    /// listening sockets. Call before traffic is expected to be counted.
    pub fn start(&mut self) {
        let full = self.targets.seed(&mut self.maps.targets);
        if full > 0 {
            warn!(
                full,
                "target map full: some gateway processes are not observed"
            );
            self.metrics
                .health
                .events_lost
                .with_label_values(&["targets_map_full"])
                .inc_by(full);
        }
        self.reconcile();
    }

    pub async fn run(
        mut self,
        events: RingBuf<MapData>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd owns the ring buffer.
        let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = tick.tick() => self.reconcile(),
                _ = shutdown.changed() => break,
            }
        }
        // Whatever is still queued is counted before exit.
        self.drain(ring.get_mut());
        Ok(())
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let mut per_kind = [0u64; KINDS.len()];
        let mut undecodable = 0;
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(obs) => {
                    if let Some(i) = KINDS.iter().position(|k| *k == obs.kind()) {
                        per_kind[i] += 1;
                    }
                    self.table.apply(&obs, &mut self.facts);
                }
                Err(e) => {
                    debug!("dropping record: {e}");
                    undecodable += 1;
                }
            }
        }
        for (kind, n) in KINDS.iter().zip(per_kind) {
            if n > 0 {
                self.metrics
                    .health
                    .events_received
                    .with_label_values(&[kind])
                    .inc_by(n);
            }
        }
        if undecodable > 0 {
            self.metrics
                .health
                .events_lost
                .with_label_values(&["undecodable"])
                .inc_by(undecodable);
        }
        for fact in self.facts.drain(..) {
            self.metrics.record(&fact);
        }
        self.metrics.set_gauges(self.table.gauges());
    }

    fn reconcile(&mut self) {
        let summary = self
            .targets
            .reconcile(&mut self.maps.targets, &mut self.maps.listen_ports);
        self.metrics
            .health
            .target_processes
            .set(summary.processes as i64);
        self.metrics.set_listeners(&summary.listeners);
        if summary.map_full > 0 {
            warn!(
                ports = summary.map_full,
                "listen-port map full: connections to those ports are not tracked"
            );
        }
        self.read_kernel_losses();
    }

    /// The kernel counts losses per CPU; export the growth since last time.
    fn read_kernel_losses(&mut self) {
        for reason in 0..LOST_REASONS {
            let Ok(values) = self.maps.lost.get(&reason, 0) else {
                continue;
            };
            let total: u64 = values.iter().sum();
            let seen = &mut self.lost_seen[reason as usize];
            if total > *seen {
                let name = LOST_REASON_NAMES[reason as usize];
                warn!(
                    reason = name,
                    lost = total - *seen,
                    "events lost in the kernel"
                );
                self.metrics
                    .health
                    .events_lost
                    .with_label_values(&[name])
                    .inc_by(total - *seen);
                *seen = total;
            }
        }
    }
}
