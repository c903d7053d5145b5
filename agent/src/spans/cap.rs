//! The cap on spans accepted into one incoming trace per time window, so a
//! client that sends the same `traceparent` on every request cannot grow one
//! trace without bound (OBI built 45,000-span traces that way: OBI #2551,
//! #2577). Only traces joined from a caller's header are capped: a trace
//! gatescope starts holds one request's spans.

use std::collections::HashMap;

use opentelemetry::trace::TraceId;

/// Incoming traces tracked at once (24 bytes each, plus the map's overhead:
/// about 2 MB at most).
pub const TRACES_MAX: usize = 65_536;

pub struct TraceCap {
    /// Spans accepted per trace per window.
    limit: u32,
    window_ns: u64,
    /// Trace -> (window start, spans accepted in it).
    seen: HashMap<TraceId, (u64, u32)>,
}

impl TraceCap {
    pub fn new(limit: u32, window_ns: u64) -> Self {
        TraceCap {
            limit,
            window_ns,
            seen: HashMap::new(),
        }
    }

    /// Whether `spans` more spans of `trace` may be accepted at monotonic
    /// time `now`; all or none of a request's spans are.
    pub fn admit(&mut self, trace: TraceId, spans: u32, now: u64) -> bool {
        if self.seen.len() >= TRACES_MAX && !self.seen.contains_key(&trace) {
            let window = self.window_ns;
            self.seen.retain(|_, (start, _)| now < *start + window);
            if self.seen.len() >= TRACES_MAX {
                // More live incoming traces than the table holds: counting
                // starts over (each trace can then gain at most one more
                // window's worth before it is seen again).
                self.seen.clear();
            }
        }
        let entry = self.seen.entry(trace).or_insert((now, 0));
        if now >= entry.0 + self.window_ns {
            *entry = (now, 0);
        }
        if entry.1.saturating_add(spans) > self.limit {
            return false;
        }
        entry.1 += spans;
        true
    }

    /// Traces tracked.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_gets_at_most_the_limit_per_window() {
        let mut cap = TraceCap::new(5, 1000);
        let t = TraceId::from(7u128);
        assert!(cap.admit(t, 2, 0));
        assert!(cap.admit(t, 3, 10));
        assert!(!cap.admit(t, 1, 20));
        // Another trace is not affected.
        assert!(cap.admit(TraceId::from(8u128), 5, 20));
        // The next window starts over.
        assert!(cap.admit(t, 5, 1000));
        assert!(!cap.admit(t, 1, 1500));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut cap = TraceCap::new(1, 1000);
        for i in 0..(TRACES_MAX as u128 + 10) {
            assert!(cap.admit(TraceId::from(i + 1), 1, 0));
        }
        assert!(cap.tracked() <= TRACES_MAX);
    }
}
