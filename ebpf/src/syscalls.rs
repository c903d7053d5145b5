//! The syscall entry hook, on the raw syscall tracepoint
//! (`raw_syscalls:sys_enter`) rather than one `syscalls:sys_enter_*`
//! tracepoint per syscall.
//!
//! Why: detaching a perf tracepoint waits for RCU grace periods while holding
//! the kernel's global event_mutex (kernel/trace/trace_event_perf.c,
//! perf_trace_event_unreg), so detaches run one after another: fifteen
//! per-syscall tracepoints cost fifteen grace-period waits at shutdown (about
//! 35 ms each under load), one costs one. The price: it runs for every
//! syscall on the host (about 100 ns under bpf_stats); all but the few we
//! want return after one array lookup (the verifier inlines it). Accepts
//! stay on their own exit tracepoints (conn.rs): a raw exit hook for them
//! alone cost another ~55 ns on every syscall exit.
//!
//! Syscall numbers differ by architecture; the agent fills SYSCALLS with its
//! own. Compat (32-bit) syscalls on a 64-bit kernel carry other numbers and
//! would be misread: gatescope observes 64-bit gateways.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use gatescope_common::{
    tp::raw_syscalls, ARGS_BUF, ARGS_IOVEC, ARGS_MSGHDR, SYSCALLS_MAX, SYSCALL_CLEAR,
};

use crate::{emit::field, maps::SYSCALLS, payload};

/// What we do for syscall `id` (`SYSCALL_*`, 0 for nothing).
#[inline(always)]
fn kind(ctx: &TracePointContext) -> u32 {
    let id = field::<i64>(ctx, raw_syscalls::ID);
    if !(0..i64::from(SYSCALLS_MAX)).contains(&id) {
        return 0;
    }
    SYSCALLS.get(id as u32).copied().unwrap_or(0)
}

/// Saves the buffer of a send/recv-family call (read, recvfrom, write,
/// sendto: a buffer; readv, writev: an iovec array; recvmsg, sendmsg: a
/// msghdr) for the length tracepoints, or forgets it for transfers whose
/// buffer we cannot follow.
#[tracepoint(category = "raw_syscalls", name = "sys_enter")]
pub fn sys_enter(ctx: TracePointContext) -> u32 {
    match kind(&ctx) {
        k @ (ARGS_BUF | ARGS_IOVEC | ARGS_MSGHDR) => payload::save(&ctx, k),
        SYSCALL_CLEAR => payload::clear(),
        _ => {}
    }
    0
}
