//! The listening TCP sockets of the agent's own network namespace, from the
//! kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, the interface `ss`
//! uses), asked for the LISTEN state only.
//!
//! Why not /proc/PID/net/tcp{,6}, which `procfs.rs` reads otherwise: the
//! kernel prints those by walking its whole established-socket hash (262,144
//! buckets on our 2-core VM, `dmesg`), listeners or not, and formats a text
//! row per socket. Under `cargo xtask bench` the once-a-second read of the
//! gateway's listeners was 5–6% of the agent's CPU (`perf`: `seq_read` ->
//! `established_get_first`; BENCHMARKS.md). A LISTEN-only dump walks only the
//! listening hash (16,384 buckets here) and returns binary records.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` in the kernel's TCP state numbering.
const TCP_LISTEN: u32 = 10;
/// `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then an
/// `inet_diag_sockid` (48 bytes).
const REQ_LEN: usize = 8 + 48;
/// `struct inet_diag_msg`: family, state, timer, retrans, the sockid (48
/// bytes), then expires, rqueue, wqueue, uid and inode (u32 each).
const MSG_LEN: usize = 4 + 48 + 20;
/// Offset of `idiag_inode` in `inet_diag_msg`.
const MSG_INODE: usize = 4 + 48 + 16;
/// Offset of `idiag_rqueue`: for a listener, its accept queue's length.
const MSG_RQUEUE: usize = 4 + 48 + 4;

/// One listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub inode: u64,
    /// Connections waiting in its accept queue (`sk_ack_backlog`).
    pub queued: u32,
}
/// Receive buffer: the kernel fills it with as many records as fit.
const RECV_BUF: usize = 32 * 1024;

/// Every TCP socket in LISTEN state, IPv4 and IPv6, in the calling
/// thread's network namespace. IPv4-mapped IPv6 addresses are given as
/// IPv4, as `procfs::parse_listeners` gives them.
pub fn listeners() -> io::Result<Vec<Listener>> {
    // SAFETY: plain syscall; the descriptor is owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = Vec::new();
    for (seq, family) in [(1, libc::AF_INET), (2, libc::AF_INET6)] {
        send_dump(&socket, seq, family as u8)?;
        read_dump(&socket, seq, &mut out)?;
    }
    Ok(out)
}

fn send_dump(socket: &OwnedFd, seq: u32, family: u8) -> io::Result<()> {
    let mut req = [0u8; NLMSG_HDR + REQ_LEN];
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    req[NLMSG_HDR] = family;
    req[NLMSG_HDR + 1] = libc::IPPROTO_TCP as u8;
    req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // SAFETY: the kernel's netlink address, zeroed except its family.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: req and kernel are valid for the sizes given, for the call.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the records of dump `seq` until its `NLMSG_DONE`.
fn read_dump(socket: &OwnedFd, seq: u32, out: &mut Vec<Listener>) -> io::Result<()> {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        // SAFETY: buf is valid for writes of its length, for the call.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if parse(&buf[..n as usize], seq, out)? {
            return Ok(());
        }
    }
}

/// Appends the LISTEN records of one datagram; whether the dump is done.
fn parse(mut data: &[u8], seq: u32, out: &mut Vec<Listener>) -> io::Result<bool> {
    let u16_at = |b: &[u8], at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let truncated = || io::Error::new(io::ErrorKind::InvalidData, "truncated sock_diag record");
    while data.len() >= NLMSG_HDR {
        let len = u32_at(data, 0) as usize;
        if len < NLMSG_HDR || len > data.len() {
            return Err(truncated());
        }
        let kind = u16_at(data, 4);
        let body = &data[NLMSG_HDR..len];
        // Another dump's answer (none is sent before this one is read).
        let ours = u32_at(data, 8) == seq;
        match kind {
            _ if !ours => {}
            k if k == libc::NLMSG_DONE as u16 => return Ok(true),
            k if k == libc::NLMSG_ERROR as u16 => {
                let errno = if body.len() >= 4 {
                    -(u32_at(body, 0) as i32)
                } else {
                    libc::EPROTO
                };
                return Err(io::Error::from_raw_os_error(errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                if body.len() < MSG_LEN {
                    return Err(truncated());
                }
                if let Some(addr) = address(body) {
                    out.push(Listener {
                        addr,
                        inode: u64::from(u32_at(body, MSG_INODE)),
                        queued: u32_at(body, MSG_RQUEUE),
                    });
                }
            }
            _ => {}
        }
        // Records are 4-byte aligned (NLMSG_ALIGN).
        let next = (len + 3) & !3;
        data = data.get(next..).unwrap_or_default();
    }
    Ok(false)
}

/// The local address of an `inet_diag_msg`: the port and address are in
/// network byte order; an IPv4 address is in the first 4 of 16 bytes.
fn address(msg: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(msg[0]);
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    let src = &msg[8..24];
    let ip = if family == libc::AF_INET {
        IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
    } else if family == libc::AF_INET6 {
        let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(src).ok()?);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    } else {
        return None;
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, os::fd::AsRawFd};

    use super::*;

    /// A socket's inode, as /proc/self/fd names it.
    fn inode(fd: i32) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let link = link.to_str().unwrap();
        link.strip_prefix("socket:[")
            .and_then(|l| l.strip_suffix(']'))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn finds_our_own_listeners_with_their_inodes_as_proc_does() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").unwrap();
        let any = TcpListener::bind("[::]:0").unwrap();
        // Not listening: not reported.
        let bound = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let found = listeners().unwrap();
        // The rows /proc prints for these sockets (the host's other
        // listeners come and go between two reads).
        let proc: Vec<(SocketAddr, u64)> = ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
            .iter()
            .flat_map(|t| crate::procfs::parse_listeners(&std::fs::read_to_string(t).unwrap()))
            .map(|l| (l.addr, l.inode))
            .collect();
        let found_pairs: Vec<(SocketAddr, u64)> = found.iter().map(|l| (l.addr, l.inode)).collect();
        for l in [&v4, &v6, &any] {
            let want = (l.local_addr().unwrap(), inode(l.as_raw_fd()));
            assert!(found_pairs.contains(&want), "{want:?} not in {found:?}");
            assert!(proc.contains(&want), "{want:?} not in /proc's {proc:?}");
        }
        let udp = inode(bound.as_raw_fd());
        assert!(found.iter().all(|l| l.inode != udp));
    }

    #[test]
    fn gives_the_accept_queue_of_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let queued = || {
            listeners()
                .unwrap()
                .iter()
                .find(|x| x.addr == addr)
                .map(|x| x.queued)
        };
        assert_eq!(queued(), Some(0));
        // Established by the kernel, not accepted yet.
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(queued(), Some(2));
        drop(l.accept().unwrap());
        assert_eq!(queued(), Some(1));
    }

    #[test]
    fn an_error_record_is_an_error() {
        let mut rec = vec![0u8; NLMSG_HDR + 4];
        rec[0..4].copy_from_slice(&((NLMSG_HDR + 4) as u32).to_ne_bytes());
        rec[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        rec[8..12].copy_from_slice(&7u32.to_ne_bytes());
        rec[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        let e = parse(&rec, 7, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        // A truncated record is refused, not read past.
        assert!(parse(&rec[..18], 7, &mut Vec::new()).is_err());
    }
}
