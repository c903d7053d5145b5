//! `H2Conn` on recorded and built conversations, captured whole and sparsely.

use super::{
    frame::{self, PREFACE},
    hpack::tests::{hex, idx, int, lit_inc},
    looks_like_h2_preface, looks_like_h2_server_preface, H2Conn, Piece, Transfer,
};
use crate::{
    testkit::{cap, full, Cap},
    Anomaly, Exchange, GrpcCall, H2Anomaly, HttpEvent, Side, TraceHeaders,
};

#[path = "fuzz.rs"]
mod fuzz;

/// A conversation the Python `h2` package (4.4.1) made, client and server
/// both using HPACK's dynamic table (`fixtures/conversation.txt`):
/// GET /users?page=2 (1), POST /orders with a body (3), a gRPC call answered
/// with grpc-status 5 in trailers (5), interleaved, then GET /users?page=3
/// (7) answered 404.
pub(crate) fn recorded() -> Vec<(bool, Vec<u8>)> {
    include_str!("fixtures/conversation.txt")
        .lines()
        .map(|l| (l.starts_with('>'), hex(&l[2..])))
        .collect()
}

pub(crate) fn ex(
    method: &str,
    path: &str,
    status: u16,
    bytes: (u64, u64),
    req: (u64, u64),
    resp: (u64, u64),
) -> Exchange {
    Exchange {
        method: method.into(),
        path: path.into(),
        host: Some("api.example.com".into()),
        status,
        request_bytes: bytes.0,
        response_bytes: bytes.1,
        request_first_ns: req.0,
        request_last_ns: req.1,
        response_first_ns: resp.0,
        response_last_ns: resp.1,
        closed_ns: 0,
        upgraded: false,
        version: Exchange::VERSION_H2,
        trace: TraceHeaders::default(),
        grpc: None,
        genai: None,
    }
}

/// What the recorded conversation holds, fed one transfer per line with
/// times 100, 101...
pub(crate) fn recorded_exchanges() -> Vec<Exchange> {
    let id = |mut e: Exchange| {
        e.trace.request_id = Some("req-1".into());
        e
    };
    vec![
        id(ex(
            "POST",
            "/orders",
            201,
            (145, 51),
            (104, 105),
            (108, 111),
        )),
        id(ex("GET", "/users", 200, (53, 1033), (103, 103), (109, 113))),
        Exchange {
            grpc: Some(Box::new(GrpcCall {
                service: "shop.Cart".into(),
                method: "AddItem".into(),
                status: Some(5),
                message_len: Some(14),
            })),
            ..id(ex(
                "POST",
                "/shop.Cart/AddItem",
                200,
                (54, 82),
                (106, 107),
                (112, 115),
            ))
        },
        id(ex("GET", "/users", 404, (17, 11), (116, 116), (117, 117))),
    ]
}

pub(crate) struct Conn {
    pub c: H2Conn,
    pub out: Vec<HttpEvent>,
}

impl Conn {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            c: H2Conn::new(side),
            out: Vec::new(),
        }
    }

    pub(crate) fn midstream(side: Side) -> Self {
        Self {
            c: H2Conn::new_midstream(side),
            out: Vec::new(),
        }
    }

    pub(crate) fn feed(&mut self, is_req: bool, cap: &Cap) -> &mut Self {
        if is_req {
            self.c.on_request_bytes(&cap.seg(), &mut self.out);
        } else {
            self.c.on_response_bytes(&cap.seg(), &mut self.out);
        }
        self
    }

    fn pieces(&mut self, is_req: bool, ts: u64, len: u64, pieces: &[Piece<'_>]) {
        let t = Transfer {
            ts_ns: ts,
            len,
            pieces,
        };
        if is_req {
            self.c.on_request_transfer(&t, &mut self.out);
        } else {
            self.c.on_response_transfer(&t, &mut self.out);
        }
    }

    pub(crate) fn exchanges(&self) -> Vec<Exchange> {
        self.out
            .iter()
            .filter_map(|e| match e {
                HttpEvent::Exchange(x) => Some(x.clone()),
                HttpEvent::Anomaly(_) => None,
            })
            .collect()
    }

    pub(crate) fn anomalies(&self) -> Vec<H2Anomaly> {
        self.out
            .iter()
            .filter_map(|e| match e {
                HttpEvent::Anomaly(Anomaly::H2(a)) => Some(*a),
                _ => None,
            })
            .collect()
    }
}

