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

/// A peer that never completes a handshake: a listener (backlog 0) that
/// never accepts, its queue filled, so the kernel drops further SYNs and a
/// gateway's `connect()` times out (`proxy_connect_timeout`, a timer).
pub struct Blackhole {
    fd: std::os::fd::OwnedFd,
    port: u16,
    _fill: Vec<TcpStream>,
}

impl Blackhole {
    pub fn start() -> Result<Self> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        anyhow::ensure!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: bind(2) with a pointer to a live sockaddr_in of the size
        // passed; listen(2) on our socket.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(rc == 0, "bind: {}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let rc = unsafe { libc::listen(fd.as_raw_fd(), 0) };
        anyhow::ensure!(rc == 0, "listen: {}", std::io::Error::last_os_error());
        let mut bound: libc::sockaddr_in = addr;
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: getsockname(2) into a live sockaddr_in of `len` bytes.
        let rc = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                std::ptr::from_mut(&mut bound).cast(),
                &raw mut len,
            )
        };
        anyhow::ensure!(rc == 0, "getsockname: {}", std::io::Error::last_os_error());
        let port = u16::from_be(bound.sin_port);
        // Fill the accept queue (backlog 0 holds one connection); later
        // handshakes stall.
        let target: SocketAddr = ([127, 0, 0, 1], port).into();
        let fill = (0..4)
            .filter_map(|_| TcpStream::connect_timeout(&target, Duration::from_millis(200)).ok())
            .collect();
        Ok(Blackhole {
            fd,
            port,
            _fill: fill,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether a connection attempt stalls (the queue is full).
    pub fn stalls(&self) -> bool {
        let _ = &self.fd;
        let target: SocketAddr = ([127, 0, 0, 1], self.port).into();
        TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err()
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
