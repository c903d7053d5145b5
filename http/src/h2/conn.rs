//! One HTTP/2 connection (`H2Conn`): both directions' framing and HPACK
//! state, and each client stream reported as an exchange.
//!
//! Byte counts follow nginx 1.22's log variables for HTTP/2, so they can be
//! checked against its access log (`ngx_http_v2.c`,
//! `ngx_http_v2_filter_module.c`):
//! - request bytes are `$request_length`: the header block fragments of the
//!   stream's HEADERS and CONTINUATION frames (without pad length, padding
//!   and priority fields) plus its DATA payloads without padding; no frame
//!   headers;
//! - response bytes are `$bytes_sent`: 9 + payload length for each HEADERS,
//!   CONTINUATION and DATA frame of the stream, trailers included.
//!
//! On an upstream (gRPC) connection the same definitions apply to the
//! gateway's requests and the upstream's responses.
//!
//! A stream is reported when its response ends (END_STREAM from the
//! server), when it is reset (RST_STREAM either way), when a GOAWAY from the
//! server leaves it out, or when the connection closes: an unfinished one
//! gets the status it had, or nginx's 499 downstream and 0 upstream when
//! none, as `HttpConn` reports an unanswered HTTP/1 request.

use std::collections::{BTreeMap, VecDeque};

use super::{
    frame::{self, data_len, fragment, Event, Frame, Walker},
    hpack::{Decoder, Field, Name, Value},
    segment_pieces, Transfer,
};
use crate::{
    Anomaly, Exchange, GrpcCall, H2Anomaly, HttpEvent, Phase, Segment, Side, TraceHeaders,
};

/// Streams followed at once on one connection; nginx allows 128
/// (http2_max_concurrent_streams).
const MAX_STREAMS: usize = 256;
/// Streams remembered as finished, so frames that follow their end (an
/// RST_STREAM after END_STREAM, late trailers) are not counted as unknown.
const FINISHED: usize = 128;

/// Per-connection HTTP/2 state, both directions.
#[derive(Debug)]
pub struct H2Conn {
    side: Side,
    req: Dir,
    resp: Dir,
    streams: BTreeMap<u32, H2Stream>,
    /// Highest stream id whose request headers were seen.
    last_req_stream: u32,
    /// Request framing has been followed since a known point (the preface,
    /// or the first request seen after joining late): a higher stream id
    /// with undecodable headers is a new request, not an unseen one's
    /// trailers.
    established: bool,
    finished: VecDeque<u32>,
    closed: bool,
    events: Vec<Event>,
}

#[derive(Debug)]
struct Dir {
    walker: Walker,
    hpack: Decoder,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<Block>,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct Block {
    stream: u32,
    /// A PUSH_PROMISE's block: decoded only to keep the table in step.
    push: bool,
    end_stream: bool,
    buf: Vec<u8>,
    complete: bool,
    /// Bytes its frames count for (see the module's definition).
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
}

#[derive(Debug, Default)]
struct H2Stream {
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    trace: TraceHeaders,
    grpc: bool,
    /// Final status; Some(0) when the response head could not be decoded.
    status: Option<u16>,
    grpc_status: Option<u16>,
    grpc_message_len: Option<u32>,
    req_bytes: u64,
    req_first: u64,
    req_last: u64,
    req_done: bool,
    resp_bytes: u64,
    resp_first: Option<u64>,
    resp_last: u64,
}

impl H2Conn {
    /// A connection followed from its first byte: the requests' direction
    /// starts with the client preface.
    pub fn new(side: Side) -> Self {
        Self::with(
            side,
            Dir::new(Walker::new(true)),
            Dir::new(Walker::new(false)),
        )
    }

    /// A connection that was open before gatescope started: both directions
    /// wait for a transfer that starts with frames, HPACK state is unknown
    /// (paths indexed before the join are reported unknown, never wrong),
    /// and streams whose request headers went by before are not reported
    /// (`H2Anomaly::UnknownStream` when they end).
    pub fn new_midstream(side: Side) -> Self {
        let mut c = Self::with(side, Dir::lost(), Dir::lost());
        c.established = false;
        c
    }

    fn with(side: Side, req: Dir, resp: Dir) -> Self {
        Self {
            side,
            req,
            resp,
            streams: BTreeMap::new(),
            last_req_stream: 0,
            established: true,
            finished: VecDeque::new(),
            closed: false,
            events: Vec::new(),
        }
    }

    /// Bytes in the requests' direction (ingress downstream, egress upstream).
    pub fn on_request_bytes(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpEvent>) {
        let pieces = segment_pieces(seg);
        self.on_request_transfer(&transfer(seg, &pieces), out);
    }

    /// Bytes in the responses' direction.
    pub fn on_response_bytes(&mut self, seg: &Segment<'_>, out: &mut Vec<HttpEvent>) {
        let pieces = segment_pieces(seg);
        self.on_response_transfer(&transfer(seg, &pieces), out);
    }

