//! Stage 2, the connection table: one entry per tracked TCP socket holding its
//! facts, its lifecycle and its protocol state, from open to the bytes read
//! after its close; turns observations into facts and finished HTTP events.
//!
//! "Open" follows nginx's stub_status: a downstream connection is active from
//! the moment it is established until the gateway closes its side (FIN_WAIT1,
//! LAST_ACK) or the socket dies (CLOSE); a peer's half-close (CLOSE_WAIT)
//! leaves it active because the gateway may still be writing. An upstream
//! connection is open from connect() (SYN_SENT) on, by the same rule.
//!
//! Closed but still readable: the gateway can still read bytes on a closed
//! socket. A request queued before a client's reset is read after the reset
//! closed it, even when the socket had not been accepted yet; an upstream's
//! response is read after its reset. Those bytes are the closed connection's:
//! they neither reopen it nor go untracked, so the last [`CLOSED_KEEP`]
//! closed connections are remembered. When the kernel reports bytes still
//! queued at the close, or an upstream reset an established connection, the
//! connection is late: its parsing goes on with the gateway's next
//! transfers, outside the phase counts, until a failed read, [`LATE_IDLE`]
//! without reads, or its address opening again.

#[cfg(test)]
mod accept_tests;
mod conn;
mod facts;
#[cfg(test)]
mod h2_tests;
mod handshake;
#[cfg(test)]
mod late_tests;
pub mod lost_close_sweeps;
pub mod lost_opens;
mod protocol;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use std::{
    collections::{HashMap as StdHashMap, HashSet, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use gatescope_common::TcpState;

pub use self::facts::{ConnInfo, Fact, Finished, Gauges, Peer, PhaseCounts, TlsResult};
use self::{
    conn::{touch, Conn, Lifecycle},
    facts::{adjust, tcp_fact},
    handshake::Handshake,
    protocol::Protocol,
};

use crate::{
    capture::decode::{Direction, Endpoints, Observation, Role},
    http::{HttpEvent, Segment},
};

/// Closed connections remembered for the bytes read after their close.
const CLOSED_KEEP: usize = 4096;

/// How long a late connection waits for the gateway's next read before its
/// parsing ends.
pub const LATE_IDLE: Duration = Duration::from_secs(1);

pub struct ConnTable {
    /// By socket address, open and remembered closed connections alike.
    /// FxHash: these are looked up once or more per record, and the keys
    /// (kernel addresses) are not attacker-chosen.
    conns: FxHashMap<u64, Conn>,
    gauges: Gauges,
    phases: PhaseCounts,
    /// Open connections at most.
    capacity: usize,
    /// Missing from the kernel at the last [`ConnTable::sweep`].
    suspects: HashSet<u64>,
    /// The last [`CLOSED_KEEP`] connections closed, oldest first, with their
    /// open time to tell a socket address closed twice apart.
    closed_order: VecDeque<(u64, u64)>,
    /// A parser's events, before they are given their connection.
    events: Vec<HttpEvent>,
    /// Sockets whose kernel entry was last looked up on a data record, and
    /// when (see [`lost_opens`]).
    released: FxHashMap<u64, Instant>,
    /// Target processes without OpenSSL probes (see
    /// [`ConnTable::set_tls_blind`]).
    tls_blind: HashSet<u32>,
    /// Upstreams of named GenAI providers (see [`ConnTable::set_genai_peers`]).
    genai_peers: HashSet<SocketAddr>,
}

fn is_open_state(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::SYN_SENT | TcpState::ESTABLISHED | TcpState::CLOSE_WAIT
    )
}

/// The gateway closed its side (FIN_WAIT1 from ESTABLISHED, LAST_ACK from
/// CLOSE_WAIT), both sides closed at once (CLOSING), or the socket died.
fn is_gateway_close(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::FIN_WAIT1 | TcpState::LAST_ACK | TcpState::CLOSING | TcpState::CLOSE
    )
}

impl ConnTable {
    pub fn new(capacity: usize) -> Self {
        ConnTable {
            conns: FxHashMap::default(),
            gauges: Gauges::default(),
            phases: PhaseCounts::default(),
            capacity,
            suspects: HashSet::new(),
            closed_order: VecDeque::new(),
            events: Vec::new(),
            released: FxHashMap::default(),
            tls_blind: HashSet::new(),
            genai_peers: HashSet::new(),
        }
    }

    /// The upstreams `[[genai.provider]]` sections name: connections to them
    /// read the providers' API paths without `/v1` as GenAI calls.
    pub fn set_genai_peers(&mut self, peers: HashSet<SocketAddr>) {
        self.genai_peers = peers;
    }

