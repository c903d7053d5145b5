//! A raw HTTP/1.1 client on std TcpStream that counts exactly the bytes it wrote
//! and read: the independent truth for the downstream leg.

use crate::upstream::{body_size_for, find};
use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes and connections of one operation, or the running totals of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transfer {
    pub connections: u64,
    pub requests: u64,
    pub written: u64,
    pub read: u64,
}

impl std::ops::AddAssign for Transfer {
    fn add_assign(&mut self, o: Self) {
        self.connections += o.connections;
        self.requests += o.requests;
        self.written += o.written;
        self.read += o.read;
    }
}

pub struct Client {
    server: SocketAddr,
    totals: Transfer,
}

impl Client {
    /// A client of 127.0.0.1:`port`.
    pub fn new(port: u16) -> Self {
        Self::of(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// A client of `server` (e.g. `[::1]:port`).
    pub fn of(server: SocketAddr) -> Self {
        Self {
            server,
            totals: Transfer::default(),
        }
    }

    /// Everything this client did so far.
    pub fn totals(&self) -> Transfer {
        self.totals
    }

    /// Fold another client's totals into this one's (concurrent clients, one truth).
    pub fn add_totals(&mut self, t: Transfer) {
        self.totals += t;
    }

    fn connect(&self) -> Result<TcpStream> {
        let s = TcpStream::connect(self.server)
            .with_context(|| format!("connecting to {}", self.server))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    }

    fn request(&self, path: &str, body_len: usize, close: bool) -> Vec<u8> {
        let method = if body_len > 0 { "POST" } else { "GET" };
        let mut r = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: gatescope-tests\r\n",
            self.server
        );
        if body_len > 0 {
            let _ = write!(
                r,
                "Content-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n"
            );
        }
        if close {
            r.push_str("Connection: close\r\n");
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend((0..body_len).map(|i| b'0' + (i % 10) as u8));
        r
    }

    /// One request on a fresh connection with `Connection: close`; reads to EOF.
    pub fn one_shot(&mut self, path: &str) -> Result<Transfer> {
        self.one_shot_post(path, 0)
    }

    /// Like [`Client::one_shot`], sending a `body_len`-byte body (POST) if non-zero.
    pub fn one_shot_post(&mut self, path: &str, body_len: usize) -> Result<Transfer> {
        let mut s = self.connect()?;
        let req = self.request(path, body_len, true);
        s.write_all(&req)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .with_context(|| format!("reading response to {path}"))?;
        let (head_len, cl) = parse_head(&resp)?;
        ensure!(
            resp.len() == head_len + cl,
            "response to {path}: {} bytes, head {head_len} + Content-Length {cl}",
            resp.len()
        );
        check_body(path, cl)?;
        let t = Transfer {
            connections: 1,
            requests: 1,
            written: req.len() as u64,
            read: resp.len() as u64,
        };
        self.totals += t;
        Ok(t)
    }

    /// `n` sequential requests on one keep-alive connection (responses delimited by
    /// Content-Length), then close.
    pub fn keep_alive(&mut self, n: usize, path: &str) -> Result<Transfer> {
        let mut s = self.connect()?;
        let mut t = Transfer {
            connections: 1,
            ..Default::default()
        };
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 16384];
        for i in 0..n {
            let req = self.request(path, 0, false);
            s.write_all(&req)?;
            t.written += req.len() as u64;
            let (head_len, cl) = loop {
                if find(&buf, b"\r\n\r\n").is_some() {
                    break parse_head(&buf)?;
                }
                let k = s.read(&mut chunk)?;
                if k == 0 {
                    bail!("EOF in response head {i} of {n} to {path}");
                }
                t.read += k as u64;
                buf.extend_from_slice(&chunk[..k]);
            };
            while buf.len() < head_len + cl {
                let k = s.read(&mut chunk)?;
                if k == 0 {
                    bail!("EOF in response body {i} of {n} to {path}");
                }
                t.read += k as u64;
                buf.extend_from_slice(&chunk[..k]);
            }
            ensure!(
                buf.len() == head_len + cl,
                "unexpected extra bytes after response {i} to {path}"
            );
            check_body(path, cl)?;
            buf.clear();
            t.requests += 1;
        }
        drop(s);
        self.totals += t;
        Ok(t)
    }

    /// An open connection that sends nothing (counted as a connection, 0 bytes).
    pub fn idle_connection(&mut self) -> Result<TcpStream> {
        let s = self.connect()?;
        self.totals.connections += 1;
        Ok(s)
    }
}

fn check_body(path: &str, cl: usize) -> Result<()> {
    if let Some(want) = body_size_for(path) {
        ensure!(cl == want, "{path}: Content-Length {cl}, want {want}");
    }
    Ok(())
}

/// (head length including the blank line, Content-Length) of a 200 response.
fn parse_head(buf: &[u8]) -> Result<(usize, usize)> {
    let end = find(buf, b"\r\n\r\n").context("no end of response head")? + 4;
    let head = std::str::from_utf8(&buf[..end]).context("response head not UTF-8")?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    ensure!(status == "200", "status {status}, head:\n{head}");
    let cl = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .context("response without Content-Length")?
        .1
        .trim()
        .parse()
        .context("bad Content-Length")?;
    Ok((end, cl))
}

/// One request of a scripted connection ([`Conn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    pub method: String,
    pub path: String,
    /// Body bytes (sent with Content-Length when non-zero).
    pub body: usize,
    /// Send `Connection: close`.
    pub close: bool,
    /// Bytes of filler headers (`X-Pad-N`, lines of at most 2,000 bytes, as
    /// cookies and bearer tokens make heads large): see [`Req::padded`].
    pub padding: usize,
}

