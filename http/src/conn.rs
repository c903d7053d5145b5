//! One connection's HTTP/1.x (`HttpConn`).
//!
//! Both directions' streams, and requests paired with their responses in order
//! (pipelining answered FIFO).

use std::collections::VecDeque;

use super::{
    genai::{GenAiApi, GenAiScan, Piece},
    parse::{BodyHeader, Kind},
    stream::{Framing, Head, HeadInfo, Sink, Stream},
    Anomaly, Exchange, HttpEvent, Phase, Segment, Side, TraceHeaders,
};

/// Requests in flight on one connection past which it is not followed any
/// more (its requests are reported with status 0 and the connection becomes
/// opaque). Real pipelining depths are a few to a few dozen.
const MAX_PENDING: usize = 64;

/// How much later than the response's first byte a request's record may come
/// and still be the one it answers (early.rs). The real gap is the sending
/// thread's path from handing the bytes over to the tracepoint: microseconds,
/// or a scheduler's time slice when the thread is preempted in between
/// (milliseconds under load). A server's unsolicited answer (a 408 before it
/// closes) is not paired with a request made long after it.
const EARLY_WINDOW_NS: u64 = 100_000_000;

/// Per-connection HTTP state, both directions.
#[derive(Debug)]
pub struct HttpConn {
    req: Stream,
    resp: Stream,
    pairs: Pairing,
    /// Response segments held for their request's record (early.rs).
    early: Early,
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
                genai_provider: false,
                resp_segs: 0,
                req_lost_clock: None,
            },
            early: Early::default(),
            closed: false,
        }
    }

    /// The peer is a GenAI provider the operator named (`[[genai.provider]]`
    /// `upstream`): POSTs to its API paths without `/v1` are GenAI calls too.
    pub fn set_genai_provider(&mut self) {
        self.pairs.genai_provider = true;
    }

    /// See [`HttpConn::set_genai_provider`].
    pub fn is_genai_provider(&self) -> bool {
        self.pairs.genai_provider
    }

    /// Bytes in the requests' direction (ingress downstream, egress upstream).
    pub fn on_request_bytes(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpEvent>) {
        if self.closed {
            return;
        }
        // Held too long to be this request's answer: handled as before the
        // hold (nothing it could answer).
        if self
            .early
            .first_ts()
            .is_some_and(|t| seg.ts_ns.saturating_sub(t) > EARLY_WINDOW_NS)
        {
            self.release_early(out);
        }
        let unanswered = self.pairs.pending.len();
        self.req.feed(
            seg,
            &mut ReqSink {
                p: &mut self.pairs,
                out,
            },
        );
        self.settle(out);
        if let Some(t) = self.early.first_ts() {
            if self.pairs.pending.len() > unanswered {
                // The request was on its way before its answer was read; its
                // record's time is the tracepoint's, later than that.
                for p in self.pairs.pending.range_mut(unanswered..) {
                    p.req_first = p.req_first.min(t);
                    p.req_last = p.req_last.min(t);
                }
                self.release_early(out);
            } else if !self.req.in_head() {
                // Not a request (or one that took nothing): no reason left
                // to hold.
                self.release_early(out);
            }
        }
    }

    /// Bytes in the responses' direction.
    pub fn on_response_bytes(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpEvent>) {
        if self.closed {
            return;
        }
        // A response starting with nothing to answer, on an upstream
        // connection whose requests were all seen: its request's record may
        // be on its way (early.rs). Where requests may have gone unseen, it
        // may answer one of them instead.
        let may_be_early = self.early.is_empty()
            && self.pairs.side == Side::Client
            && self.pairs.answered == self.pairs.pending.len()
            && self.resp.is_idle()
            && self.req.is_idle()
            && self.pairs.req_lost_at.is_none();
        if (may_be_early || !self.early.is_empty()) && self.early.hold(seg) {
            return;
        }
        self.release_early(out);
        self.feed_response(seg, out);
    }

    /// Feeds the held response segments, if any.
    fn release_early(&mut self, out: &mut Vec<HttpEvent>) {
        let mut early = std::mem::take(&mut self.early);
        early.release(|seg| self.feed_response(seg, out));
    }

    fn feed_response(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpEvent>) {
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
        self.release_early(out);
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
                    self.req.abandon_body(&mut ReqSink {
                        p: &mut self.pairs,
                        out,
                    });
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
            + self.early.heap_bytes()
            + self.pairs.pending.capacity() * size_of::<Pending>()
            + self
                .pairs
                .pending
                .iter()
                .map(|p| {
                    p.method.capacity()
                        + p.path.capacity()
                        + p.host.as_ref().map_or(0, String::capacity)
                        + p.trace.heap_bytes()
                        + p.genai
                            .as_ref()
                            .map_or(0, |g| size_of::<GenAiScan>() + g.heap_bytes())
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
    /// The peer is a named GenAI provider: its paths are matched by
    /// [`GenAiApi::from_provider_path`].
    genai_provider: bool,
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
    version: u8,
    trace: TraceHeaders,
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
    /// A GenAI API call (a POST to one of their paths): its bodies are read.
    genai: Option<Box<GenAiScan>>,
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
            version: self.version,
            trace: self.trace,
            grpc: None,
            genai: self.genai.map(|g| Box::new(g.finish())),
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
        // Only a POST is a generation call (a GET on the same path lists
        // stored completions); other requests pay nothing for the tap. The
        // paths without `/v1` are a named provider's calls, and on other
        // upstreams candidates their answer or their Host must confirm (not
        // read on the gateway's own side, where ordinary APIs' `…/messages`
        // would be scanned for a count no sink keeps).
        let upstream = self.p.side == Side::Client;
        let genai = (h.method == "POST")
            .then(|| match GenAiApi::from_path(&h.path) {
                Some(api) => Some(GenAiScan::new(api)),
                None if self.p.genai_provider => {
                    GenAiApi::from_provider_path(&h.path).map(GenAiScan::new)
                }
                None if upstream => GenAiApi::from_provider_path(&h.path).map(GenAiScan::candidate),
                None => None,
            })
            .flatten()
            .map(Box::new);
        self.p.pending.push_back(Pending {
            genai,
            is_head: h.method == "HEAD",
            is_connect: h.method == "CONNECT",
            method: h.method,
            path: h.path,
            host: h.host,
            version: h.version,
            trace: h.trace,
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

    fn payload(&mut self, piece: Piece<'_>, _ts: u64) {
        if let Some(p) = self.p.pending.back_mut() {
            if let (false, Some(g)) = (p.req_done, &mut p.genai) {
                g.request(piece);
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
        if status >= 200 {
            if let Some(g) = &mut q.genai {
                g.response_head(status, h.media, h.encoded, h.vendor);
            }
        }
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

    fn payload(&mut self, piece: Piece<'_>, ts: u64) {
        if self.p.interim {
            return;
        }
        if let Some(g) = self
            .p
            .pending
            .get_mut(self.p.answered)
            .and_then(|q| q.genai.as_mut())
        {
            g.response(piece, ts);
        }
    }

    fn cut(&mut self) {
        if let Some(g) = self
            .p
            .pending
            .get_mut(self.p.answered)
            .and_then(|q| q.genai.as_mut())
        {
            g.cut();
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
mod tests;

mod early;
use early::Early;