    /// The target processes whose TLS cannot be decrypted (no OpenSSL with
    /// probes, or `--tls=false`), from the pipeline's once-a-second look:
    /// their TLS bytes are counted as unparsed.
    pub fn set_tls_blind(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.tls_blind.clear();
        self.tls_blind.extend(pids);
    }

    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    /// The open connection at socket `sk`, if the table follows it (for
    /// correlation to read each record's role and endpoints).
    pub fn conn(&self, sk: u64) -> Option<ConnInfo> {
        self.conns.get(&sk).filter(|c| c.is_open()).map(Conn::info)
    }

    /// stub_status's phases of the open client connections.
    pub fn phases(&self) -> PhaseCounts {
        self.phases
    }

    /// Open connections.
    fn tracked(&self) -> usize {
        (self.gauges.tracked_downstream + self.gauges.tracked_upstream) as usize
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tracked()
    }

    /// Applies one observation: its facts, the connection's lifecycle and
    /// its protocol state together. Appends to `out` what it finished.
    /// `now` is read only when a late connection is touched.
    pub fn apply(&mut self, obs: &Observation, now: impl Fn() -> Instant, out: &mut Finished) {
        match *obs {
            Observation::ConnOpen {
                sk,
                role,
                endpoints,
                ts_ns,
                handshake: _,
                tid: _,
                netns,
            } => self.open(sk, role, (endpoints, netns), ts_ns, false, out),
            // Open before we started: active from now on, but it was neither
            // accepted nor opened while we watched, nor is it new to handle.
            Observation::ConnFound {
                sk,
                role,
                endpoints,
                ts_ns,
                netns,
            } => self.open(sk, role, (endpoints, netns), ts_ns, true, out),
            Observation::State {
                sk,
                old,
                new,
                endpoints,
                ts_ns,
                queued,
                by_target,
            } => {
                if by_target {
                    self.touched(sk, out);
                }
                let close = Close {
                    ts_ns,
                    queued: queued > 0,
                    reset: old == TcpState::ESTABLISHED && !by_target,
                };
                self.change_state(sk, new, endpoints.local, close, now, out);
            }
            Observation::Data {
                sk,
                dir,
                len,
                tgid,
                tid: _,
                ts_ns,
                head,
                tail,
            } => {
                let seg = Segment {
                    ts_ns,
                    len,
                    head,
                    tail,
                };
                self.data(sk, dir, &seg, tgid, now, out);
            }
            Observation::Plaintext {
                sk,
                dir,
                len,
                tgid: _,
                tid: _,
                ts_ns,
                head,
                tail,
            } => {
                let seg = Segment {
                    ts_ns,
                    len,
                    head,
                    tail,
                };
                self.plaintext(sk, dir, &seg, out);
            }
            // A failed read is the gateway's I/O on the connection (it had
            // accepted it); otherwise its state records say enough, and the
            // read matters to correlation only.
            // It also ends a late connection: the kernel returns queued
            // bytes before the error (tcp_recvmsg reports `sk_err` only
            // when nothing was copied), so nothing more will be read.
            Observation::ReadFailed { sk, .. } => {
                self.touched(sk, out);
                self.end_late(sk, out);
            }
            Observation::Tcp { sk, event } => {
                if let Some(conn) = self.conns.get(&sk).filter(|c| c.is_open()) {
                    out.facts
                        .push(tcp_fact(conn.role, (&conn.endpoints, conn.netns), event));
                }
            }
            Observation::TcpClosed {
                role,
                endpoints,
                event,
            } => out.facts.push(tcp_fact(role, (&endpoints, 0), event)),
            // Joined to their data record before (capture/join.rs); one
            // that gets here had none.
            // The process and listener stage (pipeline.rs) handles the rest.
            Observation::Piece { .. }
            | Observation::Fork { .. }
            | Observation::Exit { .. }
            | Observation::Exec { .. }
            | Observation::Listen { .. } => {}
        }
    }

    /// The gateway did something with connection `sk` in its own thread (a
    /// transfer, a failed read, its close): a client connection it had not
    /// done anything with before is accepted. nginx's stub_status counts
    /// accept() calls that returned a connection; a gateway does nothing
    /// with a connection it has not accepted, and reads or closes (nginx over
    /// worker_connections closes without reading) what it has, or leaves it
    /// idle, which [`ConnTable::settle_accepts`] counts from the accept
    /// queues. So the count is exact without hooking accept(), a syscall
    /// event that would tax every syscall of the host (KERNEL.md); it lags
    /// accept() by the time to the first read or close, at most a second.
    fn touched(&mut self, sk: u64, out: &mut Finished) {
        if let Some(conn) = self.conns.get_mut(&sk) {
            touch(conn, out);
        }
    }