impl Req {
    pub fn get(path: &str) -> Self {
        Self::new("GET", path, 0)
    }

    pub fn head(path: &str) -> Self {
        Self::new("HEAD", path, 0)
    }

    /// A POST with a `body`-byte body (`Content-Length: 0` when `body` is 0).
    pub fn post(path: &str, body: usize) -> Self {
        Self::new("POST", path, body)
    }

    fn new(method: &str, path: &str, body: usize) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            body,
            close: false,
            padding: 0,
        }
    }

    /// The same request with about `bytes` more of header lines (the head
    /// grows by at least `bytes`).
    #[must_use]
    pub fn padded(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }

    /// The same request with `Connection: close`.
    #[must_use]
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn encode(&self, port: u16) -> Vec<u8> {
        let mut r = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: gatescope-tests\r\n",
            self.method, self.path
        );
        if self.body > 0 || self.method == "POST" {
            let _ = write!(
                r,
                "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
                self.body
            );
        }
        if self.close {
            r.push_str("Connection: close\r\n");
        }
        // nginx keeps each header line within one 8 KiB buffer of
        // `large_client_header_buffers`: short lines pack its 4 of them.
        let mut left = self.padding;
        let mut n = 0;
        while left > 0 {
            let value = left.clamp(1, 1_984);
            let _ = write!(r, "X-Pad-{n:02}: {}\r\n", "p".repeat(value));
            left -= value;
            n += 1;
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend((0..self.body).map(|i| b'0' + (i % 10) as u8));
        r
    }
}

/// What the client did and saw for one request: the truth nginx's access log is
/// held against, and the key to match it (client address, order on the connection).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The client's end of the connection.
    pub client: SocketAddr,
    /// 1 for the first request on the connection (nginx's `$connection_requests`).
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// The response's status; [`ABORTED`] when the client closed before it.
    pub status: u16,
    /// Request bytes written (head and body).
    pub written: u64,
    /// Response bytes read (head and body, all chunks); 0 when aborted.
    pub read: u64,
    /// Written in one write together with other requests.
    pub pipelined: bool,
    /// The decoded body length (what the framing said, checked against it).
    pub body_len: u64,
}

