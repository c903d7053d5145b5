//! Wires the stages together for every kernel record: capture (ring buffer,
//! decode) -> connections (`conntrack`: facts, lifecycle, protocol parsing) ->
//! correlation -> labelling (`label`) -> sinks (metrics, request log); plus a
//! once-a-second reconciliation of targets, late connections, kernel losses
//! and lost closes.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use gatescope_common::{ListenKey, LostReason, TcpState, LOST_REASONS, LOST_REASON_NAMES};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::watch,
};
use tracing::{debug, info, warn};

use crate::{
    capture::{
        decode::{decode, Handshake, Observation, Role, KINDS},
        join::Joiner,
        tls::TlsProbes,
        wire::{read_counters, ClosingTaps, Taps},
        Maps,
    },
    conntrack::{
        lost_close_sweeps::SweepSchedule,
        lost_opens::{MARGIN_NS, SCAN_MAX},
        ConnInfo, ConnTable, Fact, Finished,
    },
    correlate::{answered, Completed, Correlator},
    http::{Exchange, HttpEvent},
    kernel_targets::{monotonic_ns, Listening, TargetSet},
    label::Labeller,
    metrics::{netns_label, ListenerName, Metrics},
    pods::Gateways,
    procfs::Proc,
    sinks::Sinks,
};

/// Records read per drain before yielding to the rest of the loop (scrapes,
/// shutdown): at 1 to 3 µs a record under load, 16 to 50 ms.
const DRAIN_BUDGET: usize = 16_384;

/// Where the wire view finds the interfaces to tap.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// How often the ring buffer is drained without a wake-up from the kernel.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

mod order;

/// What a pipeline is built from.
pub struct Parts {
    pub metrics: Metrics,
    /// Names services and routes (labelling).
    pub labeller: Labeller,
    /// The consumers of labelled exchanges.
    pub sinks: Sinks,
    pub targets: TargetSet,
    pub maps: Maps,
    /// The wire view's packet sockets, when it is on.
    pub taps: Option<Taps>,
    /// The OpenSSL probes' attacher, when TLS capture is on.
    pub tls: Option<TlsProbes>,
    /// Open connections the table holds at most.
    pub max_connections: usize,
    /// Upstreams of named GenAI providers (`[[genai.provider]]` `upstream`).
    pub genai_peers: HashSet<SocketAddr>,
}

pub struct Pipeline {
    table: ConnTable,
    correlator: Correlator,
    labeller: Labeller,
    metrics: Metrics,
    /// The consumers of labelled exchanges.
    sinks: Sinks,
    targets: TargetSet,
    maps: Maps,
    /// The wire view's packet sockets, when it is on.
    taps: Option<Taps>,
    /// The OpenSSL probes' attacher, when TLS capture is on.
    tls: Option<TlsProbes>,
    /// Listening sockets, from the last reconciliation and the kernel's
    /// listen events since.
    listen_sockets: Vec<Listening>,
    /// Listening port in its namespace -> listening socket, from
    /// `listen_sockets`.
    listeners: HashMap<ListenKey, SocketAddr>,
    lost_seen: [u64; LOST_REASONS as usize],
    /// Client connections the kernel refused to track, as last read.
    refused_seen: u64,
    /// When the connection table is compared with the kernel's (see
    /// [`ConnTable::sweep`]).
    sweeps: SweepSchedule,
    /// CLOCK_MONOTONIC when the last drain that read the ring buffer empty
    /// began: every record written before it has been read.
    drained_ns: u64,
    /// What the connection table finished and later stages have yet to take.
    finished: Finished,
    /// The live gateway processes' containers and pods.
    gateways: Gateways,
    /// Pieces of HTTP/2 transfers waiting for their data record.
    joiner: Joiner,
    /// The head of the last transfer joined with its pieces (kept for its
    /// allocation).
    joined: Vec<u8>,
}

