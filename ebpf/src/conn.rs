//! TCP connection lifecycle from sock:inet_sock_set_state (Linux >= 4.16).
//! No syscall hook: accepted connections are derived by the agent from the
//! first thing the gateway does with each one (agent/src/conntrack), with
//! the help of `State::by_target` below.
//!
//! The same tracepoint fires for CLOSE -> LISTEN in the task calling listen(),
//! so a target's new listening port is known before its first client (a
//! gateway discovered at exec binds right after start).
//!
//! Passive opens (SYN_RECV -> ESTABLISHED) run in softirq with no useful
//! current task, so they are claimed by network namespace and local port
//! (LISTEN_PORTS): two pods on one node both listen on port 80. Active opens
//! (CLOSE -> SYN_SENT) run in the connecting task, so they are claimed by tgid.
//! After that the socket is known by address and followed until TCP_CLOSE.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use gatescope_common::{
    tp::inet_sock_set_state as f, ConnOpen, Listen, ListenKey, LostReason, Role, SockInfo, State,
    TcpState, Tuple, AF_INET, AF_INET6, IPPROTO_TCP,
};

use crate::{
    emit::{count_lost, current, field, now, submit},
    maps::{is_target, opening_heads, LISTEN_PORTS, LISTEN_PORT_BITS, REFUSED, SOCKS},
    sock::{netns, queued_buffers},
    wire::{handshake_done, remember_peer},
};

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    on_set_state(&ctx);
    0
}

#[inline(always)]
fn on_set_state(ctx: &TracePointContext) {
    let protocol = field::<u16>(ctx, f::PROTOCOL);
    if protocol != IPPROTO_TCP {
        return;
    }
    let sk = field::<u64>(ctx, f::SKADDR);
    let old = TcpState(field::<i32>(ctx, f::OLDSTATE) as u32);
    let new = TcpState(field::<i32>(ctx, f::NEWSTATE) as u32);

    if new == TcpState::LISTEN {
        return on_listen(ctx, sk);
    }

    // An opening transition always starts a new connection, whatever the
    // socket's address held before: a stale entry (a socket freed without a
    // close we saw, its memory reused) must not swallow a new open.
    // The connecting thread, for the agent's correlation (which request's
    // handler opened the connection); 0 in softirq.
    let mut tid = 0;
    let mut ns = 0;
    let opening = if old == TcpState::CLOSE && new == TcpState::SYN_SENT {
        let (tgid, thread) = current();
        tid = thread;
        Some(is_target(tgid).then_some((Role::UPSTREAM, tgid)))
    } else if old == TcpState::SYN_RECV && new == TcpState::ESTABLISHED {
        let sport = field::<u16>(ctx, f::SPORT);
        // Only a port some target listens on costs the namespace's reads:
        // the array load filters the host's other servers first.
        if LISTEN_PORT_BITS.get(u32::from(sport)).copied() == Some(1) {
            ns = netns(sk);
            // SAFETY: existence check only.
            Some(
                unsafe { LISTEN_PORTS.get(ListenKey::new(ns, sport)) }
                    .is_some()
                    .then_some((Role::DOWNSTREAM, 0)),
            )
        } else {
            Some(None)
        }
    } else {
        None
    };

    let (role, tgid) = match opening {
        Some(Some(claim)) => claim,
        // Not the gateway's: forget anything the address held before.
        Some(None) => {
            let _ = SOCKS.remove(sk);
            return;
        }
        None => {
            // SAFETY: the value is copied out immediately.
            if let Some(info) = unsafe { SOCKS.get(sk) }.copied() {
                let ts_ns = now();
                let tuple = tuple(ctx);
                // Bytes the gateway may still read: the agent keeps the
                // connection's HTTP parsing open for them.
                let queued = if new == TcpState::CLOSE {
                    queued_buffers(sk)
                } else {
                    0
                };
                // Whether the gateway itself closed it: only its own close()
                // or shutdown() makes these transitions in its thread (a
                // peer's FIN or reset arrives in softirq), so the agent can
                // count as accepted a connection closed without any I/O
                // (nginx over worker_connections). A lookup only on these.
                let by_target = if matches!(
                    (old, new),
                    (TcpState::ESTABLISHED, TcpState::FIN_WAIT1)
                        | (TcpState::CLOSE_WAIT, TcpState::LAST_ACK)
                        | (
                            TcpState::ESTABLISHED | TcpState::CLOSE_WAIT,
                            TcpState::CLOSE
                        )
                ) {
                    u32::from(is_target(current().0))
                } else {
                    0
                };
                let state = State {
                    sk,
                    old,
                    new,
                    queued,
                    by_target,
                    tuple,
                };
                submit(info.tgid, 0, ts_ns, state);
                if new == TcpState::CLOSE {
                    let _ = SOCKS.remove(sk);
                }
            }
            return;
        }
    };

    // Fails only when the map is full and `sk` is not in it (a stale entry at
    // this address is replaced in place). A connection has one opening
    // transition, so a refused one is counted once; its later transitions
    // find no entry and emit nothing.
    let ts_ns = now();
    let tuple = tuple(ctx);
    let info = SockInfo {
        role,
        tgid,
        opened_ns: ts_ns,
        heads: opening_heads(role, &tuple),
        ..SockInfo::default()
    };
    if SOCKS.insert(sk, info, 0).is_err() {
        count_lost(LostReason::SOCKS_FULL);
        // The gateway accepts it all the same: the agent counts it as
        // accepted (no later record will tell it about this connection).
        if role == Role::DOWNSTREAM {
            if let Some(n) = REFUSED.get_ptr_mut(0) {
                // SAFETY: per-CPU slot, and programs do not migrate while running.
                unsafe { *n += 1 };
            }
        }
        return;
    }
    let mut open = ConnOpen {
        sk,
        role,
        ifindex: 0,
        handshake_ns: 0,
        tuple,
        netns: if role == Role::DOWNSTREAM {
            ns
        } else {
            netns(sk)
        },
        _pad: 0,
    };
    if role == Role::UPSTREAM {
        remember_peer(&open.tuple);
    } else if let Some((ns, ifindex)) = handshake_done(&v4_unmapped(open.tuple), ts_ns) {
        open.handshake_ns = ns;
        open.ifindex = ifindex;
    }
    submit(tgid, tid, ts_ns, open);
}