/// A frame.
pub(crate) fn fr(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    b.push(kind);
    b.push(flags);
    b.extend(stream.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A request header block: method and path as literals, authority indexed
/// at `authority` when not 0, else a literal inserted into the table.
fn req_block(method: &str, path: &str, authority: usize) -> Vec<u8> {
    let mut b = lit_inc(":method", method, false);
    b.extend(lit_inc(":path", path, true));
    if authority == 0 {
        b.extend(lit_inc(":authority", "api.example.com", true));
    } else {
        b.extend(idx(authority));
    }
    b
}

/// A response header block with `:status` as a literal without indexing
/// (as nginx sends statuses not in the static table) and optional extras.
fn status_block(status: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0x08];
    int(&mut b, status.len(), 7, 0);
    b.extend_from_slice(status.as_bytes());
    for (n, v) in extra {
        b.push(0);
        for s in [n, v] {
            int(&mut b, s.len(), 7, 0);
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

fn settings() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(fr(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    b
}

#[test]
fn recorded_conversation_whole() {
    let mut t = Conn::new(Side::Server);
    for (i, (is_req, b)) in recorded().iter().enumerate() {
        t.feed(*is_req, &full(100 + i as u64, b));
    }
    assert_eq!(t.anomalies(), []);
    assert_eq!(t.exchanges(), recorded_exchanges());
    assert_eq!(t.c.phase(), crate::Phase::Waiting);
}

#[test]
fn recorded_conversation_split_at_every_offset() {
    let conv = recorded();
    for (k, (_, b)) in conv.iter().enumerate() {
        for at in 0..=b.len() {
            let mut t = Conn::new(Side::Server);
            for (i, (is_req, b)) in conv.iter().enumerate() {
                let ts = 100 + i as u64;
                if i == k {
                    t.feed(*is_req, &full(ts, &b[..at]));
                    t.feed(*is_req, &full(ts, &b[at..]));
                } else {
                    t.feed(*is_req, &full(ts, b));
                }
            }
            assert_eq!(t.anomalies(), [], "transfer {k} split at {at}");
            assert_eq!(
                t.exchanges(),
                recorded_exchanges(),
                "transfer {k} split at {at}"
            );
        }
    }
}

#[test]
fn upstream_side_reports_the_same_streams() {
    let mut t = Conn::new(Side::Client);
    for (i, (is_req, b)) in recorded().iter().enumerate() {
        t.feed(*is_req, &full(100 + i as u64, b));
    }
    assert_eq!(t.exchanges(), recorded_exchanges());
}

#[test]
fn continuation_padding_and_priority() {
    let mut t = Conn::new(Side::Server);
    let block = req_block("PUT", "/files/a?x=1", 0);
    let (a, b) = block.split_at(5);
    // HEADERS: padded (3 bytes), with priority, no END_HEADERS
    let mut p = vec![3, 0, 0, 0, 0, 16];
    p.extend_from_slice(a);
    p.extend([0; 3]);
    let mut req = settings();
    req.extend(fr(
        frame::HEADERS,
        frame::PADDED | frame::PRIORITY_FLAG,
        1,
        &p,
    ));
    req.extend(fr(frame::CONTINUATION, frame::END_HEADERS, 1, b));
    // DATA: 10 bytes, padded with 5
    let mut d = vec![5];
    d.extend([b'x'; 10]);
    d.extend([0; 5]);
    req.extend(fr(frame::DATA, frame::PADDED | frame::END_STREAM, 1, &d));
    t.feed(true, &full(10, &req));
    let resp = fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &status_block("204", &[]),
    );
    t.feed(false, &full(20, &resp));
    assert_eq!(t.anomalies(), []);
    assert_eq!(
        t.exchanges(),
        [ex(
            "PUT",
            "/files/a",
            204,
            (block.len() as u64 + 10, resp.len() as u64),
            (10, 10),
            (20, 20)
        )]
    );
}

#[test]
fn rst_stream_before_a_response_is_499_downstream_and_0_upstream() {
    for (side, status) in [(Side::Server, 499), (Side::Client, 0)] {
        let mut t = Conn::new(side);
        let mut req = settings();
        let block = req_block("GET", "/slow", 0);
        req.extend(fr(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1,
            &block,
        ));
        t.feed(true, &full(10, &req));
        t.feed(true, &full(30, &fr(frame::RST_STREAM, 0, 1, &[0, 0, 0, 8])));
        // the server's late response to it is not a new stream
        let resp = fr(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1,
            &status_block("200", &[]),
        );
        t.feed(false, &full(40, &resp));
        assert_eq!(
            t.exchanges(),
            [Exchange {
                closed_ns: 30,
                ..ex(
                    "GET",
                    "/slow",
                    status,
                    (block.len() as u64, 0),
                    (10, 10),
                    (0, 0)
                )
            }]
        );
        assert_eq!(t.anomalies(), []);
    }
}

#[test]
fn goaway_ends_the_streams_above_its_last_stream_id() {
    let mut t = Conn::new(Side::Server);
    let mut req = settings();
    req.extend(fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &req_block("GET", "/a", 0),
    ));
    req.extend(fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        3,
        &req_block("GET", "/b", 62),
    ));
    t.feed(true, &full(10, &req));
    let mut resp = fr(frame::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
    resp.extend(fr(
        frame::HEADERS,
        frame::END_HEADERS,
        1,
        &status_block("200", &[]),
    ));
    t.feed(false, &full(20, &resp));
    let data = fr(frame::DATA, frame::END_STREAM, 1, b"ok");
    t.feed(false, &full(30, &data));
    let x = t.exchanges();
    assert_eq!(x.len(), 2);
    assert_eq!(
        (x[0].path.as_str(), x[0].status, x[0].closed_ns),
        ("/b", 499, 20)
    );
    assert_eq!(
        (x[1].path.as_str(), x[1].status, x[1].response_bytes),
        ("/a", 200, 9 + 5 + 9 + 2)
    );
}

#[test]
fn grpc_trailers_only_response() {
    let mut t = Conn::new(Side::Client);
    let mut req = settings();
    let mut block = req_block("POST", "/pkg.Greeter/SayHello", 0);
    block.extend(lit_inc("content-type", "application/grpc+proto", false));
    req.extend(fr(frame::HEADERS, frame::END_HEADERS, 1, &block));
    req.extend(fr(frame::DATA, frame::END_STREAM, 1, &[0, 0, 0, 0, 0]));
    t.feed(true, &full(10, &req));
    let resp = fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &status_block(
            "200",
            &[("content-type", "application/grpc"), ("grpc-status", "14")],
        ),
    );
    t.feed(false, &full(20, &resp));
    let x = t.exchanges();
    assert_eq!(
        x[0].grpc,
        Some(Box::new(GrpcCall {
            service: "pkg.Greeter".into(),
            method: "SayHello".into(),
            status: Some(14),
            message_len: None,
        }))
    );
    assert_eq!(x[0].status, 200);
}

#[test]
fn lost_header_block_then_old_entries_unknown_and_new_ones_exact() {
    let mut t = Conn::new(Side::Server);
    let mut req = settings();
    // stream 1 inserts :path /a (62... then :authority at 62, :path 63, :method 64)
    req.extend(fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &req_block("GET", "/a", 0),
    ));
    t.feed(true, &full(10, &req));
    // stream 3's block is not captured: only its frame header is
    let b3 = fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        3,
        &req_block("GET", "/secret", 62),
    );
    t.feed(true, &cap(20, &b3, 9, 0));
    // stream 5 indexes the authority inserted by stream 1 (now 64 after 3's
    // two insertions) and inserts its own path; stream 7 refers to that one
    let mut b5 = lit_inc(":method", "GET", false);
    b5.extend(lit_inc(":path", "/new", false));
    b5.extend(idx(65));
    let mut b7 = idx(63);
    b7.extend(idx(62));
    b7.extend(idx(2));
    let mut req = fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        5,
        &b5,
    );
    req.extend(fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        7,
        &b7,
    ));
    t.feed(true, &full(30, &req));
    for id in [1, 3, 5, 7] {
        let r = fr(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            id,
            &status_block("200", &[]),
        );
        t.feed(false, &full(40, &r));
    }
    let x = t.exchanges();
    let got: Vec<_> = x
        .iter()
        .map(|e| (e.method.as_str(), e.path.as_str(), e.host.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "/a", Some("api.example.com")),
            ("", "", None),
            ("GET", "/new", None),
            ("GET", "/new", None)
        ]
    );
    assert_eq!(
        t.anomalies(),
        [H2Anomaly::HeadersLost, H2Anomaly::UnknownFields]
    );
}

