//! gatescope-http: the agent's stages 3 and 4, stream reassembly and HTTP/1.x parsing.
//!
//! From the sparse byte segments the kernel captured (a prefix and a suffix of each
//! syscall's transfer, with its true length) to complete request/response exchanges,
//! with no I/O (the agent feeds it; the fuzz target and the tests script it).
//!
//! The kernel copies only a bounded head and tail of each transfer, so bodies
//! are counted, not copied; framing (Content-Length, chunked, close-delimited)
//! is followed through the uncaptured middle by arithmetic on lengths.

/// One syscall's transfer on one connection in one direction.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Monotonic time of the syscall (ns).
    pub ts_ns: u64,
    /// True number of bytes transferred.
    pub len: u64,
    /// The first `head.len()` bytes of the transfer (`head.len() <= len`).
    pub head: &'a [u8],
    /// The last `tail.len()` bytes of the transfer; empty when the head
    /// already covers everything (`head.len() == len`). Head and tail do not
    /// overlap: `head.len() + tail.len() <= len`.
    pub tail: &'a [u8],
}

/// Which end of the HTTP exchange the gateway is on for this connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Downstream connection: the gateway is the server; requests arrive
    /// (ingress) and responses leave (egress).
    Server,
    /// Upstream connection: the gateway is the client; requests leave
    /// (egress) and responses arrive (ingress).
    Client,
}

/// stub_status's view of a downstream connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Keep-alive connection with no request in progress.
    Waiting,
    /// Reading a request head.
    Reading,
    /// Request head read, response not finished.
    Writing,
    /// After an Upgrade or when the bytes are not HTTP.
    Opaque,
}

/// A finished request with its response (or the lack of one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    /// Path without the query string or fragment.
    pub path: String,
    /// Host header (or the authority of an absolute-form target), without
    /// user info; `None` when absent.
    pub host: Option<String>,
    /// Final status code. Downstream requests the client abandoned before a
    /// response are reported with nginx's 499; a request whose connection
    /// closed without a response otherwise has status 0.
    pub status: u16,
    /// Request bytes: head plus body, as on the wire (Kong's ingress bandwidth).
    pub request_bytes: u64,
    /// Response bytes: any 1xx interim responses, head and body (egress).
    pub response_bytes: u64,
    pub request_first_ns: u64,
    pub request_last_ns: u64,
    /// 0 when there was no response.
    pub response_first_ns: u64,
    pub response_last_ns: u64,
    /// When the connection ended with this exchange unfinished (no complete
    /// response): the end of an abandoned (499) or unanswered request. 0 when
    /// the exchange completed.
    pub closed_ns: u64,
    /// The request asked to switch protocols and got 101: the connection is
    /// opaque from here on.
    pub upgraded: bool,
    /// HTTP/1 minor version of the request line: 0 for HTTP/1.0, 1 for
    /// HTTP/1.1 (`network.protocol.version` of a span).
    pub version: u8,
    /// Trace context and request id, kept only to join traces and to link an
    /// upstream call to its client request; never exported as labels.
    pub trace: TraceHeaders,
}

/// Request headers kept for tracing only. Values longer than a sane bound
/// are dropped (not cut), so a kept value is always the whole header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    /// W3C `traceparent` (55 bytes in version 00).
    pub traceparent: Option<String>,
    /// W3C `tracestate` (at most 32 list members, 512 bytes by the spec).
    pub tracestate: Option<String>,
    /// `X-Request-ID`, as nginx's `$request_id` or a client sets it.
    pub request_id: Option<String>,
}

impl TraceHeaders {
    /// Heap bytes held, for the bounded-memory tests.
    pub fn heap_bytes(&self) -> usize {
        [&self.traceparent, &self.tracestate, &self.request_id]
            .iter()
            .map(|v| v.as_ref().map_or(0, String::capacity))
            .sum()
    }
}

impl Exchange {
    /// When the exchange ended: its last response byte, else the close that
    /// cut it short, else its last request byte.
    pub fn end_ns(&self) -> u64 {
        if self.response_last_ns != 0 {
            self.response_last_ns
        } else if self.closed_ns != 0 {
            self.closed_ns
        } else {
            self.request_last_ns
        }
    }

    /// First request byte to [`Exchange::end_ns`].
    pub fn duration_ns(&self) -> u64 {
        self.end_ns().saturating_sub(self.request_first_ns)
    }
}

/// What the parser saw that was not a clean exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// Bytes that are not HTTP/1.x (counted, never attributed to a request).
    NonHttp { bytes: u64 },
    /// The parser lost message framing (e.g. a chunk header fell in an
    /// uncaptured region) and waits for the next message start.
    Desync,
    /// Started mid-stream (connection open before gatescope): bytes skipped
    /// until the next message boundary.
    Resync { skipped: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpEvent {
    Exchange(Exchange),
    Anomaly(Anomaly),
}

mod conn;
mod h2;
#[cfg(test)]
mod fuzz;
mod parse;
#[cfg(test)]
mod regress;
#[cfg(any(test, feature = "script"))]
pub mod script;
mod stream;
#[cfg(test)]
mod testkit;

pub use conn::HttpConn;
