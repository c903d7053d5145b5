//! One connection's HTTP/1.x: both directions' streams, and requests paired
//! with their responses in order (pipelining answered FIFO).

use std::collections::VecDeque;

use super::{
    parse::{BodyHeader, Kind},
    stream::{Framing, Head, HeadInfo, Sink, Stream},
    Anomaly, Exchange, HttpEvent, Phase, Segment, Side,
};

/// Requests in flight on one connection past which it is not followed any
/// more (its requests are reported with status 0 and the connection becomes
/// opaque). Real pipelining depths are a few to a few dozen.
const MAX_PENDING: usize = 64;

/// Per-connection HTTP state, both directions.
#[derive(Debug)]
pub struct HttpConn {
    req: Stream,
    resp: Stream,
    pairs: Pairing,
    closed: bool,
}

impl HttpConn {
    pub fn new(side: Side) -> Self {
        Self::with_streams(
            side,
            Stream::new(Kind::Request),
            Stream::new(Kind::Response),
        )
    }

    /// A connection that was already open when gatescope started: both
    /// directions skip to the next message start; a response is only taken
    /// once a request it can answer has been seen.
    pub fn new_midstream(side: Side) -> Self {
        Self::with_streams(
            side,
            Stream::new_midstream(Kind::Request),
            Stream::new_midstream(Kind::Response),
        )
    }

    fn with_streams(side: Side, req: Stream, resp: Stream) -> Self {
        Self {
            req,
            resp,
            pairs: Pairing {
                side,
                pending: VecDeque::new(),
                answered: 0,
                interim: false,
                to_opaque: false,
                req_lost_at: None,
                resp_segs: 0,
                req_lost_clock: None,
            },
            closed: false,
        }
    }

    /// Bytes in the requests' direction (ingress downstream, egress upstream).
    pub fn on_request_bytes(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpEvent>) {
        if self.closed {
            return;
        }
        self.req.feed(
            seg,
            &mut ReqSink {
                p: &mut self.pairs,
                out,
            },
        );
        self.settle(out);
    }

    /// Bytes in the responses' direction.
    pub fn on_response_bytes(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpEvent>) {
        if self.closed {
            return;
        }
        // A response with no request left to answer while a request head is
        // still open: the server is done reading that head (its end lay in
        // an uncaptured region, or it was refused as too large).
        if self.pairs.answered == self.pairs.pending.len() && self.req.in_started_head() {
            self.req.end_head_early(&mut ReqSink {
                p: &mut self.pairs,
                out,
            });
        }
        self.resp.feed(
            seg,
            &mut RespSink {
                p: &mut self.pairs,
                out,
            },
        );
        self.pairs.resp_segs += 1;
        self.settle(out);
    }

    /// FIN, RST or close: close-delimited bodies end, requests without a
    /// response are reported (499 downstream, 0 upstream). Timestamps stay
    /// those of the segments that carried the bytes; `ts_ns` is not a byte's.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.req.close(&mut ReqSink {
            p: &mut self.pairs,
            out,
        });
        self.resp.close(&mut RespSink {
            p: &mut self.pairs,
            out,
        });
        let unanswered = self.pairs.unanswered_status();
        for p in self.pairs.pending.drain(..) {
            let mut exchange = p.into_exchange(unanswered);
            if exchange.response_last_ns == 0 || exchange.status == unanswered {
                exchange.closed_ns = ts_ns;
            }
            out.push(HttpEvent::Exchange(exchange));
        }
        self.pairs.answered = 0;
    }

    /// stub_status's view of the connection.
    pub fn phase(&self) -> Phase {
        if self.closed {
            Phase::Waiting
        } else if self.req.is_opaque() || self.resp.is_opaque() {
            Phase::Opaque
        } else if !self.pairs.pending.is_empty() {
            Phase::Writing
        } else if self.req.in_head() {
            Phase::Reading
        } else if self.req.is_non_http() {
            Phase::Opaque
        } else {
            Phase::Waiting
        }
    }

    /// What a direction's events imply for the other one.
    fn settle(&mut self, out: &mut Vec<HttpEvent>) {
        if self.pairs.to_opaque {
            // 101 or a CONNECT tunnel: nothing after it is HTTP, and requests
            // parsed after the upgrading one were not requests.
            self.pairs.to_opaque = false;
            self.req.set_opaque();
            self.resp.set_opaque();
            self.pairs.pending.truncate(self.pairs.answered);
            self.pairs.try_emit(out);
        }
        // A request whose body's end was lost ends when its response does.
        if self.req.is_body_lost() {
            if let Some(p) = self.pairs.pending.back_mut() {
                if !p.req_done && p.resp_done {
                    p.req_done = true;
                    self.req.abandon_body();
                    self.pairs.try_emit(out);
                }
            }
        }
    }

    /// Approximate heap use, for the bounded-memory tests.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.req.heap_bytes()
            + self.resp.heap_bytes()
            + self.pairs.pending.capacity() * std::mem::size_of::<Pending>()
            + self
                .pairs
                .pending
                .iter()
                .map(|p| {
                    p.method.capacity()
                        + p.path.capacity()
                        + p.host.as_ref().map_or(0, String::capacity)
                        + p.traceparent.as_ref().map_or(0, String::capacity)
                })
                .sum::<usize>()
    }
}

