//! A real HTTP/1.1 upstream server (std threads) that counts exactly what it
//! accepted, received and sent: the independent truth for the upstream leg.
//! It answers the tests' paths (see [`Upstream::start`]) or, for the demo, what a
//! given [`Answer`] says (see [`Upstream::start_answering`]).

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    requests: AtomicU64,
    exchanges: Mutex<Vec<UpstreamExchange>>,
}

/// One request the upstream read completely, with what it answered: the upstream's
/// own per-request truth for the gateway's upstream leg.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UpstreamExchange {
    pub method: String,
    /// The request target as received (these tests send no query strings).
    pub path: String,
    /// 0 when the peer had closed the connection before the answer was due (a
    /// `/slow/` request the gateway gave up on): nothing was sent.
    pub status: u16,
    /// Head plus body, as received.
    pub request_bytes: u64,
    /// Head plus body (all chunks), as sent; 0 when nothing was sent.
    pub response_bytes: u64,
    /// The connection's peer port: the gateway's local port of this call.
    pub peer_port: u16,
    /// Its place on that connection, from 0.
    pub conn_seq: u64,
}

/// A snapshot of the upstream's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamStats {
    pub accepted: u64,
    pub open: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub requests: u64,
}

/// One response of an [`Answer`]: sent with `Content-Type` and `Content-Length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The response to request number `n` (from 1, over all connections) with `method` and
/// `path`; HEAD gets the head only.
pub type Answer = fn(method: &str, path: &str, n: u64) -> Reply;

