use super::*;

const TID: u32 = 7;

fn piece(ts_ns: u64, offset: u64, bytes: &[u8]) -> Observation<'_> {
    Observation::Piece {
        sk: 1,
        dir: Direction::Egress,
        tid: TID,
        ts_ns,
        offset,
        bytes,
    }
}

fn data<'a>(tid: u32, ts_ns: u64, len: u64, head: &'a [u8], tail: &'a [u8]) -> Observation<'a> {
    Observation::Data {
        sk: 1,
        dir: Direction::Egress,
        len,
        tgid: 1,
        tid,
        ts_ns,
        head,
        tail,
    }
}

fn head_tail<'a>(obs: &Observation<'a>) -> (&'a [u8], &'a [u8]) {
    match *obs {
        Observation::Data { head, tail, .. } => (head, tail),
        _ => panic!("not a data record: {obs:?}"),
    }
}

#[test]
fn pieces_following_the_head_join_it() {
    let mut j = Joiner::default();
    j.piece(&piece(5, 2, b"cd"));
    j.piece(&piece(5, 4, b"ef"));
    let mut buf = Vec::new();
    let obs = j.join(data(TID, 5, 9, b"ab", b"ghi"), &mut buf);
    assert_eq!(head_tail(&obs), (&b"abcdef"[..], &b"ghi"[..]));
    assert_eq!(j.take_dropped(), 0);
}

#[test]
fn a_tail_the_pieces_reach_is_cut() {
    let mut j = Joiner::default();
    j.piece(&piece(5, 2, b"cdefg"));
    let mut buf = Vec::new();
    // bytes 5..8 are both in the last piece and the tail
    let obs = j.join(data(TID, 5, 8, b"ab", b"fgh"), &mut buf);
    assert_eq!(head_tail(&obs), (&b"abcdefg"[..], &b"h"[..]));
    j.piece(&piece(6, 2, b"cdefgh"));
    let obs = j.join(data(TID, 6, 8, b"ab", b"fgh"), &mut buf);
    assert_eq!(head_tail(&obs), (&b"abcdefgh"[..], &b""[..]));
}

#[test]
fn a_missing_piece_leaves_a_gap_and_counts_what_cannot_join() {
    let mut j = Joiner::default();
    j.piece(&piece(5, 2, b"cd"));
    // the piece at 4 was lost: the one at 6 cannot follow on
    j.piece(&piece(5, 6, b"gh"));
    let mut buf = Vec::new();
    let obs = j.join(data(TID, 5, 12, b"ab", b"kl"), &mut buf);
    assert_eq!(head_tail(&obs), (&b"abcd"[..], &b"kl"[..]));
    assert_eq!(j.take_dropped(), 1);
    // the first piece lost: nothing follows on from the head
    j.piece(&piece(9, 4, b"ef"));
    let obs = j.join(data(TID, 9, 12, b"ab", b"kl"), &mut buf);
    assert_eq!(head_tail(&obs), (&b"ab"[..], &b"kl"[..]));
    assert_eq!(j.take_dropped(), 1);
}

#[test]
fn pieces_go_only_to_their_own_transfer() {
    let mut j = Joiner::default();
    let mut buf = Vec::new();
    j.piece(&piece(5, 2, b"cd"));
    // another thread's record leaves them waiting
    let obs = j.join(data(TID + 1, 5, 6, b"ab", b"ef"), &mut buf);
    assert_eq!(head_tail(&obs), (&b"ab"[..], &b"ef"[..]));
    // a later transfer of the thread (their record was lost) drops them
    let obs = j.join(data(TID, 8, 6, b"ab", b"ef"), &mut buf);
    assert_eq!(head_tail(&obs), (&b"ab"[..], &b"ef"[..]));
    assert_eq!(j.take_dropped(), 1);
    // and pieces of a new transfer replace stale ones
    j.piece(&piece(5, 2, b"cd"));
    j.piece(&piece(9, 2, b"xy"));
    assert_eq!(j.take_dropped(), 1);
    let obs = j.join(data(TID, 9, 4, b"ab", b""), &mut buf);
    assert_eq!(head_tail(&obs), (&b"abxy"[..], &b""[..]));
}
