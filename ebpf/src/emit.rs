//! Getting records to the agent, and counting every one that does not make it.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
    EbpfContext,
};
use gatescope_common::{LostReason, Payload, Record};

use crate::maps::{EVENTS, LOST, WAKE};

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

/// The time a record is stamped with (CLOCK_MONOTONIC, ns).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Ring buffer flags for the next submission. Records are submitted without
/// waking the agent until an eighth of the ring is waiting: a wake-up per
/// record is an interrupt per record (an IPI in a VM), which measured as most
/// of the programs' cost in the gateway's threads. The agent also drains on a
/// short timer, so nothing waits long (see agent/src/pipeline.rs). The fill
/// is looked at only once per `WAKE_CHECK_MASK + 1` records of a CPU: the
/// two ring queries cost ~20 ns each per record otherwise (KERNEL.md), and
/// the per-CPU counter's lookup is inlined by the verifier.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    if let Some(n) = WAKE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, and programs do not migrate while running.
        let n = unsafe {
            *n = (*n).wrapping_add(1);
            *n
        };
        // SAFETY: a constant global the agent patches before load.
        if n & unsafe { core::ptr::read_volatile(&raw const WAKE_CHECK_MASK) } != 0 {
            return u64::from(BPF_RB_NO_WAKEUP);
        }
    }
    wakeup_flags_now()
}

/// Ring buffer flags from the ring's fill now: a wake-up once an eighth of
/// it is waiting.
#[inline(always)]
pub fn wakeup_flags_now() -> u64 {
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if waiting >= EVENTS.query(u64::from(BPF_RB_RING_SIZE)) / 8 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Records of one CPU between two looks at the ring's fill, less one (a
/// power of two less one). The agent sizes it from the ring and the largest
/// record so that what all CPUs add between looks stays within an eighth of
/// the ring (agent/src/capture/mod.rs); 0 looks at every record.
#[unsafe(no_mangle)]
static WAKE_CHECK_MASK: u32 = 0;

/// Sends a record of `data`'s kind for process `tgid` (thread `tid`),
/// stamped `ts_ns` (from [`now`]).
#[inline(always)]
pub fn submit<T: Payload>(tgid: u32, tid: u32, ts_ns: u64, data: T) {
    let record = Record::new(tgid, tid, ts_ns, data);
    if EVENTS.output::<Record<T>>(&record, wakeup_flags()).is_err() {
        count_lost(LostReason::RINGBUF_FULL);
    }
}

#[inline(always)]
pub fn count_lost(reason: LostReason) {
    if let Some(counter) = LOST.get_ptr_mut(reason.0) {
        // SAFETY: per-CPU slot, and programs do not migrate while running.
        unsafe { *counter += 1 };
    }
}
