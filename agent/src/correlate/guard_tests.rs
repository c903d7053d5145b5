//! Unit tests of the correlator's guards on spans that end before they
//! start (exchanges pieced together after lost records, timestamps from
//! two CPUs) and of the guessed leg the metrics take.

use super::tests::{exchange, upstream, Sim, TGID};
use super::*;
use Link::Inferred;

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
