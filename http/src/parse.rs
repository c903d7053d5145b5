//! Message heads: start-line checks and head parsing.
//!
//! Validating a start line from its first bytes (to tell HTTP
//! from anything else early, and to find message starts when resynchronising)
//! and parsing a complete head with `httparse` into the few fields gatescope
//! keeps. Header values are dropped except the framing headers (used here)
//! and the trace headers (`traceparent`, `tracestate`, `X-Request-ID`).

use std::mem::MaybeUninit;

/// Longest head accepted; anything longer is not HTTP.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Longest method token accepted (real ones are at most 10 or so bytes).
pub(crate) const MAX_METHOD: usize = 24;
/// Stored paths and hosts are cut to these lengths (at a char boundary) so a
/// pipelined connection's memory stays bounded.
pub(crate) const MAX_PATH: usize = 4096;
pub(crate) const MAX_HOST: usize = 1024;
/// A W3C traceparent is 55 bytes; longer values are not kept.
pub(crate) const MAX_TRACEPARENT: usize = 256;
/// The W3C limit for tracestate is 512 bytes; longer values are not kept.
pub(crate) const MAX_TRACESTATE: usize = 512;
/// Request ids are UUIDs or 32 hex digits; longer values are not kept.
pub(crate) const MAX_REQUEST_ID: usize = 128;
/// Headers parsed on the stack before falling back to a heap array. The
/// array is left uninitialised (httparse writes the slots it fills): setting
/// its 2 KiB to empty headers before every head was most of
/// `parse_request`'s and `parse_response`'s own time under `perf`
/// (BENCHMARKS.md, *Agent CPU per request*).
const STACK_HEADERS: usize = 64;

/// Which kind of message a direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
}

/// What the first bytes of a would-be message say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// A complete, valid start line ending at this offset (line terminator
    /// and any leading empty lines included).
    Line(usize),
    /// A valid prefix of a start line. `confident` when enough is visible to
    /// be sure a message starts here: for a request the method, a space and
    /// one byte of the target; for a response `HTTP/1.x` and the status code.
    Partial { confident: bool },
    /// Not the start of an HTTP/1.x message.
    Invalid,
}

/// Body framing as the headers state it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyHeader {
    /// Neither Content-Length nor Transfer-Encoding.
    Absent,
    Length(u64),
    /// Transfer-Encoding whose final coding is chunked.
    Chunked,
    /// Transfer-Encoding whose final coding is not chunked.
    OtherCoding,
    /// Unparseable or conflicting Content-Length.
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReqHead {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    /// Minor version of `HTTP/1.x`.
    pub version: u8,
    pub trace: crate::TraceHeaders,
    pub body: BodyHeader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RespHead {
    pub status: u16,
    pub body: BodyHeader,
    /// `Content-Type`, as far as GenAI bodies go (no copy of the value).
    pub media: crate::genai::Media,
    /// A `Content-Encoding` other than identity.
    pub encoded: bool,
    /// The GenAI vendor its header names mark (see
    /// [`crate::genai::GenAiVendor::of_header`]).
    pub vendor: Option<crate::genai::GenAiVendor>,
}

/// Bytes httparse accepts in a request target.
fn is_target(b: u8) -> bool {
    (b'!'..=0x7e).contains(&b) || b >= 0x80
}

/// Number of leading CR/LF bytes (empty lines before a start line).
pub(crate) fn leading_newlines(b: &[u8]) -> usize {
    b.iter().take_while(|&&c| c == b'\r' || c == b'\n').count()
}

/// Checks the start line at the beginning of `b` (after any empty lines).
/// Costs at most the length of the first line.
pub(crate) fn check_start(kind: Kind, b: &[u8]) -> Start {
    let lead = leading_newlines(b);
    let line = &b[lead..];
    if line.is_empty() {
        return Start::Partial { confident: false };
    }
    let s = match kind {
        Kind::Request => request_line(line),
        Kind::Response => status_line(line),
    };
    match s {
        Start::Line(n) => Start::Line(lead + n),
        other => other,
    }
}

/// [`check_start`] for a place found by resynchronising, where a start line
/// is only believed with a well-known method (the tail of a split request
/// line, `EAD / HTTP/1.1`, is a valid request line too).
pub(crate) fn check_start_strict(kind: Kind, b: &[u8]) -> Start {
    let s = check_start(kind, b);
    if kind == Kind::Response || s == Start::Invalid {
        return s;
    }
    let line = &b[leading_newlines(b)..];
    let ok = match line.iter().position(|&c| c == b' ') {
        Some(sp) => KNOWN_METHODS.contains(&&line[..sp]),
        None => KNOWN_METHODS.iter().any(|m| m.starts_with(line)),
    };
    if ok {
        s
    } else {
        Start::Invalid
    }
}

/// Matches `lit` at `b[i..]`: Ok(true) when fully matched, Ok(false) when `b`
/// ends inside it, Err when a byte differs.
fn literal(b: &[u8], i: usize, lit: &[u8]) -> Result<bool, ()> {
    for (k, &c) in lit.iter().enumerate() {
        match b.get(i + k) {
            None => return Ok(false),
            Some(&x) if x == c => {}
            Some(_) => return Err(()),
        }
    }
    Ok(true)
}

fn line_end(b: &[u8], i: usize) -> Start {
    match b.get(i) {
        None => Start::Partial { confident: true },
        Some(b'\n') => Start::Line(i + 1),
        Some(b'\r') => match b.get(i + 1) {
            None => Start::Partial { confident: true },
            Some(b'\n') => Start::Line(i + 2),
            Some(_) => Start::Invalid,
        },
        Some(_) => Start::Invalid,
    }
}

/// Methods a request line may be taken on before it is complete.
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
];

