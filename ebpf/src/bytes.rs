//! Bytes (and, through `payload`, their head and tail) from sock:sock_send_length / sock:sock_recv_length (Linux >=
//! 6.3). They fire inside the send/recv syscall in the calling thread, so the
//! current tgid says whether the gateway moved the bytes.
//!
//! Each comes in two forms. The BTF tracepoint (`tp_btf`) gets the
//! tracepoint's arguments as they are, with no perf record built first (the
//! classic form fills one for every TCP send and receive on the host before
//! the program even runs); its `sk` is a pointer the verifier trusts, so the
//! family and protocol are direct loads at offsets from BTF. The classic
//! trace event is the fallback where tp_btf is refused or BTF is missing.

use core::ptr::read_volatile;

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use gatescope_common::{
    tp::sock_length as f, Direction, AF_INET, AF_INET6, IPPROTO_TCP, MSG_PEEK, READ_NOTHING_ERRNOS,
};

use crate::{
    emit::{current, field},
    found::claim_if_unknown,
    maps::{
        is_target, may_be_target, SockSeen, PIECES_RECV, PIECES_RECV_BTF, PIECES_SEND,
        PIECES_SEND_BTF,
    },
    payload::{emit_data, Transfer},
    pieces, seen,
    sock::offsets,
};

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    on_length(Direction::EGRESS, &Classic(&ctx));
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    on_length(Direction::INGRESS, &Classic(&ctx));
    0
}

/// `TP_PROTO(struct sock *sk, int ret, int flags)` (include/trace/events/sock.h).
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length_btf(ctx: BtfTracePointContext) -> i32 {
    on_length(Direction::EGRESS, &Btf(&ctx));
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length_btf(ctx: BtfTracePointContext) -> i32 {
    on_length(Direction::INGRESS, &Btf(&ctx));
    0
}

/// What one length event says, whichever form delivered it.
trait Length {
    fn ret(&self) -> i32;
    fn flags(&self) -> i32;
    fn sk(&self) -> u64;
    /// An IPv4 or IPv6 TCP socket.
    fn is_tcp(&self) -> bool;
    /// The socket's record if process `tgid` moved bytes on it before (so
    /// it is a target's TCP socket, claimed if it needed to be): one
    /// per-socket storage lookup instead of the TARGETS and SOCKS lookups.
    fn seen(&self, tgid: u32) -> Option<&'static mut SockSeen>;
    /// Remembers that `tgid` moved bytes on this tracked socket.
    fn remember(&self, tgid: u32) -> Option<&'static mut SockSeen>;
    /// Tail-calls the program taking the pieces of a transfer in `dir`
    /// (pieces.rs); returns only when that failed.
    fn pieces(&self, dir: Direction);
}

struct Classic<'a>(&'a TracePointContext);

impl Length for Classic<'_> {
    #[inline(always)]
    fn ret(&self) -> i32 {
        field::<i32>(self.0, f::RET)
    }
    #[inline(always)]
    fn flags(&self) -> i32 {
        field::<i32>(self.0, f::FLAGS)
    }
    #[inline(always)]
    fn sk(&self) -> u64 {
        field::<u64>(self.0, f::SK)
    }
    #[inline(always)]
    fn is_tcp(&self) -> bool {
        let family = field::<u16>(self.0, f::FAMILY);
        let protocol = field::<u16>(self.0, f::PROTOCOL);
        (family == AF_INET || family == AF_INET6) && protocol == IPPROTO_TCP
    }
    /// The classic form's `sk` is not a pointer the verifier trusts, which
    /// per-socket storage needs.
    #[inline(always)]
    fn seen(&self, _tgid: u32) -> Option<&'static mut SockSeen> {
        None
    }
    #[inline(always)]
    fn remember(&self, _tgid: u32) -> Option<&'static mut SockSeen> {
        None
    }
    #[inline(always)]
    fn pieces(&self, dir: Direction) {
        pieces::call(self.0, dir, &PIECES_SEND, &PIECES_RECV);
    }
}

struct Btf<'a>(&'a BtfTracePointContext);

