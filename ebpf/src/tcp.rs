//! TCP trouble on the gateway's connections: retransmissions and resets
//! (tcp:tcp_retransmit_skb, tcp:tcp_send_reset, tcp:tcp_receive_reset; Linux
//! 4.15 and later). They fire in any context, so sockets are matched by
//! address against the tracked ones, not by process.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use gatescope_common::{tp, ListenKey, Role, Tcp, TcpEvent, Tuple, AF_INET, AF_INET6};

use crate::{
    emit::{current, field, now, submit},
    maps::{is_target, LISTEN_PORTS, SOCKS},
    sock::netns,
};

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    on_tcp_event(
        field::<u64>(&ctx, tp::tcp_skb::SKADDR),
        TcpEvent::RETRANSMIT,
    );
    0
}

/// The raw tracepoint forms below are what the agent attaches where the
/// host allows it: a raw tracepoint detaches without the grace-period waits
/// a perf trace event holds the kernel's event_mutex for (see syscalls.rs),
/// which is what makes shutdown under load slow. `TP_PROTO(const struct
/// sock *sk, const struct sk_buff *skb)` (include/trace/events/tcp.h).
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_raw(ctx: RawTracePointContext) -> i32 {
    on_tcp_event(ctx.arg::<u64>(0), TcpEvent::RETRANSMIT);
    0
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let sk = field::<u64>(&ctx, tp::tcp_skb::SKADDR);
    if !on_tcp_event(sk, TcpEvent::RESET_SENT) && sk != 0 {
        closed_socket_reset(&ctx, sk);
    }
    0
}

/// A gateway that aborts a connection (close() with unread data, or
/// SO_LINGER 0, as nginx's reset_timedout_connection does) moves the socket
/// to TCP_CLOSE before the reset goes out (tcp_close, tcp_disconnect), so
/// the socket is no longer tracked here. Such resets are sent in the
/// closing process: attribute them by address when that is a target.
#[inline(always)]
fn closed_socket_reset(ctx: &TracePointContext, sk: u64) {
    let (tgid, _) = current();
    if !is_target(tgid) {
        return;
    }
    use tp::tcp_send_reset::{DADDR, SADDR};
    let family = field::<u16>(ctx, SADDR);
    let mut tuple = Tuple {
        family,
        lport: u16::from_be(field::<u16>(ctx, SADDR + 2)),
        rport: u16::from_be(field::<u16>(ctx, DADDR + 2)),
        ..Tuple::default()
    };
    if family == AF_INET {
        tuple.laddr[..4].copy_from_slice(&word(ctx, SADDR + 4));
        tuple.raddr[..4].copy_from_slice(&word(ctx, DADDR + 4));
    } else if family == AF_INET6 {
        tuple.laddr = v6(ctx, SADDR + 8);
        tuple.raddr = v6(ctx, DADDR + 8);
    } else {
        return;
    }
    // Untracked but not yet freed: its namespace is still there to read.
    // SAFETY: existence check only.
    let listening = unsafe { LISTEN_PORTS.get(ListenKey::new(netns(sk), tuple.lport)) }.is_some();
    let role = if listening {
        Role::DOWNSTREAM
    } else {
        Role::UPSTREAM
    };
    let reset = Tcp {
        sk: 0,
        event: TcpEvent::RESET_SENT,
        role,
        tuple,
    };
    submit(tgid, 0, now(), reset);
}

/// 16 address bytes as four u32 loads (these record offsets are only
/// 4-byte aligned).
#[inline(always)]
fn v6(ctx: &TracePointContext, offset: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        out[i * 4..i * 4 + 4].copy_from_slice(&word(ctx, offset + i * 4));
        i += 1;
    }
    out
}

/// Four record bytes in memory order, as one u32 load. Volatile, so the
/// compiler cannot turn the load and the copy that follows into a memcpy
/// from a computed ctx pointer, which the verifier refuses.
#[inline(always)]
fn word(ctx: &TracePointContext, offset: usize) -> [u8; 4] {
    // SAFETY: offsets from gatescope_common::tp, checked against the format
    // file at start; 4-byte aligned.
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "the record's u32 fields sit at 4-byte aligned offsets"
    )]
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<u32>()) }
        .to_ne_bytes()
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    on_tcp_event(
        field::<u64>(&ctx, tp::tcp_receive_reset::SKADDR),
        TcpEvent::RESET_RECEIVED,
    );
    0
}

/// `TP_PROTO(struct sock *sk)`.
#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset_raw(ctx: RawTracePointContext) -> i32 {
    on_tcp_event(ctx.arg::<u64>(0), TcpEvent::RESET_RECEIVED);
    0
}

/// Reports `what` on tracked socket `sk`; false when `sk` is not tracked.
#[inline(always)]
fn on_tcp_event(sk: u64, what: TcpEvent) -> bool {
    // A reset answering a segment for no socket has no address: not ours.
    if sk == 0 {
        return false;
    }
    // SAFETY: the value is copied out immediately.
    let Some(info) = (unsafe { SOCKS.get(sk) }).copied() else {
        return false;
    };
    let event = Tcp {
        sk,
        event: what,
        role: info.role,
        tuple: Tuple::default(),
    };
    submit(info.tgid, 0, now(), event);
    true
}