/// `method SP target SP HTTP/1.d CRLF`, with nginx's method alphabet
/// (`A-Z`, `_`, `-`) and a target starting like an origin, absolute,
/// authority or asterisk form.
fn request_line(b: &[u8]) -> Start {
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_uppercase() || b[i] == b'_' || b[i] == b'-') {
        i += 1;
        if i > MAX_METHOD {
            return Start::Invalid;
        }
    }
    if i == b.len() {
        return Start::Partial { confident: false };
    }
    if i == 0 || b[i] != b' ' {
        return Start::Invalid;
    }
    let known = KNOWN_METHODS.contains(&&b[..i]);
    i += 1;
    let target = i;
    match b.get(i) {
        None => return Start::Partial { confident: false },
        Some(&c) if c == b'/' || c == b'*' || c == b'[' || c.is_ascii_alphanumeric() => {}
        Some(_) => return Start::Invalid,
    }
    while i < b.len() && is_target(b[i]) {
        i += 1;
    }
    if i == b.len() {
        return Start::Partial { confident: known };
    }
    if i == target || b[i] != b' ' {
        return Start::Invalid;
    }
    i += 1;
    match literal(b, i, b"HTTP/1.") {
        Err(()) => return Start::Invalid,
        Ok(false) => return Start::Partial { confident: known },
        Ok(true) => i += 7,
    }
    match b.get(i) {
        None => return Start::Partial { confident: known },
        Some(d) if d.is_ascii_digit() => i += 1,
        Some(_) => return Start::Invalid,
    }
    line_end(b, i)
}

/// `HTTP/1.d SP ddd [SP reason] CRLF`
fn status_line(b: &[u8]) -> Start {
    match literal(b, 0, b"HTTP/1.") {
        Err(()) => return Start::Invalid,
        Ok(false) => return Start::Partial { confident: false },
        Ok(true) => {}
    }
    let mut i = 7;
    match b.get(i) {
        None => return Start::Partial { confident: false },
        Some(d) if d.is_ascii_digit() => i += 1,
        Some(_) => return Start::Invalid,
    }
    match b.get(i) {
        None => return Start::Partial { confident: false },
        Some(b' ') => i += 1,
        Some(_) => return Start::Invalid,
    }
    for _ in 0..3 {
        match b.get(i) {
            None => return Start::Partial { confident: false },
            Some(d) if d.is_ascii_digit() => i += 1,
            Some(_) => return Start::Invalid,
        }
    }
    match b.get(i) {
        None => Start::Partial { confident: true },
        Some(b' ') => {
            i += 1;
            while i < b.len() && !matches!(b[i], b'\r' | b'\n' | 0) {
                i += 1;
            }
            line_end(b, i)
        }
        Some(_) => line_end(b, i),
    }
}

