//! The span exporter's own counts (agent/src/spans/): what it exported, what
//! it dropped and why, and its failed export calls. Registered in every
//! mode, tracing on or off, so dashboards find the series.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::families;

/// `gatescope_spans_dropped_total{reason}` values.
pub const DROP_REASONS: [&str; 4] = ["queue_full", "export_failed", "trace_cap", "shutdown"];
/// `gatescope_span_export_errors_total{kind}` values.
pub const ERROR_KINDS: [&str; 3] = ["http_status", "network", "other"];

/// Cheap to clone: the export thread holds a copy.
#[derive(Clone)]
pub struct SpanMetrics {
    pub exported: IntCounter,
    dropped: IntCounterVec,
    errors: IntCounterVec,
}

impl SpanMetrics {
    pub fn new(registry: &Registry) -> Self {
        let dropped = families::SPANS_DROPPED.counter(registry);
        for reason in DROP_REASONS {
            dropped.with_label_values(&[reason]);
        }
        let errors = families::SPAN_EXPORT_ERRORS.counter(registry);
        for kind in ERROR_KINDS {
            errors.with_label_values(&[kind]);
        }
        SpanMetrics {
            exported: families::SPANS_EXPORTED.single_counter(registry),
            dropped,
            errors,
        }
    }

    /// `n` spans dropped for `reason` (one of `DROP_REASONS`).
    pub fn dropped(&self, reason: &str, n: u64) {
        debug_assert!(DROP_REASONS.contains(&reason), "{reason}");
        self.dropped.with_label_values(&[reason]).inc_by(n);
    }

    /// A failed export call of `kind` (one of `ERROR_KINDS`).
    pub fn export_error(&self, kind: &str) {
        debug_assert!(ERROR_KINDS.contains(&kind), "{kind}");
        self.errors.with_label_values(&[kind]).inc();
    }
}
