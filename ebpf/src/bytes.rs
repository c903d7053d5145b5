//! Bytes (and, through `payload`, their head and tail) from sock:sock_send_length / sock:sock_recv_length (Linux >=
//! 6.3). They fire inside the send/recv syscall in the calling thread, so the
//! current tgid says whether the gateway moved the bytes.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use gatescope_common::{
    tp::sock_length as f, Direction, AF_INET, AF_INET6, IPPROTO_TCP, MSG_PEEK, READ_NOTHING_ERRNOS,
};

use crate::{
    emit::{current, field},
    found::claim_if_unknown,
    maps::is_target,
    payload::emit_data,
};

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    on_length(&ctx, Direction::EGRESS);
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    on_length(&ctx, Direction::INGRESS);
    0
}

/// What is cheapest to rule out goes first: the record's own fields cost
/// nothing to load, the target check is a hash lookup (~120 ns, KERNEL.md).
#[inline(always)]
fn on_length(ctx: &TracePointContext, dir: Direction) {
    let ret = field::<i32>(ctx, f::RET);
    let mut error = 0;
    if dir == Direction::INGRESS {
        // A peek leaves the bytes queued: they are counted when really read.
        let flags = field::<i32>(ctx, f::FLAGS);
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
    let family = field::<u16>(ctx, f::FAMILY);
    let protocol = field::<u16>(ctx, f::PROTOCOL);
    if (family != AF_INET && family != AF_INET6) || protocol != IPPROTO_TCP {
        return;
    }
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return;
    }
    let sk = field::<u64>(ctx, f::SK);
    // A socket open before gatescope started is claimed before its first
    // data record, so the agent knows whose bytes these are. Only on a
    // transfer that moved bytes, and only while the socket is open (see
    // found.rs: a read after a reset can still return queued bytes).
    if ret > 0 {
        claim_if_unknown(sk, tgid);
    }
    emit_data(dir, tgid, tid, sk, ret.max(0) as u64, error);
}
