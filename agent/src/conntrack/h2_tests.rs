//! Unit tests of HTTP/2 behind the protocol seam: a connection is HTTP/2
//! from the client's preface, or from the server's SETTINGS when the server
//! speaks first (nginx over TLS does).

use super::tests::{apply, ep, open, CLIENT, GW};
use super::*;
use crate::http::Exchange;

/// A transfer captured whole.
fn data(sk: u64, dir: Direction, ts_ns: u64, bytes: &[u8]) -> Observation<'_> {
    tls_tests::data(sk, dir, ts_ns, bytes, bytes.len() as u64)
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// HEADERS on stream 1 (END_STREAM | END_HEADERS) with `block`.
fn headers(block: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1];
    f.extend_from_slice(block);
    f
}

/// GET / over http with `:authority: x` (static indices, one literal).
const GET: &[u8] = &[0x82, 0x84, 0x86, 0x01, 0x01, b'x'];
/// `:status: 200`.
const OK: &[u8] = &[0x88];

fn exchanges(outs: &[Finished]) -> (Vec<Exchange>, usize) {
    let (mut x, mut anomalies) = (Vec::new(), 0);
    for (_, e) in outs.iter().flat_map(|o| &o.http) {
        match e {
            HttpEvent::Exchange(e) => x.push(e.clone()),
            HttpEvent::Anomaly(_) => anomalies += 1,
        }
    }
    (x, anomalies)
}

#[test]
fn http2_from_the_client_preface_or_the_server_settings() {
    let request = [PREFACE, SETTINGS, &headers(GET)].concat();
    let response = [SETTINGS, &headers(OK)[..]].concat();
    for server_first in [false, true] {
        let mut t = ConnTable::new(10);
        let e = ep(GW, CLIENT);
        open(&mut t, 1, Role::Downstream, e);
        let mut outs = Vec::new();
        if server_first {
            outs.push(apply(&mut t, &data(1, Direction::Egress, 1, SETTINGS)));
            outs.push(apply(&mut t, &data(1, Direction::Ingress, 2, &request)));
            outs.push(apply(&mut t, &data(1, Direction::Egress, 3, &headers(OK))));
        } else {
            outs.push(apply(&mut t, &data(1, Direction::Ingress, 2, &request)));
            outs.push(apply(&mut t, &data(1, Direction::Egress, 3, &response)));
        }
        let (x, anomalies) = exchanges(&outs);
        assert_eq!(anomalies, 0, "server first: {server_first}");
        assert_eq!(x.len(), 1, "server first: {server_first}: {x:?}");
        assert_eq!(
            (
                x[0].method.as_str(),
                x[0].path.as_str(),
                x[0].status,
                x[0].version
            ),
            ("GET", "/", 200, Exchange::VERSION_H2)
        );
        assert_eq!(x[0].host.as_deref(), Some("x"));
    }
}

#[test]
fn http1_responses_are_not_taken_for_settings() {
    let mut t = ConnTable::new(10);
    let e = ep(GW, CLIENT);
    open(&mut t, 1, Role::Upstream, e);
    let outs = [
        apply(
            &mut t,
            &data(
                1,
                Direction::Egress,
                1,
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
        ),
        apply(
            &mut t,
            &data(
                1,
                Direction::Ingress,
                2,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ),
        ),
    ];
    let (x, anomalies) = exchanges(&outs);
    assert_eq!((x.len(), anomalies), (1, 0));
    assert_eq!(x[0].version, 1);
}

/// HEADERS on stream `id` (END_STREAM | END_HEADERS) with `block`.
fn headers_on(id: u8, block: &[u8]) -> Vec<u8> {
    let mut f = headers(block);
    f[8] = id;
    f
}

#[test]
fn a_connection_open_before_start_is_http2_from_its_frames() {
    let mut t = ConnTable::new(10);
    let found = Observation::ConnFound {
        netns: 0,
        sk: 1,
        role: Role::Downstream,
        endpoints: ep(GW, CLIENT),
        ts_ns: 0,
    };
    apply(&mut t, &found);
    // Stream 5: GET with a literal path "/b" (no indexing), and a header
    // indexed in a dynamic table entry made before the agent (index 62):
    // the path is known, the other entry is not needed.
    let block = [0x82, 0x04, 0x02, b'/', b'b', 0x86, 0xbe];
    let outs = [
        apply(
            &mut t,
            &data(1, Direction::Ingress, 1, &headers_on(5, &block)),
        ),
        apply(&mut t, &data(1, Direction::Egress, 2, &headers_on(5, OK))),
    ];
    let (x, _) = exchanges(&outs);
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!(
        (
            x[0].method.as_str(),
            x[0].path.as_str(),
            x[0].status,
            x[0].version
        ),
        ("GET", "/b", 200, Exchange::VERSION_H2)
    );
    // Stream 7's path is an index into that old table: unknown, not wrong.
    let outs = [
        apply(
            &mut t,
            &data(
                1,
                Direction::Ingress,
                3,
                &headers_on(7, &[0x82, 0xbf, 0x86]),
            ),
        ),
        apply(&mut t, &data(1, Direction::Egress, 4, &headers_on(7, OK))),
    ];
    let (x, _) = exchanges(&outs);
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!((x[0].path.as_str(), x[0].status), ("", 200));
}

#[test]
fn an_http1_connection_open_before_start_stays_http1() {
    let mut t = ConnTable::new(10);
    let found = Observation::ConnFound {
        netns: 0,
        sk: 1,
        role: Role::Downstream,
        endpoints: ep(GW, CLIENT),
        ts_ns: 0,
    };
    apply(&mut t, &found);
    let outs = [
        // the end of a body in flight when the agent started
        apply(
            &mut t,
            &data(1, Direction::Ingress, 1, &[0, 0, 4, 0, 1, 0, 0, 0, 1, b'x']),
        ),
        apply(
            &mut t,
            &data(
                1,
                Direction::Ingress,
                2,
                b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
        ),
        apply(
            &mut t,
            &data(1, Direction::Egress, 3, b"HTTP/1.1 204 No Content\r\n\r\n"),
        ),
    ];
    let (x, _) = exchanges(&outs);
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!((x[0].path.as_str(), x[0].version), ("/c", 1));
}
