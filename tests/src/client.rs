//! A raw HTTP/1.1 client on std TcpStream that counts exactly the bytes it wrote
//! and read: the independent truth for the downstream leg.

use crate::upstream::{body_size_for, find};
use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
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
    port: u16,
    totals: Transfer,
}

impl Client {
    /// A client of 127.0.0.1:`port`.
    pub fn new(port: u16) -> Self {
        Self {
            port,
            totals: Transfer::default(),
        }
    }

    /// Everything this client did so far.
    pub fn totals(&self) -> Transfer {
        self.totals
    }

    fn connect(&self) -> Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port))
            .with_context(|| format!("connecting to 127.0.0.1:{}", self.port))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    }

    fn request(&self, path: &str, body_len: usize, close: bool) -> Vec<u8> {
        let method = if body_len > 0 { "POST" } else { "GET" };
        let mut r = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: gatescope-tests\r\n",
            self.port
        );
        if body_len > 0 {
            r.push_str(&format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n"
            ));
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
