//! Unit tests of the connection table: lifecycle, gauges, closed and late
//! connections, sweeps, and the HTTP events it finishes.

use gatescope_common::TcpState;

use super::*;
use crate::http::Exchange;
use gatescope_common::ListenKey;

pub(super) fn ep(local: &str, remote: &str) -> Endpoints {
    Endpoints {
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
    }
}
pub(super) const CLIENT: &str = "127.0.0.1:50000";
pub(super) const GW: &str = "127.0.0.1:8080";
pub(super) const UP: &str = "127.0.0.1:9000";

/// Applies `obs` at `Instant::now()`.
pub(super) fn apply(table: &mut ConnTable, obs: &Observation) -> Finished {
    let mut out = Finished::default();
    table.apply(obs, Instant::now, &mut out);
    out
}
pub(super) fn open(table: &mut ConnTable, sk: u64, role: Role, endpoints: Endpoints) -> Vec<Fact> {
    let obs = Observation::ConnOpen {
        netns: 0,
        sk,
        role,
        endpoints,
        ts_ns: 0,
        handshake: None,
        tid: 0,
    };
    apply(table, &obs).facts
}
pub(super) fn state(table: &mut ConnTable, sk: u64, new: TcpState, endpoints: Endpoints) {
    let obs = Observation::State {
        sk,
        old: TcpState(0),
        new,
        endpoints,
        ts_ns: 0,
        queued: 0,
        by_target: false,
    };
    apply(table, &obs);
}
pub(super) fn bytes(table: &mut ConnTable, sk: u64, dir: Direction, len: u64) -> Vec<Fact> {
    let obs = Observation::Data {
        sk,
        dir,
        len,
        tgid: 1,
        tid: 1,
        ts_ns: 0,
        head: b"",
        tail: b"",
    };
    apply(table, &obs).facts
}
/// Remembered closed connections (late ones included).
fn closed_len(table: &ConnTable) -> usize {
    table.conns.values().filter(|c| !c.is_open()).count()
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
            Fact::Accepted,
            Fact::Handled,
            Fact::DownstreamBytes {
                listener: ListenKey::new(0, 8080),
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
    assert_eq!(
        bytes(&mut t, 1, Direction::Ingress, 0),
        vec![Fact::Accepted, Fact::Handled]
    );
    state(&mut t, 1, TcpState::LAST_ACK, e);
    assert_eq!(t.gauges().downstream_active, 0);
    state(&mut t, 1, TcpState::CLOSE, e);
    assert_eq!(t.len(), 0);
}

#[test]
fn upstream_counts_per_peer_and_learns_local_port() {
    let mut t = ConnTable::new(10);
    let connecting = ep("0.0.0.0:0", UP);
    let peer = Peer {
        netns: 0,
        addr: UP.parse().unwrap(),
    };
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
            Fact::Accepted,
            Fact::Handled,
            Fact::DownstreamBytes {
                listener: ListenKey::new(0, port),
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
    for sk in 0..=(CLOSED_KEEP as u64) {
        open(&mut t, sk, Role::Downstream, ep(GW, CLIENT));
        state(&mut t, sk, TcpState::CLOSE, ep(GW, CLIENT));
    }
    assert_eq!(closed_len(&t), CLOSED_KEEP);
    assert!(matches!(
        bytes(&mut t, 0, Direction::Egress, 7)[..],
        [Fact::UntrackedBytes { len: 7, .. }]
    ));
    assert!(matches!(
        bytes(&mut t, 1, Direction::Egress, 7)[..],
        [Fact::Accepted, Fact::DownstreamBytes { len: 7, .. }]
    ));
}

#[test]
fn found_connections_are_active_but_not_accepted_opened_or_newly_handled() {
    let mut t = ConnTable::new(10);
    let mut facts = vec![];
    let found = |sk, role, endpoints| Observation::ConnFound {
        netns: 0,
        sk,
        role,
        endpoints,
        ts_ns: 0,
    };
    facts.extend(apply(&mut t, &found(1, Role::Downstream, ep(GW, CLIENT))).facts);
    facts.extend(apply(&mut t, &found(2, Role::Upstream, ep("127.0.0.1:40000", UP))).facts);
    assert_eq!(facts, vec![], "no accepted, opened or handled");
    let peer = Peer {
        netns: 0,
        addr: UP.parse().unwrap(),
    };
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
            listener: ListenKey::new(0, 8080),
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
        facts.extend(
            apply(
                &mut t,
                &Observation::ConnOpen {
                    netns: 0,
                    sk,
                    role: Role::Downstream,
                    endpoints: ep,
                    ts_ns: 0,
                    handshake: None,
                    tid: 0,
                },
            )
            .facts,
        );
    }
    assert_eq!(t.gauges().downstream_active, 3);
    // The kernel lost 2 and 3 (3's close is still queued); 4's address
    // was reused by a connection whose open record was lost.
    facts.extend(
        apply(
            &mut t,
            &Observation::ConnOpen {
                netns: 0,
                sk: 4,
                role: Role::Downstream,
                endpoints: ep,
                ts_ns: 40,
                handshake: None,
                tid: 0,
            },
        )
        .facts,
    );
    let kernel = |sk: u64| match sk {
        1 => Some(0),
        4 => Some(41),
        _ => None,
    };
    assert!(t.sweep(kernel).is_empty());
    facts.extend(
        apply(
            &mut t,
            &Observation::State {
                sk: 3,
                old: TcpState::ESTABLISHED,
                new: TcpState::CLOSE,
                endpoints: ep,
                ts_ns: 1,
                queued: 0,
                by_target: false,
            },
        )
        .facts,
    );
    let mut gone = t.sweep(kernel);
    gone.sort_unstable();
    assert_eq!(gone, vec![2, 4]);
    assert_eq!(t.len(), 1);
    assert_eq!(t.gauges().downstream_active, 1);
    assert_eq!(t.gauges().tracked_downstream, 1);
    assert!(t.sweep(kernel).is_empty());
}

// Late and deferred connections: parsing after the kernel's close.

fn open_at(table: &mut ConnTable, sk: u64, role: Role, endpoints: Endpoints, t: Instant) {
    let obs = Observation::ConnOpen {
        netns: 0,
        sk,
        role,
        endpoints,
        ts_ns: 0,
        handshake: None,
        tid: 0,
    };
    table.apply(&obs, || t, &mut Finished::default());
}
/// A `new` state at `ts_ns` with `queued` buffers left to read.
fn state_at(
    table: &mut ConnTable,
    sk: u64,
    new: TcpState,
    endpoints: Endpoints,
    (ts_ns, queued): (u64, u32),
    t: Instant,
    out: &mut Finished,
) {
    let obs = Observation::State {
        sk,
        old: TcpState::ESTABLISHED,
        new,
        endpoints,
        ts_ns,
        queued,
        by_target: false,
    };
    table.apply(&obs, || t, out);
}
fn data_at(
    table: &mut ConnTable,
    sk: u64,
    dir: Direction,
    (ts_ns, bytes): (u64, &[u8]),
    t: Instant,
    out: &mut Finished,
) {
    let obs = Observation::Data {
        sk,
        dir,
        len: bytes.len() as u64,
        tgid: 1,
        tid: 1,
        ts_ns,
        head: bytes,
        tail: &[],
    };
    table.apply(&obs, || t, out);
}
/// The exchanges finished, with the connection each was on.
fn exchanges(out: &Finished) -> Vec<(ConnInfo, &Exchange)> {
    out.http
        .iter()
        .map(|(conn, event)| match event {
            HttpEvent::Exchange(ex) => (*conn, ex),
            HttpEvent::Anomaly(a) => panic!("anomaly {a:?}"),
        })
        .collect()
}

#[test]
fn late_reads_of_a_closed_client_connection_end_as_abandoned() {
    let mut t = ConnTable::new(10);
    let mut out = Finished::default();
    let t0 = Instant::now();
    let e = ep(GW, CLIENT);
    // The client reset an unaccepted connection with its request queued.
    open_at(&mut t, 7, Role::Downstream, e, t0);
    state_at(&mut t, 7, TcpState::CLOSE, e, (90, 1), t0, &mut out);
    // The head arrives in two reads, after the kernel closed the socket.
    let head = [&b"GET /a?x=1 HTTP/1.1\r\nHo"[..], b"st: gs\r\n\r\n"];
    data_at(&mut t, 7, Direction::Ingress, (100, head[0]), t0, &mut out);
    data_at(&mut t, 7, Direction::Ingress, (150, head[1]), t0, &mut out);
    data_at(&mut t, 7, Direction::Ingress, (160, b""), t0, &mut out);
    assert!(out.http.is_empty());
    assert_eq!(t.phases(), PhaseCounts::default(), "not active");
    assert!(t.idle_late(t0 + LATE_IDLE / 2).is_empty());
    assert_eq!(t.idle_late(t0 + LATE_IDLE), vec![7]);
    assert!(t.end_late(7, &mut out));
    assert!(!t.end_late(7, &mut out));
    let [(conn, ex)] = exchanges(&out)[..] else {
        panic!("{out:?}");
    };
    assert_eq!(
        (
            ex.path.as_str(),
            ex.status,
            ex.request_bytes,
            ex.response_bytes
        ),
        ("/a", 499, 33, 0)
    );
    assert_eq!((ex.request_first_ns, ex.closed_ns), (100, 160));
    assert_eq!(
        (conn.role, conn.endpoints, conn.tgid),
        (Role::Downstream, e, 1)
    );
    assert!(t.idle_late(t0 + LATE_IDLE).is_empty());
    // Its bytes were the closed connection's all along.
    assert_eq!((t.len(), closed_len(&t)), (0, 1));
}

#[test]
fn a_deferred_upstream_call_completes_with_the_response_read_late() {
    let mut t = ConnTable::new(10);
    let mut out = Finished::default();
    let t0 = Instant::now();
    let e = ep("127.0.0.1:40000", UP);
    open_at(&mut t, 3, Role::Upstream, e, t0);
    let req = b"GET /x HTTP/1.1\r\nHost: up\r\n\r\n";
    data_at(&mut t, 3, Direction::Egress, (10, req), t0, &mut out);
    // The upstream answered and reset before the gateway read.
    state_at(&mut t, 3, TcpState::CLOSE, e, (20, 1), t0, &mut out);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    data_at(&mut t, 3, Direction::Ingress, (30, resp), t0, &mut out);
    let [(conn, ex)] = exchanges(&out)[..] else {
        panic!("{out:?}");
    };
    assert_eq!(
        (ex.status, ex.response_bytes, ex.response_last_ns),
        (200, 40, 30)
    );
    assert_eq!(conn.endpoints.remote, UP.parse().unwrap());
    out.http.clear();
    assert!(t.end_late(3, &mut out));
    assert!(out.http.is_empty(), "{out:?}");
    // An upstream's reset of an established connection is late even with
    // nothing queued: the record of the request write can follow the
    // reset's close (the peer read it and reset before the send tracepoint
    // fired). The gateway's failed read ends it, with the call unanswered.
    open_at(&mut t, 4, Role::Upstream, e, t0);
    state_at(&mut t, 4, TcpState::CLOSE, e, (20, 0), t0, &mut out);
    data_at(&mut t, 4, Direction::Egress, (10, req), t0, &mut out);
    assert!(out.http.is_empty(), "{out:?}");
    let failed = Observation::ReadFailed {
        sk: 4,
        tgid: 1,
        tid: 1,
        ts_ns: 30,
        errno: 104,
    };
    t.apply(&failed, || t0, &mut out);
    let [(_, ex)] = exchanges(&out)[..] else {
        panic!("{out:?}");
    };
    assert_eq!(
        (ex.path.as_str(), ex.status, ex.request_bytes),
        ("/x", 0, 29)
    );
    assert!(!t.end_late(4, &mut out), "ended by the failed read");
    // A graceful close (the last ACK of the upstream's FIN) with nothing
    // queued is not deferred: bytes after it are only counted.
    open_at(&mut t, 6, Role::Upstream, e, t0);
    data_at(&mut t, 6, Direction::Egress, (10, req), t0, &mut out);
    let last_ack = Observation::State {
        sk: 6,
        old: TcpState::LAST_ACK,
        new: TcpState::CLOSE,
        endpoints: e,
        ts_ns: 20,
        queued: 0,
        by_target: false,
    };
    t.apply(&last_ack, || t0, &mut out);
    let mut out = Finished::default();
    data_at(&mut t, 6, Direction::Ingress, (30, resp), t0, &mut out);
    assert!(out.http.is_empty() && t.idle_late(t0 + LATE_IDLE).is_empty());
    assert!(matches!(
        out.facts[..],
        [Fact::UpstreamBytes { len: 40, .. }]
    ));
    // A client's reset with nothing queued (or no BTF to tell) is not
    // deferred either.
    let d = ep(GW, CLIENT);
    open_at(&mut t, 5, Role::Downstream, d, t0);
    state_at(&mut t, 5, TcpState::CLOSE, d, (20, 0), t0, &mut out);
    let mut out = Finished::default();
    let get = b"GET /y HTTP/1.1\r\nHost: gw\r\n\r\n";
    data_at(&mut t, 5, Direction::Ingress, (30, get), t0, &mut out);
    assert!(out.http.is_empty() && t.idle_late(t0 + LATE_IDLE).is_empty());
    assert!(matches!(
        out.facts[..],
        [
            Fact::Accepted,
            Fact::Handled,
            Fact::DownstreamBytes { len: 29, .. }
        ]
    ));
}

#[test]
fn idle_late_connections_end_on_the_tick_or_when_their_address_opens_again() {
    let mut t = ConnTable::new(10);
    let t0 = Instant::now();
    let e = ep(GW, CLIENT);
    let req = b"GET /b HTTP/1.1\r\nHost: gs\r\n\r\n";
    for sk in [1, 2] {
        let mut out = Finished::default();
        open_at(&mut t, sk, Role::Downstream, e, t0);
        state_at(&mut t, sk, TcpState::CLOSE, e, (5, 1), t0, &mut out);
        data_at(&mut t, sk, Direction::Ingress, (sk * 10, req), t0, &mut out);
        assert!(out.http.is_empty());
    }
    let ends = |out: &Finished| -> Vec<(u16, u64)> {
        exchanges(out)
            .iter()
            .map(|(_, ex)| (ex.status, ex.closed_ns))
            .collect()
    };
    let mut out = Finished::default();
    t.end_idle_late(t0 + LATE_IDLE / 2, &mut out);
    assert!(out.http.is_empty());
    // Address 2 opens again: its late request ends at its last read.
    let obs = Observation::ConnOpen {
        netns: 0,
        sk: 2,
        role: Role::Downstream,
        endpoints: e,
        ts_ns: 0,
        handshake: None,
        tid: 0,
    };
    t.apply(&obs, || t0, &mut out);
    assert_eq!(ends(&out), vec![(499, 20)]);
    // Address 1 ends on the tick.
    out.http.clear();
    t.end_idle_late(t0 + LATE_IDLE, &mut out);
    assert_eq!(ends(&out), vec![(499, 10)]);
    assert_eq!(t.phases().waiting, 1, "the reopened connection");
}

#[test]
fn closing_flushes_with_the_connection_and_its_last_worker() {
    let mut t = ConnTable::new(10);
    let t0 = Instant::now();
    let e = ep(GW, CLIENT);
    let mut out = Finished::default();
    open_at(&mut t, 1, Role::Downstream, e, t0);
    assert_eq!(t.phases().waiting, 1);
    let obs = Observation::Data {
        sk: 1,
        dir: Direction::Ingress,
        len: 28,
        tgid: 42,
        tid: 42,
        ts_ns: 10,
        head: b"GET /c HTTP/1.1\r\nHost: g\r\n\r\n",
        tail: &[],
    };
    t.apply(&obs, || t0, &mut out);
    assert_eq!((t.phases().waiting, t.phases().writing), (0, 1));
    // The gateway closes its side before answering: abandoned, on worker 42.
    state_at(&mut t, 1, TcpState::FIN_WAIT1, e, (50, 0), t0, &mut out);
    let [(conn, ex)] = exchanges(&out)[..] else {
        panic!("{out:?}");
    };
    assert_eq!((conn.tgid, ex.status, ex.closed_ns), (42, 499, 50));
    assert_eq!(t.phases(), PhaseCounts::default());
    // Nothing left to flush at the socket's death.
    let mut out = Finished::default();
    state_at(&mut t, 1, TcpState::CLOSE, e, (60, 0), t0, &mut out);
    assert!(out.http.is_empty());
}

#[test]
fn a_connection_the_table_cannot_hold_is_not_parsed_or_phased() {
    let mut t = ConnTable::new(1);
    let t0 = Instant::now();
    open_at(&mut t, 1, Role::Downstream, ep(GW, CLIENT), t0);
    open_at(&mut t, 2, Role::Downstream, ep(GW, "127.0.0.1:50001"), t0);
    assert_eq!(t.phases().waiting, 1);
}

#[test]
fn swept_connections_leave_the_phase_counts_unflushed() {
    let mut t = ConnTable::new(10);
    let t0 = Instant::now();
    let e = ep(GW, CLIENT);
    open_at(&mut t, 1, Role::Downstream, e, t0);
    let mut out = Finished::default();
    data_at(
        &mut t,
        1,
        Direction::Ingress,
        (10, b"GET / HTTP/1.1\r\n"),
        t0,
        &mut out,
    );
    assert_eq!(t.phases().reading, 1);
    assert!(t.sweep(|_| None).is_empty());
    assert_eq!(t.sweep(|_| None), vec![1]);
    assert_eq!(t.phases(), PhaseCounts::default());
    data_at(
        &mut t,
        1,
        Direction::Ingress,
        (20, b"Host: g\r\n\r\n"),
        t0,
        &mut out,
    );
    assert!(out.http.is_empty(), "when it ended is unknown");
}

fn data_obs(sk: u64, ts_ns: u64) -> Observation<'static> {
    Observation::Data {
        sk,
        dir: Direction::Egress,
        len: 10,
        tgid: 1,
        tid: 1,
        ts_ns,
        head: b"",
        tail: b"",
    }
}

