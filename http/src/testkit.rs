//! Test helpers for the crate's unit tests.
//!
//! Captured segments as the kernel makes them, and traffic as curl sends it and nginx 1.22
//! answers it.

use super::{Anomaly, Exchange, HttpConn, HttpEvent, Segment, Side, TraceHeaders};

/// An owned captured segment.
#[derive(Clone, Debug)]
pub(crate) struct Cap {
    pub ts: u64,
    pub len: u64,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Cap {
    pub(crate) fn seg(&self) -> Segment<'_> {
        Segment {
            ts_ns: self.ts,
            len: self.len,
            head: &self.head,
            tail: &self.tail,
        }
    }
}

/// What the kernel captures of a transfer: the first `head_max` bytes and
/// the last `tail_max` of the rest.
pub(crate) fn cap(ts: u64, data: &[u8], head_max: usize, tail_max: usize) -> Cap {
    let h = data.len().min(head_max);
    let t = (data.len() - h).min(tail_max);
    Cap {
        ts,
        len: data.len() as u64,
        head: data[..h].to_vec(),
        tail: data[data.len() - t..].to_vec(),
    }
}

/// Fully captured.
pub(crate) fn full(ts: u64, data: &[u8]) -> Cap {
    cap(ts, data, usize::MAX, 0)
}

/// Captured with the default 1024-byte head and 64-byte tail.
pub(crate) fn kernel(ts: u64, data: &[u8]) -> Cap {
    cap(ts, data, 1024, 64)
}

/// sendfile/splice: length only.
pub(crate) fn len_only(ts: u64, len: u64) -> Cap {
    Cap {
        ts,
        len,
        head: Vec::new(),
        tail: Vec::new(),
    }
}

/// A connection under test with everything it reported.
pub(crate) struct Conn {
    pub c: HttpConn,
    pub out: Vec<HttpEvent>,
}

impl Conn {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            c: HttpConn::new(side),
            out: Vec::new(),
        }
    }

    pub(crate) fn midstream(side: Side) -> Self {
        Self {
            c: HttpConn::new_midstream(side),
            out: Vec::new(),
        }
    }

    pub(crate) fn req(&mut self, c: Cap) -> &mut Self {
        self.c.on_request_bytes(&c.seg(), &mut self.out);
        self
    }

    pub(crate) fn resp(&mut self, c: Cap) -> &mut Self {
        self.c.on_response_bytes(&c.seg(), &mut self.out);
        self
    }

    pub(crate) fn close(&mut self, ts: u64) -> &mut Self {
        self.c.on_close(ts, &mut self.out);
        self
    }

    pub(crate) fn exchanges(&self) -> Vec<Exchange> {
        self.out
            .iter()
            .filter_map(|e| match e {
                HttpEvent::Exchange(x) => Some(x.clone()),
                HttpEvent::Anomaly(_) => None,
            })
            .collect()
    }

    pub(crate) fn anomalies(&self) -> Vec<Anomaly> {
        self.out
            .iter()
            .filter_map(|e| match e {
                HttpEvent::Anomaly(a) => Some(*a),
                HttpEvent::Exchange(_) => None,
            })
            .collect()
    }
}

pub(crate) const HOST: &str = "localhost:8080";

/// What `curl http://localhost:8080{path}` sends.
pub(crate) fn curl(method: &str, path: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

pub(crate) fn curl_get(path: &str) -> Vec<u8> {
    curl("GET", path)
}

/// What `curl -X {method} -H 'Content-Type: application/json' --data-binary @-`
/// sends before the body.
pub(crate) fn curl_body_head(method: &str, path: &str, len: usize) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

const DATE: &str = "Date: Tue, 05 May 2026 09:14:03 GMT";

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        502 => "Bad Gateway",
        _ => "Unknown",
    }
}

/// nginx's head for a response with a Content-Length.
pub(crate) fn nginx_head(status: u16, ctype: &str, len: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nServer: nginx/1.22.1\r\n{DATE}\r\nContent-Type: {ctype}\r\n\
         Content-Length: {len}\r\nConnection: keep-alive\r\n\r\n",
        reason(status)
    )
    .into_bytes()
}

/// A whole nginx response with a Content-Length body.
pub(crate) fn nginx_resp(status: u16, ctype: &str, body: &[u8]) -> Vec<u8> {
    let mut r = nginx_head(status, ctype, body.len());
    r.extend_from_slice(body);
    r
}

/// nginx's head for a chunked response.
pub(crate) fn nginx_chunked_head(status: u16) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nServer: nginx/1.22.1\r\n{DATE}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
        reason(status)
    )
    .into_bytes()
}

/// nginx's heads without a body (204, 304).
pub(crate) fn nginx_empty(status: u16) -> Vec<u8> {
    let extra = if status == 304 {
        "Last-Modified: Mon, 04 May 2026 08:00:00 GMT\r\nETag: \"6638a9c0-4d2\"\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {}\r\nServer: nginx/1.22.1\r\n{DATE}\r\nConnection: keep-alive\r\n{extra}\r\n",
        reason(status)
    )
    .into_bytes()
}

/// One chunk as nginx's chunked filter writes it.
pub(crate) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// `n` bytes of a JSON-looking body.
pub(crate) fn json(n: usize) -> Vec<u8> {
    let unit = br#"{"id":12345,"sku":"A-77","qty":3},"#;
    let mut v = b"[".to_vec();
    while v.len() + 1 < n {
        v.extend_from_slice(unit);
    }
    v.truncate(n.saturating_sub(1));
    v.push(b']');
    v.truncate(n);
    v
}

pub(crate) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// An exchange with curl's host and no traceparent.
pub(crate) fn ex(
    method: &str,
    path: &str,
    status: u16,
    request_bytes: usize,
    response_bytes: usize,
    req: (u64, u64),
    resp: (u64, u64),
) -> Exchange {
    Exchange {
        method: method.into(),
        path: path.into(),
        host: Some(HOST.into()),
        status,
        request_bytes: request_bytes as u64,
        response_bytes: response_bytes as u64,
        request_first_ns: req.0,
        request_last_ns: req.1,
        response_first_ns: resp.0,
        response_last_ns: resp.1,
        closed_ns: 0,
        upgraded: false,
        version: 1,
        trace: TraceHeaders::default(),
        grpc: None,
        genai: None,
    }
}

/// `e` as cut short by a close at `ts_ns`.
pub(crate) fn closed(mut e: Exchange, ts_ns: u64) -> Exchange {
    e.closed_ns = ts_ns;
    e
}