    /// A transfer in the requests' direction captured as any pieces.
    pub fn on_request_transfer(&mut self, t: &Transfer<'_>, out: &mut Vec<HttpEvent>) {
        self.feed(true, t, out);
    }

    /// A transfer in the responses' direction captured as any pieces.
    pub fn on_response_transfer(&mut self, t: &Transfer<'_>, out: &mut Vec<HttpEvent>) {
        self.feed(false, t, out);
    }

    /// FIN, RST or close: every stream still open is reported, cut short at
    /// `ts_ns`.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        if self.closed {
            return;
        }
        self.closed = true;
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.end_stream(id, Some(ts_ns), out);
        }
    }

    /// stub_status's view: Reading while a request's header block is
    /// incomplete, Writing while any stream is open, Opaque before frame sync
    /// on a connection joined late.
    pub fn phase(&self) -> Phase {
        if self.closed {
            Phase::Waiting
        } else if self.req.block.is_some() {
            Phase::Reading
        } else if !self.streams.is_empty() {
            Phase::Writing
        } else if self.req.walker.is_lost() {
            Phase::Opaque
        } else {
            Phase::Waiting
        }
    }

    fn feed(&mut self, is_req: bool, t: &Transfer<'_>, out: &mut Vec<HttpEvent>) {
        if self.closed {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        self.dir(is_req).walker.feed(t, &mut events);
        for e in events.drain(..) {
            match e {
                Event::Preface => {}
                Event::BadPreface => anomaly(out, H2Anomaly::BadPreface),
                Event::Lost => {
                    anomaly(out, H2Anomaly::Desync);
                    let d = self.dir(is_req);
                    d.block = None;
                    d.hpack.gap();
                }
                Event::Resync { skipped } => anomaly(out, H2Anomaly::Resync { skipped }),
                Event::Frame(f) => self.frame(is_req, f, out),
            }
        }
        self.events = events;
    }

    fn dir(&mut self, is_req: bool) -> &mut Dir {
        if is_req {
            &mut self.req
        } else {
            &mut self.resp
        }
    }

    fn frame(&mut self, is_req: bool, f: Frame, out: &mut Vec<HttpEvent>) {
        let h = f.hdr;
        let wire = u64::from(frame::HEADER_LEN) + u64::from(h.len);
        if let Some(b) = self.dir(is_req).block.take() {
            if h.kind != frame::CONTINUATION || h.stream != b.stream {
                // RFC 9113 6.10: nothing may come between a HEADERS and its
                // CONTINUATION frames; the block's end went missing.
                let lost = Block {
                    complete: false,
                    ..b
                };
                self.finish_block(is_req, lost, out);
            } else {
                self.dir(is_req).block = Some(b);
            }
        }
        match h.kind {
            frame::HEADERS | frame::PUSH_PROMISE => {
                let (frag_len, frag) = fragment(&f);
                let block = Block {
                    stream: h.stream,
                    push: h.kind == frame::PUSH_PROMISE,
                    end_stream: h.kind == frame::HEADERS && h.has(frame::END_STREAM),
                    buf: frag.map(<[u8]>::to_vec).unwrap_or_default(),
                    complete: frag.is_some(),
                    bytes: if is_req { frag_len } else { wire },
                    first_ns: f.first_ns,
                    last_ns: f.last_ns,
                };
                if h.has(frame::END_HEADERS) {
                    self.finish_block(is_req, block, out);
                } else {
                    self.dir(is_req).block = Some(block);
                }
            }
            frame::CONTINUATION => {
                // One without its HEADERS (framing found again in the middle
                // of a block) changes nothing known: HPACK is already
                // unreliable after the loss.
                let Some(mut b) = self.dir(is_req).block.take() else {
                    return;
                };
                b.complete &= f.complete;
                if b.complete {
                    b.buf.extend_from_slice(&f.payload);
                }
                b.bytes += if is_req { u64::from(h.len) } else { wire };
                b.last_ns = f.last_ns;
                if h.has(frame::END_HEADERS) {
                    self.finish_block(is_req, b, out);
                } else {
                    self.dir(is_req).block = Some(b);
                }
            }
            frame::DATA => {
                let bytes = if is_req { data_len(&f) } else { wire };
                let end = h.has(frame::END_STREAM);
                if let Some(s) = self.streams.get_mut(&h.stream) {
                    s.add(is_req, bytes, f.first_ns, f.last_ns);
                    if end && is_req {
                        s.req_done = true;
                    }
                    if end && !is_req {
                        self.end_stream(h.stream, None, out);
                    }
                } else if end && !is_req {
                    self.unknown_stream(h.stream, out);
                }
            }
            frame::RST_STREAM => {
                if self.streams.contains_key(&h.stream) {
                    self.end_stream(h.stream, Some(f.last_ns), out);
                } else {
                    self.unknown_stream(h.stream, out);
                }
            }
            frame::GOAWAY if !is_req && f.complete => {
                // Streams above the server's last-stream-id were not and will
                // not be processed.
                let last =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
                        & 0x7fff_ffff;
                let above: Vec<u32> = self.streams.range(last + 1..).map(|(&id, _)| id).collect();
                for id in above {
                    self.end_stream(id, Some(f.last_ns), out);
                }
            }
            frame::SETTINGS if !h.has(frame::ACK) && f.complete => {
                // SETTINGS_MAX_FRAME_SIZE bounds the frames the other side
                // sends, which frame sync checks lengths against.
                // SETTINGS_HEADER_TABLE_SIZE needs nothing: the encoder must
                // announce any change with a size update in its next block.
                for s in f.payload.chunks_exact(6) {
                    if u16::from_be_bytes([s[0], s[1]]) == 0x5 {
                        let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                        self.dir(!is_req).walker.max_frame =
                            v.clamp(frame::DEFAULT_MAX_FRAME, (1 << 24) - 1);
                    }
                }
            }
            _ => {}
        }
    }

    fn finish_block(&mut self, is_req: bool, b: Block, out: &mut Vec<HttpEvent>) {
        let d = self.dir(is_req);
        let mut fields = std::mem::take(&mut d.fields);
        fields.clear();
        let mut lost = !b.complete;
        if lost {
            d.hpack.gap();
            anomaly(out, H2Anomaly::HeadersLost);
        } else if d.hpack.decode(&b.buf, &mut fields).is_err() {
            lost = true;
            anomaly(out, H2Anomaly::HpackError);
        }
        if !b.push {
            if is_req {
                self.request_block(&b, &fields, lost, out);
            } else {
                self.response_block(&b, &fields, lost, out);
            }
        }
        self.dir(is_req).fields = fields;
    }

    fn request_block(&mut self, b: &Block, fields: &[Field], lost: bool, out: &mut Vec<HttpEvent>) {
        let id = b.stream;
        if let Some(s) = self.streams.get_mut(&id) {
            // request trailers
            s.add(true, b.bytes, b.first_ns, b.last_ns);
            s.req_done |= b.end_stream;
            return;
        }
        // A new stream has a higher id and pseudo-headers; a block without
        // them is trailers of a stream not followed, unless its names are
        // unknown and framing was followed since a known point.
        let pseudo = fields
            .iter()
            .any(|f| matches!(f.name, Name::Method | Name::Path | Name::Authority));
        let unknown = lost || fields.iter().any(|f| f.name == Name::Unknown);
        if id <= self.last_req_stream
            || id.is_multiple_of(2)
            || !(pseudo || unknown && self.established)
        {
            return;
        }
        self.last_req_stream = id;
        self.established = true;
        if self.streams.len() >= MAX_STREAMS {
            anomaly(out, H2Anomaly::TooManyStreams);
            return;
        }
        let mut s = H2Stream {
            req_bytes: b.bytes,
            req_first: b.first_ns,
            req_last: b.last_ns,
            req_done: b.end_stream,
            ..H2Stream::default()
        };
        let mut authority = None;
        for f in fields {
            let Value::Kept(v) = &f.value else {
                continue;
            };
            let keep = |slot: &mut Option<String>| {
                slot.get_or_insert_with(|| v.to_string());
            };
            match f.name {
                Name::Method => keep(&mut s.method),
                Name::Path => keep(&mut s.path),
                Name::Authority => keep(&mut authority),
                Name::Host => keep(&mut s.host),
                Name::ContentType => s.grpc |= is_grpc(v),
                Name::Traceparent => keep(&mut s.trace.traceparent),
                Name::Tracestate => keep(&mut s.trace.tracestate),
                Name::RequestId => keep(&mut s.trace.request_id),
                _ => {}
            }
        }
        // :authority wins over a Host header (RFC 9113 8.3.1)
        if authority.is_some() {
            s.host = authority;
        }
        self.streams.insert(id, s);
    }

    fn response_block(
        &mut self,
        b: &Block,
        fields: &[Field],
        lost: bool,
        out: &mut Vec<HttpEvent>,
    ) {
        let Some(s) = self.streams.get_mut(&b.stream) else {
            if b.end_stream {
                self.unknown_stream(b.stream, out);
            }
            return;
        };
        s.add(false, b.bytes, b.first_ns, b.last_ns);
        let mut status = None;
        for f in fields {
            let Value::Kept(v) = &f.value else {
                if f.name == Name::GrpcMessage {
                    if let Value::Len(n) = f.value {
                        s.grpc_message_len = Some(n);
                    }
                }
                continue;
            };
            match f.name {
                Name::Status => status = v.parse::<u16>().ok(),
                Name::GrpcStatus => s.grpc_status = v.parse().ok(),
                Name::ContentType => s.grpc |= is_grpc(v),
                _ => {}
            }
        }
        if s.status.is_none() {
            match status {
                // interim (101 cannot happen in HTTP/2): the final one follows
                Some(c) if (100..200).contains(&c) => {}
                Some(c) => s.status = Some(c),
                None if lost || fields.iter().any(|f| f.name == Name::Unknown) => {
                    s.status = Some(0);
                }
                None => {}
            }
        }
        if b.end_stream {
            self.end_stream(b.stream, None, out);
        }
    }

    /// Reports a stream: complete (`cut` None) or cut short at `cut`.
    fn end_stream(&mut self, id: u32, cut: Option<u64>, out: &mut Vec<HttpEvent>) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        self.remember(id);
        let unanswered = match self.side {
            Side::Server => 499,
            Side::Client => 0,
        };
        let grpc = s.grpc.then(|| {
            let (service, method) = s
                .path
                .as_deref()
                .and_then(|p| p.strip_prefix('/')?.split_once('/'))
                .filter(|(svc, m)| !svc.is_empty() && !m.is_empty() && !m.contains('/'))
                .unwrap_or_default();
            Box::new(GrpcCall {
                service: service.to_owned(),
                method: method.to_owned(),
                status: s.grpc_status,
                message_len: s.grpc_message_len,
            })
        });
        if s.method.is_none() || s.path.is_none() {
            anomaly(out, H2Anomaly::UnknownFields);
        }
        out.push(HttpEvent::Exchange(Exchange {
            method: s.method.unwrap_or_default(),
            path: s.path.unwrap_or_default(),
            host: s.host,
            status: s
                .status
                .unwrap_or(if cut.is_some() { unanswered } else { 0 }),
            request_bytes: s.req_bytes,
            response_bytes: s.resp_bytes,
            request_first_ns: s.req_first,
            request_last_ns: s.req_last,
            response_first_ns: s.resp_first.unwrap_or(0),
            response_last_ns: s.resp_first.map_or(0, |_| s.resp_last),
            closed_ns: cut.unwrap_or(0),
            upgraded: false,
            version: Exchange::VERSION_H2,
            trace: s.trace,
            grpc,
            genai: None,
        }));
    }

    /// A stream ended whose request was never seen: counted once.
    fn unknown_stream(&mut self, id: u32, out: &mut Vec<HttpEvent>) {
        // even ids are server pushes, not requests
        if id.is_multiple_of(2) || self.finished.contains(&id) {
            return;
        }
        self.remember(id);
        anomaly(out, H2Anomaly::UnknownStream);
    }

    fn remember(&mut self, id: u32) {
        if self.finished.len() == FINISHED {
            self.finished.pop_front();
        }
        self.finished.push_back(id);
    }

    /// Approximate heap use, for the bounded-memory tests.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        let dir = |d: &Dir| {
            d.hpack.heap_bytes()
                + d.fields.capacity() * size_of::<Field>()
                + d.block.as_ref().map_or(0, |b| b.buf.capacity())
        };
        dir(&self.req)
            + dir(&self.resp)
            + self.streams.len() * (size_of::<H2Stream>() + 64)
            + self
                .streams
                .values()
                .map(|s| {
                    [&s.method, &s.path, &s.host]
                        .iter()
                        .map(|v| v.as_ref().map_or(0, String::capacity))
                        .sum::<usize>()
                        + s.trace.heap_bytes()
                })
                .sum::<usize>()
            + self.finished.capacity() * 4
            + self.events.capacity() * size_of::<Event>()
    }
}

impl Dir {
    fn new(walker: Walker) -> Self {
        Self {
            walker,
            hpack: Decoder::new(),
            block: None,
            fields: Vec::new(),
        }
    }

    fn lost() -> Self {
        Self {
            hpack: Decoder::new_unreliable(),
            ..Self::new(Walker::new_lost())
        }
    }
}

impl H2Stream {
    fn add(&mut self, is_req: bool, bytes: u64, first: u64, last: u64) {
        if is_req {
            self.req_bytes += bytes;
            self.req_last = last;
        } else {
            self.resp_bytes += bytes;
            self.resp_first.get_or_insert(first);
            self.resp_last = last;
        }
    }
}

fn transfer<'a>(seg: &Segment<'a>, pieces: &'a [super::Piece<'a>; 2]) -> Transfer<'a> {
    Transfer {
        ts_ns: seg.ts_ns,
        len: seg.len,
        pieces,
    }
}

fn anomaly(out: &mut Vec<HttpEvent>, a: H2Anomaly) {
    out.push(HttpEvent::Anomaly(Anomaly::H2(a)));
}

fn is_grpc(content_type: &str) -> bool {
    content_type
        .get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
}