#[test]
fn late_join_resolves_only_what_it_saw_inserted() {
    let mut t = Conn::midstream(Side::Server);
    // the end of a DATA frame of a stream opened before the join: no sync
    t.feed(true, &full(10, b"tail of some upload body bytes"));
    // a transfer starting with frames: stream 9 with an authority indexed
    // from before the join, and a literal path
    let mut b9 = idx(2);
    b9.extend(lit_inc(":path", "/late?q=1", true));
    b9.extend(idx(70));
    let req = fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        9,
        &b9,
    );
    t.feed(true, &full(20, &req));
    // responses: stream 7 (opened before the join) then stream 9
    let mut resp = fr(frame::DATA, frame::END_STREAM, 7, b"bye");
    resp.extend(fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        9,
        &status_block("200", &[]),
    ));
    t.feed(false, &full(30, &resp));
    let x = t.exchanges();
    assert_eq!(x.len(), 1);
    assert_eq!(
        (
            x[0].method.as_str(),
            x[0].path.as_str(),
            x[0].host.as_deref(),
            x[0].status
        ),
        ("GET", "/late", None, 200)
    );
    assert_eq!(
        t.anomalies(),
        [
            H2Anomaly::Resync { skipped: 30 },
            H2Anomaly::Resync { skipped: 0 },
            H2Anomaly::UnknownStream
        ]
    );
}

