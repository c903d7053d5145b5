//! Connections open before gatescope started. Their opens were never seen,
//! so the first time a target moves bytes on such a socket it is claimed
//! here: its addresses are read from `struct sock_common` at offsets the
//! agent resolved from the running kernel's BTF (never compiled in: rustc
//! emits no CO-RE relocations with our toolchain), its role decided by
//! whether its local port is a listening port of the gateway.

use gatescope_common::{ConnFound, ListenKey, Role, SockInfo, TcpState, Tuple, AF_INET, AF_INET6};

use crate::{
    emit::{now, submit},
    maps::{opening_heads, LISTEN_PORTS, SOCKS},
    sock::{netns, offsets, read},
    wire::remember_peer,
};

/// Claims socket `sk` of process `tgid` if nothing tracks it yet. Its entry
/// if it is tracked now.
#[inline(always)]
pub fn claim_if_unknown(sk: u64, tgid: u32) -> Option<&'static mut SockInfo> {
    if let Some(info) = entry(sk) {
        return Some(info);
    }
    if claim(sk, tgid) {
        entry(sk)
    } else {
        None
    }
}

#[inline(always)]
fn entry(sk: u64) -> Option<&'static mut SockInfo> {
    // SAFETY: a preallocated hash map's value stays in place while the
    // program runs; the socket's transfers in one direction are serialised
    // by its lock, and each direction writes only its own field.
    SOCKS.get_ptr_mut(sk).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn claim(sk: u64, tgid: u32) -> bool {
    let Some(off) = offsets() else {
        return false;
    };
    // A transfer can move bytes on a dead socket: data queued before a
    // client's RST is still read after the kernel closed the socket (tcp_recvmsg
    // serves the receive queue before the error). Claiming it would open a
    // connection no TCP_CLOSE will ever end.
    match read::<u8>(sk, off.state).map(|s| TcpState(u32::from(s))) {
        Some(TcpState::ESTABLISHED | TcpState::CLOSE_WAIT) => {}
        _ => return false,
    }
    let Some(family) = read::<u16>(sk, off.family) else {
        return false;
    };
    let (Some(lport), Some(rport_be)) = (read::<u16>(sk, off.num), read::<u16>(sk, off.dport))
    else {
        return false;
    };
    let mut tuple = Tuple {
        family,
        lport,
        rport: u16::from_be(rport_be),
        ..Tuple::default()
    };
    if family == AF_INET {
        let (Some(l), Some(r)) = (
            read::<[u8; 4]>(sk, off.rcv_saddr),
            read::<[u8; 4]>(sk, off.daddr),
        ) else {
            return false;
        };
        tuple.laddr[..4].copy_from_slice(&l);
        tuple.raddr[..4].copy_from_slice(&r);
    } else if family == AF_INET6 {
        let (Some(l), Some(r)) = (
            read::<[u8; 16]>(sk, off.v6_rcv_saddr),
            read::<[u8; 16]>(sk, off.v6_daddr),
        ) else {
            return false;
        };
        tuple.laddr = l;
        tuple.raddr = r;
    } else {
        return false;
    }
    let ns = netns(sk);
    // SAFETY: existence check only.
    let role = if unsafe { LISTEN_PORTS.get(ListenKey::new(ns, lport)) }.is_some() {
        Role::DOWNSTREAM
    } else {
        Role::UPSTREAM
    };
    // A full map is not counted here: this runs on every transfer of an
    // unknown socket, so a count would repeat per read and write. Such a
    // socket is either one whose open was refused (counted once, in conn.rs)
    // or one open before we started (its bytes go to untracked bytes); the
    // claim is tried again on its next transfer.
    let ts_ns = now();
    let info = SockInfo {
        role,
        tgid,
        opened_ns: ts_ns,
        heads: opening_heads(role, &tuple),
        ..SockInfo::default()
    };
    if SOCKS.insert(sk, info, 0).is_err() {
        return false;
    }
    if role == Role::UPSTREAM {
        remember_peer(&tuple);
    }
    let found = ConnFound {
        sk,
        role,
        netns: ns,
        tuple,
    };
    submit(tgid, 0, ts_ns, found);
    true
}
