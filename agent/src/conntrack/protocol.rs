//! The protocol seam: what a connection's bytes are parsed as. Clear text
//! or TLS (ciphertext counted, plaintext parsed), and inside either HTTP/1
//! or HTTP/2: a variant and an arm in each method; the connection table does
//! not change.

use crate::{
    capture::decode::{Direction, Role},
    http::{
        looks_like_h2_frames, looks_like_h2_preface, looks_like_h2_server_preface, H2Conn,
        HttpConn, HttpEvent, Phase, Segment, Side,
    },
};

/// A connection's protocol state, fed in order with the segments of both
/// directions.
pub enum Protocol {
    /// Every tracked connection starts here, as HTTP/1 (HTTP/2 from its
    /// client preface on); bytes that turn out not to be HTTP are counted by
    /// the parser as such and never attributed. Boxed: a parser is a few
    /// hundred bytes, and the closed connections the table remembers keep
    /// none.
    Clear(Box<App>),
    /// TLS, known from the connection's first bytes (a TLS record) or from
    /// plaintext OpenSSL moved for it: the socket's ciphertext is counted,
    /// never parsed; the plaintext ([`Protocol::plaintext`]) is parsed.
    Tls(Box<App>),
    /// Counted, not parsed: the parser has ended (the connection's end was
    /// flushed) or was dropped.
    Opaque,
}

/// The application protocol inside: HTTP/1 until the client's first bytes
/// are the HTTP/2 preface (h2c with prior knowledge, or h2 chosen by ALPN:
/// either way the preface comes first, RFC 9113 section 3.4).
#[expect(
    clippy::large_enum_variant,
    reason = "always boxed in Protocol; an HTTP/2 parser (two HPACK tables) is about twice an HTTP/1 one"
)]
pub enum App {
    Http1(Http1),
    H2(H2),
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
    /// It has reported an exchange: a connection open before gatescope is
    /// HTTP/1 then, not HTTP/2 whose preface went unseen.
    exchanged: bool,
}

pub struct H2 {
    conn: H2Conn,
    side: Side,
}

impl Protocol {
    /// The parser of a new connection: from its first byte when its open was
    /// seen, else (`midstream`) from the next message boundary.
    pub fn new(role: Role, midstream: bool) -> Self {
        let side = match role {
            Role::Downstream => Side::Server,
            Role::Upstream => Side::Client,
        };
        Protocol::Clear(Box::new(App::Http1(Http1::new(side, midstream))))
    }

    /// The connection goes to an upstream a `[[genai.provider]]` names: its
    /// API paths without `/v1` (Azure OpenAI's) are GenAI calls too.
    pub fn set_genai_provider(&mut self) {
        if let Protocol::Clear(a) | Protocol::Tls(a) = self {
            if let App::Http1(h) = a.as_mut() {
                h.http.set_genai_provider();
            }
        }
    }

    /// stub_status's phase, for a client connection being parsed.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Protocol::Clear(a) | Protocol::Tls(a) => (a.side() == Side::Server).then(|| a.phase()),
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
            Protocol::Clear(_) | Protocol::Tls(_) => true,
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
            Protocol::Clear(a) if !a.fed() && seg.len > 0 && looks_like_tls(seg.head) => {
                if let Protocol::Clear(a) = std::mem::replace(self, Protocol::Opaque) {
                    *self = Protocol::Tls(a);
                }
                false
            }
            Protocol::Clear(a) => a.data(dir, seg, out),
            // Only the end of stream matters of the ciphertext.
            Protocol::Tls(a) => seg.len == 0 && a.data(dir, seg, out),
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
        if let Protocol::Clear(a) = self {
            let midstream = a.fed() || a.midstream();
            let mut http = Http1::new(a.side(), midstream);
            if matches!(a.as_ref(), App::Http1(h) if h.http.is_genai_provider()) {
                http.http.set_genai_provider();
            }
            let parser = App::Http1(http);
            *self = Protocol::Tls(Box::new(parser));
        }
        let ended = match self {
            Protocol::Tls(a) if seg.len > 0 => a.data(dir, seg, out),
            Protocol::Clear(_) | Protocol::Tls(_) | Protocol::Opaque => false,
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
            Protocol::Clear(a) if seg.len > 0 => a.feed(dir, seg, out),
            Protocol::Clear(_) | Protocol::Tls(_) | Protocol::Opaque => {}
        }
    }

    /// The connection ended at `ts_ns`: flushes what was in progress; nothing
    /// is parsed after.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        match std::mem::replace(self, Protocol::Opaque) {
            Protocol::Clear(mut a) | Protocol::Tls(mut a) => a.close(ts_ns, out),
            Protocol::Opaque => {}
        }
    }

    /// Drops the parser without flushing: when the connection ended is
    /// unknown (its close was never seen).
    pub fn forget(&mut self) {
        *self = Protocol::Opaque;
    }
}

impl App {
    fn side(&self) -> Side {
        match self {
            App::Http1(h) => h.side,
            App::H2(h) => h.side,
        }
    }

    fn phase(&self) -> Phase {
        match self {
            App::Http1(h) => h.http.phase(),
            App::H2(h) => h.conn.phase(),
        }
    }

    fn fed(&self) -> bool {
        match self {
            App::Http1(h) => h.fed,
            App::H2(_) => true,
        }
    }

