//! The `http_conn` fuzz target's input format and the invariants it checks.
//!
//! A script of sparse captures fed to one `HttpConn`, and the invariants checked on what
//! it reports. Shared with this crate's regression tests
//! (regress.rs), so a crashing input replays there exactly; the fuzz target (fuzz/) gets it
//! with the `script` feature.
//!
//! Format (all integers little-endian; a truncated input just ends the script early):
//!
//! ```text
//! config: u8      bit 0: 0 = Side::Server, 1 = Side::Client; bit 1: HttpConn::new_midstream
//! then steps, until the input ends:
//!   op:   u8      bit 0: 0 = request direction, 1 = response direction;
//!                 bit 1: on_close instead of bytes (the script ends there);
//!                 bits 2..=7: shift applied to `gap`
//!   dt:   u16     timestamp delta (ns) from the previous step; time starts at 1000
//!   head: u16     bytes of the transfer's prefix captured
//!   tail: u8      bytes of its suffix captured
//!   gap:  u16     uncaptured bytes between them, shifted left by op >> 2
//!   the head's bytes, then the tail's (fewer when the input runs out)
//! ```
//!
//! The true length is head + gap + tail, so `head.len() + tail.len() <= len` always holds.
//! After the script the connection is closed (a no-op when the script closed it).

use crate::{Anomaly, HttpConn, HttpEvent, Segment, Side};

/// One step of a script.
#[derive(Debug)]
pub enum Step<'a> {
    Request(Segment<'a>),
    Response(Segment<'a>),
    Close(u64),
}

#[derive(Debug)]
pub struct Script<'a> {
    pub side: Side,
    pub midstream: bool,
    pub steps: Vec<Step<'a>>,
}

/// Reads `n` bytes (fewer at the end of the input).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (taken, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    taken
}

fn u8_at(data: &mut &[u8]) -> u8 {
    take(data, 1).first().copied().unwrap_or(0)
}

fn u16_at(data: &mut &[u8]) -> u16 {
    let b = take(data, 2);
    u16::from_le_bytes([
        b.first().copied().unwrap_or(0),
        b.get(1).copied().unwrap_or(0),
    ])
}

pub fn decode(mut data: &[u8]) -> Script<'_> {
    let config = u8_at(&mut data);
    let mut script = Script {
        side: if config & 1 == 0 {
            Side::Server
        } else {
            Side::Client
        },
        midstream: config & 2 != 0,
        steps: Vec::new(),
    };
    let mut ts: u64 = 1_000;
    while !data.is_empty() {
        let op = u8_at(&mut data);
        ts = ts.saturating_add(u64::from(u16_at(&mut data)));
        if op & 2 != 0 {
            script.steps.push(Step::Close(ts));
            break;
        }
        let head_len = usize::from(u16_at(&mut data));
        let tail_len = usize::from(u8_at(&mut data));
        let gap = u64::from(u16_at(&mut data)) << (op >> 2);
        let head = take(&mut data, head_len);
        let tail = take(&mut data, tail_len);
        let seg = Segment {
            ts_ns: ts,
            len: (head.len() as u64 + tail.len() as u64).saturating_add(gap),
            head,
            tail,
        };
        script.steps.push(if op & 1 == 0 {
            Step::Request(seg)
        } else {
            Step::Response(seg)
        });
    }
    script
}