#[test]
fn uncaptured_body_middle_with_frame_headers_captured() {
    // 100 000 bytes of response in 16 KiB DATA frames in one transfer.
    let mut t = Conn::new(Side::Server);
    let mut req = settings();
    req.extend(fr(
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &req_block("GET", "/big", 0),
    ));
    t.feed(true, &full(10, &req));
    let mut resp = fr(
        frame::HEADERS,
        frame::END_HEADERS,
        1,
        &status_block("200", &[]),
    );
    let body = vec![b'z'; 100_000];
    let chunks: Vec<&[u8]> = body.chunks(16_384).collect();
    let mut headers_at = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        headers_at.push(resp.len());
        let last = i + 1 == chunks.len();
        resp.extend(fr(
            frame::DATA,
            if last { frame::END_STREAM } else { 0 },
            1,
            c,
        ));
    }
    let want = resp.len() as u64;
    // a capture of every frame header and nothing else of the DATA
    let mut pieces = vec![Piece {
        offset: 0,
        bytes: &resp[..headers_at[0] + 9],
    }];
    for &at in &headers_at[1..] {
        pieces.push(Piece {
            offset: at as u64,
            bytes: &resp[at..at + 9],
        });
    }
    t.pieces(false, 20, resp.len() as u64, &pieces);
    assert_eq!(t.anomalies(), []);
    let x = t.exchanges();
    assert_eq!((x[0].status, x[0].response_bytes), (200, want));

    // head and tail only: the second frame header is lost, the stream ends
    // when the connection does
    let mut t = Conn::new(Side::Server);
    t.feed(true, &full(10, &req));
    t.feed(false, &cap(20, &resp, 1024, 64));
    assert_eq!(t.anomalies(), [H2Anomaly::Desync]);
    t.c.on_close(50, &mut t.out);
    let x = t.exchanges();
    assert_eq!((x[0].status, x[0].closed_ns), (200, 50));
}

#[test]
fn not_h2_and_detection() {
    let mut t = Conn::new(Side::Server);
    t.feed(true, &full(10, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_eq!(t.anomalies(), [H2Anomaly::BadPreface]);
    assert!(looks_like_h2_preface(PREFACE));
    assert!(looks_like_h2_preface(b"PRI * HT"));
    assert!(!looks_like_h2_preface(b"PRI"));
    assert!(!looks_like_h2_preface(b"GET / HTTP/1.1\r\n"));
    // A server's SETTINGS (grpcio sends 3 settings at once), not an ACK.
    let settings = [0, 0, 18, 4, 0, 0, 0, 0, 0];
    assert!(looks_like_h2_server_preface(&settings));
    assert!(looks_like_h2_server_preface(&[0, 0, 0, 4, 0, 0, 0, 0, 0]));
    assert!(!looks_like_h2_server_preface(&[0, 0, 0, 4, 1, 0, 0, 0, 0]));
    assert!(!looks_like_h2_server_preface(&[0, 0, 7, 4, 0, 0, 0, 0, 0]));
    assert!(!looks_like_h2_server_preface(&[0, 0, 18, 4, 0, 0, 0, 0, 1]));
    assert!(!looks_like_h2_server_preface(&settings[..8]));
    assert!(!looks_like_h2_server_preface(b"HTTP/1.1 200 OK\r\n"));
    assert!(super::is_h2c_upgrade(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    ));
    assert!(!super::is_h2c_upgrade(
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
    ));
}
