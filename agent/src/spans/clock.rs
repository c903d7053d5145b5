//! Kernel timestamps to wall time.
//!
//! The kernel stamps records with `bpf_ktime_get_ns`, CLOCK_MONOTONIC. Spans
//! carry wall time (CLOCK_REALTIME), so each timestamp gets the offset
//! REALTIME − MONOTONIC added. The offset is read as a MONOTONIC, REALTIME,
//! MONOTONIC triple; of a few tries the one whose two MONOTONIC reads are
//! closest is kept, and the REALTIME read is taken to lie at their midpoint.
//!
//! Precision: the offset is exact to half the bracket (the vDSO reads take
//! tens of ns, so well under 1 µs). Between measurements REALTIME may be
//! slewed by NTP (at most 500 ppm by the kernel's limit: 0.5 ms per second)
//! or stepped, so the offset is measured again every [`REMEASURE_NS`]; a span
//! is therefore within 1 µs plus at most 5 ms of worst-case slew (typically
//! a few µs: NTP slews at far less than the limit) of the wall time an
//! in-process tracer would have read. Durations are exact: both ends come
//! from the same monotonic clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the offset is measured again.
pub const REMEASURE_NS: u64 = 10_000_000_000;

pub struct WallClock {
    /// REALTIME − MONOTONIC, ns.
    offset_ns: i128,
    measured_at: u64,
}

fn read(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into; the clock ids are constants
    // every Linux has.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// One offset measurement: (offset, bracket width in ns).
fn measure() -> (i128, i128, u64) {
    let mut best = (0, i128::MAX, 0);
    for _ in 0..5 {
        let m0 = read(libc::CLOCK_MONOTONIC);
        let r = read(libc::CLOCK_REALTIME);
        let m1 = read(libc::CLOCK_MONOTONIC);
        if m1 - m0 < best.1 {
            best = (r - i128::midpoint(m0, m1), m1 - m0, m1 as u64);
        }
    }
    best
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock {
    pub fn new() -> Self {
        let (offset_ns, _, measured_at) = measure();
        WallClock {
            offset_ns,
            measured_at,
        }
    }

    /// A fixed offset (tests).
    pub fn fixed(offset_ns: i128) -> Self {
        WallClock {
            offset_ns,
            measured_at: u64::MAX,
        }
    }

    /// Measures the offset again if [`REMEASURE_NS`] have passed since
    /// `now_mono_ns`.
    pub fn refresh(&mut self, now_mono_ns: u64) {
        if self.measured_at != u64::MAX
            && now_mono_ns.saturating_sub(self.measured_at) >= REMEASURE_NS
        {
            *self = WallClock::new();
        }
    }

    /// The wall time of monotonic `ns`.
    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = i128::from(mono_ns) + self.offset_ns;
        let ns = u64::try_from(ns).unwrap_or(0);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_on_the_monotonic_clock_is_now_on_the_wall() {
        let clock = WallClock::new();
        let (_, width, _) = measure();
        assert!(width < 1_000_000, "bracket {width} ns");
        let mono = read(libc::CLOCK_MONOTONIC) as u64;
        let wall = clock.wall(mono);
        let real = SystemTime::now();
        let diff = real.duration_since(wall).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(5), "{diff:?}");
    }

    #[test]
    fn fixed_offsets_add() {
        let clock = WallClock::fixed(1_000_000_000_000);
        assert_eq!(
            clock.wall(5),
            UNIX_EPOCH + Duration::from_nanos(1_000_000_000_005)
        );
    }
}
