//! Just enough blocking HTTP/1.1 (std only) for scrapes and the demo's client: requests,
//! and responses read by Content-Length, chunked or to EOF.

use std::{
    fmt::Write as _,
    io::{self, BufRead, BufReader, Read, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Connect, read and write timeout of [`connect`].
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Counts the bytes read through it (what came over the socket).
pub struct Counting<R> {
    inner: R,
    pub bytes: u64,
}

impl<R> Counting<R> {
    pub fn new(inner: R) -> Self {
        Counting { inner, bytes: 0 }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A request's or response's start line and headers.
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> io::Result<Option<u64>> {
        self.header("content-length")
            .map(|v| v.trim().parse().map_err(|_| invalid("bad Content-Length")))
            .transpose()
    }

    /// HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes unless told.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.start.contains("HTTP/1.0") {
            connection == "keep-alive"
        } else {
            connection != "close"
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// Reads a start line and headers; `None` on a clean end of stream before the first byte.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let Some(start) = read_line(r)? else {
        return Ok(None);
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| invalid("end of stream inside headers"))?;
        if line.is_empty() {
            return Ok(Some(Head { start, headers }));
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| invalid("header without ':'"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
        if headers.len() > 100 {
            return Err(invalid("too many headers"));
        }
    }
}

pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

/// Reads one response to a GET; see [`read_response_to`].
pub fn read_response(r: &mut impl BufRead) -> io::Result<Response> {
    read_response_to(r, "GET")
}

/// Reads one response to a `method` request; the body by Content-Length, chunked, or
/// (otherwise) until EOF; none for HEAD, 1xx, 204 and 304.
pub fn read_response_to(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let head = read_head(r)?.ok_or_else(|| invalid("connection closed before a response"))?;
    let status: u16 = head
        .start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut body = Vec::new();
    if method == "HEAD" || status < 200 || status == 204 || status == 304 {
        // no body
    } else if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let line = read_line(r)?.ok_or_else(|| invalid("end of stream in chunk"))?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                while read_line(r)?.is_some_and(|l| !l.is_empty()) {}
                break;
            }
            r.by_ref().take(size).read_to_end(&mut body)?;
            read_line(r)?;
        }
    } else if let Some(len) = head.content_length()? {
        r.by_ref().take(len).read_to_end(&mut body)?;
        if body.len() as u64 != len {
            return Err(invalid("end of stream inside the body"));
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { status, head, body })
}

pub fn get_request(path: &str, host: &str, keep_alive: bool) -> String {
    request("GET", path, host, keep_alive, None)
}

/// A request head, plus `body` (a JSON text, with its Content-Type and Content-Length).
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    keep_alive: bool,
    body: Option<&str>,
) -> String {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gatescope-xtask-demo\r\nAccept: */*\r\nConnection: {connection}\r\n"
    );
    if let Some(body) = body {
        let _ = write!(
            req,
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    } else {
        req.push_str("\r\n");
    }
    req
}

pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// A one-shot GET on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut stream = connect(addr)?;
    stream.write_all(get_request(path, &addr.to_string(), false).as_bytes())?;
    read_response(&mut BufReader::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chunked_and_length_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnoHTTP/1.0 200 OK\r\n\r\nrest";
        let mut r = &raw[..];
        let a = read_response(&mut r).unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"abcde"[..]));
        let b = read_response(&mut r).unwrap();
        assert_eq!((b.status, b.body.as_slice()), (404, &b"no"[..]));
        let c = read_response(&mut r).unwrap();
        assert_eq!((c.status, c.body.as_slice()), (200, &b"rest"[..]));
        assert!(!c.head.keep_alive());
    }

    #[test]
    fn head_responses_have_no_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
        let mut r = &raw[..];
        let a = read_response_to(&mut r, "HEAD").unwrap();
        assert_eq!((a.status, a.body.len()), (200, 0));
        let b = read_response_to(&mut r, "POST").unwrap();
        assert_eq!((b.status, b.body.len()), (204, 0));
        let c = read_response_to(&mut r, "POST").unwrap();
        assert_eq!((c.status, c.body.as_slice()), (404, &b"no"[..]));
        assert!(r.is_empty());
    }

    #[test]
    fn requests_carry_their_body() {
        let req = request("POST", "/a", "h", true, Some("{}"));
        assert!(req.starts_with("POST /a HTTP/1.1\r\n"), "{req}");
        assert!(req.ends_with("Content-Length: 2\r\n\r\n{}"), "{req}");
        assert!(get_request("/a", "h", false).ends_with("Connection: close\r\n\r\n"));
    }
}