/// Overlapping occurrences of `needle` in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Decodes `data`, feeds it to a fresh connection and panics when an invariant breaks:
///
/// - every exchange has `request_first_ns <= request_last_ns`, and `response_last_ns` is 0 or
///   `>= response_first_ns`; its timestamps are ones the script has reached;
/// - the exchanges' request bytes never exceed the bytes fed in the request direction, nor
///   their response bytes those fed in the response direction (so neither does their sum the
///   total), and the bytes reported as non-HTTP or skipped never exceed the total;
/// - no request is invented: for each method, the exchanges with it never outnumber its
///   occurrences in the captured request-direction bytes (heads and tails, in order);
/// - a GenAI call's first token arrived within its response.
///
/// Returns the events, for tests.
pub fn replay(data: &[u8]) -> Vec<HttpEvent> {
    let script = decode(data);
    let mut conn = if script.midstream {
        HttpConn::new_midstream(script.side)
    } else {
        HttpConn::new(script.side)
    };
    let mut out = Vec::new();
    let mut fed = [0u128; 2];
    let mut captured = Vec::new();
    let mut now = 0;
    for step in &script.steps {
        match step {
            Step::Request(seg) => {
                fed[0] += u128::from(seg.len);
                captured.extend_from_slice(seg.head);
                captured.extend_from_slice(seg.tail);
                now = seg.ts_ns;
                conn.on_request_bytes(seg, &mut out);
            }
            Step::Response(seg) => {
                fed[1] += u128::from(seg.len);
                now = seg.ts_ns;
                conn.on_response_bytes(seg, &mut out);
            }
            &Step::Close(ts) => {
                now = ts;
                conn.on_close(ts, &mut out);
            }
        }
        check(&out, fed, now);
    }
    conn.on_close(now, &mut out);
    check(&out, fed, now);

    let mut methods: Vec<&str> = Vec::new();
    for e in &out {
        if let HttpEvent::Exchange(x) = e {
            if !methods.contains(&x.method.as_str()) {
                methods.push(&x.method);
            }
        }
    }
    for m in methods {
        let reported = out
            .iter()
            .filter(|e| matches!(e, HttpEvent::Exchange(x) if x.method == m))
            .count();
        let visible = occurrences(&captured, m.as_bytes());
        assert!(
            reported <= visible,
            "{reported} exchanges with method {m:?}, which the captured request bytes hold \
             {visible} times: {out:#?}"
        );
    }
    out
}

/// The invariants on the events so far, with `fed` bytes fed (request, response) and the
/// script's clock at `now`.
fn check(out: &[HttpEvent], fed: [u128; 2], now: u64) {
    let mut bytes = [0u128; 2];
    let mut lost = 0u128;
    for e in out {
        match e {
            HttpEvent::Exchange(x) => {
                assert!(
                    x.request_first_ns <= x.request_last_ns,
                    "request ends before it starts: {x:#?}"
                );
                assert!(
                    x.response_last_ns == 0 || x.response_last_ns >= x.response_first_ns,
                    "response ends before it starts: {x:#?}"
                );
                assert!(
                    [
                        x.request_first_ns,
                        x.request_last_ns,
                        x.response_first_ns,
                        x.response_last_ns,
                        x.closed_ns,
                    ]
                    .iter()
                    .all(|&t| t <= now),
                    "timestamp from the future (now {now}): {x:#?}"
                );
                if let Some(t) = x.genai.as_ref().and_then(|g| g.first_token_ns) {
                    assert!(
                        x.response_first_ns <= t && t <= x.response_last_ns.max(x.closed_ns),
                        "first token outside its response: {x:#?}"
                    );
                }
                bytes[0] += u128::from(x.request_bytes);
                bytes[1] += u128::from(x.response_bytes);
            }
            HttpEvent::Anomaly(Anomaly::NonHttp { bytes: b } | Anomaly::Resync { skipped: b }) => {
                lost += u128::from(*b);
            }
            // HttpConn reports no HTTP/2 anomalies
            HttpEvent::Anomaly(Anomaly::Desync | Anomaly::H2(_)) => {}
        }
    }
    assert!(
        bytes[0] <= fed[0] && bytes[1] <= fed[1],
        "exchanges report {bytes:?} bytes (request, response), {fed:?} were fed: {out:#?}"
    );
    assert!(
        lost <= fed[0] + fed[1],
        "{lost} bytes reported non-HTTP or skipped, {fed:?} were fed"
    );
}