/// Index just past the empty line that ends a head (`\n\r\n` or `\n\n`),
/// searching for it from `from`.
pub(crate) fn find_head_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        let nl = i + b[i..].iter().position(|&c| c == b'\n')?;
        match b.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if b.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// A synthetic start line for a head whose first line was cut by an
/// uncaptured region, from its visible (confident) prefix.
pub(crate) fn synth_start_line(kind: Kind, b: &[u8]) -> Option<Vec<u8>> {
    let b = &b[leading_newlines(b)..];
    let Start::Partial { confident: true } = check_start(kind, b) else {
        return None;
    };
    match kind {
        Kind::Request => {
            let sp = b.iter().position(|&c| c == b' ')?;
            let rest = &b[sp + 1..];
            let target = rest.split(|&c| c == b' ').next().unwrap_or(rest);
            let mut line = Vec::with_capacity(sp + target.len() + 12);
            line.extend_from_slice(&b[..=sp]);
            line.extend_from_slice(target);
            line.extend_from_slice(b" HTTP/1.1\r\n");
            Some(line)
        }
        Kind::Response => {
            let mut line = b.get(..12)?.to_vec();
            line.extend_from_slice(b"\r\n");
            Some(line)
        }
    }
}

fn config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true);
    c
}

/// Header slots for a head that overflowed the stack array: one per line is
/// always enough.
fn header_slots<'b>(head: &[u8]) -> Vec<httparse::Header<'b>> {
    #[expect(
        clippy::naive_bytecount,
        reason = "heads are at most 64 KiB and rare here; not worth a dependency"
    )]
    let lines = head.iter().filter(|&&c| c == b'\n').count();
    vec![httparse::EMPTY_HEADER; lines + 1]
}