#[test]
fn data_on_an_unknown_socket_is_a_lost_open_once_per_gap_while_there_is_room() {
    use super::lost_opens::{RECENT_MAX, RELEASE_GAP};
    let t0 = Instant::now();
    let mut t = ConnTable::new(2);
    open(&mut t, 1, Role::Upstream, ep("127.0.0.1:40000", UP));
    // Known: open, or remembered closed.
    assert_eq!(t.lost_open(&data_obs(1, 5), || t0), None);
    open(&mut t, 2, Role::Downstream, ep(GW, CLIENT));
    state(&mut t, 2, TcpState::CLOSE, ep(GW, CLIENT));
    assert_eq!(t.lost_open(&data_obs(2, 5), || t0), None);
    // The table's own step finds it: untracked bytes and a lost open, and
    // nothing for a known socket.
    let out = apply(&mut t, &data_obs(6, 7));
    assert_eq!(out.facts.len(), 1);
    assert_eq!(out.lost_opens, vec![(6, 7)]);
    assert!(apply(&mut t, &data_obs(1, 8)).lost_opens.is_empty());
    // Not data.
    let exit = Observation::Exit { tgid: 1 };
    assert_eq!(t.lost_open(&exit, || t0), None);
    // Unknown: its time, once per gap.
    assert_eq!(t.lost_open(&data_obs(3, 7), || t0), Some((3, 7)));
    assert_eq!(t.lost_open(&data_obs(3, 8), || t0 + RELEASE_GAP / 2), None);
    assert_eq!(
        t.lost_open(&data_obs(3, 9), || t0 + RELEASE_GAP),
        Some((3, 9))
    );
    // A full table would refuse it again: not released.
    open(&mut t, 4, Role::Downstream, ep(GW, CLIENT));
    assert!(!t.has_room());
    assert_eq!(t.lost_open(&data_obs(5, 9), || t0 + RELEASE_GAP * 3), None);
    // The remembered sockets are bounded.
    let mut t = ConnTable::new(10);
    for sk in 0..RECENT_MAX as u64 {
        assert!(t.lost_open(&data_obs(100 + sk, 1), || t0).is_some());
    }
    assert_eq!(t.lost_open(&data_obs(1, 1), || t0), None);
    assert_eq!(t.released.len(), RECENT_MAX);
    // Once they are older than the gap they make room.
    assert_eq!(
        t.lost_open(&data_obs(1, 1), || t0 + RELEASE_GAP),
        Some((1, 1))
    );
    assert_eq!(t.released.len(), 1);
}

