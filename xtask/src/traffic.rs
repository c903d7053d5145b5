//! The demo's client load: keep-alive connections plus one-shot connections, counting bytes.

use std::{
    io::{BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
};

use anyhow::{ensure, Context as _, Result};

use crate::http::{self, Counting};

pub const KEEPALIVE_CONNECTIONS: usize = 10;
pub const REQUESTS_PER_KEEPALIVE: usize = 5;
pub const ONE_SHOT_CONNECTIONS: usize = 20;

#[derive(Default)]
pub struct Counts {
    pub connections: u64,
    pub requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

struct Conn {
    writer: TcpStream,
    reader: BufReader<Counting<TcpStream>>,
    sent: u64,
    requests: u64,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn> {
        let stream =
            http::connect(addr).with_context(|| format!("connecting to nginx at {addr}"))?;
        Ok(Conn {
            reader: BufReader::new(Counting::new(stream.try_clone()?)),
            writer: stream,
            sent: 0,
            requests: 0,
        })
    }

    fn request(&mut self, path: &str, keep_alive: bool) -> Result<()> {
        let host = self.writer.peer_addr()?.to_string();
        let req = http::get_request(path, &host, keep_alive);
        self.writer.write_all(req.as_bytes())?;
        self.sent += req.len() as u64;
        self.requests += 1;
        let resp = http::read_response(&mut self.reader)
            .with_context(|| format!("reading nginx's response to GET {path}"))?;
        ensure!(
            resp.status == 200 && String::from_utf8_lossy(&resp.body).contains("gatescope-demo"),
            "GET {path} through nginx: status {}, body {:?}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
        Ok(())
    }

    /// Closes the connection (after reading to EOF if nginx is closing it) and adds its counts.
    fn finish(mut self, drain: bool, counts: &mut Counts) -> Result<()> {
        if drain {
            self.reader.read_to_end(&mut Vec::new())?;
        }
        counts.connections += 1;
        counts.requests += self.requests;
        counts.bytes_sent += self.sent;
        counts.bytes_received += self.reader.get_ref().bytes;
        Ok(())
    }
}

/// All keep-alive connections are open at once and take turns; then the one-shot ones.
pub fn send(addr: SocketAddr) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut conns = (0..KEEPALIVE_CONNECTIONS)
        .map(|_| Conn::open(addr))
        .collect::<Result<Vec<_>>>()?;
    for round in 0..REQUESTS_PER_KEEPALIVE {
        for (i, conn) in conns.iter_mut().enumerate() {
            conn.request(&format!("/api/keepalive/{i}/{round}"), true)?;
        }
    }
    for conn in conns {
        conn.finish(false, &mut counts)?;
    }
    for i in 0..ONE_SHOT_CONNECTIONS {
        let mut conn = Conn::open(addr)?;
        conn.request(&format!("/api/oneshot/{i}"), false)?;
        conn.finish(true, &mut counts)?;
    }
    Ok(counts)
}
