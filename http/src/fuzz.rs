//! Fuzz-style tests of `HttpConn` with a seeded generator.
//!
//! A realistic keep-alive conversation (pipelining,
//! chunked both ways, Content-Length, HEAD, 100-continue, 204/304, bodies
//! larger than any capture) cut into segments at random and captured
//! sparsely at random, checked against the exchanges it is known to hold;
//! random garbage and random byte flips, checked for no panic and bounded
//! memory.

use std::ops::Range;

use super::{
    parse::{MAX_HEAD, MAX_PATH},
    testkit::*,
    Anomaly, Exchange, HttpConn, HttpEvent, Side,
};

/// xorshift64*: deterministic, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Runs per test: `n`, times GATESCOPE_FUZZ_SCALE for a longer local search;
/// GATESCOPE_FUZZ_SEED changes the seeds.
pub(crate) fn runs(n: usize) -> usize {
    let scale = std::env::var("GATESCOPE_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    n * scale
}

pub(crate) fn seed(s: u64) -> Rng {
    let extra = std::env::var("GATESCOPE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Rng::new(s ^ extra.wrapping_mul(0x1000_0000_01b3))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Req,
    Resp,
}

/// One direction's bytes and where its framing bytes are.
#[derive(Default)]
struct DirBuf {
    bytes: Vec<u8>,
    framing: Vec<Range<usize>>,
}

impl DirBuf {
    /// Appends a message whose head is `head` and body `body` (all of the
    /// head is framing). Returns the message's range.
    fn plain(&mut self, head: &[u8], body: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(head);
        self.framing.push(start..start + head.len());
        self.bytes.extend_from_slice(body);
        start..self.bytes.len()
    }

    /// Appends a chunked message: every chunk-size line, data CRLF and the
    /// last chunk are framing.
    fn chunked(&mut self, head: &[u8], chunks: &[Vec<u8>]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(head);
        self.framing.push(start..start + head.len());
        for data in chunks {
            let line = format!("{:x}\r\n", data.len());
            let p = self.bytes.len();
            self.bytes.extend_from_slice(line.as_bytes());
            self.framing.push(p..p + line.len());
            self.bytes.extend_from_slice(data);
            let p = self.bytes.len();
            self.bytes.extend_from_slice(b"\r\n");
            self.framing.push(p..p + 2);
        }
        let p = self.bytes.len();
        self.bytes.extend_from_slice(LAST_CHUNK);
        self.framing.push(p..p + LAST_CHUNK.len());
        start..self.bytes.len()
    }

    fn is_framing(&self, r: Range<usize>) -> bool {
        self.framing
            .iter()
            .any(|f| f.start < r.end && r.start < f.end)
    }
}

struct Want {
    method: &'static str,
    path: &'static str,
    host: &'static str,
    status: u16,
    req: Range<usize>,
    resp: Range<usize>,
    traceparent: Option<&'static str>,
}

/// A conversation: both directions' bytes, the writes that carry them in
/// time order (direction, end offset), and the exchanges it holds.
struct Conv {
    q: DirBuf,
    r: DirBuf,
    writes: Vec<(Dir, usize)>,
    wants: Vec<Want>,
}

impl Conv {
    fn buf(&self, d: Dir) -> &DirBuf {
        match d {
            Dir::Req => &self.q,
            Dir::Resp => &self.r,
        }
    }
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn conversation() -> Conv {
    let mut q = DirBuf::default();
    let mut r = DirBuf::default();
    let mut writes = Vec::new();
    let mut wants = Vec::new();
    let want = |method, path, status, req: &Range<usize>, resp: &Range<usize>| Want {
        method,
        path,
        host: HOST,
        status,
        req: req.clone(),
        resp: resp.clone(),
        traceparent: None,
    };

    // 1. a plain GET
    let a = q.plain(&curl_get("/api/users?page=1"), b"");
    writes.push((Dir::Req, a.end));
    let b = r.plain(&nginx_head(200, "application/json", 300), &json(300));
    writes.push((Dir::Resp, b.end));
    wants.push(want("GET", "/api/users", 200, &a, &b));

    // 2. a POST whose body comes in its own writes
    let body = json(5_000);
    let a = q.plain(&curl_body_head("POST", "/api/orders", body.len()), &body);
    writes.push((Dir::Req, a.end - body.len()));
    writes.push((Dir::Req, a.end - 2_000));
    writes.push((Dir::Req, a.end));
    let b = r.plain(&nginx_head(201, "application/json", 12), br#"{"id":77123}"#);
    writes.push((Dir::Resp, b.end));
    wants.push(want("POST", "/api/orders", 201, &a, &b));

    // 3. HEAD: Content-Length without a body
    let a = q.plain(&curl("HEAD", "/static/app.js"), b"");
    writes.push((Dir::Req, a.end));
    let b = r.plain(&nginx_head(200, "application/javascript", 1_048_576), b"");
    writes.push((Dir::Resp, b.end));
    wants.push(want("HEAD", "/static/app.js", 200, &a, &b));

    // 4. chunked response, one chunk per write, the last with the terminator
    let a = q.plain(&curl_get("/api/stream"), b"");
    writes.push((Dir::Req, a.end));
    let head = nginx_chunked_head(200);
    let b = r.chunked(&head, &[json(8_192), json(3_000), json(700)]);
    let c1 = head.len() + chunk(&json(8_192)).len();
    writes.push((Dir::Resp, b.start + head.len()));
    writes.push((Dir::Resp, b.start + c1));
    writes.push((Dir::Resp, b.start + c1 + chunk(&json(3_000)).len()));
    writes.push((Dir::Resp, b.end));
    wants.push(want("GET", "/api/stream", 200, &a, &b));

    // 5. pipelining: four requests in one write, one with a chunked body
    let a1 = q.plain(&curl_get("/p/1"), b"");
    let a2 = q.plain(&curl("HEAD", "/p/2"), b"");
    let a3 = q.chunked(
        format!("POST /p/3 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
        &[json(20), json(2_000)],
    );
    let a4 = q.plain(&curl_get("/p/4?x=y"), b"");
    writes.push((Dir::Req, a4.end));
    let b1 = r.plain(&nginx_head(200, "text/plain", 1_200), &json(1_200));
    let b2 = r.plain(&nginx_head(200, "text/plain", 999), b"");
    writes.push((Dir::Resp, b2.end));
    let b3 = r.chunked(&nginx_chunked_head(201), &[json(50), json(4_000)]);
    let b4 = r.plain(&nginx_empty(304), b"");
    writes.push((Dir::Resp, b4.end));
    wants.push(want("GET", "/p/1", 200, &a1, &b1));
    wants.push(want("HEAD", "/p/2", 200, &a2, &b2));
    wants.push(want("POST", "/p/3", 201, &a3, &b3));
    wants.push(want("GET", "/p/4", 304, &a4, &b4));

    // 6. Expect: 100-continue
    let body = json(20_000);
    let head = format!(
        "PUT /api/blob HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\
         Content-Length: 20000\r\nExpect: 100-continue\r\n\r\n"
    );
    let a = q.plain(head.as_bytes(), &body);
    writes.push((Dir::Req, a.end - body.len()));
    let cont = r.plain(b"HTTP/1.1 100 Continue\r\n\r\n", b"");
    writes.push((Dir::Resp, cont.end));
    writes.push((Dir::Req, a.end));
    let b = r.plain(&nginx_head(200, "application/json", 2), b"{}");
    writes.push((Dir::Resp, b.end));
    wants.push(want("PUT", "/api/blob", 200, &a, &(cont.start..b.end)));

    // 7. a large body written in 64 KiB pieces
    let a = q.plain(&curl_get("/download/big.bin"), b"");
    writes.push((Dir::Req, a.end));
    let head = nginx_head(200, "application/octet-stream", 200_000);
    let b = r.plain(&head, &vec![b'b'; 200_000]);
    let mut at = b.start + head.len();
    while at < b.end {
        at = (at + 65_536).min(b.end);
        writes.push((Dir::Resp, at));
    }
    wants.push(want("GET", "/download/big.bin", 200, &a, &b));

    // 8. traceparent, 204
    let a = q.plain(
        format!("DELETE /api/orders/77123 HTTP/1.1\r\nHost: {HOST}\r\ntraceparent: {TP}\r\n\r\n")
            .as_bytes(),
        b"",
    );
    writes.push((Dir::Req, a.end));
    let b = r.plain(&nginx_empty(204), b"");
    writes.push((Dir::Resp, b.end));
    wants.push(Want {
        traceparent: Some(TP),
        ..want("DELETE", "/api/orders/77123", 204, &a, &b)
    });

    // 9. nginx's own 404
    let a = q.plain(&curl_get("/nope"), b"");
    writes.push((Dir::Req, a.end));
    let page = b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
                 <center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n\
                 </body>\r\n</html>\r\n";
    let b = r.plain(&nginx_head(404, "text/html", page.len()), page);
    writes.push((Dir::Resp, b.end));
    wants.push(want("GET", "/nope", 404, &a, &b));

    Conv {
        q,
        r,
        writes,
        wants,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Random cuts, everything captured.
    Full,
    /// Random cuts, heads of 1..=64 and tails of 0..=16 bytes captured,
    /// segments shortened so no framing byte is left uncaptured.
    SparseClean,
    /// Random cuts and captures, framing bytes may be lost.
    SparseAny,
    /// Random cuts, captured as the kernel does by default (1024 + 64).
    Kernel,
}

/// A fed segment: direction, offset, length, timestamp.
struct Fed {
    dir: Dir,
    start: usize,
    len: usize,
    ts: u64,
    /// Bytes captured at its start and at its end.
    head: usize,
    tail: usize,
}

struct Run {
    events: Vec<HttpEvent>,
    fed: Vec<Fed>,
    /// Every uncaptured byte was body.
    clean: bool,
    max_heap: usize,
}

fn run(conv: &Conv, side: Side, mode: Mode, rng: &mut Rng) -> Run {
    let mut conn = HttpConn::new(side);
    let mut events = Vec::new();
    let mut fed = Vec::new();
    let mut clean = true;
    let mut max_heap = 0;
    let mut pos = [0usize; 2];
    for (w, &(dir, end)) in conv.writes.iter().enumerate() {
        let buf = conv.buf(dir);
        let at = &mut pos[dir as usize];
        let mut k = 0;
        while *at < end {
            let left = (end - *at) as u64;
            let want = if rng.chance(40) {
                rng.range(1, 48)
            } else {
                rng.range(49, 20_000)
            };
            let mut len = want.min(left) as usize;
            let (h, t) = match mode {
                Mode::Full => (len, 0),
                Mode::SparseClean | Mode::SparseAny => {
                    (rng.range(1, 64) as usize, rng.range(0, 16) as usize)
                }
                Mode::Kernel => (1024, 64),
            };
            if mode == Mode::SparseClean && len > h + t && buf.is_framing(*at + h..*at + len - t) {
                len = h + t;
            }
            let data = &buf.bytes[*at..*at + len];
            let ts = (w as u64 + 1) * 1_000_000 + k;
            let c = cap(ts, data, h, t);
            if len > c.head.len() + c.tail.len()
                && buf.is_framing(*at + c.head.len()..*at + len - c.tail.len())
            {
                clean = false;
            }
            let before = events.len();
            match dir {
                Dir::Req => conn.on_request_bytes(&c.seg(), &mut events),
                Dir::Resp => conn.on_response_bytes(&c.seg(), &mut events),
            }
            if std::env::var_os("FUZZ_TRACE").is_some() {
                eprintln!(
                    "{dir:?} ts={ts} at={} len={len} head={:?} tail={:?} -> {:?} phase={:?}",
                    *at,
                    String::from_utf8_lossy(&c.head),
                    String::from_utf8_lossy(&c.tail),
                    &events[before..],
                    conn.phase()
                );
            }
            max_heap = max_heap.max(conn.heap_bytes());
            fed.push(Fed {
                dir,
                start: *at,
                len,
                ts,
                head: c.head.len(),
                tail: c.tail.len(),
            });
            *at += len;
            k += 1;
        }
    }
    conn.on_close(u64::MAX, &mut events);
    Run {
        events,
        fed,
        clean,
        max_heap,
    }
}

/// Timestamp of the segment that carried byte `off` of a direction.
fn ts_of(fed: &[Fed], dir: Dir, off: usize) -> u64 {
    fed.iter()
        .find(|f| f.dir == dir && f.start <= off && off < f.start + f.len)
        .map_or(u64::MAX, |f| f.ts)
}

fn expected(conv: &Conv, fed: &[Fed]) -> Vec<Exchange> {
    conv.wants
        .iter()
        .map(|w| Exchange {
            method: w.method.into(),
            path: w.path.into(),
            host: Some(w.host.into()),
            status: w.status,
            request_bytes: w.req.len() as u64,
            response_bytes: w.resp.len() as u64,
            request_first_ns: ts_of(fed, Dir::Req, w.req.start),
            request_last_ns: ts_of(fed, Dir::Req, w.req.end - 1),
            response_first_ns: ts_of(fed, Dir::Resp, w.resp.start),
            response_last_ns: ts_of(fed, Dir::Resp, w.resp.end - 1),
            closed_ns: 0,
            upgraded: false,
            version: 1,
            trace: crate::TraceHeaders {
                traceparent: w.traceparent.map(Into::into),
                ..Default::default()
            },
            grpc: None,
            genai: None,
        })
        .collect()
}

fn split(events: &[HttpEvent]) -> (Vec<Exchange>, Vec<Anomaly>) {
    let mut x = Vec::new();
    let mut a = Vec::new();
    for e in events {
        match e {
            HttpEvent::Exchange(e) => x.push(e.clone()),
            HttpEvent::Anomaly(e) => a.push(*e),
        }
    }
    (x, a)
}

/// Two heads, a path and host per pending request, the pending queue.
pub(crate) const HEAP_BOUND: usize = 2 * (MAX_HEAD + 1) + 128 * (512 + MAX_PATH + 1024 + 256);

#[test]
fn unsplit_conversation_is_exact() {
    let conv = conversation();
    let mut rng = Rng::new(1);
    for side in [Side::Server, Side::Client] {
        // each write one fully captured segment
        let mut conn = HttpConn::new(side);
        let mut events = Vec::new();
        let mut fed = Vec::new();
        let mut pos = [0usize; 2];
        for (w, &(dir, end)) in conv.writes.iter().enumerate() {
            let at = pos[dir as usize];
            let c = full((w as u64 + 1) * 1_000_000, &conv.buf(dir).bytes[at..end]);
            match dir {
                Dir::Req => conn.on_request_bytes(&c.seg(), &mut events),
                Dir::Resp => conn.on_response_bytes(&c.seg(), &mut events),
            }
            fed.push(Fed {
                dir,
                start: at,
                len: end - at,
                ts: c.ts,
                head: c.head.len(),
                tail: c.tail.len(),
            });
            pos[dir as usize] = end;
        }
        conn.on_close(u64::MAX, &mut events);
        let (x, a) = split(&events);
        assert_eq!(a, vec![]);
        assert_eq!(x, expected(&conv, &fed));
    }
    // and random cuts, fully captured, for a first sanity check
    let r = run(&conv, Side::Server, Mode::Full, &mut rng);
    assert_eq!(split(&r.events), (expected(&conv, &r.fed), vec![]));
}

#[test]
fn random_splits_full_capture_are_exact() {
    let conv = conversation();
    let mut rng = seed(0x5eed_0001);
    for i in 0..runs(300) {
        let side = if i % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let r = run(&conv, side, Mode::Full, &mut rng);
        let (x, a) = split(&r.events);
        assert_eq!(a, vec![], "run {i}");
        assert_eq!(x, expected(&conv, &r.fed), "run {i}");
        assert!(r.max_heap <= HEAP_BOUND);
    }
}

#[test]
fn random_splits_sparse_capture_without_framing_loss_are_exact() {
    let conv = conversation();
    let mut rng = seed(0x5eed_0002);
    for i in 0..runs(300) {
        let side = if i % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let r = run(&conv, side, Mode::SparseClean, &mut rng);
        assert!(r.clean);
        let (x, a) = split(&r.events);
        assert_eq!(a, vec![], "run {i}");
        assert_eq!(x, expected(&conv, &r.fed), "run {i}");
        assert!(r.max_heap <= HEAP_BOUND);
    }
}

#[test]
fn random_splits_sparse_capture_never_misattribute() {
    let conv = conversation();
    let mut rng = seed(0x5eed_0003);
    for i in 0..runs(1_000) {
        let side = if i % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let r = run(&conv, side, Mode::SparseAny, &mut rng);
        check_degraded(&conv, &r, i);
    }
}

#[test]
fn random_splits_kernel_capture_never_misattribute() {
    let conv = conversation();
    let mut rng = seed(0x5eed_0007);
    for i in 0..runs(1_000) {
        let side = if i % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let r = run(&conv, side, Mode::Kernel, &mut rng);
        check_degraded(&conv, &r, i);
    }
}

/// Index (in feed order) of the last segment whose uncaptured bytes held a
/// framing byte; `None` when no framing byte was lost.
fn last_framing_loss(conv: &Conv, fed: &[Fed]) -> Option<usize> {
    fed.iter().rposition(|f| {
        f.len > f.head + f.tail
            && conv
                .buf(f.dir)
                .is_framing(f.start + f.head..f.start + f.len - f.tail)
    })
}

/// The segment (index in feed order) that carried byte `off` of a direction,
/// if that byte is the segment's first.
fn starts_segment(fed: &[Fed], dir: Dir, off: usize) -> Option<usize> {
    fed.iter().position(|f| f.dir == dir && f.start == off)
}

/// Could `e` be what the parser made of `w` when framing was lost around it:
/// the same method, a non-empty prefix of its path (a gap may cut the request
/// line), its first request byte, and its status or an unknown one.
fn degraded_match(w: &Want, e: &Exchange, fed: &[Fed]) -> bool {
    w.method == e.method
        && !e.path.is_empty()
        && w.path.starts_with(e.path.as_str())
        && ts_of(fed, Dir::Req, w.req.start) == e.request_first_ns
        && [w.status, 0, 499].contains(&e.status)
}

/// A run where framing may have been lost: exact when it was not. Otherwise
/// fewer exchanges may come out, never invented or reordered ones:
///
/// - the exchanges are an in-order subsequence of the requests sent, each a
///   degraded but true account of its request ([`degraded_match`]), whose
///   bytes reach no further than the next reported request's first byte (a
///   message whose end was lost counts on until a segment starts a message,
///   so it may take in requests that went unseen, never a reported one), its
///   response bytes no further than the next reported response's head (the
///   first pieces of a start line split across segments are not known to
///   start one, so they may be counted in the lost body before it);
/// - every request (and its response) that starts a segment after the last
///   segment that lost a framing byte, in both directions, comes out exactly:
///   the parser has resynchronised for good by then;
/// - every request that does not come out is accounted for by an anomaly: one
///   loss of framing may hide several requests in a row, so each run of
///   consecutive requests that do not come out needs one.
fn check_degraded(conv: &Conv, r: &Run, i: usize) {
    let (x, a) = split(&r.events);
    assert!(r.max_heap <= HEAP_BOUND, "run {i}");
    let want = expected(conv, &r.fed);
    let Some(last_loss) = last_framing_loss(conv, &r.fed) else {
        assert!(r.clean, "run {i}");
        assert_eq!(a, vec![], "run {i}");
        assert_eq!(x, want, "run {i}");
        return;
    };
    assert!(!r.clean, "run {i}");
    // greedy earliest match: an in-order subsequence exists iff this finds one
    let mut matched = vec![None; conv.wants.len()];
    let mut next = 0;
    for (k, e) in x.iter().enumerate() {
        let Some(j) = (next..conv.wants.len()).find(|&j| degraded_match(&conv.wants[j], e, &r.fed))
        else {
            panic!(
                "run {i}: exchange {k} is no request at or after request {next} \
                 (out of order, invented or misattributed): {e:#?}\nall: {x:#?}"
            );
        };
        matched[j] = Some(k);
        next = j + 1;
    }
    let reported: Vec<usize> = (0..conv.wants.len())
        .filter(|&j| matched[j].is_some())
        .collect();
    for (n, &j) in reported.iter().enumerate() {
        let (w, e) = (&conv.wants[j], &x[matched[j].unwrap()]);
        let later = &reported[n + 1..];
        let req_end = later
            .first()
            .map_or(conv.q.bytes.len(), |&l| conv.wants[l].req.start);
        let resp_end = later
            .iter()
            .find(|&&l| x[matched[l].unwrap()].response_first_ns != 0)
            .map_or(conv.r.bytes.len(), |&l| {
                let at = conv.wants[l].resp.start;
                let head = conv.r.bytes[at..].windows(4).position(|b| b == b"\r\n\r\n");
                at + head.map_or(0, |h| h + 4)
            });
        assert!(
            e.request_bytes <= (req_end - w.req.start) as u64
                && e.response_bytes <= (resp_end.saturating_sub(w.resp.start)) as u64,
            "run {i}: request {j} reports {} request bytes (at most {} possible) and {} \
             response bytes (at most {}): {e:#?}",
            e.request_bytes,
            req_end - w.req.start,
            e.response_bytes,
            resp_end.saturating_sub(w.resp.start)
        );
    }
    for (j, w) in conv.wants.iter().enumerate() {
        let settled = [(Dir::Req, w.req.start), (Dir::Resp, w.resp.start)]
            .iter()
            .all(|&(d, off)| starts_segment(&r.fed, d, off).is_some_and(|s| s > last_loss));
        if settled {
            let got = matched[j].map(|k| &x[k]);
            assert_eq!(
                got,
                Some(&want[j]),
                "run {i}: request {j} starts after the last framing loss (segment \
                 {last_loss}) and must come out exactly; all: {x:#?}"
            );
        }
    }
    let dropped_runs = (0..conv.wants.len())
        .filter(|&j| matched[j].is_none() && (j == 0 || matched[j - 1].is_some()))
        .count();
    assert!(
        dropped_runs <= a.len(),
        "run {i}: {dropped_runs} runs of requests did not come out, only {} anomalies: {a:?}; \
         reported: {reported:?}",
        a.len()
    );
}

#[test]
fn random_garbage_never_panics_and_stays_bounded() {
    let mut rng = seed(0x5eed_0004);
    let heads: [&[u8]; 4] = [
        b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        b"GET ",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n",
    ];
    for i in 0..runs(400) {
        let side = if i % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let mut conn = if i % 3 == 0 {
            HttpConn::new_midstream(side)
        } else {
            HttpConn::new(side)
        };
        let mut events = Vec::new();
        let mut fed = [0u64; 2];
        for k in 0..rng.range(1, 60) {
            let len = rng.range(1, 6_000) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.chance(20) {
                let h = heads[rng.range(0, 3) as usize];
                data.splice(0..0, h.iter().copied());
            }
            let c = cap(
                k,
                &data,
                rng.range(1, 4_096) as usize,
                rng.range(0, 64) as usize,
            );
            let d = rng.range(0, 1) as usize;
            if d == 0 {
                conn.on_request_bytes(&c.seg(), &mut events);
            } else {
                conn.on_response_bytes(&c.seg(), &mut events);
            }
            fed[d] += data.len() as u64;
            assert!(conn.heap_bytes() <= HEAP_BOUND);
        }
        conn.on_close(1_000, &mut events);
        let (x, a) = split(&events);
        // only what starts like a request (the injected ones) is taken for one
        for e in &x {
            assert_eq!(e.method, "GET", "run {i}");
        }
        let counted: u64 = a
            .iter()
            .map(|a| match a {
                Anomaly::NonHttp { bytes } => *bytes,
                Anomaly::Resync { skipped } => *skipped,
                Anomaly::Desync | Anomaly::H2(_) => 0,
            })
            .sum();
        assert!(counted <= fed[0] + fed[1], "run {i}");
    }
}

#[test]
fn pure_garbage_is_all_non_http() {
    let mut rng = seed(0x5eed_0005);
    for i in 0..runs(200) {
        let mut conn = HttpConn::new(Side::Server);
        let mut events = Vec::new();
        let mut total = 0;
        for k in 0..rng.range(1, 30) {
            let len = rng.range(1, 3_000) as usize;
            // no CR or LF, so nothing is taken for an empty line
            let data: Vec<u8> = (0..len)
                .map(|_| match rng.next() as u8 {
                    b'\r' | b'\n' => 0,
                    b => b,
                })
                .collect();
            let c = cap(
                k,
                &data,
                rng.range(1, 1_024) as usize,
                rng.range(0, 64) as usize,
            );
            conn.on_request_bytes(&c.seg(), &mut events);
            total += len as u64;
        }
        conn.on_close(1_000, &mut events);
        let (x, a) = split(&events);
        assert_eq!(x, vec![], "run {i}");
        // a start line needs a line end, so garbage without one is never
        // confirmed as HTTP: all of it is reported, as one run
        assert_eq!(a, vec![Anomaly::NonHttp { bytes: total }], "run {i}");
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let conv = conversation();
    let mut rng = seed(0x5eed_0006);
    for i in 0..runs(500) {
        let mut c = Conv {
            q: DirBuf {
                bytes: conv.q.bytes.clone(),
                framing: conv.q.framing.clone(),
            },
            r: DirBuf {
                bytes: conv.r.bytes.clone(),
                framing: conv.r.framing.clone(),
            },
            writes: conv.writes.clone(),
            wants: Vec::new(),
        };
        for _ in 0..rng.range(1, 8) {
            // flip mostly where it hurts: framing bytes
            let buf = if rng.chance(50) { &mut c.q } else { &mut c.r };
            let at = if rng.chance(70) {
                let f = &buf.framing[rng.range(0, buf.framing.len() as u64 - 1) as usize];
                rng.range(f.start as u64, f.end as u64 - 1) as usize
            } else {
                rng.range(0, buf.bytes.len() as u64 - 1) as usize
            };
            buf.bytes[at] ^= 1 << rng.range(0, 7);
        }
        let side = if i % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let mode = if i % 3 == 0 {
            Mode::Full
        } else {
            Mode::SparseAny
        };
        let r = run(&c, side, mode, &mut rng);
        assert!(r.max_heap <= HEAP_BOUND, "run {i}");
        let (x, _) = split(&r.events);
        assert!(x.len() <= conv.wants.len(), "run {i}: {x:#?}");
    }
}
