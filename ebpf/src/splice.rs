//! Bytes that splice(2) takes from a target's socket into a pipe (HAProxy's
//! `option splice-request`/`splice-response`). That path (tcp_splice_read ->
//! tcp_read_sock) does not pass sock_recvmsg, so sock_recv_length never
//! fires for those bytes; tcp_read_sock does end in tcp_rcv_space_adjust,
//! whose tracepoint fires in the splicing thread with `copied_seq` already
//! advanced (measured: a splice loop of 6.5 MB fired tcp_rcv_space_adjust
//! 201 times and sock_recv_length never). So the bytes are `copied_seq`
//! less what the length tracepoints counted (seen.rs), emitted as a data
//! record without payload: the agent follows them as body bytes by length.
//! The way back (pipe -> socket) passes sock_sendmsg and is counted there.
//!
//! With the BTF length programs only (per-socket storage): where they fall
//! back to trace events (`--raw-tracepoints=false`, no BTF), spliced bytes
//! stay uncounted, and the start-up line says so. Whether the thread is in
//! splice(2) comes from its saved registers, or in the syscall-hook
//! fallback from the hook's mark.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use gatescope_common::{Direction, SYSCALL_SPLICE};

use crate::{
    emit::current,
    maps::may_be_target,
    payload::{self, emit_data, Transfer},
    regs, seen,
};

/// Larger deltas are not a splice's (a stale record): ignored.
const MAX_DELTA: u32 = 1 << 30;

/// `TP_PROTO(struct sock *sk)` (include/trace/events/tcp.h).
#[btf_tracepoint(function = "tcp_rcv_space_adjust")]
pub fn tcp_rcv_space_adjust_btf(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let (tgid, tid) = current();
    // Every TCP read on the host passes here: other processes leave at once,
    // a target's socket with no record after one storage lookup.
    if !may_be_target(tgid) {
        return 0;
    }
    let Some(seen) = seen::get(sk, tgid) else {
        return 0;
    };
    let at = regs::layout();
    let in_splice = if at.from_regs != 0 {
        regs::current_kind(&at) == SYSCALL_SPLICE
    } else {
        payload::in_splice(tid)
    };
    if !in_splice {
        return 0;
    }
    let Some(copied) = seen::copied_seq(sk) else {
        return 0;
    };
    let delta = copied.wrapping_sub(seen.consumed);
    seen.consumed = copied;
    if delta > 0 && delta < MAX_DELTA {
        let t = Transfer {
            dir: Direction::INGRESS,
            tgid,
            tid,
            sk,
            len: u64::from(delta),
            error: 0,
        };
        emit_data(t, false, None, || {});
    }
    0
}
