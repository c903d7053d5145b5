//! The buffer of the syscall in progress, read from the user registers the
//! kernel saved at its entry, so the payload programs need no syscall hook.
//!
//! Why: any `syscalls:*` or `raw_syscalls` program sends every task of the
//! host down the slow syscall path (getppid(2) +66 ns with an empty program,
//! +164 ns with the old `sys_enter` hook, on every process, not only the
//! gateway's; ../shared/KERNEL.md). `sock:sock_send_length` /
//! `sock_recv_length` fire inside the syscall in the calling thread, so
//! `bpf_task_pt_regs(bpf_get_current_task_btf())` there points at that
//! syscall's saved registers: its number and arguments (measured exact for
//! read/write, readv/writev, recvfrom/sendto, recvmsg/sendmsg; sendfile and
//! io_uring workers give no buffer, and are counted by length).

use core::ptr::read_volatile;

use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
use gatescope_common::{PtRegsArgs, SyscallArgs, ARGS_BUF, ARGS_MSGHDR, SYSCALLS_MAX};

use crate::maps::SYSCALLS;

/// Set by the agent at load time for its architecture (common/src/offsets.rs).
#[unsafe(no_mangle)]
static PT_REGS_ARGS: PtRegsArgs = PtRegsArgs::NONE;

/// The layout, as the agent patched it.
#[inline(always)]
pub fn layout() -> PtRegsArgs {
    // SAFETY: a constant global the agent patches before load.
    unsafe { read_volatile(&raw const PT_REGS_ARGS) }
}

/// What we do for syscall `id` (`ARGS_*`, `SYSCALL_CLEAR`; 0 for nothing).
/// The array lookup is inlined by the verifier: no helper call.
#[inline(always)]
pub fn kind(id: u64) -> u32 {
    if id >= u64::from(SYSCALLS_MAX) {
        return 0;
    }
    SYSCALLS.get(id as u32).copied().unwrap_or(0)
}

/// What we do for the current thread's syscall (`ARGS_*`, `SYSCALL_*`, 0
/// for nothing), from its saved number; 0 for a compat (32-bit) syscall,
/// whose numbers and argument layout differ: never misread one.
#[inline(always)]
pub fn current_kind(at: &PtRegsArgs) -> u32 {
    kind_in(saved(), at)
}

#[inline(always)]
fn kind_in(regs: u64, at: &PtRegsArgs) -> u32 {
    if at.mode != 0 && load(regs, at.mode) != u64::from(at.mode_value) {
        return 0;
    }
    kind(load(regs, at.nr))
}

/// The buffer of the current thread's syscall, when it is one of the
/// send/recv family and a 64-bit call; `None` for the rest (sendfile,
/// splice, io_uring: counted by length only).
#[inline(always)]
pub fn current_buffer(at: &PtRegsArgs) -> Option<SyscallArgs> {
    let regs = saved();
    let what = kind_in(regs, at);
    if !(ARGS_BUF..=ARGS_MSGHDR).contains(&what) {
        return None;
    }
    Some(SyscallArgs {
        kind: what,
        _pad: 0,
        ptr: load(regs, at.arg1),
        count: load(regs, at.arg2),
    })
}

/// The current task's saved user registers.
#[inline(always)]
fn saved() -> u64 {
    // SAFETY: helpers without preconditions. The result is a trusted
    // pointer to the current task's saved user registers (a task inside a
    // syscall always has them), whose type the verifier knows from BTF.
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
}

/// The register at `off` of `regs` (from [`saved`]).
#[inline(always)]
fn load(regs: u64, off: u32) -> u64 {
    // SAFETY: a direct load from the BTF-typed pointer, which the verifier
    // checks against `struct pt_regs` (the offsets are constants of a
    // frozen global, so it sees each load's exact field) and turns into a
    // fault-safe load: no helper call, unlike bpf_probe_read_kernel (~100 ns
    // each, KERNEL.md). Every offset is a multiple of 8 (8-byte registers),
    // so the load is aligned.
    unsafe { read_volatile((regs + u64::from(off)) as *const u64) }
}
