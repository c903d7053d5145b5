//! gatescope-http: the agent's stages 3 and 4, stream reassembly and HTTP/1.x parsing,
//! and HTTP/2 framing and HPACK decoding (`h2`).
//!
//! From the sparse byte segments the kernel captured (a prefix and a suffix of each
//! syscall's transfer, with its true length) to complete request/response exchanges,
//! with no I/O (the agent feeds it; the fuzz target and the tests script it).
//!
//! The kernel copies only a bounded head and tail of each transfer, so bodies
//! are counted, not copied; framing (Content-Length, chunked, close-delimited)
//! is followed through the uncaptured middle by arithmetic on lengths. The
//! bodies of GenAI API calls (`genai`) are the exception: their payload, as
//! far as it was captured, is scanned as it passes for model names and token
//! usage (HTTP/1 only).

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
    /// Empty for an HTTP/2 stream whose `:method` could not be decoded
    /// (HPACK state lost, see `h2`): unknown, never guessed.
    pub method: String,
    /// Path without the query string or fragment; empty when unknown (as
    /// `method`).
    pub path: String,
    /// Host header (or the authority of an absolute-form target), without
    /// user info; `None` when absent.
    pub host: Option<String>,
    /// Final status code. Downstream requests the client abandoned before a
    /// response are reported with nginx's 499; a request whose connection
    /// closed without a response otherwise has status 0.
    pub status: u16,
    /// Request bytes: head plus body, as on the wire (Kong's ingress
    /// bandwidth). HTTP/2: as nginx's `$request_length`, the header block
    /// fragments of HEADERS and CONTINUATION plus DATA payloads less padding.
    pub request_bytes: u64,
    /// Response bytes: any 1xx interim responses, head and body (egress).
    /// HTTP/2: as nginx's `$bytes_sent`, every HEADERS, CONTINUATION and DATA
    /// frame of the stream, 9-byte frame headers included.
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
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (the request line's minor version),
    /// [`Exchange::VERSION_H2`] for HTTP/2; see [`Exchange::protocol_version`].
    pub version: u8,
    /// Trace context and request id, kept only to join traces and to link an
    /// upstream call to its client request; never exported as labels.
    pub trace: TraceHeaders,
    /// A gRPC call (HTTP/2 with `content-type: application/grpc*`); boxed so
    /// HTTP/1 exchanges do not grow.
    pub grpc: Option<Box<GrpcCall>>,
    /// A GenAI API call (see [`genai`]); boxed so other exchanges do not grow.
    pub genai: Option<Box<genai::GenAiCall>>,
}

/// What a gRPC call adds to its exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcCall {
    /// `package.Service` from the path `/package.Service/Method`; empty when
    /// the path is unknown or not of that form.
    pub service: String,
    pub method: String,
    /// `grpc-status` from the trailers, or from a Trailers-Only response;
    /// `None` when none was seen (the call did not finish, or its trailers
    /// could not be decoded).
    pub status: Option<u16>,
    /// Length of `grpc-message` (its text is not kept).
    pub message_len: Option<u32>,
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
    /// `version` of an HTTP/2 exchange.
    pub const VERSION_H2: u8 = 2;

    /// `network.protocol.version` as OpenTelemetry spells it.
    pub fn protocol_version(&self) -> &'static str {
        match self.version {
            0 => "1.0",
            Self::VERSION_H2 => "2",
            _ => "1.1",
        }
    }

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
    /// On an HTTP/2 connection.
    H2(H2Anomaly),
}

/// What the HTTP/2 parser could not attribute, each counted once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Anomaly {
    /// The bytes where the client preface belongs are something else.
    BadPreface,
    /// A frame header fell in an uncaptured region (or was malformed):
    /// framing lost in that direction until a transfer starts with frames.
    Desync,
    /// Frame sync found again (or first, on a connection joined late).
    Resync { skipped: u64 },
    /// A header block was not captured whole (or broke the CONTINUATION
    /// rules): its fields are unknown and HPACK is unreliable from here.
    HeadersLost,
    /// A header block HPACK could not decode.
    HpackError,
    /// A stream ended whose request headers were never seen (joined late,
    /// or they were lost): not reported as an exchange.
    UnknownStream,
    /// A stream reported with its method or path unknown.
    UnknownFields,
    /// More concurrent streams than followed on one connection: one was not
    /// followed.
    TooManyStreams,
}

impl Anomaly {
    /// The `kind` label of `gatescope_http_anomalies_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NonHttp { .. } => "non_http",
            Self::Desync => "desync",
            Self::Resync { .. } => "resync",
            Self::H2(a) => match a {
                H2Anomaly::BadPreface => "h2_bad_preface",
                H2Anomaly::Desync => "h2_desync",
                H2Anomaly::Resync { .. } => "h2_resync",
                H2Anomaly::HeadersLost => "h2_headers_lost",
                H2Anomaly::HpackError => "h2_hpack_error",
                H2Anomaly::UnknownStream => "h2_unknown_stream",
                H2Anomaly::UnknownFields => "h2_unknown_fields",
                H2Anomaly::TooManyStreams => "h2_too_many_streams",
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every event is an Exchange; boxing it would allocate once per request"
)]
pub enum HttpEvent {
    Exchange(Exchange),
    Anomaly(Anomaly),
}

mod conn;
#[cfg(test)]
mod fuzz;
pub mod genai;
pub mod h2;
mod parse;
#[cfg(test)]
mod regress;
#[cfg(any(test, feature = "script"))]
pub mod script;
mod stream;
#[cfg(test)]
mod testkit;

pub use conn::HttpConn;
pub use h2::{looks_like_h2_frames, looks_like_h2_preface, looks_like_h2_server_preface, H2Conn};