#[derive(Debug)]
struct Pairing {
    side: Side,
    /// Requests seen and not yet reported, oldest first.
    pending: VecDeque<Pending>,
    /// `pending[..answered]` have their final response complete.
    answered: usize,
    /// The response being received is an interim (1xx) one.
    interim: bool,
    /// A 101 or CONNECT 2xx was seen: the connection stops being HTTP.
    to_opaque: bool,
    /// When the request stream last lost its place: requests after that
    /// may have gone unseen.
    req_lost_at: Option<u64>,
    /// Response segments received so far.
    resp_segs: u64,
    /// `resp_segs` when the request stream last lost its place.
    req_lost_clock: Option<u64>,
}

#[derive(Debug)]
struct Pending {
    method: String,
    path: String,
    host: Option<String>,
    traceparent: Option<String>,
    is_head: bool,
    is_connect: bool,
    req_bytes: u64,
    req_first: u64,
    req_last: u64,
    req_done: bool,
    resp_bytes: u64,
    resp_first: Option<u64>,
    resp_last: u64,
    /// Final status; Some(0) when the response was lost.
    status: Option<u16>,
    resp_done: bool,
    upgraded: bool,
    /// Response segments received before this request's first byte.
    resp_segs_before: u64,
    /// Seen right after requests went unseen, with no response received in
    /// between (pipelined behind them): its response cannot be told from
    /// theirs.
    tainted: bool,
}

impl Pending {
    fn into_exchange(self, unanswered: u16) -> Exchange {
        Exchange {
            method: self.method,
            path: self.path,
            host: self.host,
            status: self.status.unwrap_or(unanswered),
            request_bytes: self.req_bytes,
            response_bytes: self.resp_bytes,
            request_first_ns: self.req_first,
            request_last_ns: self.req_last,
            response_first_ns: self.resp_first.unwrap_or(0),
            response_last_ns: self.resp_first.map_or(0, |_| self.resp_last),
            closed_ns: 0,
            upgraded: self.upgraded,
            traceparent: self.traceparent,
        }
    }
}

impl Pairing {
    /// nginx's 499 for a client that left before its response; 0 upstream.
    fn unanswered_status(&self) -> u16 {
        match self.side {
            Side::Server => 499,
            Side::Client => 0,
        }
    }

    /// Reports the oldest requests whose both halves are complete.
    fn try_emit(&mut self, out: &mut Vec<HttpEvent>) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.req_done && p.resp_done)
        {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.answered = self.answered.saturating_sub(1);
            out.push(HttpEvent::Exchange(p.into_exchange(0)));
        }
    }
}

/// Methods whose requests carry no body in practice; a head of theirs cut by
/// a gap is taken as bodiless when no framing header was visible.
fn bodiless(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE" | "CONNECT"
    )
}

struct ReqSink<'a> {
    p: &'a mut Pairing,
    out: &'a mut Vec<HttpEvent>,
}

