//! Unit tests of the accepted count derived without hooking accept(): the
//! first thing the gateway does with a client connection, and the accept
//! queues for connections it leaves idle.

use std::collections::HashMap as StdHashMap;

use gatescope_common::TcpState;

use super::tests::{apply, bytes, ep, open, state, CLIENT, GW, UP};
use super::*;

#[test]
fn a_client_connection_is_accepted_at_the_first_thing_the_gateway_does_with_it() {
    let mut t = ConnTable::new(10);
    let accepted = |facts: &[Fact]| facts.iter().filter(|f| **f == Fact::Accepted).count();
    // Established (softirq) is not accepted yet; the first read is, once.
    assert_eq!(
        accepted(&open(&mut t, 1, Role::Downstream, ep(GW, CLIENT))),
        0
    );
    assert_eq!(accepted(&bytes(&mut t, 1, Direction::Ingress, 40)), 1);
    assert_eq!(accepted(&bytes(&mut t, 1, Direction::Egress, 40)), 0);
    assert_eq!(accepted(&bytes(&mut t, 1, Direction::Ingress, 0)), 0);
    // A read that hit end-of-file, or failed (a client's reset), counts.
    open(&mut t, 2, Role::Downstream, ep(GW, "127.0.0.1:50002"));
    assert_eq!(accepted(&bytes(&mut t, 2, Direction::Ingress, 0)), 1);
    open(&mut t, 3, Role::Downstream, ep(GW, "127.0.0.1:50003"));
    let failed = Observation::ReadFailed {
        sk: 3,
        tgid: 1,
        tid: 1,
        ts_ns: 0,
        errno: 104,
    };
    assert_eq!(accepted(&apply(&mut t, &failed).facts), 1);
    // Closed by the gateway without any I/O (nginx over worker_connections).
    open(&mut t, 4, Role::Downstream, ep(GW, "127.0.0.1:50004"));
    let close = |sk, by_target| Observation::State {
        sk,
        old: TcpState::ESTABLISHED,
        new: TcpState::FIN_WAIT1,
        endpoints: ep(GW, "127.0.0.1:50004"),
        ts_ns: 0,
        queued: 0,
        by_target,
    };
    assert_eq!(accepted(&apply(&mut t, &close(4, true)).facts), 1);
    // Closed by the peer (softirq), never touched: not accepted.
    open(&mut t, 5, Role::Downstream, ep(GW, "127.0.0.1:50005"));
    assert_eq!(accepted(&apply(&mut t, &close(5, false)).facts), 0);
    // Upstream connections are never "accepted".
    open(&mut t, 6, Role::Upstream, ep("127.0.0.1:40000", UP));
    assert_eq!(accepted(&bytes(&mut t, 6, Direction::Ingress, 10)), 0);
    // A connection reset while queued, then read by the gateway after its
    // close: accepted then (nginx's accept() returns it).
    open(&mut t, 7, Role::Downstream, ep(GW, "127.0.0.1:50007"));
    state(&mut t, 7, TcpState::CLOSE, ep(GW, "127.0.0.1:50007"));
    assert_eq!(accepted(&bytes(&mut t, 7, Direction::Ingress, 0)), 1);
}

#[test]
fn idle_connections_are_accepted_as_they_leave_the_accept_queue_oldest_first() {
    let mut t = ConnTable::new(10);
    let queued = |pairs: &[(u16, u32)]| pairs.iter().copied().collect::<StdHashMap<u16, u32>>();
    let at = |t: &mut ConnTable, sk, port: u16, ns| {
        let obs = Observation::ConnOpen {
            netns: 0,
            sk,
            role: Role::Downstream,
            endpoints: ep(&format!("127.0.0.1:{port}"), CLIENT),
            ts_ns: ns,
            handshake: None,
            tid: 0,
        };
        apply(t, &obs);
    };
    for (sk, ns) in [(1, 10), (2, 20), (3, 30)] {
        at(&mut t, sk, 8080, ns);
    }
    at(&mut t, 4, 8443, 5);
    let settle = |t: &mut ConnTable, q: &StdHashMap<u16, u32>| {
        let mut out = Finished::default();
        t.settle_accepts(q, &mut out);
        out.facts.iter().filter(|f| **f == Fact::Accepted).count()
    };
    // All three still queued on 8080; 8443 not read: left alone.
    assert_eq!(settle(&mut t, &queued(&[(8080, 3)])), 0);
    // One left the queue: the oldest is counted, once.
    assert_eq!(settle(&mut t, &queued(&[(8080, 2)])), 1);
    assert!(t.conns[&1].accepted && !t.conns[&2].accepted);
    assert_eq!(settle(&mut t, &queued(&[(8080, 2)])), 0);
    // The gateway reads the third (accepted out of order by another
    // listener's queue): counted by the read, and not again.
    assert_eq!(
        bytes(&mut t, 3, Direction::Ingress, 10)
            .iter()
            .filter(|f| **f == Fact::Accepted)
            .count(),
        1
    );
    assert_eq!(settle(&mut t, &queued(&[(8080, 0), (8443, 0)])), 2);
    assert!((1..=4).all(|sk| t.conns[&sk].accepted));
}