#[test]
fn sweep_releases_old_kernel_entries_the_table_does_not_know_up_to_its_room() {
    let mut t = ConnTable::new(3);
    let at = |table: &mut ConnTable, sk, opened_ns| {
        let obs = Observation::ConnOpen {
            netns: 0,
            sk,
            role: Role::Upstream,
            endpoints: ep("127.0.0.1:40000", UP),
            ts_ns: opened_ns,
            handshake: None,
            tid: 0,
        };
        apply(table, &obs);
    };
    at(&mut t, 1, 10);
    at(&mut t, 2, 20);
    let entries = [
        (1, 10), // the table's
        (2, 25), // another connection at a known address: its open lost
        (3, 30), // unknown
        (4, 90), // unknown but too recent: its open may still be queued
    ];
    // Room for one more connection: one released.
    assert_eq!(t.lost_opens(entries, 50), vec![2]);
    let mut t = ConnTable::new(10);
    at(&mut t, 1, 10);
    at(&mut t, 2, 20);
    assert_eq!(t.lost_opens(entries, 50), vec![2, 3]);
    assert_eq!(t.lost_opens(entries, 100), vec![2, 3, 4]);
    // Remembered closed with the same open time: known.
    state(&mut t, 1, TcpState::CLOSE, ep("127.0.0.1:40000", UP));
    assert_eq!(t.lost_opens([(1, 10)], 50), Vec::<u64>::new());
}