impl Sink for ReqSink<'_> {
    fn accept_resync(&mut self, _ts: u64) -> bool {
        true
    }

    fn head(&mut self, head: Head, info: HeadInfo) -> Option<Framing> {
        let Head::Request(h) = head else {
            return None;
        };
        if self.p.pending.len() >= MAX_PENDING {
            // Past any sane pipelining depth: stop following the connection
            // rather than guess which response answers what.
            self.out.push(HttpEvent::Anomaly(Anomaly::Desync));
            for mut p in self.p.pending.drain(..) {
                p.status.get_or_insert(0);
                self.out.push(HttpEvent::Exchange(p.into_exchange(0)));
            }
            self.p.answered = 0;
            self.p.to_opaque = true;
            return Some(Framing::Tunnel);
        }
        let framing = match h.body {
            BodyHeader::Chunked => Framing::Chunked,
            BodyHeader::Length(n) => Framing::Length(n),
            BodyHeader::OtherCoding | BodyHeader::Invalid => Framing::Unknown,
            BodyHeader::Absent if info.holed && !bodiless(&h.method) => Framing::Unknown,
            BodyHeader::Absent => Framing::None,
        };
        self.p.pending.push_back(Pending {
            is_head: h.method == "HEAD",
            is_connect: h.method == "CONNECT",
            method: h.method,
            path: h.path,
            host: h.host,
            traceparent: h.traceparent,
            req_bytes: info.bytes,
            req_first: info.first_ts,
            req_last: info.last_ts,
            req_done: false,
            resp_bytes: 0,
            resp_first: None,
            resp_last: 0,
            status: None,
            resp_done: false,
            upgraded: false,
            resp_segs_before: info.clock,
            tainted: info.uncertain && self.p.req_lost_clock == Some(info.clock),
        });
        Some(framing)
    }

    fn body(&mut self, bytes: u64, ts: u64) {
        if let Some(p) = self.p.pending.back_mut() {
            if !p.req_done {
                p.req_bytes = p.req_bytes.saturating_add(bytes);
                p.req_last = ts;
            }
        }
    }

    fn end(&mut self) {
        if let Some(p) = self.p.pending.back_mut() {
            p.req_done = true;
        }
        self.p.try_emit(self.out);
    }

    fn anomaly(&mut self, a: Anomaly) {
        self.out.push(HttpEvent::Anomaly(a));
    }

    fn lost(&mut self, ts: u64) {
        self.p.req_lost_at = Some(ts);
        self.p.req_lost_clock = Some(self.p.resp_segs);
    }

    fn clock(&self) -> u64 {
        self.p.resp_segs
    }
}

struct RespSink<'a> {
    p: &'a mut Pairing,
    out: &'a mut Vec<HttpEvent>,
}

