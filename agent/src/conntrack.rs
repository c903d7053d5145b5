//! Stage 2, the connection table: follows each tracked TCP socket from open to
//! close and turns observations into facts the export stage counts.
//!
//! "Open" follows nginx's stub_status: a downstream connection is active from
//! the moment it is established until the gateway closes its side (FIN_WAIT1,
//! LAST_ACK) or the socket dies (CLOSE); a peer's half-close (CLOSE_WAIT)
//! leaves it active because the gateway may still be writing. An upstream
//! connection is open from connect() (SYN_SENT) on, by the same rule.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
};

use rustc_hash::FxHashMap;

use gatescope_common::TcpState;

use crate::capture::decode::{Direction, Endpoints, Observation, Role, TcpEvent};

/// What the export stage counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// accept() returned a connection in a target.
    Accepted,
    /// The gateway read from a downstream connection for the first time.
    Handled,
    DownstreamBytes {
        port: u16,
        dir: Direction,
        len: u64,
    },
    UpstreamOpened {
        peer: SocketAddr,
    },
    UpstreamBytes {
        peer: SocketAddr,
        dir: Direction,
        len: u64,
    },
    /// Bytes on a target socket whose open was not seen (open before start,
    /// or not TCP-tracked), so they are still accounted for.
    UntrackedBytes {
        dir: Direction,
        len: u64,
    },
    /// A retransmission or reset on a client connection (by listening port).
    DownstreamTcp {
        port: u16,
        event: TcpEvent,
    },
    /// A retransmission or reset on a connection to an upstream peer.
    UpstreamTcp {
        peer: SocketAddr,
        event: TcpEvent,
    },
    /// The table was full and a connection could not be tracked.
    TableFull,
}

#[derive(Clone, Debug)]
struct Conn {
    role: Role,
    endpoints: Endpoints,
    open: bool,
    handled: bool,
    /// The gateway process that last moved bytes on it (a worker).
    tgid: u32,
    /// Time of its open record, as the kernel's socket map also keeps it.
    opened_ns: u64,
}

impl Conn {
    fn info(&self) -> ConnInfo {
        ConnInfo {
            role: self.role,
            endpoints: self.endpoints,
            tgid: self.tgid,
        }
    }
}

/// Closed connections remembered for the bytes read after their close.
const CLOSED_KEEP: usize = 4096;

/// What later stages need to know about a tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub role: Role,
    pub endpoints: Endpoints,
    pub tgid: u32,
}

/// Gauges derived from the table, maintained incrementally so they always
/// agree with its content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub downstream_active: u64,
    pub upstream_open: HashMap<SocketAddr, u64>,
    pub tracked_downstream: u64,
    pub tracked_upstream: u64,
}

pub struct ConnTable {
    /// By socket address. FxHash: these are looked up once or more per
    /// record, and the keys (kernel addresses) are not attacker-chosen.
    conns: FxHashMap<u64, Conn>,
    gauges: Gauges,
    capacity: usize,
    /// Missing from the kernel at the last [`ConnTable::sweep`].
    suspects: HashSet<u64>,
    /// The last [`CLOSED_KEEP`] connections closed, oldest first in
    /// `closed_order` (with their open time, to tell a socket address closed
    /// twice apart). The gateway can still read bytes on a closed socket: a
    /// request queued before a client's reset is read after the reset closed
    /// it, even when the socket had not been accepted yet. Those bytes are
    /// the closed connection's; they neither reopen it nor go untracked.
    closed: FxHashMap<u64, Conn>,
    closed_order: VecDeque<(u64, u64)>,
}

fn is_open_state(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::SYN_SENT | TcpState::ESTABLISHED | TcpState::CLOSE_WAIT
    )
}

impl ConnTable {
    pub fn new(capacity: usize) -> Self {
        ConnTable {
            conns: FxHashMap::default(),
            gauges: Gauges::default(),
            capacity,
            suspects: HashSet::new(),
            closed: FxHashMap::default(),
            closed_order: VecDeque::new(),
        }
    }

    pub fn info(&self, sk: u64) -> Option<ConnInfo> {
        self.conns.get(&sk).map(Conn::info)
    }