/// nginx's status for a request whose client closed the connection first.
pub const ABORTED: u16 = 499;

/// Where a [`Conn`] connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The server on 127.0.0.1:port, plain TCP.
    Plain(u16),
    /// The server on 127.0.0.1:`server` over TLS: the connection goes to the
    /// [`crate::tls::Forwarder`] on 127.0.0.1:`forwarder`, which makes a TLS
    /// connection of its own to the server for it and moves the plaintext
    /// verbatim, so the client writes, reads and counts exactly the plaintext.
    Tls { forwarder: u16, server: u16 },
}

impl Endpoint {
    /// The server's port (in each request's `Host`).
    pub fn server_port(self) -> u16 {
        match self {
            Self::Plain(p) | Self::Tls { server: p, .. } => p,
        }
    }
}

/// A scripted client connection: write one request or several in one write
/// (pipelining), read responses in order with full HTTP/1.1 framing
/// (Content-Length, chunked, read-to-EOF; no body for HEAD, 1xx, 204, 304), or
/// close before a response arrives (abort).
pub struct Conn {
    s: TcpStream,
    port: u16,
    local: SocketAddr,
    /// Over TLS: the protocol version and cipher the forwarder negotiated.
    tls: Option<String>,
    buf: Vec<u8>,
    next_seq: u64,
    /// Sent, not yet answered: (request, bytes written, pipelined).
    pending: std::collections::VecDeque<(Req, u64, bool)>,
    done: Vec<Sent>,
    eof: bool,
    /// A request with `Connection: close` was sent.
    close_sent: bool,
}

impl Conn {
    pub fn open(port: u16) -> Result<Self> {
        Self::open_at(Endpoint::Plain(port))
    }

    /// A connection to `ep`; over TLS once the handshake is done.
    pub fn open_at(ep: Endpoint) -> Result<Self> {
        let (connect, port) = match ep {
            Endpoint::Plain(p) => (p, p),
            Endpoint::Tls { forwarder, server } => (forwarder, server),
        };
        let mut s = TcpStream::connect(("127.0.0.1", connect))
            .with_context(|| format!("connecting to 127.0.0.1:{connect}"))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let (local, tls) = match ep {
            Endpoint::Plain(_) => (s.local_addr()?, None),
            Endpoint::Tls { .. } => {
                let (a, t) = crate::tls::forwarder_status(&mut s)
                    .with_context(|| format!("TLS connection to 127.0.0.1:{port}"))?;
                (a, Some(t))
            }
        };
        Ok(Self {
            s,
            port,
            local,
            tls,
            buf: Vec::new(),
            next_seq: 1,
            pending: std::collections::VecDeque::default(),
            done: Vec::new(),
            eof: false,
            close_sent: false,
        })
    }

    /// The client's end of the connection to the server (over TLS: the
    /// forwarder's TLS socket, as the server sees it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Over TLS, the protocol version and cipher (`TLSv1.3 TLS_AES_256_GCM_SHA384`).
    pub fn tls(&self) -> Option<&str> {
        self.tls.as_deref()
    }

    /// Write all `reqs` with one `write_all` (one syscall for all but huge bodies).
    pub fn send(&mut self, reqs: &[Req]) -> Result<()> {
        let mut all = Vec::new();
        for r in reqs {
            self.close_sent |= r.close;
            let e = r.encode(self.port);
            self.pending
                .push_back((r.clone(), e.len() as u64, reqs.len() > 1));
            all.extend_from_slice(&e);
        }
        self.s
            .write_all(&all)
            .with_context(|| format!("writing {} request(s) from {}", reqs.len(), self.local))
    }

