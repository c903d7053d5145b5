//! The body tap: what a [`Stream`] hands a sink as payload, per framing.

use super::*;
use crate::{parse::BodyHeader, testkit::cap};

/// Records payload pieces (known bytes joined while contiguous), cuts and
/// ends; frames every body as its head says.
#[derive(Default)]
struct Tap {
    pieces: Vec<(String, u64)>,
    cuts: usize,
    ends: usize,
}

impl Sink for Tap {
    fn accept_resync(&mut self, _ts: u64) -> bool {
        true
    }

    fn head(&mut self, head: Head, _info: HeadInfo) -> Option<Framing> {
        let Head::Response(h) = head else {
            return Some(Framing::None);
        };
        Some(match h.body {
            BodyHeader::Length(n) => Framing::Length(n),
            BodyHeader::Chunked => Framing::Chunked,
            _ => Framing::Close,
        })
    }

    fn body(&mut self, _bytes: u64, _ts: u64) {}

    fn payload(&mut self, piece: Piece<'_>, ts: u64) {
        let text = match piece {
            Piece::Known(b) => String::from_utf8_lossy(b).into_owned(),
            Piece::Gap(n) => format!("<{n}>"),
        };
        match self.pieces.last_mut() {
            Some((t, at)) if *at == ts && !text.starts_with('<') && !t.ends_with('>') => {
                t.push_str(&text);
            }
            _ => self.pieces.push((text, ts)),
        }
    }

    fn cut(&mut self) {
        self.cuts += 1;
    }

    fn end(&mut self) {
        self.ends += 1;
    }

    fn anomaly(&mut self, _a: Anomaly) {}

    fn lost(&mut self, _ts: u64) {}

    fn clock(&self) -> u64 {
        0
    }
}

fn feed(transfers: &[(&[u8], usize, usize)], close: bool) -> Tap {
    let mut s = Stream::new(Kind::Response);
    let mut tap = Tap::default();
    for (i, &(data, h, t)) in transfers.iter().enumerate() {
        let c = cap(i as u64 + 1, data, h, t);
        s.feed(&c.seg(), &mut tap);
    }
    if close {
        s.close(&mut tap);
    }
    tap
}

fn p(t: &str, ts: u64) -> (String, u64) {
    (t.to_owned(), ts)
}

const ALL: usize = usize::MAX;

#[test]
fn content_length_payload_with_a_gap() {
    let r = b"HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\nabcdefghijklmnopqrstuvwxyz";
    let head = r.len() - 26;
    let tap = feed(&[(&r[..head + 4], ALL, 0), (&r[head + 4..], 3, 4)], false);
    assert_eq!(
        tap.pieces,
        vec![p("abcd", 1), p("efg", 2), p("<15>", 2), p("wxyz", 2)]
    );
    assert_eq!((tap.cuts, tap.ends), (0, 1));
}

#[test]
fn chunked_payload_is_dechunked() {
    let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nTrailer: t\r\n\r\n";
    let tap = feed(&[(&r[..], ALL, 0)], false);
    assert_eq!(tap.pieces, vec![p("hello, world", 1)]);
    // split inside sizes and data, one byte at a time
    let mut s = Stream::new(Kind::Response);
    let mut tap = Tap::default();
    for b in r.chunks(1) {
        s.feed(&cap(1, b, ALL, 0).seg(), &mut tap);
    }
    assert_eq!((tap.pieces, tap.ends), (vec![p("hello, world", 1)], 1));
    // a gap inside chunk data, then one over a chunk-size line: the rest
    // of the body is payload of unknown place
    let head = r.len() - 43;
    let tap = feed(&[(&r[..head + 4], ALL, 0), (&r[head + 4..], 2, 0)], true);
    assert_eq!(
        tap.pieces,
        vec![p("h", 1), p("el", 2), p("<2>", 2), p("<35>", 2)]
    );
    assert_eq!((tap.cuts, tap.ends), (1, 1));
}

#[test]
fn close_delimited_and_cut_bodies() {
    let r = b"HTTP/1.1 200 OK\r\n\r\ndata: 1\n\n";
    let tap = feed(&[(&r[..], ALL, 0)], true);
    assert_eq!(
        (tap.pieces, tap.cuts, tap.ends),
        (vec![p("data: 1\n\n", 1)], 0, 1)
    );
    // a Content-Length body the connection's end cut short
    let r = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"id\":";
    let tap = feed(&[(&r[..], ALL, 0)], true);
    assert_eq!(
        (tap.pieces, tap.cuts, tap.ends),
        (vec![p("{\"id\":", 1)], 1, 1)
    );
}
