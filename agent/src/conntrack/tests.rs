//! Unit tests of the connection table: lifecycle, gauges, closed and late
//! connections, sweeps, and the HTTP events it finishes.

use gatescope_common::TcpState;

use super::*;
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
pub(super) fn closed_len(table: &ConnTable) -> usize {
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

/// Only a connection to an upstream a `[[genai.provider]]` names reads that
/// provider's API paths without `/v1` (Azure OpenAI's) as GenAI calls.
#[test]
fn connections_to_a_named_genai_provider_read_its_paths_without_v1() {
    const REQ: &[u8] = b"POST /openai/deployments/d/chat/completions HTTP/1.1\r\n\
        Host: up\r\nContent-Length: 2\r\n\r\n{}";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    let data = |dir, ts_ns, head: &'static [u8]| Observation::Data {
        sk: 1,
        dir,
        len: head.len() as u64,
        tgid: 1,
        tid: 1,
        ts_ns,
        head,
        tail: b"",
    };
    for named in [false, true] {
        let mut t = ConnTable::new(10);
        if named {
            t.set_genai_peers([UP.parse().unwrap()].into());
        }
        open(&mut t, 1, Role::Upstream, ep("127.0.0.1:40000", UP));
        apply(&mut t, &data(Direction::Egress, 10, REQ));
        let out = apply(&mut t, &data(Direction::Ingress, 20, RESP));
        let genai: Vec<bool> = out
            .http
            .iter()
            .filter_map(|(_, e)| match e {
                // a candidate elsewhere, which the labeller drops unless
                // confirmed (label/mod.rs)
                HttpEvent::Exchange(x) => Some(x.genai.as_ref().is_some_and(|g| !g.candidate)),
                HttpEvent::Anomaly(_) => None,
            })
            .collect();
        assert_eq!(genai, vec![named], "named {named}");
    }
}
