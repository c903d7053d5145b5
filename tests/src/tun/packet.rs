//! TCP/IPv4 segments as the fake peer writes and reads them: building (with
//! checksums), parsing, sequence arithmetic.

use std::net::Ipv4Addr;

use super::OUR_WINDOW;

pub(super) const FIN: u8 = 0x01;
pub(super) const SYN: u8 = 0x02;
pub(super) const RST: u8 = 0x04;
pub(super) const PSH: u8 = 0x08;
pub(super) const ACK: u8 = 0x10;

/// One parsed TCP segment from the kernel.
#[derive(Debug)]
pub(super) struct Seg {
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) window: u16,
    pub(super) mss: Option<u16>,
    pub(super) payload: Vec<u8>,
}

pub(super) fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

pub(super) fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

pub(super) fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

pub(super) fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per header field of the segment"
)]
pub(super) fn build(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    let tcp_hlen = if mss.is_some() { 24 } else { 20 };
    let total = 20 + tcp_hlen + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, like the kernel's own TCP
    p.extend_from_slice(&[64, libc::IPPROTO_TCP as u8, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = checksum_fold(checksum_add(0, &p[..20]));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    p.push(((tcp_hlen / 4) as u8) << 4);
    p.push(flags);
    p.extend_from_slice(&OUR_WINDOW.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    if let Some(m) = mss {
        p.extend_from_slice(&[2, 4]);
        p.extend_from_slice(&m.to_be_bytes());
    }
    p.extend_from_slice(payload);

    let tcp_len = (total - 20) as u16;
    let mut sum = checksum_add(0, &src.octets());
    sum = checksum_add(sum, &dst.octets());
    sum = checksum_add(sum, &[0, libc::IPPROTO_TCP as u8]);
    sum = checksum_add(sum, &tcp_len.to_be_bytes());
    sum = checksum_add(sum, &p[20..]);
    let tcp_sum = checksum_fold(sum);
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// An IPv4/TCP packet addressed to `peer`: (source port, destination port, IP
/// total length, segment). Anything else (IPv6, other protocols, fragments,
/// truncated packets) is None.
pub(super) fn parse(pkt: &[u8], peer: Ipv4Addr) -> Option<(u16, u16, usize, Seg)> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 || pkt[9] != libc::IPPROTO_TCP as u8 {
        return None;
    }
    if pkt[16..20] != peer.octets() {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff;
    if ihl < 20 || total < ihl + 20 || total > pkt.len() || frag != 0 {
        return None;
    }
    let t = &pkt[ihl..total];
    let doff = usize::from(t[12] >> 4) * 4;
    if doff < 20 || doff > t.len() {
        return None;
    }
    let mut mss = None;
    let mut opts = &t[20..doff];
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let l = usize::from(*opts.get(1)?);
                if l < 2 || l > opts.len() {
                    break;
                }
                if kind == 2 && l == 4 {
                    mss = Some(u16::from_be_bytes([opts[2], opts[3]]));
                }
                opts = &opts[l..];
            }
        }
    }
    let seg = Seg {
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        flags: t[13],
        window: u16::from_be_bytes([t[14], t[15]]),
        mss,
        payload: t[doff..].to_vec(),
    };
    let sport = u16::from_be_bytes([t[0], t[1]]);
    let dport = u16::from_be_bytes([t[2], t[3]]);
    Some((sport, dport, total, seg))
}
