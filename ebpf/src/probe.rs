//! Programs used only by `gatescope check` (and the agent's start-up probe) to
//! find out which hook types this host loads and attaches. Each returns at
//! once; none is attached for longer than the probe takes.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe, raw_tracepoint, socket_filter, uprobe},
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, SkBuffContext,
    },
};

/// Raw tracepoint, attached to `sys_enter`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_raw_tp(_ctx: RawTracePointContext) -> i32 {
    0
}

/// BTF tracepoint (tp_btf), attached to `sched_process_fork`.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn probe_btf_tp(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// fentry on `tcp_sendmsg` (refused with EPERM on locked-down hosts).
#[fentry(function = "tcp_sendmsg")]
pub fn probe_fentry(_ctx: FEntryContext) -> i32 {
    0
}

/// kprobe; the agent attaches it to `tcp_sendmsg`.
#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

/// uprobe; the agent attaches it to libc's `getpid`.
#[uprobe]
pub fn probe_uprobe(_ctx: ProbeContext) -> u32 {
    0
}

/// Socket filter; the agent attaches it to a UDP socket of its own. It keeps
/// every packet whole.
#[socket_filter]
pub fn probe_sock_filter(_ctx: SkBuffContext) -> i64 {
    i64::from(u32::MAX)
}
