//! The protocol seam: what a connection's bytes are parsed as. A protocol
//! (HTTP/1, TLS with HTTP/1 inside; HTTP/2 next) is a variant and an arm in
//! each method; the connection table does not change.

use crate::{
    capture::decode::{Direction, Role},
    http::{HttpConn, HttpEvent, Phase, Segment, Side},
};

/// A connection's protocol state, fed in order with the segments of both
/// directions.
pub enum Protocol {
    /// Every tracked connection starts here; bytes that turn out not to be
    /// HTTP are counted by the parser as such and never attributed. Boxed: a
    /// parser is a few hundred bytes, and the closed connections the table
    /// remembers keep none.
    Http1(Box<Http1>),
    /// TLS, known from the connection's first bytes (a TLS record) or from
    /// plaintext OpenSSL moved for it: the socket's ciphertext is counted,
    /// never parsed; the plaintext ([`Protocol::plaintext`]) is parsed as
    /// HTTP/1.
    Tls(Box<Http1>),
    /// Counted, not parsed: the parser has ended (the connection's end was
    /// flushed) or was dropped.
    Opaque,
}

pub struct Http1 {
    http: HttpConn,
    side: Side,
    /// When the last response on this connection ended: a pipelined request
    /// waits for it, and the gateway's clock for it starts only then.
    last_response_ns: u64,
    /// Started mid-stream (open before gatescope).
    midstream: bool,
    /// Bytes were fed to the parser.
    fed: bool,
}

impl Protocol {
    /// The parser of a new connection: from its first byte when its open was
    /// seen, else (`midstream`) from the next message boundary.
    pub fn new(role: Role, midstream: bool) -> Self {
        let side = match role {
            Role::Downstream => Side::Server,
            Role::Upstream => Side::Client,
        };
        Protocol::Http1(Box::new(Http1::new(side, midstream)))
    }

    /// stub_status's phase, for a client connection being parsed.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Protocol::Http1(h) | Protocol::Tls(h) => {
                (h.side == Side::Server).then(|| h.http.phase())
            }
            Protocol::Opaque => None,
        }
    }

    /// Whether the connection is TLS (its ciphertext is not parsed).
    pub fn is_tls(&self) -> bool {
        matches!(self, Protocol::Tls(_))
    }

    /// Whether a parser is running, which the bytes read after a close
    /// (see [`Protocol::late_data`]) can go on feeding.
    pub fn is_parsing(&self) -> bool {
        match self {
            Protocol::Http1(_) | Protocol::Tls(_) => true,
            Protocol::Opaque => false,
        }
    }

    /// One transfer on an open connection. A zero-length read is the peer's
    /// end of stream. From an upstream it ends a close-delimited response at
    /// once, and the parser with it. From a client it changes nothing yet:
    /// the gateway reacts by finishing (or abandoning, 499) what is in
    /// flight, closing its upstream call first, and the exchange ends when
    /// the gateway closes the client connection (see [`Protocol::close`]), as
    /// nginx accounts for it.
    pub fn data(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) {
        let ended = match self {
            // A connection whose first bytes are a TLS record is TLS: its
            // bytes are counted and never parsed (nor taken for non-HTTP).
            Protocol::Http1(h) if !h.fed && seg.len > 0 && looks_like_tls(seg.head) => {
                if let Protocol::Http1(h) = std::mem::replace(self, Protocol::Opaque) {
                    *self = Protocol::Tls(h);
                }
                false
            }
            Protocol::Http1(h) => h.data(dir, seg, out),
            // Only the end of stream matters of the ciphertext.
            Protocol::Tls(h) => seg.len == 0 && h.data(dir, seg, out),
            Protocol::Opaque => false,
        };
        if ended {
            *self = Protocol::Opaque;
        }
    }

    /// Plaintext OpenSSL moved for this connection. A connection not yet
    /// known as TLS (open before gatescope, its first bytes unseen) becomes
    /// so, with a parser that resynchronises at the next message boundary if
    /// it had taken in ciphertext.
    pub fn plaintext(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) {
        if let Protocol::Http1(h) = self {
            let parser = if h.fed || h.midstream {
                Http1::new(h.side, true)
            } else {
                Http1::new(h.side, false)
            };
            *self = Protocol::Tls(Box::new(parser));
        }
        let ended = match self {
            Protocol::Tls(h) if seg.len > 0 => h.data(dir, seg, out),
            Protocol::Http1(_) | Protocol::Tls(_) | Protocol::Opaque => false,
        };
        if ended {
            *self = Protocol::Opaque;
        }
    }

    /// Bytes the gateway read after the kernel closed the connection with
    /// them still queued (a reset). A response completes the upstream call
    /// in flight; a request is abandoned (499) when the connection ends: the
    /// client is gone.
    pub fn late_data(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) {
        match self {
            Protocol::Http1(h) if seg.len > 0 => h.feed(dir, seg, out),
            Protocol::Http1(_) | Protocol::Tls(_) | Protocol::Opaque => {}
        }
    }

    /// The connection ended at `ts_ns`: flushes what was in progress; nothing
    /// is parsed after.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        match std::mem::replace(self, Protocol::Opaque) {
            Protocol::Http1(mut h) | Protocol::Tls(mut h) => h.http.on_close(ts_ns, out),
            Protocol::Opaque => {}
        }
    }

    /// Drops the parser without flushing: when the connection ended is
    /// unknown (its close was never seen).
    pub fn forget(&mut self) {
        *self = Protocol::Opaque;
    }
}

/// Whether a segment starts with a TLS record header: content type 20-23
/// (change cipher spec, alert, handshake, application data), version 3.x.
fn looks_like_tls(head: &[u8]) -> bool {
    matches!(head, [20..=23, 3, 0..=4, ..])
}

impl Http1 {
    fn new(side: Side, midstream: bool) -> Self {
        let http = if midstream {
            HttpConn::new_midstream(side)
        } else {
            HttpConn::new(side)
        };
        Http1 {
            http,
            side,
            last_response_ns: 0,
            midstream,
            fed: false,
        }
    }

    /// See [`Protocol::data`]; true when the parser has ended.
    fn data(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) -> bool {
        if seg.len == 0 {
            let upstream_eof = dir == Direction::Ingress && self.side == Side::Client;
            if upstream_eof {
                self.http.on_close(seg.ts_ns, out);
            }
            return upstream_eof;
        }
        let first_new = out.len();
        self.feed(dir, seg, out);
        if self.side == Side::Server {
            for event in &mut out[first_new..] {
                if let HttpEvent::Exchange(exchange) = event {
                    exchange.request_first_ns =
                        exchange.request_first_ns.max(self.last_response_ns);
                    self.last_response_ns = self.last_response_ns.max(exchange.response_last_ns);
                }
            }
        }
        false
    }

    fn feed(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) {
        self.fed = true;
        if dir == requests_direction(self.side) {
            self.http.on_request_bytes(seg, out);
        } else {
            self.http.on_response_bytes(seg, out);
        }
    }
}

/// Which way requests travel on a connection the gateway is `side` of.
fn requests_direction(side: Side) -> Direction {
    match side {
        Side::Server => Direction::Ingress,
        Side::Client => Direction::Egress,
    }
}
