//! A user-space TCP peer talking to the real kernel stack through a TUN device,
//! so that every packet of a connection is known and controllable: a chosen
//! handshake time, a withheld ACK that forces a kernel retransmission, RSTs either
//! way, and exact per-direction packet and IP byte counts.
//!
//! The kernel side of the TUN interface is `10.a.b.1/24`; the peer is the
//! non-local address `10.a.b.2`, which exists only in this process (the kernel
//! routes it out of the TUN device and never answers for it itself). The peer
//! works both ways:
//! - as a client ([`TunNet::connect`]): servers listening on `0.0.0.0` are
//!   reached at [`TunNet::kernel_addr`];
//! - as a server ([`TunNet::accept`]): connections the kernel opens to
//!   `peer_addr():port` (e.g. a proxy's upstream connections) are answered by
//!   this process once it listens on `port` ([`TunNet::listen`]). A SYN to a port
//!   it does not listen on gets no answer at all (no RST): the kernel retries it.
//!
//! Both kinds are a [`TunConn`], with the same send/recv/close/reset and counts.
//!
//! There is no reader thread: packets are read from the TUN fd only while a
//! method of [`TunNet`] or [`TunConn`] runs, and demultiplexed to connections by
//! port. A connection answers (ACKs) its packets when it next processes them, so
//! keep gaps between calls short (well under the kernel's 200 ms minimum RTO/TLP
//! timeout for a single outstanding segment), or call [`TunConn::pump_for`].
//!
//! Packet policy, so counts are predictable: the peer sends no options except
//! MSS 1460 on its SYN or SYN-ACK (no timestamps, SACK or window scaling, so the
//! kernel uses none either), a fixed window of 65535, exactly one pure ACK per
//! received data/FIN segment (including duplicates and out-of-order ones, as RFC
//! 5681 asks), except the one segment deliberately discarded by
//! [`TunConn::recv_dropping_first`]. It never retransmits (a retransmitted SYN or
//! SYN-ACK from the kernel is counted, not answered) and sends nothing on drop.
//!
//! No global sysctl is changed. Per interface, IPv6 is disabled
//! (`net.ipv6.conf.<if>.disable_ipv6=1`, before the link goes up) so no router
//! solicitations or DAD appear; the setting disappears with the interface, which
//! the kernel removes when the TUN fd is closed.

use anyhow::{anyhow, bail, ensure, Context, Result};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod conn;
mod packet;

pub use self::conn::TunConn;
use self::packet::*;

/// How long any single exchange (SYN-ACK, ACK of our data, FIN exchange) may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The MSS we announce and the largest segment we send.
const OUR_MSS: u16 = 1460;
/// Our fixed receive window (no window scaling, so this is the real window).
const OUR_WINDOW: u16 = 65535;

// <linux/if_tun.h>; defined here rather than relying on the libc crate's coverage.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_TUN_EXCL: libc::c_short = libc::c_short::MIN; // 0x8000: fail if the name exists

/// `struct ifreq` as TUNSETIFF reads it: the name, then `ifr_flags`, padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Packets and IPv4 bytes (IP total length) that crossed the TUN interface.
/// "in" = towards the kernel (written by us, the fake peer), "out" = from the
/// kernel (read by us), whichever side opened the connection. Seen from a
/// gateway on the kernel side, "in" is always its `ingress` and "out" its
/// `egress`: for a client connection ([`TunNet::connect`]) "in" is what the
/// client sent; for an upstream connection ([`TunNet::accept`]) "out" is what
/// the gateway sent to its upstream peer and "in" the peer's answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCount {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub rst_in: u64,
    pub rst_out: u64,
    /// Segments with SYN we sent: SYNs ([`TunNet::connect`]), SYN-ACKs
    /// ([`TunNet::accept`]).
    pub syn_in: u64,
    /// Segments with SYN the kernel sent: SYN-ACKs to our SYNs, SYNs to our
    /// listening ports (more than one per connection = retransmitted).
    pub syn_out: u64,
}

impl std::ops::Add for WireCount {
    type Output = WireCount;
    fn add(self, o: WireCount) -> WireCount {
        WireCount {
            packets_in: self.packets_in + o.packets_in,
            bytes_in: self.bytes_in + o.bytes_in,
            packets_out: self.packets_out + o.packets_out,
            bytes_out: self.bytes_out + o.bytes_out,
            rst_in: self.rst_in + o.rst_in,
            rst_out: self.rst_out + o.rst_out,
            syn_in: self.syn_in + o.syn_in,
            syn_out: self.syn_out + o.syn_out,
        }
    }
}

