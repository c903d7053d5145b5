//! Unit tests of TLS connections in the table: ciphertext counted and never
//! parsed, the plaintext OpenSSL moved parsed as HTTP/1.

use gatescope_common::TcpState;

use super::facts::TlsVersion;
use super::handshake::server_hello_version;
use super::tests::{apply, ep, open, state, CLIENT, GW};
use super::*;
use crate::http::{Anomaly, Exchange};
use gatescope_common::ListenKey;

pub(super) fn data(sk: u64, dir: Direction, ts_ns: u64, head: &[u8], len: u64) -> Observation<'_> {
    Observation::Data {
        sk,
        dir,
        len,
        tgid: 1,
        tid: 1,
        ts_ns,
        head,
        tail: b"",
    }
}

fn plain(sk: u64, dir: Direction, ts_ns: u64, bytes: &[u8]) -> Observation<'_> {
    Observation::Plaintext {
        sk,
        dir,
        len: bytes.len() as u64,
        tgid: 1,
        tid: 1,
        ts_ns,
        head: bytes,
        tail: b"",
    }
}

/// The exchanges and anomalies of `outs`.
fn http(outs: &[Finished]) -> (Vec<Exchange>, Vec<Anomaly>) {
    let (mut x, mut a) = (Vec::new(), Vec::new());
    for out in outs {
        for (_, e) in &out.http {
            match e {
                HttpEvent::Exchange(e) => x.push(e.clone()),
                HttpEvent::Anomaly(an) => a.push(*an),
            }
        }
    }
    (x, a)
}

/// The kernel closing socket `sk` at `ts_ns` (the gateway's close).
fn close(t: &mut ConnTable, sk: u64, endpoints: Endpoints, ts_ns: u64) -> Finished {
    let mut out = Finished::default();
    t.apply(
        &Observation::State {
            sk,
            old: TcpState::ESTABLISHED,
            new: TcpState::CLOSE,
            endpoints,
            ts_ns,
            queued: 0,
            by_target: true,
        },
        Instant::now,
        &mut out,
    );
    out
}

const HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];
const APP: &[u8] = &[0x17, 0x03, 0x03, 0x00, 0x40, 0xde, 0xad, 0xbe, 0xef];

#[test]
fn ciphertext_is_counted_and_plaintext_parsed() {
    let mut t = ConnTable::new(10);
    let e = ep(GW, CLIENT);
    open(&mut t, 1, Role::Downstream, e);
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let outs = vec![
        apply(&mut t, &data(1, Direction::Ingress, 10, HELLO, 517)),
        apply(&mut t, &data(1, Direction::Egress, 11, &APP[..3], 1200)),
        apply(&mut t, &data(1, Direction::Ingress, 20, APP, 90)),
        apply(&mut t, &plain(1, Direction::Ingress, 21, req)),
        apply(&mut t, &plain(1, Direction::Egress, 30, resp)),
        apply(&mut t, &data(1, Direction::Egress, 31, APP, 80)),
    ];
    // The wire bytes are the ciphertext's; the plaintext adds none.
    let bytes: u64 = outs
        .iter()
        .flat_map(|o| &o.facts)
        .map(|f| match f {
            Fact::DownstreamBytes { len, .. } => *len,
            _ => 0,
        })
        .sum();
    assert_eq!(bytes, 517 + 1200 + 90 + 80);
    state(&mut t, 1, TcpState::CLOSE, e);
    let (x, a) = http(&outs);
    assert_eq!(a, vec![], "ciphertext is never parsed");
    assert_eq!(x.len(), 1);
    assert_eq!(
        (x[0].method.as_str(), x[0].path.as_str(), x[0].status),
        ("GET", "/a", 200)
    );
    assert_eq!(
        (x[0].request_bytes, x[0].response_bytes),
        (req.len() as u64, resp.len() as u64)
    );
    assert_eq!((x[0].request_first_ns, x[0].response_last_ns), (21, 30));
}

