//! The target set follows the gateway's process tree: every child of a target
//! becomes a target (an nginx reload forks a new set of workers), exited
//! processes leave it, and a process that execs a wanted gateway program
//! (`--discover`) joins it (a restarted gateway is not a child of the old one).

use aya_ebpf::{
    helpers::bpf_get_current_comm,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use gatescope_common::{tp, Exec, Exit, Fork, LostReason};

use crate::{
    emit::{count_lost, current, field, now, submit},
    maps::{add_target, is_target, DISCOVER, TARGETS},
};

/// sched:sched_process_fork runs in the parent. `child_pid` is a thread id
/// when the parent created a thread; such entries never match a tgid and are
/// removed again when the thread exits.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return 0;
    }
    let child = field::<i32>(&ctx, tp::sched_process_fork::CHILD_PID);
    if !add_target(child as u32) {
        count_lost(LostReason::TARGETS_FULL);
        return 0;
    }
    let fork = Fork {
        child: child as u32,
        _pad: 0,
    };
    submit(tgid, tid, now(), fork);
    0
}

/// sched:sched_process_exit fires per exiting thread; `group_dead` is set for
/// the last thread of the process, which may not be the leader.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    on_exit(|| field::<u8>(&ctx, tp::sched_process_exit::GROUP_DEAD) != 0);
    0
}

/// The raw tracepoint form, which the agent attaches where the host allows
/// it (it detaches without grace-period waits; see tcp.rs).
/// `TP_PROTO(struct task_struct *p, bool group_dead)`.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_raw(ctx: RawTracePointContext) -> i32 {
    on_exit(|| ctx.arg::<u64>(1) & 1 != 0);
    0
}

#[inline(always)]
fn on_exit(group_dead: impl FnOnce() -> bool) {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return;
    }
    if tid != tgid {
        let _ = TARGETS.remove(tid);
    }
    if group_dead() {
        let _ = TARGETS.remove(tgid);
        submit(tgid, tid, now(), Exit {});
    }
}

/// sched:sched_process_exec fires in the task that exec'd, once the new
/// program has replaced the old one, so the current comm is already the new
/// program's name. A wanted gateway becomes a target here, before its first
/// listen() or accept(), so none of its traffic waits for the agent's next
/// reconcile. Every other exec on the host costs one map lookup.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    // SAFETY: existence check only.
    if unsafe { DISCOVER.get(comm) }.is_none() {
        return 0;
    }
    let pid = field::<i32>(&ctx, tp::sched_process_exec::PID) as u32;
    // Forked by a target (nginx's binary upgrade re-executes itself in a
    // child): already followed, and the agent already knows it.
    if is_target(pid) {
        return 0;
    }
    if !add_target(pid) {
        count_lost(LostReason::TARGETS_FULL);
        return 0;
    }
    submit(pid, pid, now(), Exec {});
    0
}