impl WireCount {
    fn add(&mut self, inbound: bool, ip_len: usize, flags: u8) {
        let (p, b, r, s) = if inbound {
            (
                &mut self.packets_in,
                &mut self.bytes_in,
                &mut self.rst_in,
                &mut self.syn_in,
            )
        } else {
            (
                &mut self.packets_out,
                &mut self.bytes_out,
                &mut self.rst_out,
                &mut self.syn_out,
            )
        };
        *p += 1;
        *b += ip_len as u64;
        *r += u64::from(flags & RST != 0);
        *s += u64::from(flags & SYN != 0);
    }
}

/// The TUN interface's counters; directions as in [`WireCount`]. A TUN device has
/// no link header, so bytes are IP bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

/// A connection's share of the demultiplexer.
#[derive(Default)]
struct Slot {
    counts: WireCount,
    queue: VecDeque<Seg>,
    /// False once the [`TunConn`] is dropped: its packets are then only counted.
    live: bool,
}

struct Inner {
    /// Keyed by the kernel-side port.
    totals: HashMap<u16, WireCount>,
    /// Keyed by our (the peer's) port.
    peer_totals: HashMap<u16, WireCount>,
    /// Keyed by (our port, kernel-side port).
    conns: HashMap<(u16, u16), Slot>,
    /// Our listening ports: the kernel's SYNs (source port, IP length, segment)
    /// not yet taken by [`TunNet::accept`]; counted in the totals, and in their
    /// connection's counts once accepted.
    listeners: HashMap<u16, VecDeque<(u16, usize, Seg)>>,
    next_port: u16,
    ip_id: u16,
    buf: Vec<u8>,
}

/// A TUN interface (IFF_TUN | IFF_NO_PI) with a fake peer behind it; the kernel
/// deletes the interface when this (its only fd) is dropped.
pub struct TunNet {
    file: File,
    name: String,
    ifindex: u32,
    kernel: Ipv4Addr,
    peer: Ipv4Addr,
    inner: RefCell<Inner>,
}

