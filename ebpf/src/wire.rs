//! The wire view: a socket filter on AF_PACKET sockets (one per interface,
//! opened by the agent) that counts the packets of the gateway's listening
//! ports and upstream peers, and times clients' TCP handshakes.
//!
//! It only observes. An AF_PACKET socket gets its own reference to each
//! packet; what this program returns decides only what reaches that socket,
//! and it always returns 0 (keep nothing), so the gateway's traffic is the
//! same whatever happens here. The agent opens the sockets SOCK_DGRAM, so
//! the data starts at the network header on every interface type
//! (net/packet/af_packet.c, packet_rcv), and on loopback with
//! PACKET_IGNORE_OUTGOING (Linux 4.20), so each packet is seen once.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, macros::socket_filter,
    programs::SkBuffContext,
};
use gatescope_common::{
    Direction, FlowKey, LostReason, PeerKey, Role, SynSeen, Tuple, WireCounts, WireKey, AF_INET,
    AF_INET6,
};

use crate::{
    emit::count_lost,
    maps::{HANDSHAKES, LISTEN_PORT_BITS, PEERS, PEER_PORTS, WIRE},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[socket_filter]
pub fn wire(ctx: SkBuffContext) -> i64 {
    let _ = observe(&ctx);
    0
}

/// What the program needs of one TCP/IP packet.
struct Packet {
    family: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    flags: u8,
    /// IP bytes of every segment this packet stands for.
    bytes: u64,
    /// Segments it stands for (a GSO/GRO packet is several on the wire).
    segments: u64,
}

#[inline(always)]
fn observe(ctx: &SkBuffContext) -> Result<(), i64> {
    let Some(p) = parse(ctx)? else {
        return Ok(());
    };
    // SAFETY: a field of the context the verifier allows socket filters to read.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Peers first: an upstream may listen on the same port number as the
    // gateway. A port no peer uses costs an inlined array load instead of a
    // PEERS lookup, so a packet that is not the gateway's costs four array
    // loads.
    let (role, dir, port, family, addr) = if is_peer(p.family, &p.daddr, p.dport) {
        (
            Role::UPSTREAM,
            Direction::EGRESS,
            p.dport,
            p.family,
            p.daddr,
        )
    } else if is_peer(p.family, &p.saddr, p.sport) {
        (
            Role::UPSTREAM,
            Direction::INGRESS,
            p.sport,
            p.family,
            p.saddr,
        )
    } else if is_listen_port(p.dport) {
        handshake(&p, ifindex);
        (Role::DOWNSTREAM, Direction::INGRESS, p.dport, 0, [0; 16])
    } else if is_listen_port(p.sport) {
        (Role::DOWNSTREAM, Direction::EGRESS, p.sport, 0, [0; 16])
    } else {
        return Ok(());
    };
    let key = WireKey {
        ifindex,
        role,
        dir,
        port,
        family,
        addr,
    };
    let resets = u64::from(p.flags & TCP_RST != 0);
    let syns = u64::from(p.flags & (TCP_SYN | TCP_ACK) == TCP_SYN);
    if let Some(c) = WIRE.get_ptr_mut(key) {
        // SAFETY: this CPU's slot; programs do not migrate while running.
        unsafe {
            (*c).packets += p.segments;
            (*c).bytes += p.bytes;
            (*c).resets += resets;
            (*c).syns += syns;
        }
        return Ok(());
    }
    let first = WireCounts {
        packets: p.segments,
        bytes: p.bytes,
        resets,
        syns,
    };
    if WIRE.insert(key, first, 0).is_err() {
        count_lost(LostReason::WIRE_FULL);
    }
    Ok(())
}

/// Called when a target opens (or is found using) an upstream connection,
/// so that the filter knows the peer's packets from then on, the SYN
/// included (inet_sock_set_state CLOSE -> SYN_SENT fires before it is sent).
#[inline(always)]
pub fn remember_peer(tuple: &Tuple) {
    const E2BIG: i32 = 7;
    if let Some(used) = PEER_PORTS.get_ptr_mut(u32::from(tuple.rport)) {
        // SAFETY: an array slot; every writer writes 1.
        unsafe { *used = 1 };
    }
    let key = PeerKey {
        family: tuple.family,
        port: tuple.rport,
        addr: tuple.raddr,
    };
    if let Err(e) = PEERS.insert(key, 1, u64::from(BPF_NOEXIST)) {
        if e == -E2BIG {
            count_lost(LostReason::PEERS_FULL);
        }
    }
}

#[inline(always)]
fn is_peer(family: u16, addr: &[u8; 16], port: u16) -> bool {
    if PEER_PORTS.get(u32::from(port)).copied().unwrap_or(0) == 0 {
        return false;
    }
    let key = PeerKey {
        family,
        port,
        addr: *addr,
    };
    // SAFETY: existence check only.
    unsafe { PEERS.get(key) }.is_some()
}

/// An inlined array load, not a LISTEN_PORTS hash lookup (up to two per
/// packet).
#[inline(always)]
fn is_listen_port(port: u16) -> bool {
    LISTEN_PORT_BITS.get(u32::from(port)).copied() == Some(1)
}

/// A client's first SYN starts its handshake clock (a retransmitted SYN
/// keeps the first one's time: the client has been waiting since then). The
/// clock stops in conn.rs, at the passive open (SYN_RECV -> ESTABLISHED),
/// which the kernel reaches while processing the final ACK, microseconds
/// after this tap saw it; so no lookup is needed for every other packet.
/// A client's reset forgets the SYN.
#[inline(always)]
fn handshake(p: &Packet, ifindex: u32) {
    let syn = p.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let rst = p.flags & TCP_RST != 0;
    if !syn && !rst {
        return;
    }
    let flow = FlowKey {
        family: p.family,
        client_port: p.sport,
        server_port: p.dport,
        _pad: 0,
        client: p.saddr,
        server: p.daddr,
    };
    if rst {
        let _ = HANDSHAKES.remove(flow);
        return;
    }
    let seen = SynSeen {
        // SAFETY: a helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ifindex,
        _pad: 0,
    };
    let _ = HANDSHAKES.insert(flow, seen, u64::from(BPF_NOEXIST));
}

/// The handshake of the connection `tuple` (a passive open), if its first
/// SYN was seen: (ns from that SYN to `now`, interface index).
#[inline(always)]
pub fn handshake_done(tuple: &Tuple, now: u64) -> Option<(u64, u32)> {
    let flow = FlowKey {
        family: tuple.family,
        client_port: tuple.rport,
        server_port: tuple.lport,
        _pad: 0,
        client: tuple.raddr,
        server: tuple.laddr,
    };
    // SAFETY: the value is copied out immediately.
    let seen = (unsafe { HANDSHAKES.get(flow) }).copied()?;
    let _ = HANDSHAKES.remove(flow);
    Some((now.saturating_sub(seen.ts_ns), seen.ifindex))
}

/// The TCP/IP facts of an IPv4 or IPv6 packet; `None` for anything else
/// (other protocols, IPv6 extension headers, non-first fragments).
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Result<Option<Packet>, i64> {
    let skb = ctx.skb.skb;
    // SAFETY: fields of the context the verifier allows socket filters to read.
    let (protocol, len, gso_segs) = unsafe {
        (
            u16::from_be((*skb).protocol as u16),
            (*skb).len,
            (*skb).gso_segs,
        )
    };
    // Each load is a helper call. An IPv4 header without options (almost
    // every packet) and the TCP header's first 14 bytes come in one call;
    // otherwise one call per header.
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    let mut tcp = [0u8; 14];
    let (family, ip_header, ip_len) = if protocol == ETH_P_IP {
        let both: [u8; 34] = ctx.load(0)?;
        let ip = &both[..20];
        if ip[0] >> 4 != 4 || ip[9] != IPPROTO_TCP {
            return Ok(None);
        }
        // Fragment offset bits: only the first fragment has the TCP header.
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
            return Ok(None);
        }
        saddr[..4].copy_from_slice(&ip[12..16]);
        daddr[..4].copy_from_slice(&ip[16..20]);
        let total = u16::from_be_bytes([ip[2], ip[3]]);
        let header = usize::from(ip[0] & 0x0f) * 4;
        if header == 20 {
            tcp.copy_from_slice(&both[20..]);
        } else {
            tcp = ctx.load(header)?;
        }
        (AF_INET, header, u64::from(total))
    } else if protocol == ETH_P_IPV6 {
        let ip: [u8; 40] = ctx.load(0)?;
        if ip[6] != IPPROTO_TCP {
            return Ok(None);
        }
        saddr.copy_from_slice(&ip[8..24]);
        daddr.copy_from_slice(&ip[24..40]);
        let payload = u16::from_be_bytes([ip[4], ip[5]]);
        tcp = ctx.load(40)?;
        (AF_INET6, 40, 40 + u64::from(payload))
    } else {
        return Ok(None);
    };
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let (doff, flags) = (tcp[12], tcp[13]);
    let headers = ip_header as u64 + u64::from(doff >> 4) * 4;
    // One segment: the IP length field (the frame may carry link-layer
    // padding). Several (GSO on the way out, GRO on the way in): the
    // payload plus one set of headers per segment.
    let segments = u64::from(gso_segs).max(1);
    let bytes = if segments == 1 {
        ip_len
    } else {
        u64::from(len) + (segments - 1) * headers
    };
    Ok(Some(Packet {
        family,
        saddr,
        daddr,
        sport,
        dport,
        flags,
        bytes,
        segments,
    }))
}