/// inet_csk_listen_start() moves the socket to LISTEN in the listen() caller
/// before it hashes the socket, so the port is in LISTEN_PORTS before any
/// client can complete a handshake on it. `sport` is 0 only for a socket
/// that was never bound (its port is picked after this transition); gateways
/// bind, and /proc at the next reconcile covers the rest. Removal is the
/// agent's (reconcile), which also sees listeners closing.
#[inline(always)]
fn on_listen(ctx: &TracePointContext, sk: u64) {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return;
    }
    let sport = field::<u16>(ctx, f::SPORT);
    if sport == 0 {
        return;
    }
    let ts_ns = now();
    let ns = netns(sk);
    // Failure means the map is full; the agent's reconcile reports that.
    let _ = LISTEN_PORTS.insert(ListenKey::new(ns, sport), ts_ns, 0);
    if let Some(bit) = LISTEN_PORT_BITS.get_ptr_mut(u32::from(sport)) {
        // SAFETY: an array slot; this writer writes 1.
        unsafe { *bit = 1 };
    }
    let listen = Listen {
        tuple: tuple(ctx),
        netns: ns,
        _pad: 0,
    };
    submit(tgid, tid, ts_ns, listen);
}

/// The socket's addresses from the record.
#[inline(always)]
fn tuple(ctx: &TracePointContext) -> Tuple {
    let family = field::<u16>(ctx, f::FAMILY);
    let mut tuple = Tuple {
        family,
        lport: field::<u16>(ctx, f::SPORT),
        rport: field::<u16>(ctx, f::DPORT),
        ..Tuple::default()
    };
    // Addresses are loaded as whole aligned words: the verifier refuses
    // byte loads through an offset ctx pointer. Native byte order gives the
    // bytes back in memory order.
    if family == AF_INET {
        tuple.laddr[..4].copy_from_slice(&field::<u32>(ctx, f::SADDR).to_ne_bytes());
        tuple.raddr[..4].copy_from_slice(&field::<u32>(ctx, f::DADDR).to_ne_bytes());
    } else {
        tuple.laddr = v6(ctx, f::SADDR_V6);
        tuple.raddr = v6(ctx, f::DADDR_V6);
    }
    tuple
}

/// An IPv4 client of a dual-stack (IPv6) listener shows as ::ffff:a.b.c.d
/// here but as IPv4 on the wire; the wire view keys it as IPv4.
#[inline(always)]
fn v4_unmapped(mut t: Tuple) -> Tuple {
    const MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    if t.family == AF_INET6 && t.raddr[..12] == MAPPED && t.laddr[..12] == MAPPED {
        t.family = AF_INET;
        let (l, r) = (t.laddr, t.raddr);
        t.laddr = [0; 16];
        t.raddr = [0; 16];
        t.laddr[..4].copy_from_slice(&l[12..]);
        t.raddr[..4].copy_from_slice(&r[12..]);
    }
    t
}

#[inline(always)]
fn v6(ctx: &TracePointContext, offset: usize) -> [u8; 16] {
    let hi = field::<u64>(ctx, offset).to_ne_bytes();
    let lo = field::<u64>(ctx, offset + 8).to_ne_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hi);
    out[8..].copy_from_slice(&lo);
    out
}