impl Length for Btf<'_> {
    #[inline(always)]
    fn ret(&self) -> i32 {
        self.0.arg(1)
    }
    #[inline(always)]
    fn flags(&self) -> i32 {
        self.0.arg(2)
    }
    #[inline(always)]
    fn sk(&self) -> u64 {
        self.0.arg(0)
    }
    #[inline(always)]
    fn is_tcp(&self) -> bool {
        // The agent attaches this form only with the offsets resolved.
        let Some(off) = offsets() else {
            return false;
        };
        let sk = self.sk();
        // SAFETY: direct loads from the trusted `struct sock` pointer, which
        // the verifier checks against the type (the offsets are constants of
        // a frozen global) and makes fault-safe; no helper call.
        let (family, protocol) = unsafe {
            (
                read_volatile((sk + u64::from(off.family)) as *const u16),
                read_volatile((sk + u64::from(off.protocol)) as *const u16),
            )
        };
        (family == AF_INET || family == AF_INET6) && protocol == IPPROTO_TCP
    }
    #[inline(always)]
    fn seen(&self, tgid: u32) -> Option<&'static mut SockSeen> {
        seen::get(self.sk(), tgid)
    }
    #[inline(always)]
    fn remember(&self, tgid: u32) -> Option<&'static mut SockSeen> {
        seen::remember(self.sk(), tgid)
    }
    #[inline(always)]
    fn pieces(&self, dir: Direction) {
        pieces::call(self.0, dir, &PIECES_SEND_BTF, &PIECES_RECV_BTF);
    }
}

/// What is cheapest to rule out goes first: the record's own fields cost
/// nothing to load, the target check is a hash lookup (~120 ns, KERNEL.md).
#[inline(always)]
fn on_length(dir: Direction, ev: &impl Length) {
    let ret = ev.ret();
    let mut error = 0;
    if dir == Direction::INGRESS {
        // A peek leaves the bytes queued: they are counted when really read.
        let flags = ev.flags();
        // A read of 0 (EOF) is kept: it shows the gateway handled the socket.
        if flags & MSG_PEEK != 0 {
            return;
        }
        // A failed read (a reset) is kept as 0 bytes with its errno: the
        // agent's correlation reads it as the handler's I/O (nginx retries
        // the next peer from it). "Nothing yet" is not I/O.
        if ret < 0 {
            let errno = -ret;
            if errno == READ_NOTHING_ERRNOS[0]
                || errno == READ_NOTHING_ERRNOS[1]
                || errno == READ_NOTHING_ERRNOS[2]
            {
                return;
            }
            error = ret.unsigned_abs();
        }
    } else if ret <= 0 {
        return;
    }
    if !ev.is_tcp() {
        return;
    }
    let (tgid, tid) = current();
    // Every other process of the host leaves here, before any lookup.
    if !may_be_target(tgid) {
        return;
    }
    let sk = ev.sk();
    // Where this socket's head capture is kept (see `HeadWindow`).
    let heads = if let Some(seen) = ev.seen(tgid) {
        // Reads counted here, so that splice.rs counts only what bypassed
        // this tracepoint.
        if dir == Direction::INGRESS && ret > 0 {
            seen.consumed = seen.consumed.wrapping_add(ret.unsigned_abs());
        }
        Some(&mut seen.heads)
    } else {
        if !is_target(tgid) {
            return;
        }
        // A socket open before gatescope started is claimed before its
        // first data record, so the agent knows whose bytes these are. Only
        // on a transfer that moved bytes, and only while the socket is open
        // (see found.rs: a read after a reset can still return queued
        // bytes). Once tracked, the socket is remembered.
        if ret > 0 {
            claim_if_unknown(sk, tgid).map(|info| {
                // what the open set (a GenAI provider's: conn.rs)
                let opened = info.heads;
                ev.remember(tgid).map_or(&mut info.heads, |seen| {
                    seen.heads = opened;
                    &mut seen.heads
                })
            })
        } else {
            None
        }
    };
    let t = Transfer {
        dir,
        tgid,
        tid,
        sk,
        len: ret.max(0) as u64,
        error,
    };
    emit_data(t, true, heads, || ev.pieces(dir));
}
