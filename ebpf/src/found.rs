//! Connections open before gatescope started. Their opens were never seen,
//! so the first time a target moves bytes on such a socket it is claimed
//! here: its addresses are read from `struct sock_common` at offsets the
//! agent resolved from the running kernel's BTF (never compiled in: rustc
//! emits no CO-RE relocations, ../shared/KERNEL.md), its role decided by
//! whether its local port is a listening port of the gateway.

use core::ptr::read_volatile;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use gatescope_common::{
    SockInfo, SockOffsets, Tuple, AF_INET, AF_INET6, KIND_CONN_FOUND, ROLE_DOWNSTREAM,
    ROLE_UPSTREAM, TCP_CLOSE_WAIT, TCP_ESTABLISHED,
};

use crate::{
    emit::{new_event, submit},
    maps::{LISTEN_PORTS, SOCKS},
    wire::remember_peer,
};

/// Set by the agent at load time; `enabled == 0` leaves such sockets untracked.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockOffsets = SockOffsets {
    enabled: 0,
    family: 0,
    num: 0,
    dport: 0,
    rcv_saddr: 0,
    daddr: 0,
    v6_rcv_saddr: 0,
    v6_daddr: 0,
    state: 0,
};

#[inline(always)]
fn read<T>(sk: u64, offset: u32) -> Option<T> {
    // SAFETY: the helper checks the kernel address and may fail.
    unsafe { bpf_probe_read_kernel((sk + offset as u64) as *const T) }.ok()
}

/// Claims socket `sk` of process `tgid` if nothing tracks it yet.
#[inline(always)]
pub fn claim_if_unknown(sk: u64, tgid: u32) {
    // SAFETY: existence check only.
    if unsafe { SOCKS.get(sk) }.is_some() {
        return;
    }
    // SAFETY: a constant global the agent patches before load.
    let off: SockOffsets = unsafe { read_volatile(&SOCK_OFFSETS) };
    if off.enabled == 0 {
        return;
    }
    // A transfer can move bytes on a dead socket: data queued before a
    // client's RST is still read after the kernel closed the socket (tcp_recvmsg
    // serves the receive queue before the error). Claiming it would open a
    // connection no TCP_CLOSE will ever end.
    match read::<u8>(sk, off.state).map(u32::from) {
        Some(TCP_ESTABLISHED | TCP_CLOSE_WAIT) => {}
        _ => return,
    }
    let Some(family) = read::<u16>(sk, off.family) else {
        return;
    };
    let (Some(lport), Some(rport_be)) = (read::<u16>(sk, off.num), read::<u16>(sk, off.dport))
    else {
        return;
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
            return;
        };
        tuple.laddr[..4].copy_from_slice(&l);
        tuple.raddr[..4].copy_from_slice(&r);
    } else if family == AF_INET6 {
        let (Some(l), Some(r)) = (
            read::<[u8; 16]>(sk, off.v6_rcv_saddr),
            read::<[u8; 16]>(sk, off.v6_daddr),
        ) else {
            return;
        };
        tuple.laddr = l;
        tuple.raddr = r;
    } else {
        return;
    }
    // SAFETY: existence check only.
    let role = if unsafe { LISTEN_PORTS.get(lport) }.is_some() {
        ROLE_DOWNSTREAM
    } else {
        ROLE_UPSTREAM
    };
    // A full map is not counted here: this runs on every transfer of an
    // unknown socket, so a count would repeat per read and write. Such a
    // socket is either one whose open was refused (counted once, in conn.rs)
    // or one open before we started (its bytes go to untracked bytes); the
    // claim is tried again on its next transfer.
    let mut event = new_event(KIND_CONN_FOUND);
    let info = SockInfo {
        role,
        tgid,
        opened_ns: event.ts_ns,
    };
    if SOCKS.insert(sk, info, 0).is_err() {
        return;
    }
    event.role = role;
    event.tgid = tgid;
    event.sk = sk;
    event.new_state = TCP_ESTABLISHED;
    event.tuple = tuple;
    if role == ROLE_UPSTREAM {
        remember_peer(&event.tuple);
    }
    submit(&event);
}
