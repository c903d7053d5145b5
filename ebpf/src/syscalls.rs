//! The fallback syscall entry hook (`--payload-from syscall-hook`, or where
//! the payload programs cannot read the saved registers themselves; see
//! regs.rs): it taxes every syscall of the host, so it is not attached by
//! default. One hook on every syscall entry rather than one
//! `syscalls:sys_enter_*` trace event per syscall.
//!
//! Why one: detaching a perf trace event waits for RCU grace periods while
//! holding the kernel's global event_mutex (kernel/trace/trace_event_perf.c,
//! perf_trace_event_unreg), so detaches run one after another: fifteen
//! per-syscall trace events cost fifteen grace-period waits at shutdown
//! (about 35 ms each under load). Accepts stay on their own exit trace events
//! (conn.rs): a hook on every syscall exit for them alone cost more.
//!
//! It runs for every syscall on the host, so it comes in two forms and the
//! agent attaches the cheaper one the host allows:
//! - `sys_enter_raw`, a raw tracepoint on `sys_enter` (Linux >= 4.17): the
//!   kernel passes the user registers and the syscall number as they are,
//!   and every syscall we do not act on returns after one array lookup.
//!   Measured on getppid(2): +25 to +60 ns per syscall on every process of
//!   the host (most of it the kernel's slow syscall-entry path, which any
//!   sys_enter hook turns on), against about +85 ns for the trace event
//!   below, which first copies the number and six arguments into a perf
//!   record.
//! - `sys_enter`, on the `raw_syscalls:sys_enter` trace event, where raw
//!   tracepoints are refused or `--raw-tracepoints=false` asks for it.
//!
//! Syscall numbers differ by architecture; the agent fills SYSCALLS with its
//! own, and PT_REGS_ARGS with where its `struct pt_regs` keeps the arguments.
//! Compat (32-bit) syscalls on a 64-bit kernel carry other numbers and would
//! be misread: gatescope observes 64-bit gateways.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use gatescope_common::{
    tp::raw_syscalls, ARGS_BUF, ARGS_IOVEC, ARGS_MSGHDR, SYSCALL_CLEAR, SYSCALL_SPLICE,
};

use crate::{emit::field, payload, regs};

/// Saves the buffer of a send/recv-family call (read, recvfrom, write,
/// sendto: a buffer; readv, writev: an iovec array; recvmsg, sendmsg: a
/// msghdr) for the length tracepoints, or forgets it for transfers whose
/// buffer we cannot follow. `args` reads the call's second and third
/// arguments.
#[inline(always)]
fn on_enter(id: i64, args: impl FnOnce() -> Option<(u64, u64)>) {
    // A negative id (an invalid call) wraps to a huge one: nothing.
    match regs::kind(id as u64) {
        k @ (ARGS_BUF | ARGS_IOVEC | ARGS_MSGHDR) => payload::save(k, args),
        SYSCALL_CLEAR => payload::clear(),
        // Marked, for splice.rs: no buffer to read.
        SYSCALL_SPLICE => payload::save(SYSCALL_SPLICE, || Some((0, 0))),
        _ => {}
    }
}

/// `TP_PROTO(struct pt_regs *regs, long id)` (include/trace/events/syscalls.h).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_raw(ctx: RawTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    on_enter(id, || {
        let at = regs::layout();
        if at.enabled == 0 {
            return None;
        }
        let regs: u64 = ctx.arg(0);
        // SAFETY: kernel memory read through the helper, which may fail.
        let read =
            |off: u32| unsafe { bpf_probe_read_kernel((regs + u64::from(off)) as *const u64) };
        Some((read(at.arg1).ok()?, read(at.arg2).ok()?))
    });
    0
}

#[tracepoint(category = "raw_syscalls", name = "sys_enter")]
pub fn sys_enter(ctx: TracePointContext) -> u32 {
    on_enter(field::<i64>(&ctx, raw_syscalls::ID), || {
        Some((
            field::<u64>(&ctx, raw_syscalls::PTR),
            field::<u64>(&ctx, raw_syscalls::COUNT),
        ))
    });
    0
}
