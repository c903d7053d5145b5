//! The linking tests' upstream: a real HTTP/1.1 server (std threads) that
//! records which request arrived on which connection, in which order. The
//! request is named by the id its client put in `X-Test-Id` (a header the
//! agent does not use as evidence); the connection by its peer port, which is
//! the gateway's local port of the upstream call.
//!
//! Each request waits `X-Delay-Ms` milliseconds before it is answered (the
//! client picks random delays), then, by [`Behaviour`]: a 200 whose body is
//! the id, a 502, or a reset.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the id as body, keep-alive.
    Answer,
    /// 502 (keep-alive): nginx's `proxy_next_upstream http_502` retries.
    Fail502,
    /// The request is read, then the connection is reset (`SO_LINGER` 0).
    Reset,
}

/// One request as the upstream read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The gateway's local port of the connection it came on.
    pub peer_port: u16,
    /// The connection, numbered in accept order.
    pub conn: u64,
    /// Its place on that connection, from 0.
    pub seq: u64,
    /// `X-Test-Id` (empty when absent).
    pub id: String,
}

pub struct Witness {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Witness {
    /// Listen on 127.0.0.1:<free port>.
    pub fn start(behaviour: Behaviour) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the witness upstream")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let serial = Arc::new(AtomicU64::new(0));
        let acceptor = {
            let arrivals = arrivals.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, peer)) => {
                            let _ = s.set_nonblocking(false);
                            let conn = serial.fetch_add(1, Ordering::Relaxed);
                            let arrivals = arrivals.clone();
                            std::thread::spawn(move || {
                                serve(s, peer.port(), conn, behaviour, &arrivals);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        Ok(Witness {
            addr,
            arrivals,
            stop,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request read so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

/// The value of header `name` (case-insensitive) in a request head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve(
    mut s: TcpStream,
    peer_port: u16,
    conn: u64,
    behaviour: Behaviour,
    arrivals: &Mutex<Vec<Arrival>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut seq = 0;
    loop {
        // One request head (these tests send no request bodies).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let id = header(&head, "X-Test-Id").unwrap_or_default().to_owned();
        arrivals.lock().unwrap().push(Arrival {
            peer_port,
            conn,
            seq,
            id: id.clone(),
        });
        seq += 1;
        let delay = header(&head, "X-Delay-Ms")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(delay));
        let response = match behaviour {
            Behaviour::Answer => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{id}",
                id.len()
            ),
            Behaviour::Fail502 => {
                "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\nnope".to_owned()
            }
            Behaviour::Reset => {
                reset(&s);
                return;
            }
        };
        if s.write_all(response.as_bytes()).is_err() {
            return;
        }
        if header(&head, "Connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
            let _ = s.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Close with `SO_LINGER` 0: the kernel sends a reset.
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a pointer to a live
    // `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