    /// Write `req`'s head and half its body, wait `pause`, write the rest: nginx
    /// reads the whole body before it goes upstream, so the pause is time the
    /// gateway adds (Kong's `kong_latency`).
    pub fn send_with_pause(&mut self, req: &Req, pause: Duration) -> Result<()> {
        ensure!(req.body >= 2, "a pause needs a body to split");
        self.close_sent |= req.close;
        let e = req.encode(self.port);
        self.pending.push_back((req.clone(), e.len() as u64, false));
        let split = e.len() - req.body / 2;
        self.s.write_all(&e[..split])?;
        std::thread::sleep(pause);
        self.s
            .write_all(&e[split..])
            .with_context(|| format!("writing the rest of {} from {}", req.path, self.local))
    }

    /// Write `req` in `pieces` writes `pause` apart (its head arrives in
    /// several reads).
    pub fn send_in_pieces(&mut self, req: &Req, pieces: usize, pause: Duration) -> Result<()> {
        self.close_sent |= req.close;
        let e = req.encode(self.port);
        self.pending.push_back((req.clone(), e.len() as u64, false));
        for (i, piece) in e.chunks(e.len().div_ceil(pieces.max(1))).enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            self.s.write_all(piece).with_context(|| {
                format!("writing piece {i} of {} from {}", req.path, self.local)
            })?;
        }
        Ok(())
    }

    /// Read the response to the oldest unanswered request.
    pub fn recv(&mut self) -> Result<Sent> {
        let (req, written, pipelined) = self
            .pending
            .pop_front()
            .context("recv without a pending request")?;
        let (status, read, body_len) = self.read_response(&req.method).with_context(|| {
            format!("response to {} {} on {}", req.method, req.path, self.local)
        })?;
        let sent = Sent {
            client: self.local,
            seq: self.next_seq,
            method: req.method,
            path: req.path,
            status,
            written,
            read: read as u64,
            pipelined,
            body_len: body_len as u64,
        };
        self.next_seq += 1;
        self.done.push(sent.clone());
        Ok(sent)
    }

    /// One request, one response.
    pub fn exchange(&mut self, req: Req) -> Result<Sent> {
        self.send(std::slice::from_ref(&req))?;
        self.recv()
    }

    /// All `reqs` in one write, then all responses.
    pub fn pipeline(&mut self, reqs: &[Req]) -> Result<Vec<Sent>> {
        self.send(reqs)?;
        reqs.iter().map(|_| self.recv()).collect()
    }

    /// Close now; the unanswered requests are recorded as aborted (499, 0 bytes
    /// read). No response bytes may have arrived for them.
    pub fn abort(mut self) -> Result<Vec<Sent>> {
        ensure!(
            self.buf.is_empty(),
            "abort with {} response bytes already read",
            self.buf.len()
        );
        while let Some((req, written, pipelined)) = self.pending.pop_front() {
            self.done.push(Sent {
                client: self.local,
                seq: self.next_seq,
                method: req.method,
                path: req.path,
                status: ABORTED,
                written,
                read: 0,
                pipelined,
                body_len: 0,
            });
            self.next_seq += 1;
        }
        let _ = self.s.shutdown(std::net::Shutdown::Both);
        Ok(self.done)
    }

    /// Close after every request was answered. If the last request said
    /// `Connection: close`, the server must close first (EOF, no extra bytes).
    pub fn close(mut self) -> Result<Vec<Sent>> {
        ensure!(self.pending.is_empty(), "close with unanswered requests");
        ensure!(
            self.buf.is_empty(),
            "{} unexpected bytes after the last response on {}",
            self.buf.len(),
            self.local
        );
        if self.close_sent && !self.eof {
            let mut b = [0u8; 1024];
            let n = self
                .s
                .read(&mut b)
                .context("waiting for the server's close")?;
            ensure!(n == 0, "{n} unexpected bytes after the last response");
        }
        Ok(self.done)
    }

    /// Read into `buf`; false on EOF.
    fn fill(&mut self) -> Result<bool> {
        ensure!(!self.eof, "connection already at EOF");
        let mut chunk = vec![0u8; 65536];
        let n = self.s.read(&mut chunk)?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(true)
    }

    /// One whole response off the front of `buf`: (status, bytes, decoded body bytes).
    fn read_response(&mut self, method: &str) -> Result<(u16, usize, usize)> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            ensure!(self.fill()?, "EOF in response head");
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .context("response head not UTF-8")?
            .to_string();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .context("no status")?
            .parse()
            .with_context(|| format!("bad status line in {head:?}"))?;
        ensure!(
            status >= 200,
            "interim response {status}: not expected by these tests"
        );
        let header = |name: &str| {
            head.split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let cl: Option<usize> = match header("content-length") {
            Some(v) => Some(
                v.parse()
                    .with_context(|| format!("bad Content-Length {v:?}"))?,
            ),
            None => None,
        };
        let (total, body) = if method == "HEAD" || status == 204 || status == 304 {
            (head_end, 0)
        } else if chunked {
            loop {
                if let Some((enc, dec)) = chunked_len(&self.buf[head_end..])? {
                    break (head_end + enc, dec);
                }
                ensure!(self.fill()?, "EOF in chunked body");
            }
        } else if let Some(cl) = cl {
            while self.buf.len() < head_end + cl {
                ensure!(
                    self.fill()?,
                    "EOF in body ({} of {cl})",
                    self.buf.len() - head_end
                );
            }
            (head_end + cl, cl)
        } else {
            while self.fill()? {}
            (self.buf.len(), self.buf.len() - head_end)
        };
        self.buf.drain(..total);
        Ok((status, total, body))
    }
}