    /// Client connections the gateway accepted but has not done anything
    /// with yet (an idle client: nginx waits for its request without a read)
    /// are counted from the accept queues: per listening port, the open
    /// connections not yet counted less those still queued (`queued`, read
    /// from /proc after this table's last update) were accepted. The queue is
    /// first in, first out, so the oldest are marked. It never counts too
    /// many: a queued connection is always in the table (its open record
    /// came before the /proc read), and a queued connection the table holds
    /// as closed (reset while queued) only makes this count fewer until the
    /// gateway reads it. Ports missing from `queued` are left alone.
    pub fn settle_accepts(&mut self, queued: &StdHashMap<u16, u32>, out: &mut Finished) {
        let mut waiting: Vec<(u16, u64, u64)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.role == Role::Downstream && !c.accepted && c.is_open())
            .map(|(&sk, c)| (c.endpoints.local.port(), c.opened_ns, sk))
            .filter(|(port, ..)| queued.contains_key(port))
            .collect();
        waiting.sort_unstable();
        for group in waiting.chunk_by(|a, b| a.0 == b.0) {
            let still_queued = queued[&group[0].0] as usize;
            for &(_, _, sk) in &group[..group.len().saturating_sub(still_queued)] {
                self.touched(sk, out);
            }
        }
    }

    fn open(
        &mut self,
        sk: u64,
        role: Role,
        (endpoints, netns): (Endpoints, u32),
        opened_ns: u64,
        found: bool,
        out: &mut Finished,
    ) {
        // The same address again. A late connection there ends at its last
        // read. One still open (its close lost, or the socket freed unseen)
        // is gone: the kernel reused the socket memory.
        if let Some(mut old) = self.conns.remove(&sk) {
            self.count(&old, false);
            if let Lifecycle::Late { last_ns, .. } = old.lifecycle {
                old.protocol.close(last_ns, &mut self.events);
                emit(&mut self.events, old.info(), out);
            }
        }
        if self.tracked() >= self.capacity {
            out.facts.push(Fact::TableFull);
            return;
        }
        let conn = Conn {
            role,
            endpoints,
            netns,
            handled: found,
            accepted: found,
            tgid: 0,
            opened_ns,
            lifecycle: Lifecycle::Open { active: true },
            protocol: {
                let mut p = Protocol::new(role, found);
                if role == Role::Upstream && self.genai_peers.contains(&endpoints.remote) {
                    p.set_genai_provider();
                }
                p
            },
            handshake: if found {
                Handshake::Done
            } else {
                Handshake::Unknown
            },
        };
        if role == Role::Upstream && !found {
            out.facts.push(Fact::UpstreamOpened {
                peer: Peer {
                    netns,
                    addr: endpoints.remote,
                },
            });
        }
        self.count(&conn, true);
        self.conns.insert(sk, conn);
    }

    fn change_state(
        &mut self,
        sk: u64,
        new: TcpState,
        local: SocketAddr,
        close: Close,
        now: impl Fn() -> Instant,
        out: &mut Finished,
    ) {
        // A closed connection's records do not reopen it.
        let Some(conn) = self.conns.get_mut(&sk).filter(|c| c.is_open()) else {
            return;
        };
        count(&mut self.gauges, &mut self.phases, conn, false);
        let closed = new == TcpState::CLOSE;
        if closed || is_gateway_close(new) {
            conn.end_handshake(false, out);
        }
        // An upstream's reset of an established connection is late even
        // with nothing queued: the record of the gateway's request write
        // can come after it. The send tracepoint fires when the send
        // returns, and on loopback the peer can read the request and reset
        // (its softirq emitting the close first) before that: one call in
        // 180 resets went missing in CI's trace_links. A graceful close
        // (from LAST_ACK, FIN_WAIT or TIME_WAIT) is not one: nothing follows
        // it, and a late connection nobody reads stays up to LATE_IDLE.
        let late = close.queued || (close.reset && conn.role == Role::Upstream);
        if closed && late && conn.protocol.is_parsing() {
            // A reset with bytes still queued: the gateway reads them next.
            conn.lifecycle = Lifecycle::Late {
                last_ns: close.ts_ns,
                touched: now(),
            };
        } else {
            if is_gateway_close(new) {
                conn.protocol.close(close.ts_ns, &mut self.events);
                emit(&mut self.events, conn.info(), out);
            }
            conn.lifecycle = if closed {
                Lifecycle::Closed
            } else {
                Lifecycle::Open {
                    active: is_open_state(new),
                }
            };
        }
        // The local port of an active open is assigned after SYN_SENT.
        conn.endpoints.local = local;
        count(&mut self.gauges, &mut self.phases, conn, true);
        if closed {
            let opened_ns = conn.opened_ns;
            self.remember_closed(sk, opened_ns);
        }
    }

    fn data(
        &mut self,
        sk: u64,
        dir: Direction,
        seg: &Segment,
        tgid: u32,
        now: impl Fn() -> Instant,
        out: &mut Finished,
    ) {
        let Some(conn) = self.conns.get_mut(&sk) else {
            if seg.len > 0 {
                out.facts.push(Fact::UntrackedBytes { dir, len: seg.len });
            }
            // Its open record may have been lost (lost_opens.rs).
            out.lost_opens.extend(self.lost_open_at(sk, seg.ts_ns, now));
            return;
        };
        conn.tgid = tgid;
        touch(conn, out);
        if conn.role == Role::Downstream && dir == Direction::Ingress && !conn.handled {
            conn.handled = true;
            out.facts.push(Fact::Handled);
        }
        if seg.len > 0 {
            out.facts.push(match conn.role {
                Role::Downstream => Fact::DownstreamBytes {
                    listener: conn.listener(),
                    dir,
                    len: seg.len,
                },
                Role::Upstream => Fact::UpstreamBytes {
                    peer: conn.peer(),
                    dir,
                    len: seg.len,
                },
            });
        }
        match conn.lifecycle {
            Lifecycle::Open { .. } => {
                count_phase(&mut self.phases, conn, false);
                conn.protocol.data(dir, seg, &mut self.events);
                count_phase(&mut self.phases, conn, true);
            }
            // Read after a reset closed the socket: a client's request
            // (nginx logs it, 499), an upstream's response.
            Lifecycle::Late {
                ref mut last_ns,
                ref mut touched,
            } => {
                *last_ns = (*last_ns).max(seg.ts_ns);
                *touched = now();
                conn.protocol.late_data(dir, seg, &mut self.events);
            }
            // Not deferred at its close (nothing was queued, or the kernel
            // could not tell: no BTF): counted, not parsed.
            Lifecycle::Closed => {}
        }
        if seg.len > 0 {
            // Looked up for TLS connections only: this runs per transfer.
            let blind = conn.protocol.is_tls() && self.tls_blind.contains(&tgid);
            let open = conn.is_open();
            conn.watch_tls(dir, seg.head, seg.len, blind, open, out);
        }
        emit(&mut self.events, conn.info(), out);
    }

    /// Plaintext OpenSSL moved for connection `sk`: parsed, not counted (its
    /// ciphertext records counted the bytes on the wire).
    fn plaintext(&mut self, sk: u64, dir: Direction, seg: &Segment, out: &mut Finished) {
        let Some(conn) = self.conns.get_mut(&sk) else {
            return;
        };
        conn.end_handshake(true, out);
        match conn.lifecycle {
            Lifecycle::Open { .. } => {
                count_phase(&mut self.phases, conn, false);
                conn.protocol.plaintext(dir, seg, &mut self.events);
                count_phase(&mut self.phases, conn, true);
            }
            Lifecycle::Late { .. } => conn.protocol.plaintext(dir, seg, &mut self.events),
            Lifecycle::Closed => {}
        }
        emit(&mut self.events, conn.info(), out);
    }

    /// Ends the parsing of late connections the gateway has not read from
    /// for [`LATE_IDLE`], at their last read; they stay remembered as closed.
    pub fn end_idle_late(&mut self, now: Instant, out: &mut Finished) {
        for sk in self.idle_late(now) {
            self.end_late(sk, out);
        }
    }

    /// Late connections not read from for [`LATE_IDLE`], oldest close first.
    /// Every late connection is among the remembered closed ones.
    fn idle_late(&self, now: Instant) -> Vec<u64> {
        self.closed_order
            .iter()
            .filter(|&&(sk, opened_ns)| {
                self.conns.get(&sk).is_some_and(|c| {
                    c.opened_ns == opened_ns
                        && matches!(c.lifecycle, Lifecycle::Late { touched, .. }
                            if now.saturating_duration_since(touched) >= LATE_IDLE)
                })
            })
            .map(|&(sk, _)| sk)
            .collect()
    }

    /// Ends a late connection's parsing at its last read. False when `sk` is
    /// not late.
    fn end_late(&mut self, sk: u64, out: &mut Finished) -> bool {
        let Some(conn) = self.conns.get_mut(&sk) else {
            return false;
        };
        let Lifecycle::Late { last_ns, .. } = conn.lifecycle else {
            return false;
        };
        conn.protocol.close(last_ns, &mut self.events);
        conn.lifecycle = Lifecycle::Closed;
        emit(&mut self.events, conn.info(), out);
        true
    }

    /// Recovers from close records lost to a full ring buffer: connections
    /// the kernel no longer tracks are closed, with their gauges, and their
    /// parsers dropped unflushed (when they ended is unknown).
    /// `in_kernel(sk)` is the open time of the kernel's entry for `sk`:
    /// none (removed at its close), or another connection's (the socket
    /// memory was reused by a connection whose open record was lost too).
    /// Only those found stale by two sweeps in a row go, so records still
    /// queued in the ring buffer at the first sweep are read in between and
    /// handled normally. Returns the dropped sockets.
    pub fn sweep(&mut self, mut in_kernel: impl FnMut(u64) -> Option<u64>) -> Vec<u64> {
        let missing: HashSet<u64> = self
            .conns
            .iter()
            .filter(|(&sk, conn)| conn.is_open() && in_kernel(sk) != Some(conn.opened_ns))
            .map(|(&sk, _)| sk)
            .collect();
        let gone: Vec<u64> = missing.intersection(&self.suspects).copied().collect();
        for &sk in &gone {
            self.drop_lost(sk);
        }
        self.suspects = missing;
        for sk in &gone {
            self.suspects.remove(sk);
        }
        gone
    }

    /// Whether the last sweep found connections it has yet to confirm gone.
    pub fn has_suspects(&self) -> bool {
        !self.suspects.is_empty()
    }

    fn drop_lost(&mut self, sk: u64) {
        let Some(conn) = self.conns.get_mut(&sk) else {
            return;
        };
        count(&mut self.gauges, &mut self.phases, conn, false);
        conn.protocol.forget();
        conn.lifecycle = Lifecycle::Closed;
        let opened_ns = conn.opened_ns;
        self.remember_closed(sk, opened_ns);
    }

    /// Keeps a closed connection for its late bytes, forgetting the oldest
    /// one beyond [`CLOSED_KEEP`] (unless its address opened again since).
    fn remember_closed(&mut self, sk: u64, opened_ns: u64) {
        if self.closed_order.len() == CLOSED_KEEP {
            if let Some((old, old_opened_ns)) = self.closed_order.pop_front() {
                if self
                    .conns
                    .get(&old)
                    .is_some_and(|c| !c.is_open() && c.opened_ns == old_opened_ns)
                {
                    self.conns.remove(&old);
                }
            }
        }
        self.closed_order.push_back((sk, opened_ns));
    }

    fn count(&mut self, conn: &Conn, add: bool) {
        count(&mut self.gauges, &mut self.phases, conn, add);
    }
}

