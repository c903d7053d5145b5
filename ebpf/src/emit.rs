//! Getting events to the agent, and counting every one that does not make it.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
    EbpfContext,
};
use gatescope_common::{Event, LOST_RINGBUF_FULL};

use crate::maps::{EVENTS, LOST};

/// A field of the tracepoint record at `offset`, loaded directly: a
/// tracepoint program may read its record (the verifier checks the offset
/// against the record's bounds and its alignment), which is much cheaper
/// than a `bpf_probe_read_kernel` call per field. Offsets come from
/// `gatescope_common::tp` and are checked against the kernel's format files
/// by the agent; every one is naturally aligned for its type.
#[inline(always)]
pub fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: see above; the record outlives the program run.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

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

/// Ring buffer flags for the next submission. Records are submitted without
/// waking the agent until an eighth of the ring is waiting: a wake-up per
/// record is an interrupt per record (an IPI in a VM), which measured as most
/// of the programs' cost in the gateway's threads. The agent also drains on a
/// short timer, so nothing waits long (see agent/src/pipeline.rs).
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if waiting >= EVENTS.query(BPF_RB_RING_SIZE as u64) / 8 {
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
