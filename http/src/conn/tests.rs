//! HttpConn's tests on well-formed traffic.
//!
//! Traffic as curl sends it and nginx answers it: keep-alive, pipelining, bodies, chunked
//! coding, bodiless responses, upgrades; captured whole, split and sparsely. Degraded
//! captures and non-HTTP bytes are in tests/degraded.rs.

mod degraded;
mod early;

use super::*;
use crate::{parse::MAX_HEAD, testkit::*};

#[test]
fn keep_alive_with_phases() {
    let mut t = Conn::new(Side::Server);
    let q1 = curl_get("/api/v1/users?page=2");
    let r1 = nginx_resp(200, "application/json", br#"{"users":[],"page":2}"#);
    let q2 = curl_get("/api/v1/users/7#top");
    let r2 = nginx_resp(404, "text/html", b"<html>not here</html>\r\n");
    assert_eq!(t.c.phase(), Phase::Waiting);
    t.req(full(1_000, &q1[..10]));
    assert_eq!(t.c.phase(), Phase::Reading);
    t.req(full(1_001, &q1[10..]));
    assert_eq!(t.c.phase(), Phase::Writing);
    t.resp(full(2_000, &r1));
    assert_eq!(t.c.phase(), Phase::Waiting);
    t.req(full(3_000, &q2)).resp(full(4_000, &r2));
    t.close(5_000);
    assert_eq!(
        t.exchanges(),
        vec![
            ex(
                "GET",
                "/api/v1/users",
                200,
                q1.len(),
                r1.len(),
                (1_000, 1_001),
                (2_000, 2_000)
            ),
            ex(
                "GET",
                "/api/v1/users/7",
                404,
                q2.len(),
                r2.len(),
                (3_000, 3_000),
                (4_000, 4_000)
            ),
        ]
    );
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn pipelined_requests_and_responses_in_one_segment() {
    let mut t = Conn::new(Side::Server);
    let (q1, q2, q3) = (curl_get("/a"), curl("HEAD", "/b"), curl_get("/c?x=1"));
    let r1 = nginx_resp(200, "text/plain", b"hello");
    let r2 = nginx_head(200, "application/octet-stream", 1_048_576); // HEAD: no body
    let r3 = nginx_resp(404, "text/html", b"<html>404</html>");
    t.req(full(100, &cat(&[&q1, &q2, &q3])));
    assert_eq!(t.c.phase(), Phase::Writing);
    // responses: the first two in one write, the third split over two
    let r23 = cat(&[&r1, &r2, &r3[..7]]);
    t.resp(full(200, &r23)).resp(full(201, &r3[7..]));
    assert_eq!(
        t.exchanges(),
        vec![
            ex("GET", "/a", 200, q1.len(), r1.len(), (100, 100), (200, 200)),
            ex(
                "HEAD",
                "/b",
                200,
                q2.len(),
                r2.len(),
                (100, 100),
                (200, 200)
            ),
            ex("GET", "/c", 404, q3.len(), r3.len(), (100, 100), (200, 201)),
        ]
    );
    assert_eq!(t.c.phase(), Phase::Waiting);
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn heads_split_over_many_segments() {
    let mut t = Conn::new(Side::Server);
    let q = curl_get("/split/me?q=1");
    let r = nginx_resp(200, "text/plain", b"0123456789");
    for (i, b) in q.iter().enumerate() {
        t.req(full(10 + i as u64, std::slice::from_ref(b)));
    }
    let pieces: Vec<&[u8]> = r.chunks(7).collect();
    for (i, p) in pieces.iter().enumerate() {
        t.resp(full(1_000 + i as u64, p));
    }
    let last_q = 10 + q.len() as u64 - 1;
    let last_r = 1_000 + pieces.len() as u64 - 1;
    assert_eq!(
        t.exchanges(),
        vec![ex(
            "GET",
            "/split/me",
            200,
            q.len(),
            r.len(),
            (10, last_q),
            (1_000, last_r)
        )]
    );
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn body_larger_than_capture_is_counted_by_length() {
    let mut t = Conn::new(Side::Server);
    let body = json(100_000);
    let head = curl_body_head("POST", "/api/orders", body.len());
    let data = cat(&[&head, &body]);
    // the client writes 16 KiB at a time; the kernel keeps 1024 + 64 of each
    let mut ts = 100;
    for piece in data.chunks(16_384) {
        t.req(kernel(ts, piece));
        ts += 1;
    }
    let r = nginx_resp(201, "application/json", br#"{"id":9}"#);
    t.resp(kernel(500, &r));
    assert_eq!(
        t.exchanges(),
        vec![ex(
            "POST",
            "/api/orders",
            201,
            data.len(),
            r.len(),
            (100, ts - 1),
            (500, 500)
        )]
    );
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn sendfile_body_is_counted() {
    let mut t = Conn::new(Side::Server);
    let q = curl_get("/static/big.bin");
    let head = nginx_head(200, "application/octet-stream", 100_000);
    t.req(full(100, &q)).resp(full(200, &head));
    t.resp(len_only(201, 32_768)).resp(len_only(202, 32_768));
    assert_eq!(t.exchanges(), vec![]);
    t.resp(len_only(203, 100_000 - 65_536));
    let q2 = curl_get("/next");
    let r2 = nginx_resp(200, "text/plain", b"ok");
    t.req(full(300, &q2)).resp(full(400, &r2));
    assert_eq!(
        t.exchanges(),
        vec![
            ex(
                "GET",
                "/static/big.bin",
                200,
                q.len(),
                head.len() + 100_000,
                (100, 100),
                (200, 203)
            ),
            ex(
                "GET",
                "/next",
                200,
                q2.len(),
                r2.len(),
                (300, 300),
                (400, 400)
            ),
        ]
    );
}

#[test]
fn chunked_as_nginx_writes_it() {
    let mut t = Conn::new(Side::Server);
    let q = curl_get("/api/stream");
    let head = nginx_chunked_head(200);
    let c1 = chunk(&json(8_192));
    let c2 = chunk(&json(3_000));
    t.req(full(100, &q));
    t.resp(full(200, &head))
        .resp(kernel(201, &c1))
        .resp(kernel(202, &c2));
    assert_eq!(t.exchanges(), vec![]);
    t.resp(full(203, LAST_CHUNK));
    // then the last data chunk and the terminator in one write
    let q2 = curl_get("/api/stream?page=2");
    let c3 = cat(&[&chunk(&json(5_000)), LAST_CHUNK]);
    t.req(full(300, &q2))
        .resp(full(400, &head))
        .resp(kernel(401, &c3));
    let total = head.len() + c1.len() + c2.len() + LAST_CHUNK.len();
    assert_eq!(
        t.exchanges(),
        vec![
            ex(
                "GET",
                "/api/stream",
                200,
                q.len(),
                total,
                (100, 100),
                (200, 203)
            ),
            ex(
                "GET",
                "/api/stream",
                200,
                q2.len(),
                head.len() + c3.len(),
                (300, 300),
                (400, 401)
            ),
        ]
    );
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn chunk_headers_lost_in_gap_end_at_terminator_in_tail() {
    // nginx reading an upstream's response: many small chunks in one read
    let mut t = Conn::new(Side::Client);
    let q = curl_get("/feed");
    let mut r = nginx_chunked_head(200);
    for _ in 0..20 {
        r.extend_from_slice(&chunk(&[b'x'; 400]));
    }
    r.extend_from_slice(LAST_CHUNK);
    t.req(full(400, &q)).resp(kernel(500, &r));
    // well-formed: the chunk-size lines were not seen, the last chunk was
    assert_eq!(t.anomalies(), vec![]);
    assert_eq!(
        t.exchanges(),
        vec![ex(
            "GET",
            "/feed",
            200,
            q.len(),
            r.len(),
            (400, 400),
            (500, 500)
        )]
    );
    assert_eq!(t.c.phase(), Phase::Waiting);
    // back in step
    let q2 = curl_get("/after");
    let r2 = nginx_resp(200, "text/plain", b"fine");
    t.req(full(600, &q2)).resp(full(700, &r2));
    assert_eq!(t.exchanges().len(), 2);
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn chunk_framing_lost_ends_at_a_last_chunk_split_across_reads() {
    let mut t = Conn::new(Side::Client);
    let q = curl_get("/feed");
    let mut read1 = nginx_chunked_head(200);
    let mut read2 = Vec::new();
    for _ in 0..10 {
        read1.extend_from_slice(&chunk(&[b'y'; 300]));
        read2.extend_from_slice(&chunk(&[b'z'; 300]));
    }
    read2.extend_from_slice(b"0\r\n");
    let read3 = b"\r\n";
    t.req(full(400, &q));
    t.resp(kernel(500, &read1))
        .resp(kernel(501, &read2))
        .resp(full(502, read3));
    assert_eq!(t.anomalies(), vec![]);
    let total = read1.len() + read2.len() + read3.len();
    assert_eq!(
        t.exchanges(),
        vec![ex(
            "GET",
            "/feed",
            200,
            q.len(),
            total,
            (400, 400),
            (500, 502)
        )]
    );
    let q2 = curl_get("/two");
    let r2 = nginx_resp(200, "text/plain", b"2");
    t.req(full(600, &q2)).resp(full(700, &r2));
    assert_eq!(
        t.exchanges(),
        vec![
            ex("GET", "/feed", 200, q.len(), total, (400, 400), (500, 502)),
            ex(
                "GET",
                "/two",
                200,
                q2.len(),
                r2.len(),
                (600, 600),
                (700, 700)
            ),
        ]
    );
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn chunk_framing_lost_and_no_last_chunk_seen_is_a_desync() {
    // the last chunk fell in a gap too (one read holding it and more data):
    // the body ends at the next response, and its framing counts as lost
    let mut t = Conn::new(Side::Client);
    let q = curl_get("/feed");
    let mut read1 = nginx_chunked_head(200);
    for _ in 0..10 {
        read1.extend_from_slice(&chunk(&[b'y'; 300]));
    }
    read1.extend_from_slice(LAST_CHUNK);
    read1.extend_from_slice(&[b'!'; 100]);
    t.req(full(400, &q)).resp(kernel(500, &read1));
    assert_eq!(t.anomalies(), vec![]);
    assert_eq!(t.exchanges(), vec![]);
    let q2 = curl_get("/two");
    let r2 = nginx_resp(200, "text/plain", b"2");
    t.req(full(600, &q2)).resp(full(700, &r2));
    assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
    let got = t.exchanges();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        (got[0].status, got[0].response_bytes),
        (200, read1.len() as u64)
    );
    assert_eq!((got[1].path.as_str(), got[1].status), ("/two", 200));
}

#[test]
fn chunked_request_body_with_lines_in_gaps_ends_at_its_last_chunk() {
    // a client's chunked upload read in large reads, then the response
    let mut t = Conn::new(Side::Server);
    let mut q =
        b"POST /upload HTTP/1.1\r\nHost: localhost:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..30 {
        q.extend_from_slice(&chunk(&[b'u'; 500]));
    }
    q.extend_from_slice(LAST_CHUNK);
    let (a, b) = q.split_at(8000);
    let r = nginx_resp(201, "text/plain", b"ok");
    t.req(kernel(100, a))
        .req(kernel(101, b))
        .resp(full(200, &r));
    assert_eq!(t.anomalies(), vec![]);
    assert_eq!(
        t.exchanges(),
        vec![ex(
            "POST",
            "/upload",
            201,
            q.len(),
            r.len(),
            (100, 101),
            (200, 200)
        )]
    );
}

#[test]
fn no_body_for_head_1xx_204_304() {
    let mut t = Conn::new(Side::Client);
    let qs = [
        curl_get("/a"),
        curl_get("/b"),
        curl_get("/c"),
        curl("HEAD", "/d"),
    ];
    let early =
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n".to_vec();
    let r1 = nginx_resp(200, "text/plain", b"hello");
    let r2 = nginx_empty(204);
    // an upstream that sends Content-Length on a 304: still no body
    let r3 = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 999\r\nETag: \"x\"\r\n\r\n".to_vec();
    let r4 = nginx_head(200, "application/zip", 5_000);
    t.req(full(100, &qs.concat()));
    t.resp(full(200, &cat(&[&early, &r1, &r2, &r3, &r4])));
    let x = t.exchanges();
    let got: Vec<_> = x
        .iter()
        .map(|e| {
            (
                e.method.as_str(),
                e.path.as_str(),
                e.status,
                e.response_bytes,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("GET", "/a", 200, (early.len() + r1.len()) as u64),
            ("GET", "/b", 204, r2.len() as u64),
            ("GET", "/c", 304, r3.len() as u64),
            ("HEAD", "/d", 200, r4.len() as u64),
        ]
    );
    assert_eq!(t.anomalies(), vec![]);
    assert_eq!(t.c.phase(), Phase::Waiting);
}

#[test]
fn expect_100_continue() {
    let mut t = Conn::new(Side::Server);
    let body = json(2_048);
    let head = format!(
        "PUT /api/blob/1 HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\
         Content-Length: 2048\r\nExpect: 100-continue\r\n\r\n"
    )
    .into_bytes();
    let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
    let r = nginx_resp(201, "application/json", b"{}");
    t.req(full(100, &head)).resp(full(150, cont));
    assert_eq!(t.c.phase(), Phase::Writing);
    t.req(kernel(160, &body)).resp(full(200, &r));
    assert_eq!(
        t.exchanges(),
        vec![ex(
            "PUT",
            "/api/blob/1",
            201,
            head.len() + 2_048,
            cont.len() + r.len(),
            (100, 160),
            (150, 200)
        )]
    );
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn websocket_upgrade_goes_opaque() {
    let mut t = Conn::new(Side::Server);
    let q = format!(
        "GET /chat?room=1 HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    let r = b"HTTP/1.1 101 Switching Protocols\r\nServer: nginx/1.22.1\r\nDate: Tue, 05 May 2026 09:14:03 GMT\r\n\
              Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    t.req(full(100, &q)).resp(full(200, r));
    let mut want = ex(
        "GET",
        "/chat",
        101,
        q.len(),
        r.len(),
        (100, 100),
        (200, 200),
    );
    want.upgraded = true;
    assert_eq!(t.exchanges(), vec![want]);
    assert_eq!(t.c.phase(), Phase::Opaque);
    t.req(full(300, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"));
    t.resp(full(400, b"\x81\x05hello"))
        .resp(full(401, b"GET / HTTP/1.1\r\n\r\n"));
    t.close(500);
    assert_eq!(t.exchanges().len(), 1);
    assert_eq!(t.anomalies(), vec![]);
}

#[test]
fn connect_tunnel_and_refused_connect() {
    let mut t = Conn::new(Side::Client);
    let q = b"CONNECT api.partner.example:443 HTTP/1.1\r\nHost: api.partner.example:443\r\n\r\n";
    let r = b"HTTP/1.1 200 Connection Established\r\n\r\n";
    t.req(full(100, q)).resp(full(200, r));
    t.req(full(300, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
        .resp(full(400, b"\x16\x03\x03\x00\x7a"));
    t.close(500);
    let x = t.exchanges();
    assert_eq!(x.len(), 1);
    assert_eq!(
        (
            x[0].method.as_str(),
            x[0].path.as_str(),
            x[0].host.as_deref(),
            x[0].status,
            x[0].upgraded
        ),
        (
            "CONNECT",
            "api.partner.example:443",
            Some("api.partner.example:443"),
            200,
            true
        )
    );
    assert_eq!(t.anomalies(), vec![]);

    // a refused CONNECT leaves the connection HTTP
    let mut t = Conn::new(Side::Client);
    let r = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n";
    let q2 = curl_get("/x");
    let r2 = nginx_resp(200, "text/plain", b"x");
    t.req(full(100, q))
        .resp(full(200, r))
        .req(full(300, &q2))
        .resp(full(400, &r2));
    let st: Vec<_> = t.exchanges().iter().map(|e| e.status).collect();
    assert_eq!(st, vec![407, 200]);
    assert_eq!(t.c.phase(), Phase::Waiting);
}