/// Parses a complete request head (ending with its empty line).
pub(crate) fn parse_request(head: &[u8]) -> Option<ReqHead> {
    let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match config().parse_request_with_uninit_headers(&mut req, head, &mut stack) {
        Ok(httparse::Status::Complete(_)) => Some(build_request(
            req.method?.as_bytes(),
            req.path?.as_bytes(),
            req.version?,
            req.headers,
        )),
        Err(httparse::Error::TooManyHeaders) => {
            let mut heap = header_slots(head);
            let mut req = httparse::Request::new(&mut heap);
            match config().parse_request(&mut req, head) {
                Ok(httparse::Status::Complete(_)) => Some(build_request(
                    req.method?.as_bytes(),
                    req.path?.as_bytes(),
                    req.version?,
                    req.headers,
                )),
                _ => None,
            }
        }
        // httparse wants UTF-8 targets; nginx takes any byte >= 0x80. The
        // start line was checked already, so split it by hand.
        Err(httparse::Error::Token) => {
            let Start::Line(n) = check_start(Kind::Request, head) else {
                return None;
            };
            let line = &head[..n];
            let mut parts = line.splitn(3, |&c| c == b' ');
            let method = parts.next()?;
            let target = parts.next()?;
            // check_start accepted the line, so it ends in `HTTP/1.x`.
            let version = u8::from(!parts.next()?.starts_with(b"HTTP/1.0"));
            let mut heap = header_slots(head);
            match httparse::parse_headers(&head[n..], &mut heap) {
                Ok(httparse::Status::Complete((_, headers))) => {
                    Some(build_request(method, target, version, headers))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Parses a complete response head (ending with its empty line).
pub(crate) fn parse_response(head: &[u8]) -> Option<RespHead> {
    let mut stack = [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match config().parse_response_with_uninit_headers(&mut resp, head, &mut stack) {
        Ok(httparse::Status::Complete(_)) => Some(build_response(resp.code?, resp.headers)),
        Err(httparse::Error::TooManyHeaders) => {
            let mut heap = header_slots(head);
            let mut resp = httparse::Response::new(&mut heap);
            match config().parse_response(&mut resp, head) {
                Ok(httparse::Status::Complete(_)) => Some(build_response(resp.code?, resp.headers)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn build_response(status: u16, headers: &[httparse::Header<'_>]) -> RespHead {
    let mut head = RespHead {
        status,
        body: body_header(headers),
        media: crate::genai::Media::Other,
        encoded: false,
        vendor: None,
    };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-type") {
            head.media = crate::genai::Media::of(h.value);
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            head.encoded |= crate::genai::encoded(h.value);
        } else if let Some(v) = crate::genai::GenAiVendor::of_header(h.name) {
            head.vendor = Some(v.or(head.vendor));
        }
    }
    head
}

fn build_request(
    method: &[u8],
    target: &[u8],
    version: u8,
    headers: &[httparse::Header<'_>],
) -> ReqHead {
    let (path, authority) = split_target(target);
    let mut host = authority.map(strip_userinfo);
    let mut trace = crate::TraceHeaders::default();
    // The first of each header is kept; a value over its bound is dropped.
    let keep = |slot: &mut Option<String>, value: &[u8], max: usize| {
        if slot.is_none() && value.len() <= max {
            *slot = Some(String::from_utf8_lossy(value).into_owned());
        }
    };
    for h in headers {
        if host.is_none() && h.name.eq_ignore_ascii_case("host") {
            host = Some(strip_userinfo(h.value));
        } else if h.name.eq_ignore_ascii_case("traceparent") {
            keep(&mut trace.traceparent, h.value, MAX_TRACEPARENT);
        } else if h.name.eq_ignore_ascii_case("tracestate") {
            keep(&mut trace.tracestate, h.value, MAX_TRACESTATE);
        } else if h.name.eq_ignore_ascii_case("x-request-id") {
            keep(&mut trace.request_id, h.value, MAX_REQUEST_ID);
        }
    }
    ReqHead {
        method: String::from_utf8_lossy(method).into_owned(),
        path: bounded(path, MAX_PATH),
        host: host.map(|h| bounded(h, MAX_HOST)),
        version,
        trace,
        body: body_header(headers),
    }
}

/// Path of a request target without query or fragment, and the authority of
/// an absolute-form target.
pub(crate) fn split_target(t: &[u8]) -> (&[u8], Option<&[u8]>) {
    let cut = |s: &'_ [u8]| -> usize {
        s.iter()
            .position(|&c| c == b'?' || c == b'#')
            .unwrap_or(s.len())
    };
    if t.first() == Some(&b'/') || t == b"*" {
        return (&t[..cut(t)], None);
    }
    if let Some(p) = t.windows(3).position(|w| w == b"://") {
        let scheme = &t[..p];
        if !scheme.is_empty()
            && scheme
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
        {
            let rest = &t[p + 3..];
            let a = rest
                .iter()
                .position(|&c| c == b'/' || c == b'?' || c == b'#')
                .unwrap_or(rest.len());
            let (authority, after) = rest.split_at(a);
            let path = if after.first() == Some(&b'/') {
                &after[..cut(after)]
            } else {
                &b"/"[..]
            };
            return (path, Some(authority));
        }
    }
    // authority-form (CONNECT host:port) or something odd: keep as sent
    (&t[..cut(t)], None)
}

pub(crate) fn strip_userinfo(h: &[u8]) -> &[u8] {
    match h.iter().rposition(|&c| c == b'@') {
        Some(at) => &h[at + 1..],
        None => h,
    }
}

pub(crate) fn bounded(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() <= max {
        return s.into_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn body_header(headers: &[httparse::Header<'_>]) -> BodyHeader {
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let mut coding: Option<bool> = None; // Some(final coding is chunked)
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|&c| c == b',') {
                match parse_decimal(part.trim_ascii()) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => bad_length = true,
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if let Some(last) = h
                .value
                .split(|&c| c == b',')
                .map(<[u8]>::trim_ascii)
                .rfind(|c| !c.is_empty())
            {
                coding = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        }
    }
    match (coding, length) {
        (Some(true), _) => BodyHeader::Chunked,
        (Some(false), _) => BodyHeader::OtherCoding,
        _ if bad_length => BodyHeader::Invalid,
        (None, Some(n)) => BodyHeader::Length(n),
        (None, None) => BodyHeader::Absent,
    }
}

fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_lines() {
        use Start::*;
        let r = |b: &[u8]| check_start(Kind::Request, b);
        assert_eq!(r(b"GET / HTTP/1.1\r\nHost: a\r\n"), Line(16));
        assert_eq!(r(b"\r\nGET / HTTP/1.1\n"), Line(17));
        assert_eq!(r(b"G"), Partial { confident: false });
        assert_eq!(r(b"GET "), Partial { confident: false });
        assert_eq!(r(b"GET /"), Partial { confident: true });
        assert_eq!(r(b"GET /x HTTP/1"), Partial { confident: true });
        assert_eq!(r(b"GET /x HTTP/2.0\r\n"), Invalid);
        assert_eq!(r(b"GET /x FTP/1.1\r\n"), Invalid);
        assert_eq!(r(b"GET  / HTTP/1.1\r\n"), Invalid);
        assert_eq!(r(b"\x16\x03\x01\x02\x00"), Invalid);
        assert_eq!(r(b"hello world\n"), Invalid);
        assert_eq!(r(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ /"), Invalid);
        assert_eq!(r(b"get / HTTP/1.1\r\n"), Invalid);
        assert_eq!(r(b"GET \x01"), Invalid);
        assert_eq!(r(b"M-SEARCH * HTTP/1.1\r\n"), Line(21));
        assert_eq!(r(b"FROB /x"), Partial { confident: false });
        assert_eq!(r(b"GET /x HTTP/1.1\rX"), Invalid);
        let s = |b: &[u8]| check_start(Kind::Response, b);
        assert_eq!(s(b"HTTP/1.1 200 OK\r\n"), Line(17));
        assert_eq!(s(b"HTTP/1.1 204\r\n"), Line(14));
        assert_eq!(s(b"HTTP/1.0 404 Not \xe9 Found\n"), Line(25));
        assert_eq!(s(b"HTTP/1.1 20"), Partial { confident: false });
        assert_eq!(s(b"HTTP/1.1 200"), Partial { confident: true });
        assert_eq!(s(b"HTTP/1.1 200 O"), Partial { confident: true });
        assert_eq!(s(b"HTTP/2 200 OK\r\n"), Invalid);
        assert_eq!(s(b"HTTP/1.1 2x0 OK\r\n"), Invalid);
        assert_eq!(s(b"GET / HTTP/1.1\r\n"), Invalid);
    }

    #[test]
    fn strict_start_lines() {
        use Start::*;
        let r = |b: &[u8]| check_start_strict(Kind::Request, b);
        assert_eq!(r(b"EAD /static/app.js HTTP/1.1\r\n"), Invalid);
        assert_eq!(r(b"HEAD /static/app.js HTTP/1.1\r\n"), Line(30));
        assert_eq!(r(b"PO"), Partial { confident: false });
        assert_eq!(r(b"OS"), Invalid);
        assert_eq!(r(b"\r\nDELETE /x"), Partial { confident: true });
        assert_eq!(
            check_start_strict(Kind::Response, b"HTTP/1.1 200 OK\r\n"),
            Line(17)
        );
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nxx", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nxx", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(find_head_end(b"A: b\r\n\r", 0), None);
    }

    #[test]
    fn trace_headers_are_kept_whole_or_not_at_all() {
        let long = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE);
        let head = format!(
            "GET / HTTP/1.0\r\nX-Request-ID: 7f3a\r\ntracestate: {long}\r\n\
             TraceState: a=b\r\nx-request-id: second\r\n\r\n"
        );
        let h = parse_request(head.as_bytes()).unwrap();
        assert_eq!(h.version, 0);
        assert_eq!(h.trace.request_id.as_deref(), Some("7f3a"));
        // The over-long first value is dropped; the next one is kept.
        assert_eq!(h.trace.tracestate.as_deref(), Some("a=b"));
        assert_eq!(h.trace.traceparent, None);
    }

    #[test]
    fn request_fields() {
        let h = parse_request(
            b"GET /v1/orders/42?expand=items#frag HTTP/1.1\r\nHost: user:pw@api.example.com:8443\r\n\
              traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
              Authorization: Bearer secret\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/v1/orders/42");
        assert_eq!(h.host.as_deref(), Some("api.example.com:8443"));
        assert_eq!(
            h.trace.traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(h.body, BodyHeader::Absent);
        assert_eq!(h.version, 1);

        let h = parse_request(
            b"GET http://u@backend.local:9000/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.path, "/p/q");
        assert_eq!(h.host.as_deref(), Some("backend.local:9000"));
        let h = parse_request(b"GET http://backend?x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((h.path.as_str(), h.host.as_deref()), ("/", Some("backend")));
        let h = parse_request(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!(h.path, "*");
        let h = parse_request(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            (h.method.as_str(), h.path.as_str()),
            ("CONNECT", "example.com:443")
        );
        // a target that is not UTF-8
        let h = parse_request(b"GET /caf\xe9?q HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!(h.path, "/caf\u{fffd}");
        assert_eq!(h.host.as_deref(), Some("h"));
    }

    #[test]
    fn framing_headers() {
        let body = |h: &[u8]| parse_request(h).unwrap().body;
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            BodyHeader::Length(12)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\ncontent-length: 7, 7\r\nContent-Length: 7\r\n\r\n"),
            BodyHeader::Length(7)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"),
            BodyHeader::Invalid
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            BodyHeader::Invalid
        );
        assert_eq!(
            body(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\n"
            ),
            BodyHeader::Chunked
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            BodyHeader::OtherCoding
        );
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n");
        assert_eq!(r.unwrap().body, BodyHeader::Invalid);
    }

    #[test]
    fn many_headers_and_lenient_lines() {
        let mut h = b"GET /many HTTP/1.1\r\n".to_vec();
        for i in 0..300 {
            h.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        h.extend_from_slice(b"Content-Length: 5\r\n\r\n");
        let r = parse_request(&h).unwrap();
        assert_eq!((r.path.as_str(), r.body), ("/many", BodyHeader::Length(5)));
        // an invalid header line does not lose the framing
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body), (200, BodyHeader::Length(3)));
        let r = parse_response(b"HTTP/1.1 204\r\n\r\n").unwrap();
        assert_eq!(r.status, 204);
    }

    #[test]
    fn synthetic_start_lines() {
        assert_eq!(
            synth_start_line(Kind::Request, b"GET /very/long/pa").unwrap(),
            b"GET /very/long/pa HTTP/1.1\r\n"
        );
        assert_eq!(
            synth_start_line(Kind::Request, b"POST /p HTT").unwrap(),
            b"POST /p HTTP/1.1\r\n"
        );
        assert_eq!(synth_start_line(Kind::Request, b"GET "), None);
        assert_eq!(
            synth_start_line(Kind::Response, b"HTTP/1.1 200 O").unwrap(),
            b"HTTP/1.1 200\r\n"
        );
        assert_eq!(synth_start_line(Kind::Response, b"HTTP/1.1 2"), None);
        assert_eq!(parse_response(b"HTTP/1.1 200\r\n\r\n").unwrap().status, 200);
    }
}
