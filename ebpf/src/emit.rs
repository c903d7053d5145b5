//! Getting events to the agent, and counting every one that does not make it.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
};
use gatescope_common::{Event, LOST_RINGBUF_FULL};

use crate::maps::{EVENTS, LOST};

/// (tgid, tid) of the current task.
#[inline(always)]
pub fn current() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// A zeroed event of `kind`, stamped with the current time.
#[inline(always)]
pub fn new_event(kind: u32) -> Event {
    Event {
        kind,
        // SAFETY: a helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ..Event::default()
    }
}

/// Unread bytes above which a submission wakes the agent. Below it, records
/// are submitted without a wake-up: a wake-up per record is an interrupt per
/// record (an IPI in a VM), which measured as most of the programs' cost in
/// the gateway's threads. The agent drains on a short timer as well, so
/// nothing waits long (see agent/src/pipeline.rs).
const WAKEUP_BYTES: u64 = 256 * 1024;

/// Ring buffer flags for the next submission.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn submit(event: &Event) {
    if EVENTS.output::<Event>(event, wakeup_flags()).is_err() {
        count_lost(LOST_RINGBUF_FULL);
    }
}

#[inline(always)]
pub fn count_lost(reason: u32) {
    if let Some(counter) = LOST.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, and programs do not migrate while running.
        unsafe { *counter += 1 };
    }
}