    fn midstream(&self) -> bool {
        match self {
            App::Http1(h) => h.midstream,
            App::H2(_) => false,
        }
    }

    /// See [`Protocol::data`]; true when the parser has ended. The client's
    /// first bytes decide HTTP/2: its preface; or the server's SETTINGS
    /// when the server spoke first (HTTP/1 servers never do). An HTTP/2
    /// server may: a gRPC server on accept, before the gateway's preface is
    /// written; nginx after a TLS handshake that chose h2, when the
    /// client's preface is not there yet at its first SSL_read.
    fn data(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) -> bool {
        if let App::Http1(h) = self {
            let first = !h.fed && !h.midstream && seg.len > 0;
            let h2 = if dir == requests_direction(h.side) {
                first && looks_like_h2_preface(seg.head)
            } else {
                first && looks_like_h2_server_preface(seg.head)
            };
            if h2 {
                *self = App::H2(H2 {
                    conn: H2Conn::new(h.side),
                    side: h.side,
                });
            } else if h.midstream
                && !h.exchanged
                && seg.len > 0
                && looks_like_h2_frames(seg.head, seg.len)
            {
                // Open before gatescope, its preface unseen: HTTP/2 from
                // frames, with every header index from before unknown.
                *self = App::H2(H2 {
                    conn: H2Conn::new_midstream(h.side),
                    side: h.side,
                });
            }
        }
        match self {
            App::Http1(h) => h.data(dir, seg, out),
            App::H2(h) => h.data(dir, seg, out),
        }
    }

    fn feed(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) {
        match self {
            App::Http1(h) => h.feed(dir, seg, out),
            App::H2(h) => h.feed(dir, seg, out),
        }
    }

    fn close(&mut self, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        match self {
            App::Http1(h) => h.http.on_close(ts_ns, out),
            App::H2(h) => h.conn.on_close(ts_ns, out),
        }
    }
}

impl H2 {
    /// As [`Http1::data`]: an upstream's end of stream ends every stream in
    /// flight, and the parser.
    fn data(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) -> bool {
        if seg.len == 0 {
            let upstream_eof = dir == Direction::Ingress && self.side == Side::Client;
            if upstream_eof {
                self.conn.on_close(seg.ts_ns, out);
            }
            return upstream_eof;
        }
        self.feed(dir, seg, out);
        false
    }

    fn feed(&mut self, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) {
        if dir == requests_direction(self.side) {
            self.conn.on_request_bytes(seg, out);
        } else {
            self.conn.on_response_bytes(seg, out);
        }
    }
}

/// Whether a segment starts with a TLS record header (the kernel's test too).
fn looks_like_tls(head: &[u8]) -> bool {
    gatescope_common::is_tls_record_start(head)
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
            exchanged: false,
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
        self.exchanged |= out[first_new..]
            .iter()
            .any(|e| matches!(e, HttpEvent::Exchange(_)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(bytes: &[u8], ts_ns: u64) -> Segment<'_> {
        Segment {
            ts_ns,
            len: bytes.len() as u64,
            head: bytes,
            tail: &[],
        }
    }

    fn frame(kind: u8, flags: u8, stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 0, payload.len() as u8, kind, flags, 0, 0, 0, stream];
        f.extend_from_slice(payload);
        f
    }

    /// A connection found to be TLS gets a new parser for its plaintext; a
    /// named GenAI provider's stays one.
    #[test]
    fn the_genai_provider_flag_survives_the_plaintext_parser() {
        let mut p = Protocol::new(Role::Upstream, false);
        p.set_genai_provider();
        let mut out = Vec::new();
        p.plaintext(
            Direction::Egress,
            &seg(b"POST /x HTTP/1.1\r\n", 1),
            &mut out,
        );
        let Protocol::Tls(a) = &p else {
            panic!("not TLS");
        };
        assert!(matches!(a.as_ref(), App::Http1(h) if h.http.is_genai_provider()));
    }

    /// A server whose SETTINGS come before the client's preface: still
    /// HTTP/2. A gRPC server sends them as soon as it accepts, so the
    /// gateway may read them before it writes its preface (upstream); nginx
    /// may write its own before it reads the client's (downstream, over
    /// TLS).
    #[test]
    fn a_server_that_speaks_first_with_settings_is_http2() {
        for (role, requests, responses) in [
            (Role::Upstream, Direction::Egress, Direction::Ingress),
            (Role::Downstream, Direction::Ingress, Direction::Egress),
        ] {
            let mut p = Protocol::new(role, false);
            let mut out = Vec::new();
            let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
            p.data(responses, &seg(&settings, 1), &mut out);
            // preface, SETTINGS, and HEADERS (POST, http, "/": static indices)
            let mut req = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            req.extend(frame(0x4, 0, 0, &[]));
            req.extend(frame(0x1, 0x5, 1, &[0x83, 0x86, 0x84]));
            p.data(requests, &seg(&req, 2), &mut out);
            let resp = frame(0x1, 0x5, 1, &[0x88]); // :status 200
            p.data(responses, &seg(&resp, 3), &mut out);
            let [HttpEvent::Exchange(e)] = out.as_slice() else {
                panic!("{role:?}: {out:?}");
            };
            assert_eq!(
                (e.method.as_str(), e.path.as_str(), e.status),
                ("POST", "/", 200)
            );
            assert_eq!(e.version, 2);
        }
    }
}