impl TunNet {
    /// Create the interface `gst<pid>x<n>` with an unused `10.a.b.0/24`.
    pub fn create() -> Result<TunNet> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("gst{pid}x{n}");
        ensure!(
            name.len() < libc::IFNAMSIZ,
            "interface name {name} too long"
        );

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun (needs root / CAP_NET_ADMIN and the tun module)")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI | IFF_TUN_EXCL,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which IfReq lays out.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("TUNSETIFF {name}"));
        }
        let cname = std::ffi::CString::new(name.clone())?;
        // SAFETY: a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        ensure!(ifindex != 0, "if_nametoindex({name}) failed");

        // Before the link goes up, so not even one router solicitation is sent.
        // A kernel without IPv6 has no such file and sends no IPv6 anyway.
        let v6 = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
        if std::path::Path::new(&v6).exists() {
            std::fs::write(&v6, "1").with_context(|| format!("writing 1 to {v6}"))?;
        }

        let (a, b) = free_subnet(pid, n)?;
        let kernel = Ipv4Addr::new(10, a, b, 1);
        let peer = Ipv4Addr::new(10, a, b, 2);
        run_ip(&["addr", "add", &format!("{kernel}/24"), "dev", &name])?;
        run_ip(&["link", "set", "dev", &name, "up"])?;

        Ok(TunNet {
            file,
            name,
            ifindex,
            kernel,
            peer,
            inner: RefCell::new(Inner {
                totals: HashMap::new(),
                peer_totals: HashMap::new(),
                conns: HashMap::new(),
                listeners: HashMap::new(),
                next_port: 40000,
                ip_id: (pid as u16).wrapping_mul(31),
                buf: vec![0; 65536],
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// `10.a.b.1`: the kernel's address, where a server on `0.0.0.0` is reached.
    pub fn kernel_addr(&self) -> Ipv4Addr {
        self.kernel
    }

    /// `10.a.b.2`: the fake peer's address as the kernel sees it (the client's of
    /// [`connect`](Self::connect), the server's of [`accept`](Self::accept)).
    pub fn peer_addr(&self) -> Ipv4Addr {
        self.peer
    }

    /// Open a connection to `kernel_addr():dport`: SYN (MSS 1460, window 65535),
    /// wait for the SYN-ACK, sleep `ack_delay`, send the final ACK.
    pub fn connect(&self, dport: u16, ack_delay: Duration) -> Result<TunConn<'_>> {
        self.connect_with(dport, None, || {
            std::thread::sleep(ack_delay);
            Ok(())
        })
    }

    /// [`connect`](Self::connect), sending the SYN again `syn_again` after the
    /// first (the same SYN: a retransmission, as a client whose SYN-ACK was
    /// lost sends) and waiting for the kernel's SYN-ACK to it before the final
    /// ACK; and running `before_ack` (a sleep, a flood) between the SYN-ACK and
    /// the final ACK. [`TunConn::handshake`] runs from the first SYN.
    pub fn connect_with(
        &self,
        dport: u16,
        syn_again: Option<Duration>,
        before_ack: impl FnOnce() -> Result<()>,
    ) -> Result<TunConn<'_>> {
        let lport = {
            let mut inner = self.inner.borrow_mut();
            // Never one of our listening ports: their packets go to accept().
            let mut p = inner.next_port;
            while inner.listeners.contains_key(&p) {
                p = p.checked_add(1).context("out of local ports")?;
            }
            inner.next_port = p.checked_add(1).context("out of local ports")?;
            p
        };
        let mut c = self.new_conn(lport, dport);
        let iss = c.snd_una;
        let t_syn = Instant::now();
        self.write_seg(lport, dport, iss, 0, SYN, Some(OUR_MSS), &[])?;
        let t_syn_written = Instant::now();
        let deadline = t_syn + IO_TIMEOUT;
        let mut syn_again = syn_again;
        loop {
            let seg = self.next_for((lport, dport), deadline)?.ok_or_else(|| {
                anyhow!(
                    "timed out waiting for the SYN-ACK from {}:{dport}",
                    self.kernel
                )
            })?;
            if seg.flags & RST != 0 {
                bail!("connection to {}:{dport} refused (RST)", self.kernel);
            }
            if seg.flags & (SYN | ACK) == SYN | ACK && seg.ack == c.snd_nxt {
                c.irs = seg.seq;
                c.rcv_nxt = seg.seq.wrapping_add(1);
                c.highest_rcv = c.rcv_nxt;
                c.snd_una = seg.ack;
                c.snd_wnd = u32::from(seg.window);
                c.mss = seg.mss.unwrap_or(536).min(OUR_MSS);
                // The retransmitted SYN, answered by the SYN-ACK again.
                if let Some(after) = syn_again.take() {
                    std::thread::sleep((t_syn + after).saturating_duration_since(Instant::now()));
                    self.write_seg(lport, dport, iss, 0, SYN, Some(OUR_MSS), &[])?;
                    continue;
                }
                break;
            }
            // Anything else is counted by the demultiplexer and otherwise ignored.
        }
        before_ack()?;
        let t_ack = Instant::now();
        c.send_ack()?;
        let t_ack_written = Instant::now();
        c.handshake = t_ack - t_syn;
        c.handshake_window = (t_ack - t_syn_written, t_ack_written - t_syn);
        Ok(c)
    }

    /// Write `n` SYNs to `kernel_addr():dport` that are never followed up, each
    /// from its own address and port (`10.a.b.3` upwards, ports from 1024),
    /// so that each is a distinct handshake in progress; a SYN flood. They
    /// are counted in [`totals`](Self::totals); the kernel's answers, to
    /// addresses other than the peer's, are not read.
    pub fn syn_flood(&self, dport: u16, n: u32) -> Result<()> {
        const PER_ADDR: u32 = 60_000;
        let [a, b, c, _] = self.peer.octets();
        for i in 0..n {
            let host = 3 + i / PER_ADDR;
            ensure!(
                host < 255,
                "a flood of {n} SYNs needs more addresses than a /24"
            );
            let src = Ipv4Addr::new(a, b, c, host as u8);
            let sport = 1024 + (i % PER_ADDR) as u16;
            let mut inner = self.inner.borrow_mut();
            inner.ip_id = inner.ip_id.wrapping_add(1);
            let pkt = build(
                src,
                self.kernel,
                inner.ip_id,
                sport,
                dport,
                i.wrapping_mul(0x9e37_79b9),
                0,
                SYN,
                Some(OUR_MSS),
                &[],
            );
            let n = (&self.file)
                .write(&pkt)
                .with_context(|| format!("writing a packet to {}", self.name))?;
            ensure!(n == pkt.len(), "short write to {}", self.name);
            inner
                .totals
                .entry(dport)
                .or_default()
                .add(true, pkt.len(), SYN);
        }
        Ok(())
    }

    /// Listen on `peer_addr():port` from now on: the kernel's SYNs to it are kept
    /// for [`accept`](Self::accept) (SYNs read before are only counted). Idempotent.
    pub fn listen(&self, port: u16) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        ensure!(
            !inner.conns.keys().any(|&(ours, _)| ours == port)
                || inner.listeners.contains_key(&port),
            "port {port} is already a client connection's"
        );
        inner.listeners.entry(port).or_default();
        Ok(())
    }

    /// Accept a connection the kernel opens to `peer_addr():port` (listening on it
    /// first if not yet): take its first SYN (waiting up to `timeout`), answer
    /// with a SYN-ACK (MSS 1460, window 65535), wait for the final ACK. A
    /// retransmitted SYN of the same connection is counted as a retransmission
    /// and not answered. The final ACK may carry data, which is then received.
    pub fn accept(&self, port: u16, timeout: Duration) -> Result<TunConn<'_>> {
        self.listen(port)?;
        let deadline = Instant::now() + timeout;
        let (rport, syn_len, syn) = loop {
            if let Some(first) = self
                .inner
                .borrow_mut()
                .listeners
                .get_mut(&port)
                .and_then(VecDeque::pop_front)
            {
                break first;
            }
            if !self.read_one(deadline)? {
                bail!("no connection to {}:{port} within {timeout:?}", self.peer);
            }
        };
        let mut c = self.new_conn(port, rport);
        {
            // The SYN, and this connection's SYNs still waiting (retransmissions),
            // are its own: counted as such, and the latter queued for it.
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            let waiting = inner.listeners.get_mut(&port).expect("listening");
            let slot = inner.conns.get_mut(&(port, rport)).expect("just added");
            slot.counts.add(false, syn_len, syn.flags);
            let (mine, others): (VecDeque<_>, VecDeque<_>) =
                waiting.drain(..).partition(|(p, _, _)| *p == rport);
            *waiting = others;
            for (_, len, seg) in mine {
                slot.counts.add(false, len, seg.flags);
                slot.queue.push_back(seg);
            }
        }
        c.irs = syn.seq;
        c.rcv_nxt = syn.seq.wrapping_add(1);
        c.highest_rcv = c.rcv_nxt;
        c.snd_wnd = u32::from(syn.window);
        c.mss = syn.mss.unwrap_or(536).min(OUR_MSS);
        let t_synack = Instant::now();
        self.write_seg(
            port,
            rport,
            c.snd_una,
            c.rcv_nxt,
            SYN | ACK,
            Some(OUR_MSS),
            &[],
        )?;
        let deadline = t_synack + IO_TIMEOUT;
        loop {
            let seg = self.next_for((port, rport), deadline)?.ok_or_else(|| {
                anyhow!(
                    "timed out waiting for the final ACK from {}:{rport} to port {port}",
                    self.kernel
                )
            })?;
            if seg.flags & RST != 0 {
                bail!(
                    "the kernel reset {}:{rport} -> {}:{port} during the handshake",
                    self.kernel,
                    self.peer
                );
            }
            if seg.flags & SYN != 0 {
                c.handle(seg)?; // a retransmitted SYN: counted, not answered
                continue;
            }
            if seg.flags & ACK != 0 && seg.ack == c.snd_nxt {
                c.handshake = t_synack.elapsed();
                c.snd_una = seg.ack;
                c.snd_wnd = u32::from(seg.window);
                if !seg.payload.is_empty() || seg.flags & FIN != 0 {
                    c.handle(seg)?;
                }
                return Ok(c);
            }
            // Anything else is counted by the demultiplexer and otherwise ignored.
        }
    }

    /// A connection between our `lport` and the kernel's `rport`, registered with
    /// the demultiplexer, with a fresh initial sequence number and nothing sent.
    fn new_conn(&self, lport: u16, rport: u16) -> TunConn<'_> {
        self.inner.borrow_mut().conns.insert(
            (lport, rport),
            Slot {
                live: true,
                ..Slot::default()
            },
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let iss = nanos ^ u32::from(lport).wrapping_mul(0x9e37_79b9) ^ u32::from(rport);
        TunConn {
            net: self,
            lport,
            rport,
            snd_una: iss,
            snd_nxt: iss.wrapping_add(1),
            snd_wnd: 0,
            mss: OUR_MSS,
            irs: 0,
            rcv_nxt: 0,
            highest_rcv: 0,
            rx: Vec::new(),
            fin_sent: false,
            fin_received: false,
            reset_sent: false,
            reset_received: false,
            drop_next_data: false,
            retransmits: 0,
            handshake: Duration::ZERO,
            handshake_window: (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Every IPv4/TCP packet to or from KERNEL-side `port` written or read so far,
    /// whichever connection (live, dropped or none) it belonged to: for client
    /// connections, the server's port. ("in" = written by us, as in [`WireCount`].)
    pub fn totals(&self, port: u16) -> WireCount {
        self.inner
            .borrow()
            .totals
            .get(&port)
            .copied()
            .unwrap_or_default()
    }

    /// Every IPv4/TCP packet to or from PEER-side `port` (our own port, e.g. one
    /// we listen on) written or read so far, whichever connection (live, dropped,
    /// none, or a SYN never accepted) it belonged to. "in" = written by us
    /// towards the kernel, "out" = read from the kernel, as in [`WireCount`]: for
    /// the kernel's connections to our listening port, "out" is what the kernel
    /// side (a gateway's upstream connections) sent to us.
    pub fn peer_totals(&self, port: u16) -> WireCount {
        self.inner
            .borrow()
            .peer_totals
            .get(&port)
            .copied()
            .unwrap_or_default()
    }

    /// The interface's own counters (every packet, TCP or not), an independent check
    /// of [`totals`](Self::totals): with IPv6 off nothing else should cross.
    pub fn link_stats(&self) -> Result<LinkStats> {
        let get = |f: &str| -> Result<u64> {
            let p = format!("/sys/class/net/{}/statistics/{f}", self.name);
            std::fs::read_to_string(&p)
                .with_context(|| format!("reading {p}"))?
                .trim()
                .parse()
                .with_context(|| format!("parsing {p}"))
        };
        // The kernel receives ("rx") what we write, and transmits what we read.
        Ok(LinkStats {
            packets_in: get("rx_packets")?,
            bytes_in: get("rx_bytes")?,
            packets_out: get("tx_packets")?,
            bytes_out: get("tx_bytes")?,
        })
    }

    /// Fails unless the interface's own counters equal `totals`: nothing but
    /// the TCP packets counted there crossed it.
    pub fn ensure_only(&self, totals: &WireCount) -> Result<()> {
        let link = self.link_stats()?;
        let ours = LinkStats {
            packets_in: totals.packets_in,
            bytes_in: totals.bytes_in,
            packets_out: totals.packets_out,
            bytes_out: totals.bytes_out,
        };
        ensure!(
            link == ours,
            "interface counters {link:?} != counted {totals:?}"
        );
        Ok(())
    }

    /// Read (count and queue for their connections) packets until none has arrived
    /// for `quiet`; use before comparing counts to be sure nothing is still coming.
    pub fn settle(&self, quiet: Duration) -> Result<()> {
        while self.read_one(Instant::now() + quiet)? {}
        Ok(())
    }

    /// The next queued segment for `key`, reading from the fd as needed.
    fn next_for(&self, key: (u16, u16), deadline: Instant) -> Result<Option<Seg>> {
        loop {
            if let Some(seg) = self
                .inner
                .borrow_mut()
                .conns
                .get_mut(&key)
                .and_then(|s| s.queue.pop_front())
            {
                return Ok(Some(seg));
            }
            if !self.read_one(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Read one packet (any) before `deadline`; false on timeout. IPv4/TCP packets
    /// to our peer address are counted and queued; anything else is ignored.
    fn read_one(&self, deadline: Instant) -> Result<bool> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let n = loop {
            match (&self.file).read(&mut inner.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", self.name)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let ms = (deadline - now)
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&raw mut pfd, 1, ms) } < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e).context("poll on the tun fd");
                }
            }
        };
        let Some((src_port, dst_port, ip_len, seg)) = parse(&inner.buf[..n], self.peer) else {
            return Ok(true);
        };
        inner
            .totals
            .entry(src_port)
            .or_default()
            .add(false, ip_len, seg.flags);
        inner
            .peer_totals
            .entry(dst_port)
            .or_default()
            .add(false, ip_len, seg.flags);
        if let Some(slot) = inner.conns.get_mut(&(dst_port, src_port)) {
            slot.counts.add(false, ip_len, seg.flags);
            if slot.live {
                slot.queue.push_back(seg);
            }
        } else if seg.flags & (SYN | ACK | RST) == SYN {
            if let Some(waiting) = inner.listeners.get_mut(&dst_port) {
                waiting.push_back((src_port, ip_len, seg));
            }
        }
        Ok(true)
    }

    /// Build, write and count one segment from `peer:sport` to `kernel:dport`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per header field of the segment"
    )]
    fn write_seg(
        &self,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        mss: Option<u16>,
        payload: &[u8],
    ) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        inner.ip_id = inner.ip_id.wrapping_add(1);
        let pkt = build(
            self.peer,
            self.kernel,
            inner.ip_id,
            sport,
            dport,
            seq,
            ack,
            flags,
            mss,
            payload,
        );
        let n = (&self.file)
            .write(&pkt)
            .with_context(|| format!("writing a packet to {}", self.name))?;
        ensure!(
            n == pkt.len(),
            "short write to {}: {n} of {}",
            self.name,
            pkt.len()
        );
        inner
            .totals
            .entry(dport)
            .or_default()
            .add(true, pkt.len(), flags);
        inner
            .peer_totals
            .entry(sport)
            .or_default()
            .add(true, pkt.len(), flags);
        if let Some(slot) = inner.conns.get_mut(&(sport, dport)) {
            slot.counts.add(true, pkt.len(), flags);
        }
        Ok(())
    }
}