/// How a state change would close a connection.
#[derive(Clone, Copy)]
struct Close {
    ts_ns: u64,
    /// At TCP_CLOSE: bytes were still queued for the gateway to read.
    queued: bool,
    /// ESTABLISHED -> CLOSE, not by a gateway process: the peer reset it.
    reset: bool,
}

/// Adds (or takes away) what `conn` contributes to the gauges and phase
/// counts: an open connection is tracked, maybe active, maybe in a phase; a
/// closed one contributes nothing. Every change of a connection's lifecycle
/// or protocol state is wrapped in a take-away and an add.
fn count(gauges: &mut Gauges, phases: &mut PhaseCounts, conn: &Conn, add: bool) {
    let Lifecycle::Open { active } = conn.lifecycle else {
        return;
    };
    match conn.role {
        Role::Downstream => {
            adjust(&mut gauges.tracked_downstream, add);
            if active {
                adjust(&mut gauges.downstream_active, add);
            }
        }
        Role::Upstream => {
            adjust(&mut gauges.tracked_upstream, add);
            if active {
                adjust(gauges.upstream_open.entry(conn.peer()).or_default(), add);
            }
        }
    }
    count_phase(phases, conn, add);
}

/// The phase part of [`count`], for a change of the protocol state alone.
fn count_phase(phases: &mut PhaseCounts, conn: &Conn, add: bool) {
    if !conn.is_open() {
        return;
    }
    if let Some(phase) = conn.protocol.phase() {
        phases.adjust(phase, add);
    }
}

/// Gives the events a parser just produced their connection.
fn emit(events: &mut Vec<HttpEvent>, conn: ConnInfo, out: &mut Finished) {
    out.http.extend(events.drain(..).map(|event| (conn, event)));
}