/// If `b` starts with a complete chunked body (chunks, last chunk, trailers, blank
/// line): Some((encoded length, decoded length)); None if more bytes are needed.
pub fn chunked_len(b: &[u8]) -> Result<Option<(usize, usize)>> {
    let mut i = 0;
    let mut decoded = 0;
    loop {
        let Some(eol) = find(&b[i..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&b[i..i + eol])?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size line {line:?}"))?;
        i += eol + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = find(&b[i..], b"\r\n") else {
                    return Ok(None);
                };
                i += eol + 2;
                if eol == 0 {
                    return Ok(Some((i, decoded)));
                }
            }
        }
        if b.len() < i + size + 2 {
            return Ok(None);
        }
        ensure!(
            &b[i + size..i + size + 2] == b"\r\n",
            "chunk not followed by CRLF"
        );
        i += size + 2;
        decoded += size;
    }
}

/// `n` client connections that each send half a request head, wait until
/// the gateway has read it, then reset (close with SO_LINGER 0).
pub fn reset_clients(port: u16, n: usize) -> Result<()> {
    use std::os::fd::AsRawFd;
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"GET /partial HTTP/1.1\r\n")?;
        // Let nginx read it, so the connection is one it is serving.
        std::thread::sleep(Duration::from_millis(50));
        crate::util::set_linger_zero(s.as_raw_fd())?;
        drop(s); // close with a zero linger time: a reset, not a FIN
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_framing() {
        let b = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\nNEXT";
        assert_eq!(chunked_len(b).unwrap(), Some((b.len() - 4, 12)));
        let t = b"1\r\na\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(chunked_len(t).unwrap(), Some((t.len(), 1)));
        for cut in 0..b.len() - 4 {
            assert_eq!(chunked_len(&b[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(chunked_len(b"zz\r\n").is_err());
        assert!(chunked_len(b"1\r\nab\r\n").is_err());
    }

    #[test]
    fn request_encoding() {
        let r = Req::post("/p", 3).close().encode(80);
        let t = String::from_utf8(r).unwrap();
        assert!(t.starts_with("POST /p HTTP/1.1\r\n"));
        assert!(t.contains("Content-Length: 3\r\n"));
        assert!(t.contains("Connection: close\r\n"));
        assert!(t.ends_with("\r\n\r\n012"));
        let h = String::from_utf8(Req::head("/h").encode(80)).unwrap();
        assert!(h.starts_with("HEAD /h HTTP/1.1\r\n") && !h.contains("Content-Length"));
    }
}
