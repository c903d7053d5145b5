//! Unit tests of the connection table's late and deferred connections:
//! parsing after the kernel's close, and what closing flushes.

use gatescope_common::TcpState;

use super::tests::{closed_len, ep, CLIENT, GW, UP};
use super::*;
use crate::http::Exchange;

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