pub struct Upstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Listen on 127.0.0.1:<free port>. Keep-alive unless the request says
    /// `Connection: close`. Paths:
    /// - `/size/N`: 200 with an N-byte body (Content-Length);
    /// - `/chunked/N`: 200 with `Transfer-Encoding: chunked`, N chunks of
    ///   [`chunk_size`] bytes, each chunk and the terminating `0\r\n\r\n` in its own
    ///   write, 2 ms apart;
    /// - `/burst/N`: the same framing with N chunks of
    ///   [`burst_chunk_size`] bytes, all of it (head included) in one write;
    /// - `/slow/MS`: sleeps MS milliseconds, then 200 with a 100-byte body, unless
    ///   the peer closed the connection meanwhile (then nothing is sent);
    /// - `/reset`: no response; the connection is reset (`SO_LINGER` 0 close);
    /// - `/reply-reset/MS`: sleeps MS milliseconds, then 200 with a 100-byte
    ///   body, then resets the connection;
    /// - anything else: 404 with a short body.
    ///
    /// HEAD gets the same head as GET and no body.
    pub fn start() -> Result<Self> {
        Self::start_with(Ipv4Addr::LOCALHOST.into(), None)
    }

    /// Like [`Upstream::start`], listening on `ip` (e.g. `::1`) instead.
    pub fn start_on(ip: IpAddr) -> Result<Self> {
        Self::start_with(ip, None)
    }

    /// Like [`Upstream::start`], but every request gets what `answer` says.
    pub fn start_answering(answer: Answer) -> Result<Self> {
        Self::start_with(Ipv4Addr::LOCALHOST.into(), Some(answer))
    }

    fn start_with(ip: IpAddr, answer: Option<Answer>) -> Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding upstream on {ip}"))?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (counters, stop, conns) = (counters.clone(), stop.clone(), conns.clone());
            std::thread::spawn(move || {
                for s in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(s) = s else { continue };
                    counters.accepted.fetch_add(1, Ordering::SeqCst);
                    counters.open.fetch_add(1, Ordering::SeqCst);
                    if let Ok(c) = s.try_clone() {
                        conns.lock().unwrap().push(c);
                    }
                    let counters = counters.clone();
                    std::thread::spawn(move || {
                        let _ = serve(s, &counters, answer);
                        counters.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Ok(Self {
            addr,
            counters,
            stop,
            conns,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "127.0.0.1:<port>" (`[::1]:<port>` on IPv6), as the agent labels the peer.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn stats(&self) -> UpstreamStats {
        let c = &self.counters;
        UpstreamStats {
            accepted: c.accepted.load(Ordering::SeqCst),
            open: c.open.load(Ordering::SeqCst),
            bytes_received: c.bytes_received.load(Ordering::SeqCst),
            bytes_sent: c.bytes_sent.load(Ordering::SeqCst),
            requests: c.requests.load(Ordering::SeqCst),
        }
    }

    /// Every request read completely so far, in the order they were answered.
    pub fn exchanges(&self) -> Vec<UpstreamExchange> {
        self.counters.exchanges.lock().unwrap().clone()
    }

    /// Responses sent so far, by status code.
    pub fn codes(&self) -> std::collections::BTreeMap<u16, u64> {
        let mut codes = std::collections::BTreeMap::new();
        for ex in self.counters.exchanges.lock().unwrap().iter() {
            if ex.status != 0 {
                *codes.entry(ex.status).or_default() += 1;
            }
        }
        codes
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor; it sees the flag before counting this connection.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// The body size a path asks for: `/size/N` -> Some(N).
pub fn body_size_for(path: &str) -> Option<usize> {
    path.strip_prefix("/size/")?.parse().ok()
}

/// Size of chunk `i` (from 0) of a `/chunked/N` response: 100, 1600, 3100, ...
/// (from the second chunk on, larger than a 256-byte capture).
pub fn chunk_size(i: usize) -> usize {
    100 + 1500 * i
}

/// The decoded body length of a `/chunked/N` response.
pub fn chunked_body_len(n: usize) -> usize {
    (0..n).map(chunk_size).sum()
}

/// Size of chunk `i` (from 0) of a `/burst/N` response, whose head,
/// chunks and last chunk go in one write: 700, 713, 726, ... bytes.
pub fn burst_chunk_size(i: usize) -> usize {
    700 + 13 * i
}

/// The decoded body length of a `/burst/N` response.
pub fn burst_body_len(n: usize) -> usize {
    (0..n).map(burst_chunk_size).sum()
}

/// Body bytes of a `/slow/MS` response.
pub const SLOW_BODY: usize = 100;

/// Appends what the next read brings to `buf`, counting it; false at EOF.
fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, counters: &Counters) -> Result<bool> {
    let mut chunk = [0u8; 16384];
    let n = s.read(&mut chunk)?;
    counters
        .bytes_received
        .fetch_add(n as u64, Ordering::SeqCst);
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Serve one connection until the peer closes it (or asks to).
fn serve(mut s: TcpStream, counters: &Counters, answer: Option<Answer>) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let peer_port = s.peer_addr()?.port();
    for conn_seq in 0.. {
        // Read a request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut s, &mut buf, counters)? {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let method = request_line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
        let mut content_length = 0usize;
        let mut close = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    content_length = v.parse().context("bad Content-Length")?;
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        // Read (and discard) the body.
        while buf.len() < head_end + content_length {
            if !read_more(&mut s, &mut buf, counters)? {
                return Ok(());
            }
        }
        buf.drain(..head_end + content_length);
        let mut ex = UpstreamExchange {
            method: method.clone(),
            path: path.clone(),
            status: 0,
            request_bytes: (head_end + content_length) as u64,
            response_bytes: 0,
            peer_port,
            conn_seq,
        };
        let head_only = method == "HEAD";
        let conn_hdr = if close { "Connection: close\r\n" } else { "" };

        if let Some(answer) = answer {
            let n = counters.requests.load(Ordering::SeqCst) + 1;
            let reply = answer(&method, &path, n);
            let mut resp = format!(
                "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                reply.status,
                reply.reason,
                reply.content_type,
                reply.body.len(),
            )
            .into_bytes();
            if !head_only {
                resp.extend_from_slice(&reply.body);
            }
            s.write_all(&resp)?;
            counters
                .bytes_sent
                .fetch_add(resp.len() as u64, Ordering::SeqCst);
            ex.status = reply.status;
            ex.response_bytes = resp.len() as u64;
            counters.exchanges.lock().unwrap().push(ex);
            counters.requests.fetch_add(1, Ordering::SeqCst);
            if close {
                // The acceptor keeps a clone of the socket: dropping ours would not close it.
                s.shutdown(Shutdown::Both)?;
                return Ok(());
            }
            continue;
        }

        if path == "/reset" {
            counters.exchanges.lock().unwrap().push(ex);
            reset(&s)?;
            return Ok(());
        }

        // A complete response, then a reset: the gateway reads the response
        // from its socket after the kernel closed it.
        if let Some(ms) = path
            .strip_prefix("/reply-reset/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let body = pattern(SLOW_BODY);
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            resp.extend_from_slice(&body);
            s.write_all(&resp)?;
            counters
                .bytes_sent
                .fetch_add(resp.len() as u64, Ordering::SeqCst);
            ex.status = 200;
            ex.response_bytes = resp.len() as u64;
            counters.exchanges.lock().unwrap().push(ex);
            counters.requests.fetch_add(1, Ordering::SeqCst);
            reset(&s)?;
            return Ok(());
        }

        if let Some(n) = path
            .strip_prefix("/burst/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            // One write: the chunk-size lines sit inside the gateway's reads.
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Transfer-Encoding: chunked\r\n{conn_hdr}\r\n"
            )
            .into_bytes();
            if !head_only {
                for i in 0..n {
                    resp.extend_from_slice(format!("{:x}\r\n", burst_chunk_size(i)).as_bytes());
                    resp.extend_from_slice(&pattern(burst_chunk_size(i)));
                    resp.extend_from_slice(b"\r\n");
                }
                resp.extend_from_slice(b"0\r\n\r\n");
            }
            s.write_all(&resp)?;
            counters
                .bytes_sent
                .fetch_add(resp.len() as u64, Ordering::SeqCst);
            ex.response_bytes += resp.len() as u64;
            ex.status = 200;
        } else if let Some(n) = path
            .strip_prefix("/chunked/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            let mut writes = vec![format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Transfer-Encoding: chunked\r\n{conn_hdr}\r\n"
            )
            .into_bytes()];
            if !head_only {
                for i in 0..n {
                    let mut c = format!("{:x}\r\n", chunk_size(i)).into_bytes();
                    c.extend_from_slice(&pattern(chunk_size(i)));
                    c.extend_from_slice(b"\r\n");
                    writes.push(c);
                }
                writes.push(b"0\r\n\r\n".to_vec());
            }
            for (i, w) in writes.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                s.write_all(w)?;
                counters
                    .bytes_sent
                    .fetch_add(w.len() as u64, Ordering::SeqCst);
                ex.response_bytes += w.len() as u64;
            }
            ex.status = 200;
        } else {
            let (status, body) = if let Some(ms) = path
                .strip_prefix("/slow/")
                .and_then(|n| n.parse::<u64>().ok())
            {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                if crate::util::peek(&s)? == crate::util::Peek::Closed {
                    counters.exchanges.lock().unwrap().push(ex);
                    return Ok(());
                }
                (200, pattern(SLOW_BODY))
            } else {
                match body_size_for(&path) {
                    Some(n) => (200, pattern(n)),
                    None => (404, b"not found\n".to_vec()),
                }
            };
            let reason = if status == 200 { "OK" } else { "Not Found" };
            let mut resp = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                body.len(),
            )
            .into_bytes();
            if !head_only {
                resp.extend_from_slice(&body);
            }
            s.write_all(&resp)?;
            counters
                .bytes_sent
                .fetch_add(resp.len() as u64, Ordering::SeqCst);
            ex.status = status;
            ex.response_bytes = resp.len() as u64;
        }
        counters.exchanges.lock().unwrap().push(ex);
        counters.requests.fetch_add(1, Ordering::SeqCst);
        if close {
            return Ok(());
        }
    }
    Ok(())
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Resets an established connection now: connect() with AF_UNSPEC makes the
/// kernel disconnect the socket (tcp_disconnect), which sends a reset, even
/// while other descriptors of it are open (as this server keeps clones).
fn reset(s: &TcpStream) -> Result<()> {
    use std::os::fd::AsRawFd;
    let addr = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: a valid socket descriptor and a sockaddr of the size given.
    let rc = unsafe {
        libc::connect(
            s.as_raw_fd(),
            &raw const addr,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(rc == 0, "disconnect: {}", std::io::Error::last_os_error());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;
    use std::io::BufReader;

    fn json(method: &str, path: &str, n: u64) -> Reply {
        let status = match method {
            "POST" => 201,
            _ if path == "/gone" => 404,
            _ => 200,
        };
        Reply {
            status,
            reason: "Whatever",
            content_type: "application/json",
            body: format!("{{\"request\":{n}}}\n").into_bytes(),
        }
    }

    #[test]
    fn answering_upstream_keeps_alive_reads_bodies_and_heads() {
        let up = Upstream::start_answering(json).unwrap();
        let stream = http::connect(up.addr().parse().unwrap()).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        for (method, path, body, status) in [
            ("POST", "/api/items", Some("{\"a\":1}"), 201),
            ("HEAD", "/api/items/1", None, 200),
            ("GET", "/gone", None, 404),
        ] {
            let req = http::request(method, path, "test", true, body);
            writer.write_all(req.as_bytes()).unwrap();
            let resp = http::read_response_to(&mut reader, method).unwrap();
            assert_eq!(resp.status, status, "{method} {path}");
            assert_eq!(resp.body.is_empty(), method == "HEAD", "{method} {path}");
        }
        let req = http::get_request("/last", "test", false);
        writer.write_all(req.as_bytes()).unwrap();
        assert_eq!(http::read_response(&mut reader).unwrap().status, 200);
        assert_eq!(
            reader.read(&mut [0u8; 8]).unwrap(),
            0,
            "closed after Connection: close"
        );
        let stats = up.stats();
        assert_eq!((stats.requests, stats.accepted), (4, 1));
        assert_eq!(
            up.codes(),
            std::collections::BTreeMap::from([(200, 2), (201, 1), (404, 1)])
        );
        assert_eq!(stats.bytes_received, {
            let ex = up.exchanges();
            ex.iter().map(|e| e.request_bytes).sum::<u64>()
        });
    }
}