/// A value of the `Tcp:` line of /proc/net/snmp, e.g. "RetransSegs" (system-wide).
pub fn snmp_tcp(field: &str) -> Result<u64> {
    proc_net_counter("/proc/net/snmp", "Tcp:", field)
}

/// A value of the `TcpExt:` line of /proc/net/netstat, e.g. "TCPLossProbes".
pub fn netstat_tcpext(field: &str) -> Result<u64> {
    proc_net_counter("/proc/net/netstat", "TcpExt:", field)
}

pub(crate) fn proc_net_counter(path: &str, prefix: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (names, values) = lines
        .next()
        .zip(lines.next())
        .with_context(|| format!("no {prefix} lines in {path}"))?;
    let i = names
        .split_whitespace()
        .position(|n| n == field)
        .with_context(|| format!("no {prefix} {field} in {path}"))?;
    values
        .split_whitespace()
        .nth(i)
        .with_context(|| format!("{prefix} {field}: no value in {path}"))?
        .parse()
        .with_context(|| format!("{prefix} {field} in {path}"))
}

pub(crate) fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A `10.a.b.0/24` that no address or route on the machine mentions, starting
/// from a pid-derived candidate so concurrent test processes rarely collide.
pub(crate) fn free_subnet(pid: u32, n: u32) -> Result<(u8, u8)> {
    let mut used = String::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let out = Command::new("ip")
            .args(args)
            .output()
            .with_context(|| format!("running ip {}", args.join(" ")))?;
        ensure!(out.status.success(), "ip {} failed", args.join(" "));
        used.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    const SPAN: u32 = 200 * 256; // 10.20.0.0 .. 10.219.255.0
    let start = pid
        .wrapping_mul(2_654_435_761)
        .wrapping_add(n.wrapping_mul(7))
        % SPAN;
    for i in 0..SPAN {
        let k = (start + i) % SPAN;
        let (a, b) = ((20 + k / 256) as u8, (k % 256) as u8);
        if !used.contains(&format!("10.{a}.{b}.")) {
            return Ok((a, b));
        }
    }
    bail!("no free 10.x.y.0/24 subnet")
}

/// The buffer holds a complete HTTP response with a Content-Length body.
pub fn complete_response(b: &[u8]) -> bool {
    let Some(h) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&b[..h]);
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    b.len() >= h + 4 + len
}

#[cfg(test)]
mod tests;