impl Pipeline {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            metrics,
            labeller,
            sinks,
            targets,
            maps,
            taps,
            tls,
            max_connections,
            genai_peers,
        } = parts;
        let mut table = ConnTable::new(max_connections);
        table.set_genai_peers(genai_peers);
        Pipeline {
            table,
            correlator: Correlator::default(),
            labeller,
            metrics,
            sinks,
            targets,
            maps,
            taps,
            tls,
            listen_sockets: Vec::new(),
            listeners: HashMap::new(),
            lost_seen: [0; LOST_REASONS as usize],
            refused_seen: 0,
            sweeps: SweepSchedule::new(Instant::now()),
            drained_ns: 0,
            finished: Finished {
                facts: Vec::with_capacity(1024),
                http: Vec::with_capacity(64),
                lost_opens: Vec::new(),
            },
            gateways: Gateways::new(Proc::default()),
            joiner: Joiner::default(),
            joined: Vec::new(),
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
    ) -> std::io::Result<Option<ClosingTaps>> {
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd owns the ring buffer.
        let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // A loop starved by a burst catches up with one reconciliation, not
        // several back to back.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The kernel wakes us only when a backlog builds (see ebpf/src/emit.rs);
        // in between, records are collected on this timer.
        let mut poll = tokio::time::interval(DRAIN_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // In this order, not at random: a shutdown is taken at the end of
            // the current turn (under load the ring is always readable, and a
            // random pick left SIGTERM waiting for several drains in CI), and
            // the once-a-second reconciliation is never starved by the ring.
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.reconcile(),
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = poll.tick() => self.drain(ring.get_mut()),
            }
        }
        let stopping = Instant::now();
        self.quiet_kernel();
        // The taps close while the final drain runs and the tracepoints
        // detach (main.rs); their packets were never the gateway's traffic.
        let closing = self.taps.take().map(Taps::close);
        // Whatever is still queued is counted before exit.
        self.drain(ring.get_mut());
        // Calls still waiting for their client request are reported
        // unlinked, so no sink loses one.
        self.correlator.forget_all();
        self.export_unlinked();
        self.sinks.flush();
        info!(elapsed = ?stopping.elapsed(), "final drain done");
        Ok(closing)
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let mut per_kind = [0u64; KINDS.len()];
        let mut undecodable = 0;
        // Bounded, so a ring that refills as fast as it is read (sustained
        // load) cannot keep the loop from ticks, scrapes' gauges or shutdown;
        // the rest is read on the next turn.
        let mut budget = DRAIN_BUDGET;
        let started_ns = monotonic_ns();
        let mut lost_opens = 0;
        while budget > 0 {
            let Some(item) = ring.next() else {
                self.drained_ns = started_ns;
                break;
            };
            budget -= 1;
            let mut joined = std::mem::take(&mut self.joined);
            match decode(&item) {
                Ok(obs @ Observation::Piece { .. }) => {
                    per_kind[obs.kind_index()] += 1;
                    self.joiner.piece(&obs);
                }
                Ok(obs) => {
                    per_kind[obs.kind_index()] += 1;
                    let obs = self.joiner.join(obs, &mut joined);
                    self.process_stage(&obs);
                    // Before the table: the exchanges this record finishes
                    // are correlated with its I/O already in the thread's
                    // order.
                    self.thread_order(&obs);
                    // Connections, reassembly and protocol parsing in one
                    // step; its facts are counted at the end of the drain,
                    // its exchanges correlated at once, in record order.
                    self.table.apply(&obs, Instant::now, &mut self.finished);
                    self.finish_http();
                    if let Observation::State {
                        new: TcpState::CLOSE,
                        endpoints,
                        ..
                    } = obs
                    {
                        self.correlator.closed(&endpoints);
                        self.export_unlinked();
                    }
                    for (sk, ts_ns) in std::mem::take(&mut self.finished.lost_opens) {
                        lost_opens += u64::from(self.release_lost_open(sk, ts_ns));
                    }
                }
                Err(e) => {
                    debug!("dropping record: {e}");
                    undecodable += 1;
                }
            }
            self.joined = joined;
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
        if lost_opens > 0 {
            self.metrics.health.lost_opens.inc_by(lost_opens);
        }
        let unjoined = self.joiner.take_dropped();
        if unjoined > 0 {
            self.metrics
                .health
                .events_lost
                .with_label_values(&["unjoined_piece"])
                .inc_by(unjoined);
        }
        if undecodable > 0 {
            self.metrics
                .health
                .events_lost
                .with_label_values(&["undecodable"])
                .inc_by(undecodable);
        }
        for fact in self.finished.facts.drain(..) {
            self.metrics.record(&fact);
        }
        self.metrics.set_gauges(self.table.gauges());
        let phases = self.table.phases();
        self.metrics
            .set_phases(phases.reading, phases.writing, phases.waiting);
        self.sinks.flush();
    }

    /// What the records say outside the connection table: the gateway's
    /// processes and listeners, and the wire view's handshake times.
    fn process_stage(&mut self, obs: &Observation) {
        match *obs {
            // Already a target in the kernel; the next reconcile counts it.
            Observation::Exec { tgid } => info!(pid = tgid, "gateway process started (--discover)"),
            // A new listener (a gateway discovered at exec binds right
            // after): labelled by its own address at once rather than as
            // `*:port` until the next reconcile reads /proc.
            Observation::Listen {
                addr,
                netns,
                tgid,
                ts_ns: _,
            } => {
                let key = ListenKey::new(netns, addr.port());
                if !self
                    .listen_sockets
                    .iter()
                    .any(|l| l.key == key && l.addr == addr)
                {
                    let mut sockets = self.listen_sockets.clone();
                    sockets.push(Listening {
                        key,
                        addr,
                        pid: tgid,
                    });
                    sockets.sort();
                    self.set_listen_sockets(sockets);
                }
            }
            Observation::Exit { tgid } => {
                self.correlator.forget(tgid);
                self.export_unlinked();
            }
            Observation::ConnOpen {
                role,
                endpoints,
                handshake,
                netns,
                ..
            } => self.handshake(
                role,
                ListenKey::new(netns, endpoints.local.port()),
                handshake,
            ),
            // The kernel made the child a target already.
            Observation::Fork { .. } => {}
            // The connection table's alone.
            Observation::ConnFound { .. }
            | Observation::State { .. }
            | Observation::Data { .. }
            | Observation::Piece { .. }
            | Observation::Plaintext { .. }
            | Observation::ReadFailed { .. }
            | Observation::Tcp { .. }
            | Observation::TcpClosed { .. } => {}
        }
    }

    /// The wire view's time for a client connection's handshake.
    fn handshake(&mut self, role: Role, listener: ListenKey, handshake: Option<Handshake>) {
        match handshake {
            Some(h) => {
                let interface = self.interface_name(h.ifindex);
                self.metrics
                    .handshake(&interface, listener, h.ns as f64 / 1e9);
            }
            None if role == Role::Downstream && self.taps.is_some() => {
                self.metrics.handshake_untimed(listener);
            }
            None => {}
        }
    }

    /// Correlates what the connection table finished and hands each exchange
    /// to the sinks, in order.
    fn finish_http(&mut self) {
        if self.finished.http.is_empty() {
            return;
        }
        let mut http = std::mem::take(&mut self.finished.http);
        for (conn, event) in http.drain(..) {
            match event {
                HttpEvent::Exchange(exchange) => {
                    let done = self.correlate(conn, exchange);
                    self.export(done, conn);
                    self.export_unlinked();
                }
                HttpEvent::Anomaly(anomaly) => {
                    tracing::debug!(
                        ?anomaly,
                        role = ?conn.role,
                        endpoints = ?conn.endpoints,
                        pid = conn.tgid,
                        "HTTP anomaly"
                    );
                    self.metrics.record_anomaly(&anomaly);
                }
            }
        }
        // Its allocation is kept for the next record.
        self.finished.http = http;
    }

    /// Joins a client's exchange with the upstream call its worker made.
    fn correlate(&mut self, conn: ConnInfo, exchange: Exchange) -> Completed {
        match conn.role {
            Role::Upstream => {
                let peer = conn.endpoints.remote;
                self.correlator
                    .upstream_done(conn.tgid, &exchange, conn.endpoints.local, peer);
                Completed::Upstream { exchange, peer }
            }
            Role::Downstream => {
                let attempts =
                    self.correlator
                        .downstream_done(conn.tgid, conn.endpoints, &exchange);
                for attempt in &attempts {
                    self.metrics.links.count(attempt.link);
                }
                // Metrics need a leg whenever an upstream answered, linked
                // or not (see `guess_leg`).
                let upstream =
                    answered(&attempts).or_else(|| self.correlator.guess_leg(conn.tgid, &exchange));
                let key = ListenKey::new(conn.netns, conn.endpoints.local.port());
                let listener = self
                    .listeners
                    .get(&key)
                    .copied()
                    .unwrap_or(conn.endpoints.local);
                Completed::Downstream {
                    exchange,
                    listener,
                    upstream,
                    attempts,
                }
            }
        }
    }

    /// Labels one finished exchange and hands it to every sink.
    fn export(&mut self, done: Completed, conn: ConnInfo) {
        let record = self.labeller.label(done, conn.endpoints.remote, conn.tgid);
        self.sinks.exchange(&record);
    }

    /// Upstream calls correlation gave up on, to the sinks that report each
    /// call on its own.
    fn export_unlinked(&mut self) {
        for (tgid, attempt) in self.correlator.take_unlinked() {
            self.metrics.links.count(attempt.link);
            self.sinks.unlinked(tgid, &attempt);
        }
    }

    fn reconcile(&mut self) {
        let summary = self
            .targets
            .reconcile(&mut self.maps.targets, &mut self.maps.listen_ports);
        self.metrics
            .health
            .target_processes
            .set(summary.processes as i64);
        if self.gateways.update(&summary.live) {
            self.metrics.set_gateways(self.gateways.list());
        }
        self.set_listen_sockets(summary.listeners);
        if let Some(tls) = self.tls.as_mut() {
            if let Some(programs) = tls.scan(&summary.live) {
                self.metrics.health.programs_attached.set(programs as i64);
            }
            self.table.set_tls_blind(tls.blind());
        } else {
            // TLS capture off (`--tls=false`, or the probes did not load).
            self.table.set_tls_blind(summary.live.iter().copied());
        }
        // The table is as of the last drain, before /proc was read: see
        // ConnTable::settle_accepts.
        self.table
            .settle_accepts(&summary.accept_queues, &mut self.finished);
        if summary.map_full > 0 {
            warn!(
                ports = summary.map_full,
                "listen-port map full: connections to those ports are not tracked"
            );
        }
        self.table.end_idle_late(Instant::now(), &mut self.finished);
        self.finish_http();
        self.read_kernel_losses();
        self.read_refused();
        self.sweep_lost_closes();
        self.sync_wire();
    }

    /// At shutdown, before the programs are detached: with no target
    /// processes and no listening ports left, every program returns after
    /// its first lookup.
    fn quiet_kernel(&mut self) {
        for pid in self.maps.targets.ids() {
            self.maps.targets.remove(pid);
        }
        for key in self.maps.listen_ports.keys() {
            self.maps.listen_ports.remove(key);
        }
    }

    /// Releases the kernel's entry for `sk` if it is not newer than a data
    /// record at `ts_ns` the table did not know the socket for: its open
    /// record was lost, and the kernel claims the socket again at its next
    /// transfer (see [`crate::conntrack::lost_opens`]). Whether it did.
    fn release_lost_open(&mut self, sk: u64, ts_ns: u64) -> bool {
        let Ok(info) = self.maps.socks.get(&sk, 0) else {
            return false;
        };
        let released = info.opened_ns <= ts_ns && self.maps.socks.remove(&sk).is_ok();
        if released {
            self.maps.released();
        }
        released
    }

    /// Releases the kernel's entries the table does not know that are older
    /// than the ring buffer's last empty read by a margin: their open record
    /// was lost. At most [`SCAN_MAX`] entries examined.
    fn sweep_lost_opens(&mut self) {
        if !self.table.has_room() {
            return;
        }
        let horizon_ns = self.drained_ns.saturating_sub(MARGIN_NS);
        let entries: Vec<(u64, u64)> = self
            .maps
            .socks
            .iter()
            .take(SCAN_MAX)
            .filter_map(Result::ok)
            .map(|(sk, info)| (sk, info.opened_ns))
            .collect();
        let mut released = 0u64;
        for sk in self.table.lost_opens(entries.iter().copied(), horizon_ns) {
            // Looked up again just before: a connection opened at the address
            // since the scan keeps its entry.
            let Ok(info) = self.maps.socks.get(&sk, 0) else {
                continue;
            };
            if info.opened_ns < horizon_ns && self.maps.socks.remove(&sk).is_ok() {
                released += 1;
            }
        }
        if released > 0 {
            self.maps.released();
            info!(
                connections = released,
                "released kernel entries of connections whose open was lost with the ring buffer's overflow"
            );
            self.metrics.health.lost_opens.inc_by(released);
        }
    }

    /// Drops the connections whose close record was lost (after ring-buffer
    /// losses, see [`crate::conntrack::lost_close_sweeps`]), so gauges heal
    /// without a restart, and releases the kernel's entries of connections
    /// whose open record was lost.
    fn sweep_lost_closes(&mut self) {
        if !self.sweeps.due(Instant::now(), self.table.has_suspects()) {
            return;
        }
        let socks = &self.maps.socks;
        let gone = self
            .table
            .sweep(|sk| socks.get(&sk, 0).ok().map(|info| info.opened_ns));
        self.sweep_lost_opens();
        if gone.is_empty() {
            return;
        }
        warn!(
            connections = gone.len(),
            "dropped connections whose close was lost with the ring buffer's overflow"
        );
        self.metrics.health.lost_closes.inc_by(gone.len() as u64);
        self.metrics.set_gauges(self.table.gauges());
    }

    /// Follows interfaces that came or went, and exports the wire view's
    /// counters.
    fn sync_wire(&mut self) {
        let Some(taps) = &mut self.taps else {
            return;
        };
        if let Err(e) = taps.sync(Path::new(SYS_CLASS_NET)) {
            warn!("wire view: {e}");
        }
        self.metrics
            .health
            .wire_interfaces
            .set(taps.tapped() as i64);
        let totals = read_counters(&self.maps.wire);
        let taps = &*taps;
        self.metrics
            .sync_wire(&totals, &|ifindex| interface_label(taps, ifindex));
    }

    fn interface_name(&self, ifindex: u32) -> String {
        match &self.taps {
            Some(taps) => interface_label(taps, ifindex),
            None => ifindex.to_string(),
        }
    }

    /// The gateway's listening sockets, as labels name them.
    fn set_listen_sockets(&mut self, sockets: Vec<Listening>) {
        if sockets == self.listen_sockets {
            return;
        }
        let names: Vec<(ListenKey, ListenerName)> = sockets
            .iter()
            .map(|l| {
                let id = self.gateways.identity(l.pid);
                let name = ListenerName {
                    listener: l.addr.to_string(),
                    netns: netns_label(l.key.netns),
                    namespace: id.namespace,
                    pod: id.pod,
                    container_id: id.container_id,
                };
                (l.key, name)
            })
            .collect();
        self.metrics.set_listeners(&names);
        self.listeners = sockets.iter().map(|l| (l.key, l.addr)).collect();
        self.listen_sockets = sockets;
    }

    /// The kernel counts losses per CPU; export the growth since last time.
    /// Client connections the kernel refused to track are accepted by the
    /// gateway all the same (stub_status counts them): counted as accepted
    /// when refused.
    fn read_refused(&mut self) {
        let Ok(values) = self.maps.refused.get(&0, 0) else {
            return;
        };
        let total: u64 = values.iter().sum();
        for _ in self.refused_seen..total {
            self.finished.facts.push(Fact::Accepted);
        }
        self.refused_seen = self.refused_seen.max(total);
    }

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
                if reason == LostReason::RINGBUF_FULL.0 {
                    self.sweeps.loss(Instant::now());
                }
            }
        }
    }
}

/// An interface's name, or its index when it was never tapped by name.
fn interface_label(taps: &Taps, ifindex: u32) -> String {
    taps.name(ifindex)
        .map_or_else(|| ifindex.to_string(), str::to_owned)
}
