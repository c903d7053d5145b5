//! A real HTTP/1.1 upstream server (std threads) that counts exactly what it
//! accepted, received and sent: the independent truth for the upstream leg.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
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

pub struct Upstream {
    port: u16,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Listen on 127.0.0.1:<free port>. Requests for `/size/N` get an N-byte body;
    /// anything else gets a 404 with a short body. Keep-alive unless the request
    /// says `Connection: close`.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding upstream")?;
        let port = listener.local_addr()?.port();
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
                        let _ = serve(s, &counters);
                        counters.open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Ok(Self {
            port,
            counters,
            stop,
            conns,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:<port>", as the agent labels the peer.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor; it sees the flag before counting this connection.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
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

/// Serve one connection until the peer closes it (or asks to).
fn serve(mut s: TcpStream, counters: &Counters) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        // Read a request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            counters
                .bytes_received
                .fetch_add(n as u64, Ordering::SeqCst);
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
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
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            counters
                .bytes_received
                .fetch_add(n as u64, Ordering::SeqCst);
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + content_length);

        let (status, body) = match body_size_for(&path) {
            Some(n) => ("200 OK", pattern(n)),
            None => ("404 Not Found", b"not found\n".to_vec()),
        };
        let mut resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        resp.extend_from_slice(&body);
        s.write_all(&resp)?;
        counters
            .bytes_sent
            .fetch_add(resp.len() as u64, Ordering::SeqCst);
        counters.requests.fetch_add(1, Ordering::SeqCst);
        if close {
            return Ok(());
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