    /// A connection closed lately (see `closed`).
    pub fn closed_info(&self, sk: u64) -> Option<ConnInfo> {
        self.closed.get(&sk).map(Conn::info)
    }

    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    /// Recovers from close records lost to a full ring buffer: connections
    /// the kernel no longer tracks are dropped, with their gauges.
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
            .filter(|(&sk, conn)| in_kernel(sk) != Some(conn.opened_ns))
            .map(|(&sk, _)| sk)
            .collect();
        let gone: Vec<u64> = missing.intersection(&self.suspects).copied().collect();
        for &sk in &gone {
            self.remove(sk);
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

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Applies one observation, appending what it means to `facts`.
    pub fn apply(&mut self, obs: &Observation, facts: &mut Vec<Fact>) {
        match *obs {
            Observation::ConnOpen {
                sk,
                role,
                endpoints,
                ts_ns,
                ..
            } => self.open(sk, role, endpoints, ts_ns, false, facts),
            // Open before we started: active from now on, but it was neither
            // accepted nor opened while we watched, nor is it new to handle.
            Observation::ConnFound {
                sk,
                role,
                endpoints,
                ts_ns,
            } => self.open(sk, role, endpoints, ts_ns, true, facts),
            Observation::State {
                sk, new, endpoints, ..
            } => self.change_state(sk, new, endpoints),
            Observation::Data {
                sk, dir, len, tgid, ..
            } => self.bytes(sk, dir, len, tgid, facts),
            Observation::Accept { .. } => facts.push(Fact::Accepted),
            Observation::Tcp { sk, event } => {
                if let Some(conn) = self.conns.get(&sk) {
                    facts.push(tcp_fact(conn.role, &conn.endpoints, event));
                }
            }
            Observation::TcpClosed {
                role,
                endpoints,
                event,
            } => facts.push(tcp_fact(role, &endpoints, event)),
            // The process and listener stage (pipeline.rs) handles these.
            Observation::Fork { .. }
            | Observation::Exit { .. }
            | Observation::Exec { .. }
            | Observation::Listen { .. } => {}
        }
    }

    fn open(
        &mut self,
        sk: u64,
        role: Role,
        endpoints: Endpoints,
        opened_ns: u64,
        found: bool,
        facts: &mut Vec<Fact>,
    ) {
        // The same address again without a close seen (its event lost, or
        // the socket freed unseen): the kernel reused the socket memory. End
        // the old one first.
        self.remove(sk);
        self.closed.remove(&sk);
        if self.conns.len() >= self.capacity {
            facts.push(Fact::TableFull);
            return;
        }
        let conn = Conn {
            role,
            endpoints,
            open: false,
            handled: found,
            tgid: 0,
            opened_ns,
        };
        self.conns.insert(sk, conn);
        match role {
            Role::Downstream => self.gauges.tracked_downstream += 1,
            Role::Upstream => {
                self.gauges.tracked_upstream += 1;
                if !found {
                    facts.push(Fact::UpstreamOpened {
                        peer: endpoints.remote,
                    });
                }
            }
        }
        self.set_open(sk, true);
    }

    fn change_state(&mut self, sk: u64, new: TcpState, endpoints: Endpoints) {
        let Some(conn) = self.conns.get_mut(&sk) else {
            return;
        };
        // The local port of an active open is assigned after SYN_SENT.
        conn.endpoints.local = endpoints.local;
        if new == TcpState::CLOSE {
            self.remove(sk);
        } else {
            self.set_open(sk, is_open_state(new));
        }
    }

    fn bytes(&mut self, sk: u64, dir: Direction, len: u64, tgid: u32, facts: &mut Vec<Fact>) {
        let Some(conn) = self.conns.get_mut(&sk).or_else(|| self.closed.get_mut(&sk)) else {
            if len > 0 {
                facts.push(Fact::UntrackedBytes { dir, len });
            }
            return;
        };
        conn.tgid = tgid;
        if conn.role == Role::Downstream && dir == Direction::Ingress && !conn.handled {
            conn.handled = true;
            facts.push(Fact::Handled);
        }
        if len == 0 {
            return;
        }
        facts.push(match conn.role {
            Role::Downstream => Fact::DownstreamBytes {
                port: conn.endpoints.local.port(),
                dir,
                len,
            },
            Role::Upstream => Fact::UpstreamBytes {
                peer: conn.endpoints.remote,
                dir,
                len,
            },
        });
    }

    fn set_open(&mut self, sk: u64, open: bool) {
        let Some(conn) = self.conns.get_mut(&sk) else {
            return;
        };
        if conn.open == open {
            return;
        }
        conn.open = open;
        match conn.role {
            Role::Downstream => adjust(&mut self.gauges.downstream_active, open),
            Role::Upstream => {
                let peer = conn.endpoints.remote;
                let count = self.gauges.upstream_open.entry(peer).or_default();
                adjust(count, open);
            }
        }
    }

    fn remove(&mut self, sk: u64) {
        self.set_open(sk, false);
        if let Some(conn) = self.conns.remove(&sk) {
            match conn.role {
                Role::Downstream => self.gauges.tracked_downstream -= 1,
                Role::Upstream => self.gauges.tracked_upstream -= 1,
            }
            self.remember_closed(sk, conn);
        }
    }

    fn remember_closed(&mut self, sk: u64, conn: Conn) {
        if self.closed_order.len() == CLOSED_KEEP {
            if let Some((old, opened_ns)) = self.closed_order.pop_front() {
                if self
                    .closed
                    .get(&old)
                    .is_some_and(|c| c.opened_ns == opened_ns)
                {
                    self.closed.remove(&old);
                }
            }
        }
        self.closed_order.push_back((sk, conn.opened_ns));
        self.closed.insert(sk, conn);
    }
}

fn adjust(value: &mut u64, up: bool) {
    if up {
        *value += 1;
    } else {
        *value = value.saturating_sub(1);
    }
}

/// A TCP event, per listener for client connections and per peer upstream.
fn tcp_fact(role: Role, endpoints: &Endpoints, event: TcpEvent) -> Fact {
    match role {
        Role::Downstream => Fact::DownstreamTcp {
            port: endpoints.local.port(),
            event,
        },
        Role::Upstream => Fact::UpstreamTcp {
            peer: endpoints.remote,
            event,
        },
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn ep(local: &str, remote: &str) -> Endpoints {
        Endpoints {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
        }
    }
    const CLIENT: &str = "127.0.0.1:50000";
    const GW: &str = "127.0.0.1:8080";
    const UP: &str = "127.0.0.1:9000";

    fn open(table: &mut ConnTable, sk: u64, role: Role, endpoints: Endpoints) -> Vec<Fact> {
        let mut facts = vec![];
        table.apply(
            &Observation::ConnOpen {
                sk,
                role,
                endpoints,
                ts_ns: 0,
                handshake: None,
            },
            &mut facts,
        );
        facts
    }
    fn state(table: &mut ConnTable, sk: u64, new: TcpState, endpoints: Endpoints) {
        table.apply(
            &Observation::State {
                sk,
                old: TcpState(0),
                new,
                endpoints,
                ts_ns: 0,
                queued: 0,
            },
            &mut vec![],
        );
    }
    fn bytes(table: &mut ConnTable, sk: u64, dir: Direction, len: u64) -> Vec<Fact> {
        let mut facts = vec![];
        let obs = Observation::Data {
            sk,
            dir,
            len,
            tgid: 1,
            ts_ns: 0,
            head: b"",
            tail: b"",
        };
        table.apply(&obs, &mut facts);
        facts
    }

    #[test]
    fn downstream_lifecycle_gateway_closes() {
        let mut t = ConnTable::new(10);
        let e = ep(GW, CLIENT);
        assert!(open(&mut t, 1, Role::Downstream, e).is_empty());
        assert_eq!(t.gauges().downstream_active, 1);
        assert_eq!(
            bytes(&mut t, 1, Direction::Ingress, 100),
            vec![
                Fact::Handled,
                Fact::DownstreamBytes {
                    port: 8080,
                    dir: Direction::Ingress,
                    len: 100
                }
            ]
        );
        // Handled only once.
        assert_eq!(bytes(&mut t, 1, Direction::Ingress, 5).len(), 1);
        state(&mut t, 1, TcpState::FIN_WAIT1, e);
        assert_eq!(t.gauges().downstream_active, 0);
        assert_eq!(
            t.len(),
            1,
            "kept until CLOSE so late bytes are still attributed"
        );
        state(&mut t, 1, TcpState::FIN_WAIT2, e);
        state(&mut t, 1, TcpState::CLOSE, e);
        assert_eq!(
            (
                t.len(),
                t.gauges().tracked_downstream,
                t.gauges().downstream_active
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn peer_half_close_stays_active_until_gateway_closes() {
        let mut t = ConnTable::new(10);
        let e = ep(GW, CLIENT);
        open(&mut t, 1, Role::Downstream, e);
        state(&mut t, 1, TcpState::CLOSE_WAIT, e);
        assert_eq!(t.gauges().downstream_active, 1);
        // An EOF read is the gateway handling the connection, with no bytes.
        assert_eq!(bytes(&mut t, 1, Direction::Ingress, 0), vec![Fact::Handled]);
        state(&mut t, 1, TcpState::LAST_ACK, e);
        assert_eq!(t.gauges().downstream_active, 0);
        state(&mut t, 1, TcpState::CLOSE, e);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn upstream_counts_per_peer_and_learns_local_port() {
        let mut t = ConnTable::new(10);
        let connecting = ep("0.0.0.0:0", UP);
        let peer: SocketAddr = UP.parse().unwrap();
        assert_eq!(
            open(&mut t, 7, Role::Upstream, connecting),
            vec![Fact::UpstreamOpened { peer }]
        );
        open(&mut t, 8, Role::Upstream, connecting);
        assert_eq!(t.gauges().upstream_open[&peer], 2);
        state(&mut t, 7, TcpState::ESTABLISHED, ep("127.0.0.1:40000", UP));
        assert_eq!(
            bytes(&mut t, 7, Direction::Egress, 300),
            vec![Fact::UpstreamBytes {
                peer,
                dir: Direction::Egress,
                len: 300
            }]
        );
        // Refused connect: SYN_SENT -> CLOSE.
        state(&mut t, 8, TcpState::CLOSE, connecting);
        assert_eq!(t.gauges().upstream_open[&peer], 1);
        state(&mut t, 7, TcpState::CLOSE, connecting);
        assert_eq!(t.gauges().upstream_open[&peer], 0);
        assert_eq!(t.gauges().tracked_upstream, 0);
    }

    #[test]
    fn unknown_sockets_and_reuse_and_capacity() {
        let mut t = ConnTable::new(1);
        assert_eq!(
            bytes(&mut t, 99, Direction::Egress, 10),
            vec![Fact::UntrackedBytes {
                dir: Direction::Egress,
                len: 10
            }]
        );
        assert!(bytes(&mut t, 99, Direction::Ingress, 0).is_empty());
        state(&mut t, 99, TcpState::CLOSE, ep(GW, CLIENT)); // ignored
        open(&mut t, 1, Role::Downstream, ep(GW, CLIENT));
        // Same address opens again without a close: one connection, not two.
        open(&mut t, 1, Role::Downstream, ep(GW, "127.0.0.1:50001"));
        assert_eq!((t.len(), t.gauges().downstream_active), (1, 1));
        assert_eq!(
            open(&mut t, 2, Role::Downstream, ep(GW, CLIENT)),
            vec![Fact::TableFull]
        );
        assert_eq!(t.gauges().downstream_active, 1);
    }

    #[test]
    fn bytes_read_after_the_close_are_the_closed_connections() {
        let mut t = ConnTable::new(10);
        open(&mut t, 1, Role::Downstream, ep(GW, CLIENT));
        // The client's reset closed it before the gateway read its request.
        state(&mut t, 1, TcpState::CLOSE, ep(GW, CLIENT));
        let port = ep(GW, CLIENT).local.port();
        assert_eq!(
            bytes(&mut t, 1, Direction::Ingress, 43),
            vec![
                Fact::Handled,
                Fact::DownstreamBytes {
                    port,
                    dir: Direction::Ingress,
                    len: 43
                }
            ]
        );
        assert_eq!(bytes(&mut t, 1, Direction::Ingress, 0), vec![]);
        // Not reopened.
        let g = t.gauges();
        assert_eq!(
            (t.len(), g.downstream_active, g.tracked_downstream),
            (0, 0, 0)
        );
        // A new connection at the address ends the closed one's claim.
        open(&mut t, 1, Role::Upstream, ep("127.0.0.1:40000", UP));
        state(&mut t, 1, TcpState::CLOSE, ep("127.0.0.1:40000", UP));
        assert!(matches!(
            bytes(&mut t, 1, Direction::Ingress, 5)[..],
            [Fact::UpstreamBytes { len: 5, .. }]
        ));
    }

    #[test]
    fn closed_connections_are_remembered_up_to_a_bound() {
        let mut t = ConnTable::new(CLOSED_KEEP + 10);
        for sk in 0..CLOSED_KEEP as u64 + 1 {
            open(&mut t, sk, Role::Downstream, ep(GW, CLIENT));
            state(&mut t, sk, TcpState::CLOSE, ep(GW, CLIENT));
        }
        assert_eq!(t.closed.len(), CLOSED_KEEP);
        assert!(matches!(
            bytes(&mut t, 0, Direction::Egress, 7)[..],
            [Fact::UntrackedBytes { len: 7, .. }]
        ));
        assert!(matches!(
            bytes(&mut t, 1, Direction::Egress, 7)[..],
            [Fact::DownstreamBytes { len: 7, .. }]
        ));
    }

    #[test]
    fn accept_is_a_fact() {
        let mut t = ConnTable::new(1);
        let mut facts = vec![];
        t.apply(&Observation::Accept { tgid: 1 }, &mut facts);
        assert_eq!(facts, vec![Fact::Accepted]);
    }

    #[test]
    fn found_connections_are_active_but_not_accepted_opened_or_newly_handled() {
        let mut t = ConnTable::new(10);
        let mut facts = vec![];
        let found = |sk, role, endpoints| Observation::ConnFound {
            sk,
            role,
            endpoints,
            ts_ns: 0,
        };
        t.apply(&found(1, Role::Downstream, ep(GW, CLIENT)), &mut facts);
        t.apply(
            &found(2, Role::Upstream, ep("127.0.0.1:40000", UP)),
            &mut facts,
        );
        assert_eq!(facts, vec![], "no accepted, opened or handled");
        let peer: SocketAddr = UP.parse().unwrap();
        assert_eq!(
            (
                t.gauges().downstream_active,
                t.gauges().upstream_open[&peer]
            ),
            (1, 1)
        );
        // Their bytes are attributed from now on.
        assert_eq!(
            bytes(&mut t, 1, Direction::Ingress, 40),
            vec![Fact::DownstreamBytes {
                port: 8080,
                dir: Direction::Ingress,
                len: 40
            }]
        );
        state(&mut t, 1, TcpState::CLOSE, ep(GW, CLIENT));
        assert_eq!(t.gauges().downstream_active, 0);
    }

    #[test]
    fn sweep_drops_only_connections_missing_twice() {
        let mut t = ConnTable::new(16);
        let mut facts = Vec::new();
        let ep = Endpoints {
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
        };
        for sk in [1, 2, 3] {
            t.apply(
                &Observation::ConnOpen {
                    sk,
                    role: Role::Downstream,
                    endpoints: ep,
                    ts_ns: 0,
                    handshake: None,
                },
                &mut facts,
            );
        }
        assert_eq!(t.gauges().downstream_active, 3);
        // The kernel lost 2 and 3 (3's close is still queued); 4's address
        // was reused by a connection whose open record was lost.
        t.apply(
            &Observation::ConnOpen {
                sk: 4,
                role: Role::Downstream,
                endpoints: ep,
                ts_ns: 40,
                handshake: None,
            },
            &mut facts,
        );
        let kernel = |sk: u64| match sk {
            1 => Some(0),
            4 => Some(41),
            _ => None,
        };
        assert!(t.sweep(kernel).is_empty());
        t.apply(
            &Observation::State {
                sk: 3,
                old: TcpState::ESTABLISHED,
                new: TcpState::CLOSE,
                endpoints: ep,
                ts_ns: 1,
                queued: 0,
            },
            &mut facts,
        );
        let mut gone = t.sweep(kernel);
        gone.sort();
        assert_eq!(gone, vec![2, 4]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.gauges().downstream_active, 1);
        assert_eq!(t.gauges().tracked_downstream, 1);
        assert!(t.sweep(kernel).is_empty());
    }
}