#[test]
fn a_connection_open_before_start_resynchronises_at_a_message() {
    let mut t = ConnTable::new(10);
    let found = Observation::ConnFound {
        netns: 0,
        sk: 2,
        role: Role::Downstream,
        endpoints: ep(GW, CLIENT),
        ts_ns: 0,
    };
    apply(&mut t, &found);
    let outs = vec![
        // the middle of a record: not recognisably TLS
        apply(
            &mut t,
            &data(2, Direction::Ingress, 5, &[0x9a, 0x01, 0xff], 300),
        ),
        // the rest of a body, then a request
        apply(&mut t, &plain(2, Direction::Ingress, 6, b"tail of a body")),
        apply(
            &mut t,
            &plain(2, Direction::Egress, 7, b"HTTP/1.1 204 No Content\r\n\r\n"),
        ),
        apply(
            &mut t,
            &plain(2, Direction::Ingress, 8, b"GET /b HTTP/1.1\r\n\r\n"),
        ),
        apply(
            &mut t,
            &plain(
                2,
                Direction::Egress,
                9,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            ),
        ),
    ];
    let (x, a) = http(&outs);
    assert_eq!(x.len(), 1, "{x:?}");
    assert_eq!((x[0].path.as_str(), x[0].status), ("/b", 404));
    // what was skipped to get there is the usual mid-stream resync
    assert!(
        a.iter().all(|a| matches!(a, Anomaly::Resync { .. })),
        "{a:?}"
    );
}

#[test]
fn each_handshake_is_counted_once_by_what_its_bytes_show() {
    let handshakes = |outs: &[Finished]| -> Vec<TlsResult> {
        outs.iter()
            .flat_map(|o| &o.facts)
            .filter_map(|f| match f {
                Fact::DownstreamTls {
                    listener, result, ..
                } if listener.port == 8080 => Some(*result),
                _ => None,
            })
            .collect()
    };
    let mut t = ConnTable::new(10);
    // plaintext flowed: ok, once
    let e = ep(GW, CLIENT);
    open(&mut t, 1, Role::Downstream, e);
    let mut outs = vec![
        apply(&mut t, &data(1, Direction::Ingress, 1, HELLO, 517)),
        apply(
            &mut t,
            &plain(1, Direction::Ingress, 2, b"GET / HTTP/1.1\r\n\r\n"),
        ),
        apply(
            &mut t,
            &plain(1, Direction::Ingress, 3, b"GET / HTTP/1.1\r\n\r\n"),
        ),
    ];
    outs.push(close(&mut t, 1, e, 4));
    assert_eq!(handshakes(&outs), vec![TlsResult::Ok]);
    // closed without plaintext or alert: closed
    let e3 = ep(GW, "127.0.0.1:50003");
    open(&mut t, 3, Role::Downstream, e3);
    apply(&mut t, &data(3, Direction::Ingress, 1, HELLO, 300));
    assert_eq!(
        handshakes(&[close(&mut t, 3, e3, 2)]),
        vec![TlsResult::Closed]
    );
    // clear text: no handshake at all
    let e4 = ep(GW, "127.0.0.1:50004");
    open(&mut t, 4, Role::Downstream, e4);
    let outs = vec![apply(
        &mut t,
        &data(4, Direction::Ingress, 1, b"GET / HTTP/1.1\r\n\r\n", 18),
    )];
    assert_eq!(handshakes(&outs), vec![]);
}

#[test]
fn an_alert_in_the_clear_fails_the_handshake() {
    let mut t = ConnTable::new(10);
    let e = ep(GW, CLIENT);
    open(&mut t, 1, Role::Downstream, e);
    apply(&mut t, &data(1, Direction::Ingress, 1, HELLO, 300));
    apply(
        &mut t,
        &data(1, Direction::Egress, 2, &[21, 3, 3, 0, 2, 2, 70], 7),
    );
    let mut c = Finished::default();
    t.apply(
        &Observation::State {
            sk: 1,
            old: TcpState::ESTABLISHED,
            new: TcpState::CLOSE,
            endpoints: e,
            ts_ns: 3,
            queued: 0,
            by_target: true,
        },
        Instant::now,
        &mut c,
    );
    assert!(
        c.facts.contains(&Fact::DownstreamTls {
            listener: ListenKey::new(0, 8080),
            result: TlsResult::Failed,
            version: TlsVersion::Unknown,
        }),
        "{:?}",
        c.facts
    );
}

