//! Unit tests of the correlator's guards: processes whose threads share
//! connections (linked by headers only), spans that end before they start
//! (exchanges pieced together after lost records, timestamps from two
//! CPUs), and the guessed leg the metrics take.

use super::tests::{client, exchange, upstream, Sim, TGID, TID};
use super::*;
use Link::{Evidence, Inferred};

#[test]
fn an_exchange_ending_before_its_start_after_lost_records_does_not_panic() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    let w = s.write_up(1);
    let a = s.read_up(1);
    s.up_done(1, 200, w, a);
    // Pieced together after lost records: its last response byte stamped
    // before its first request byte.
    let e = exchange("/same", 200, (a + 100, a + 100), (r, r));
    let _ = s.down_done(1, &e);
}

#[test]
fn an_exchange_that_ends_before_it_starts_links_nothing_and_does_not_panic() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    let w = s.write_up(1);
    let a = s.read_up(1);
    s.up_done(1, 200, w, a);
    let o = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r, r), (o, o))),
        [(1, w, Inferred)]
    );
    // The process's queue is empty now but kept; a span whose end (its
    // last response byte, timestamped on another CPU) is before its start
    // is an empty range, not a panic.
    assert!(s
        .down_done(2, &exchange("/b", 200, (o + 5, o + 5), (o + 1, o + 1)))
        .is_empty());
    // And with an attempt waiting.
    let w2 = s.write_up(1);
    let a2 = s.read_up(1);
    s.up_done(1, 200, w2, a2);
    assert!(s
        .down_done(2, &exchange("/b", 200, (a2 + 5, a2 + 5), (a2 + 1, a2 + 1)))
        .is_empty());
}

#[test]
fn the_guessed_leg_is_a_waiting_call_inside_the_request() {
    let mut s = Sim::default();
    s.up_done(1, 200, 10, 20);
    s.up_done(2, 200, 120, 150);
    s.up_done(3, 200, 150, 250);
    let leg =
        s.c.guess_leg(TGID, &exchange("/same", 200, (100, 100), (200, 200)))
            .unwrap();
    assert_eq!((leg.peer, leg.first_ns), (upstream(2).remote, 120));
    // A request that ends before it starts has none.
    assert!(s
        .c
        .guess_leg(TGID, &exchange("/same", 200, (200, 200), (100, 100)))
        .is_none());
}

#[test]
fn threads_that_share_a_process_link_by_headers_only() {
    // Two threads of one process (HAProxy's nbthread): thread 8 reads
    // client 2 and thread 7 writes upstream right after its own read of
    // client 1, as a single-threaded worker would; but the process's threads
    // share connections, so the order vouches for nothing.
    let mut s = Sim::default();
    let io = |s: &mut Sim, tid: u32, io: Io| s.c.io(TGID, tid, io);
    let r1 = s.tick();
    io(
        &mut s,
        TID,
        Io::ClientRead {
            conn: client(1),
            len: 100,
            ts: r1,
        },
    );
    let r2 = s.tick();
    io(
        &mut s,
        8,
        Io::ClientRead {
            conn: client(2),
            len: 100,
            ts: r2,
        },
    );
    let w1 = s.write_up(1);
    let a1 = s.read_up(1);
    s.up_done(1, 200, w1, a1);
    let o1 = s.write_client(1);
    assert_eq!(s.down_done(1, &exchange("/a", 200, (r1, r1), (o1, o1))), []);
    // A request and a call that carry the same header are linked, and only
    // that call of those waiting: the rest are not even looked at.
    let r3 = s.read_client(3);
    let (w2, w4) = (s.write_up(2), s.write_up(4));
    let (a2, a4) = (s.read_up(2), s.read_up(4));
    let tagged = |mut e: Exchange| {
        e.trace.request_id = Some("req-3".into());
        e
    };
    for (n, e) in [
        (2, exchange("/same", 200, (w2, w2), (a2, a2))),
        (4, tagged(exchange("/same", 200, (w4, w4), (a4, a4)))),
    ] {
        let u = upstream(n);
        s.c.upstream_done(TGID, &e, u.local, u.remote);
    }
    let o3 = s.write_client(3);
    let down = tagged(exchange("/c", 200, (r3, r3), (o3, o3)));
    assert_eq!(s.down_done(3, &down), [(4, w4, Evidence)]);
}
