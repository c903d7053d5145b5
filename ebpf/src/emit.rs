//! Getting events to the agent, and counting every one that does not make it.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
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

#[inline(always)]
pub fn submit(event: &Event) {
    if EVENTS.output::<Event>(event, 0).is_err() {
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