impl Sink for RespSink<'_> {
    /// A response can only answer a request whose first byte was seen before
    /// it.
    fn accept_resync(&mut self, ts: u64) -> bool {
        self.p
            .pending
            .iter()
            .skip(self.p.answered)
            .any(|p| p.req_first <= ts)
    }

    fn head(&mut self, head: Head, info: HeadInfo) -> Option<Framing> {
        let Head::Response(h) = head else {
            return None;
        };
        let p = &mut *self.p;
        let first = info.first_ts;
        if p.pending
            .get(p.answered)
            .is_none_or(|q| q.req_first > first)
        {
            // nothing sent before it that it could answer
            return None;
        }
        if info.uncertain {
            // Responses may have gone unseen, so the oldest unanswered
            // request is not necessarily the one answered. A client that
            // sent a request only after receiving response bytes was waiting
            // for them: the requests before it were answered by those bytes.
            // So skip, oldest first, every candidate followed by a request
            // sent (before this response) after response bytes arrived;
            // pipelined requests, sent back to back, stay in order.
            let mut j = p.answered;
            while let (Some(a), Some(b)) = (p.pending.get(j), p.pending.get(j + 1)) {
                if b.req_first <= first && b.resp_segs_before > a.resp_segs_before {
                    j += 1;
                } else {
                    break;
                }
            }
            // If response bytes came (unseen or skipped) since that request
            // was sent, this may not be the first response to it and its
            // batch: if the request stream lost its place since, a later
            // request may have gone unseen and this be its response; if
            // others were pipelined with it, this may answer any of them.
            // Then nothing is attributed and those requests' statuses are
            // unknown.
            let q = &p.pending[j];
            let since = p.resp_segs > q.resp_segs_before;
            let unsure = since && p.req_lost_at.is_some_and(|at| at >= q.req_first);
            let batch =
                |b: &Pending| b.req_first <= first && b.resp_segs_before == q.resp_segs_before;
            let ambiguous = since && p.pending.get(j + 1).is_some_and(batch);
            let mut upto = if unsure || ambiguous { j + 1 } else { j };
            if ambiguous {
                while p.pending.get(upto).is_some_and(batch) {
                    upto += 1;
                }
            }
            for q in p.pending.range_mut(p.answered..upto) {
                q.status = Some(0);
                q.resp_done = true;
            }
            p.answered = upto;
            p.interim = false;
            p.try_emit(self.out);
            if unsure || ambiguous {
                return None;
            }
        }
        if p.pending.get(p.answered).is_some_and(|q| q.tainted) {
            // Requests pipelined behind unseen ones: which response is whose
            // is unknowable until they are all answered.
            while let Some(q) = p.pending.get_mut(p.answered).filter(|q| q.tainted) {
                q.status = Some(0);
                q.resp_done = true;
                p.answered += 1;
            }
            p.try_emit(self.out);
            return None;
        }
        let idx = p.answered;
        let q = p.pending.get_mut(idx)?;
        q.resp_first.get_or_insert(info.first_ts);
        q.resp_bytes = q.resp_bytes.saturating_add(info.bytes);
        q.resp_last = info.last_ts;
        let status = h.status;
        let framing = if status == 101 {
            q.status = Some(101);
            q.upgraded = true;
            p.to_opaque = true;
            Framing::Tunnel
        } else if (100..200).contains(&status) {
            // interim: its bytes count, the final response follows
            p.interim = true;
            Framing::None
        } else {
            q.status = Some(status);
            if q.is_connect && (200..300).contains(&status) {
                q.upgraded = true;
                p.to_opaque = true;
                Framing::Tunnel
            } else if q.is_head || status == 204 || status == 304 {
                Framing::None
            } else {
                match h.body {
                    BodyHeader::Chunked => Framing::Chunked,
                    BodyHeader::Length(n) => Framing::Length(n),
                    BodyHeader::OtherCoding => Framing::Close,
                    BodyHeader::Invalid => Framing::Unknown,
                    BodyHeader::Absent if info.holed => Framing::Unknown,
                    BodyHeader::Absent => Framing::Close,
                }
            }
        };
        Some(framing)
    }

    fn body(&mut self, bytes: u64, ts: u64) {
        if let Some(q) = self.p.pending.get_mut(self.p.answered) {
            q.resp_bytes = q.resp_bytes.saturating_add(bytes);
            q.resp_last = ts;
        }
    }

    fn end(&mut self) {
        if self.p.interim {
            self.p.interim = false;
            return;
        }
        if let Some(q) = self.p.pending.get_mut(self.p.answered) {
            q.resp_done = true;
            self.p.answered += 1;
        }
        self.p.try_emit(self.out);
    }

    fn anomaly(&mut self, a: Anomaly) {
        self.out.push(HttpEvent::Anomaly(a));
    }

    fn lost(&mut self, _ts: u64) {}

    fn clock(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse::MAX_HEAD, testkit::*};
    use super::*;

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
        assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
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
        assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
    }

    #[test]
    fn chunk_framing_lost_resyncs_at_next_response() {
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
        assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
        assert_eq!(t.exchanges(), vec![]);
        let q2 = curl_get("/two");
        let r2 = nginx_resp(200, "text/plain", b"2");
        t.req(full(600, &q2)).resp(full(700, &r2));
        let total = read1.len() + read2.len() + read3.len();
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
        assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
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
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
                .to_vec();
        let r1 = nginx_resp(200, "text/plain", b"hello");
        let r2 = nginx_empty(204);
        // an upstream that sends Content-Length on a 304: still no body
        let r3 =
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 999\r\nETag: \"x\"\r\n\r\n".to_vec();
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
        let q =
            b"CONNECT api.partner.example:443 HTTP/1.1\r\nHost: api.partner.example:443\r\n\r\n";
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

    fn client_hello() -> Vec<u8> {
        let mut v = vec![
            0x16, 0x03, 0x01, 0x00, 0xf1, 0x01, 0x00, 0x00, 0xed, 0x03, 0x03,
        ];
        v.extend((0..235u8).map(|i| i.wrapping_mul(37)));
        v
    }

    #[test]
    fn non_http_is_counted_never_attributed() {
        let mut t = Conn::new(Side::Server);
        let hello = client_hello();
        t.req(full(100, &hello));
        assert_eq!(t.c.phase(), Phase::Opaque);
        t.resp(full(150, b"\x15\x03\x03\x00\x02\x02\x46"));
        t.close(200);
        assert_eq!(t.exchanges(), vec![]);
        assert_eq!(
            t.anomalies(),
            vec![
                Anomaly::NonHttp {
                    bytes: hello.len() as u64
                },
                Anomaly::NonHttp { bytes: 7 }
            ]
        );

        // non-HTTP, then HTTP again at a segment start
        let mut t = Conn::new(Side::Server);
        let ssh = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";
        let q = curl_get("/ok");
        let r = nginx_resp(200, "text/plain", b"ok");
        t.req(full(100, ssh)).req(full(200, &q)).resp(full(300, &r));
        assert_eq!(
            t.anomalies(),
            vec![Anomaly::NonHttp {
                bytes: ssh.len() as u64
            }]
        );
        assert_eq!(
            t.exchanges(),
            vec![ex(
                "GET",
                "/ok",
                200,
                q.len(),
                r.len(),
                (200, 200),
                (300, 300)
            )]
        );

        // garbage where a response should be: the request stays unanswered
        let mut t = Conn::new(Side::Server);
        t.req(full(100, &q)).resp(full(200, b"\x00\x01garbage\xff"));
        t.close(300);
        assert_eq!(t.anomalies(), vec![Anomaly::NonHttp { bytes: 10 }]);
        assert_eq!(
            t.exchanges(),
            vec![closed(
                ex("GET", "/ok", 499, q.len(), 0, (100, 100), (0, 0)),
                300
            )]
        );
    }

    #[test]
    fn midstream_skips_to_the_next_message() {
        let mut t = Conn::midstream(Side::Server);
        let rest_of_body = br#"ku":"A-77","qty":3}]"#;
        let rest_of_resp = b"</body>\r\n</html>\r\n";
        t.req(full(100, rest_of_body)).resp(full(150, rest_of_resp));
        assert_eq!(t.out, vec![]);
        let q = curl_get("/api/v1/users");
        let r = nginx_resp(200, "application/json", b"[]");
        t.req(full(200, &q)).resp(full(300, &r));
        assert_eq!(
            t.anomalies(),
            vec![
                Anomaly::Resync {
                    skipped: rest_of_body.len() as u64
                },
                Anomaly::Resync {
                    skipped: rest_of_resp.len() as u64
                },
            ]
        );
        assert_eq!(
            t.exchanges(),
            vec![ex(
                "GET",
                "/api/v1/users",
                200,
                q.len(),
                r.len(),
                (200, 200),
                (300, 300)
            )]
        );
    }

    #[test]
    fn midstream_response_to_an_unseen_request_is_not_attributed() {
        let mut t = Conn::midstream(Side::Client);
        let body_end = json(700);
        let r0 = nginx_resp(201, "application/json", b"{}");
        t.req(kernel(100, &body_end)).resp(full(150, &r0));
        let q = curl_get("/next");
        let r = nginx_resp(200, "text/plain", b"n");
        t.req(full(200, &q)).resp(full(300, &r));
        assert_eq!(
            t.exchanges(),
            vec![ex(
                "GET",
                "/next",
                200,
                q.len(),
                r.len(),
                (200, 200),
                (300, 300)
            )]
        );
        assert_eq!(
            t.anomalies(),
            vec![
                Anomaly::Resync { skipped: 700 },
                Anomaly::Resync {
                    skipped: r0.len() as u64
                },
            ]
        );
    }

    #[test]
    fn unanswered_requests_at_close() {
        let mut t = Conn::new(Side::Server);
        let q = curl_get("/slow");
        t.req(full(100, &q)).close(900);
        assert_eq!(
            t.exchanges(),
            vec![closed(
                ex("GET", "/slow", 499, q.len(), 0, (100, 100), (0, 0)),
                900
            )]
        );

        let mut t = Conn::new(Side::Client);
        let head = curl_body_head("POST", "/upload", 1_000);
        t.req(full(100, &head))
            .req(full(101, &json(300)))
            .close(900);
        assert_eq!(
            t.exchanges(),
            vec![closed(
                ex(
                    "POST",
                    "/upload",
                    0,
                    head.len() + 300,
                    0,
                    (100, 101),
                    (0, 0)
                ),
                900
            )]
        );
        assert_eq!(t.anomalies(), vec![]);
        // nothing after close
        t.req(full(1_000, &curl_get("/late"))).close(1_100);
        assert_eq!(t.exchanges().len(), 1);
        assert_eq!(t.c.phase(), Phase::Waiting);
    }

    #[test]
    fn close_delimited_and_truncated_responses() {
        let mut t = Conn::new(Side::Client);
        let q = b"GET /legacy HTTP/1.0\r\nHost: localhost:8080\r\n\r\n";
        let head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n";
        t.req(full(100, q))
            .resp(full(200, head))
            .resp(kernel(201, &json(5_000)));
        t.resp(kernel(202, &json(3_000)));
        assert_eq!(t.exchanges(), vec![]);
        assert_eq!(t.c.phase(), Phase::Writing);
        t.close(300);
        assert_eq!(
            t.exchanges(),
            vec![ex(
                "GET",
                "/legacy",
                200,
                q.len(),
                head.len() + 8_000,
                (100, 100),
                (200, 202)
            )]
        );

        let mut t = Conn::new(Side::Server);
        let q = curl_get("/big");
        let head = nginx_head(200, "application/octet-stream", 10_000);
        t.req(full(100, &q))
            .resp(full(200, &head))
            .resp(len_only(201, 5_000))
            .close(300);
        assert_eq!(
            t.exchanges(),
            vec![ex(
                "GET",
                "/big",
                200,
                q.len(),
                head.len() + 5_000,
                (100, 100),
                (200, 201)
            )]
        );
    }

    #[test]
    fn head_over_64k_is_not_http() {
        let mut t = Conn::new(Side::Server);
        t.req(full(1, b"GET /h HTTP/1.1\r\n"));
        let line = format!("X-Pad: {}\r\n", "p".repeat(1_014)).into_bytes();
        let mut sent = 17;
        for i in 0..70 {
            t.req(full(2 + i, &line));
            sent += line.len();
            assert!(t.c.heap_bytes() <= MAX_HEAD + 1 + 4096);
        }
        assert_eq!(t.c.phase(), Phase::Opaque);
        t.close(100);
        assert_eq!(t.exchanges(), vec![]);
        assert_eq!(t.anomalies(), vec![Anomaly::NonHttp { bytes: sent as u64 }]);
    }

    #[test]
    fn responses_without_a_request_are_not_attributed() {
        let mut t = Conn::new(Side::Client);
        let r0 = nginx_resp(200, "text/plain", b"who asked");
        t.resp(full(100, &r0));
        assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
        let q = curl_get("/me");
        let r = nginx_resp(200, "text/plain", b"you");
        t.req(full(200, &q)).resp(full(300, &r));
        assert_eq!(
            t.exchanges(),
            vec![ex(
                "GET",
                "/me",
                200,
                q.len(),
                r.len(),
                (200, 200),
                (300, 300)
            )]
        );

        // a response stamped before the request was sent cannot answer it
        let mut t = Conn::new(Side::Client);
        t.req(full(500, &q))
            .resp(full(400, &r0))
            .resp(full(600, &r));
        assert_eq!(
            t.exchanges(),
            vec![ex(
                "GET",
                "/me",
                200,
                q.len(),
                r.len(),
                (500, 500),
                (600, 600)
            )]
        );
        assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
    }

    #[test]
    fn request_head_larger_than_capture() {
        // a bearer token pushes the head past the 1024 captured bytes
        let mut t = Conn::new(Side::Server);
        let q = format!(
            "GET /api/v1/accounts/42?fields=all HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: Mozilla/5.0\r\n\
             Authorization: Bearer {}\r\nAccept: application/json\r\n\r\n",
            "e".repeat(1_500)
        )
        .into_bytes();
        let r = nginx_resp(200, "application/json", b"{}");
        t.req(kernel(100, &q)).resp(full(200, &r));
        assert_eq!(
            t.exchanges(),
            vec![ex(
                "GET",
                "/api/v1/accounts/42",
                200,
                q.len(),
                r.len(),
                (100, 100),
                (200, 200)
            )]
        );
        assert_eq!(t.anomalies(), vec![]);

        // head and body in one write, the head's end uncaptured: the response
        // shows the request was complete
        let mut t = Conn::new(Side::Server);
        let body = json(3_000);
        let head = format!(
            "POST /api/orders HTTP/1.1\r\nHost: {HOST}\r\nCookie: session={}\r\n\
             Content-Type: application/json\r\nContent-Length: 3000\r\n\r\n",
            "c".repeat(1_200)
        )
        .into_bytes();
        let data = cat(&[&head, &body]);
        let r = nginx_resp(201, "application/json", b"{}");
        let q2 = curl_get("/after");
        t.req(kernel(100, &data))
            .resp(full(200, &r))
            .req(full(300, &q2))
            .resp(full(400, &r));
        assert_eq!(
            t.exchanges(),
            vec![
                ex(
                    "POST",
                    "/api/orders",
                    201,
                    data.len(),
                    r.len(),
                    (100, 100),
                    (200, 200)
                ),
                ex(
                    "GET",
                    "/after",
                    201,
                    q2.len(),
                    r.len(),
                    (300, 300),
                    (400, 400)
                ),
            ]
        );
        assert_eq!(t.anomalies(), vec![]);

        // a request line longer than the capture: the visible part of the path
        let mut t = Conn::new(Side::Server);
        let q = format!(
            "GET /files/{}.txt HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
            "n".repeat(2_000)
        )
        .into_bytes();
        t.req(kernel(100, &q)).resp(full(200, &r));
        let x = t.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!((x[0].status, x[0].request_bytes), (201, q.len() as u64));
        assert!(x[0].path.starts_with("/files/nnn") && x[0].path.len() == 1_024 - 4);
    }

    #[test]
    fn oversized_head_refused_before_its_end() {
        // nginx answers 400 once a head outgrows large_client_header_buffers
        let mut t = Conn::new(Side::Server);
        let first = b"GET /big-cookie HTTP/1.1\r\nHost: localhost:8080\r\n";
        let line = format!("Cookie: c={}\r\n", "k".repeat(1_012)).into_bytes();
        t.req(full(100, first));
        for i in 0..9 {
            t.req(full(101 + i, &line));
        }
        let r = nginx_resp(
            400,
            "text/html",
            b"<html>400 Request Header Or Cookie Too Large</html>\r\n",
        );
        t.resp(full(200, &r)).close(300);
        let mut want = ex(
            "GET",
            "/big-cookie",
            400,
            first.len() + 9 * line.len(),
            r.len(),
            (100, 109),
            (200, 200),
        );
        want.host = Some("localhost:8080".into());
        assert_eq!(t.exchanges(), vec![want]);
        assert_eq!(t.anomalies(), vec![]);
    }

    #[test]
    fn chunked_request_body_upstream() {
        let mut t = Conn::new(Side::Client);
        let head = b"POST /upload HTTP/1.1\r\nHost: backend:9000\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        let c1 = chunk(&json(100));
        let c2 = chunk(&json(5_000));
        t.req(full(100, &cat(&[head, &c1])))
            .req(kernel(101, &c2))
            .req(full(102, LAST_CHUNK));
        assert_eq!(t.c.phase(), Phase::Writing);
        let r = nginx_resp(200, "application/json", b"{}");
        t.resp(full(200, &r));
        let mut want = ex(
            "POST",
            "/upload",
            200,
            head.len() + c1.len() + c2.len() + 5,
            r.len(),
            (100, 102),
            (200, 200),
        );
        want.host = Some("backend:9000".into());
        assert_eq!(t.exchanges(), vec![want]);
    }

    #[test]
    fn several_messages_in_one_segment_with_chunked_in_the_middle() {
        let mut t = Conn::new(Side::Server);
        let qs = [curl_get("/1"), curl_get("/2"), curl_get("/3")];
        let r1 = nginx_resp(200, "text/plain", b"one");
        let r2 = cat(&[
            &nginx_chunked_head(200),
            &chunk(b"two"),
            &chunk(b"deux"),
            LAST_CHUNK,
        ]);
        let r3 = nginx_resp(200, "text/plain", b"three");
        t.req(full(100, &qs.concat()))
            .resp(full(200, &cat(&[&r1, &r2, &r3])));
        let bytes: Vec<_> = t
            .exchanges()
            .iter()
            .map(|e| (e.path.clone(), e.response_bytes))
            .collect();
        assert_eq!(
            bytes,
            vec![
                ("/1".to_string(), r1.len() as u64),
                ("/2".to_string(), r2.len() as u64),
                ("/3".to_string(), r3.len() as u64)
            ]
        );
    }

    #[test]
    fn traceparent_absolute_form_and_leading_newline() {
        let mut t = Conn::new(Side::Client);
        let q = b"\r\nGET http://user:pw@backend:9000/v2/items?x=1 HTTP/1.1\r\nHost: ignored\r\n\
                  traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
        let r = nginx_resp(200, "text/plain", b"i");
        t.req(full(100, q)).resp(full(200, &r));
        let x = t.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].path, "/v2/items");
        assert_eq!(x[0].host.as_deref(), Some("backend:9000"));
        assert_eq!(
            x[0].traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        // the empty line before the request line is not part of the request
        assert_eq!(x[0].request_bytes, q.len() as u64 - 2);
    }

    #[test]
    fn malformed_segments_do_not_panic() {
        let mut t = Conn::new(Side::Server);
        let q = curl_get("/m");
        // head longer than the stated length, head + tail longer than it, empty
        for s in [
            Segment {
                ts_ns: 1,
                len: 3,
                head: &q,
                tail: b"",
            },
            Segment {
                ts_ns: 2,
                len: 10,
                head: b"GET /",
                tail: b" HTTP/1.1\r\n\r\n",
            },
            Segment {
                ts_ns: 3,
                len: 0,
                head: b"",
                tail: b"",
            },
            Segment {
                ts_ns: 4,
                len: u64::MAX,
                head: b"HTTP/1.1 200 OK\r\n",
                tail: b"\r\n",
            },
        ] {
            t.c.on_request_bytes(&s, &mut t.out);
            t.c.on_response_bytes(&s, &mut t.out);
        }
        t.close(5);
    }

    #[test]
    fn pipelined_bursts_larger_than_capture() {
        // wrk-style pipelining: 20 requests per write, the kernel sees the
        // first 1024 bytes and the last 64; each response its own write
        let mut t = Conn::new(Side::Server);
        let status = |i: usize| if i.is_multiple_of(2) { 200 } else { 404 };
        let mut ts = 100;
        for burst in 0..2 {
            let ids: Vec<usize> = (burst * 20..burst * 20 + 20).collect();
            let write: Vec<u8> = ids
                .iter()
                .flat_map(|i| curl_get(&format!("/r/{i}")))
                .collect();
            t.req(kernel(ts, &write));
            for &i in &ids {
                ts += 1;
                t.resp(full(ts, &nginx_resp(status(i), "text/plain", b"x")));
            }
            ts += 100;
        }
        let x = t.exchanges();
        // the requests whose heads were captured, answered in order; the
        // rest never seen, their responses not attributed
        let visible = 1024 / curl_get("/r/10").len() + 1;
        assert_eq!(x.len(), 2 * visible);
        for e in &x {
            let i: usize = e.path.trim_start_matches("/r/").parse().unwrap();
            assert_eq!(e.status, status(i), "{e:?}");
            assert!(i % 20 < visible);
        }
        assert!(t.anomalies().iter().all(|a| *a == Anomaly::Desync));
    }

    #[test]
    fn requests_pipelined_behind_unseen_ones_are_not_attributed() {
        let mut t = Conn::new(Side::Server);
        let (qa, qb, qc) = (curl_get("/a"), curl_get("/b"), curl_get("/c"));
        // /b falls in the uncaptured part of the write; /c comes next, sent
        // before any response: its response cannot be told from /b's
        t.req(cap(100, &cat(&[&qa, &qb]), qa.len(), 0))
            .req(full(101, &qc));
        assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
        let (ra, rb, rc) = (
            nginx_resp(200, "text/plain", b"a"),
            nginx_resp(404, "text/plain", b"b"),
            nginx_resp(201, "text/plain", b"c"),
        );
        t.resp(full(200, &ra))
            .resp(full(201, &rb))
            .resp(full(202, &rc));
        assert_eq!(
            t.exchanges(),
            vec![
                ex("GET", "/a", 200, qa.len(), ra.len(), (100, 100), (200, 200)),
                ex("GET", "/c", 0, qc.len(), 0, (101, 101), (0, 0)),
            ]
        );
    }

    #[test]
    fn after_an_unreadable_response_the_next_one_answers_the_latest_request() {
        let mut t = Conn::new(Side::Client);
        let (q1, q2) = (curl_get("/one"), curl_get("/two"));
        let r1 = nginx_resp(200, "text/plain", b"1");
        let r2 = nginx_resp(404, "text/plain", b"2");
        // r1's capture is too short to tell it is a response
        t.req(full(100, &q1)).resp(cap(200, &r1, 5, 0));
        t.req(full(300, &q2)).resp(full(400, &r2));
        assert_eq!(
            t.exchanges(),
            vec![
                ex("GET", "/one", 0, q1.len(), 0, (100, 100), (0, 0)),
                ex(
                    "GET",
                    "/two",
                    404,
                    q2.len(),
                    r2.len(),
                    (300, 300),
                    (400, 400)
                ),
            ]
        );
        assert_eq!(
            t.anomalies(),
            vec![Anomaly::NonHttp {
                bytes: r1.len() as u64
            }]
        );
    }

    #[test]
    fn pipelining_depth_is_bounded() {
        let mut t = Conn::new(Side::Server);
        let q = curl_get("/p");
        let many: Vec<u8> = (0..100).flat_map(|_| q.clone()).collect();
        t.req(full(100, &many));
        assert_eq!(t.c.phase(), Phase::Opaque);
        assert_eq!(t.anomalies(), vec![Anomaly::Desync]);
        let x = t.exchanges();
        assert_eq!(x.len(), MAX_PENDING);
        assert!(x.iter().all(|e| e.status == 0));
        assert!(t.c.heap_bytes() < 64 * 1024);
    }
}