#[test]
fn tls_of_a_process_without_probes_is_counted_as_unparsed_bytes() {
    let mut t = ConnTable::new(10);
    // The records' process (tgid 1) has no OpenSSL with probes.
    t.set_tls_blind([1]);
    let e = ep(GW, CLIENT);
    open(&mut t, 1, Role::Downstream, e);
    let outs = [
        apply(&mut t, &data(1, Direction::Ingress, 1, HELLO, 517)),
        apply(&mut t, &data(1, Direction::Egress, 2, APP, 1400)),
        close(&mut t, 1, e, 3),
    ];
    let facts: Vec<&Fact> = outs.iter().flat_map(|o| &o.facts).collect();
    let unparsed: Vec<(Direction, u64)> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::DownstreamTlsUnparsed { listener, dir, len } if listener.port == 8080 => {
                Some((*dir, *len))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        unparsed,
        [(Direction::Ingress, 517), (Direction::Egress, 1400)]
    );
    // Still counted as bytes; no handshake result (it cannot be told), no
    // anomaly.
    assert!(facts.contains(&&Fact::DownstreamBytes {
        listener: ListenKey::new(0, 8080),
        dir: Direction::Egress,
        len: 1400
    }));
    assert!(!facts
        .iter()
        .any(|f| matches!(f, Fact::DownstreamTls { .. })));
    assert_eq!(http(&outs), (vec![], vec![]));
    // Clear text from the same process is parsed, not unparsed.
    let e2 = ep(GW, "127.0.0.1:50002");
    open(&mut t, 2, Role::Downstream, e2);
    let out = apply(
        &mut t,
        &data(2, Direction::Ingress, 1, b"GET / HTTP/1.1\r\n\r\n", 18),
    );
    assert!(!out
        .facts
        .iter()
        .any(|f| matches!(f, Fact::DownstreamTlsUnparsed { .. })));
}

/// ServerHello records made by OpenSSL (Python's ssl, memory BIOs) for a
/// client allowing at most TLS 1.3 and 1.2.
const HELLO_13: &str = "160303007a02000076030345243abc6499fc64ebbc08ba6e0335840ae4b463d40cadd631bc6540081aa4de2029a98d351c844ceae203586e4f8930a03453f1119f274f1dcf81ab7fab37bf45130200002e002b0002030400330024001d0020d3372ee35b6676812f373143a09f4ad3c632ef47e2c1c9238d680e6643425b7a";
const HELLO_12: &str = "16030300410200003d0303884141a99aad2800c6d98a47a33df13b51680214e6276a51444f574e4752440100c030000015ff01000100000b0004030001020023000000170000";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn the_server_hello_names_the_version() {
    let h13 = unhex(HELLO_13);
    let h12 = unhex(HELLO_12);
    assert_eq!(server_hello_version(&h13), TlsVersion::Tls13);
    assert_eq!(server_hello_version(&h12), TlsVersion::Tls12);
    // Cut anywhere before supported_versions ends: unknown, never 1.2.
    let sv = h13
        .windows(6)
        .position(|w| w == [0, 0x2b, 0, 2, 3, 4])
        .unwrap();
    for cut in 0..sv + 6 {
        assert_eq!(
            server_hello_version(&h13[..cut]),
            TlsVersion::Unknown,
            "{cut}"
        );
    }
    // TLS 1.2's list must be whole to say it has no supported_versions.
    assert_eq!(
        server_hello_version(&h12[..h12.len() - 1]),
        TlsVersion::Unknown
    );
    // More records after it (the rest of the server's flight) change nothing.
    let mut flight = h13;
    flight.extend_from_slice(&[0x14, 3, 3, 0, 1, 1, 0x17, 3, 3, 0, 0x20]);
    assert_eq!(server_hello_version(&flight), TlsVersion::Tls13);
    // A ClientHello, an alert, application data: not a ServerHello.
    for other in [HELLO, APP, &[21, 3, 3, 0, 2, 2, 40][..]] {
        assert_eq!(server_hello_version(other), TlsVersion::Unknown);
    }
}

#[test]
fn the_handshake_fact_carries_the_version() {
    let mut t = ConnTable::new(10);
    let e = ep(GW, CLIENT);
    open(&mut t, 1, Role::Downstream, e);
    apply(&mut t, &data(1, Direction::Ingress, 1, HELLO, 517));
    let hello = unhex(HELLO_13);
    apply(
        &mut t,
        &data(1, Direction::Egress, 2, &hello, hello.len() as u64 + 2000),
    );
    let out = apply(
        &mut t,
        &plain(1, Direction::Ingress, 3, b"GET / HTTP/1.1\r\n\r\n"),
    );
    assert!(out.facts.contains(&Fact::DownstreamTls {
        listener: ListenKey::new(0, 8080),
        result: TlsResult::Ok,
        version: TlsVersion::Tls13,
    }));
}
