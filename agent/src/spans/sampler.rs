//! Head sampling (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), decided
//! once per client request for its SERVER span and all its CLIENT spans.
//! Metrics count every request whatever is decided here.

use opentelemetry::trace::TraceId;

use super::context::Parent;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Sample a fraction of traces, by trace id (so every agent that sees a
    /// trace decides alike).
    Ratio(f64),
    /// Follow a believed caller's sampled flag; without one, the inner rule.
    ParentBased(Root),
}

/// The rule for requests without a believed parent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

impl Default for Sampler {
    /// Parent-based with a trace-id ratio of 1 (every new trace).
    fn default() -> Self {
        Sampler::ParentBased(Root::Ratio(1.0))
    }
}

impl Sampler {
    /// From the standard variables' values; an unknown sampler name or a
    /// ratio outside [0, 1] is an error that names the variable.
    pub fn from_env(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim) {
                None | Some("") => Ok(1.0),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio between 0 and 1")
                    }),
            }
        };
        Ok(match name.map(str::trim) {
            None | Some("") => Sampler::default(),
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::Ratio(ratio()?),
            Some("parentbased_always_on") => Sampler::ParentBased(Root::AlwaysOn),
            Some("parentbased_always_off") => Sampler::ParentBased(Root::AlwaysOff),
            Some("parentbased_traceidratio") => Sampler::ParentBased(Root::Ratio(ratio()?)),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={other:?} is not one of always_on, always_off, \
                     traceidratio, parentbased_always_on, parentbased_always_off, \
                     parentbased_traceidratio"
                ))
            }
        })
    }

    /// Whether the trace of a request is recorded; `parent` is the caller's
    /// context when it is believed.
    pub fn sample(self, trace_id: TraceId, parent: Option<Parent>) -> bool {
        let root = match self {
            Sampler::AlwaysOn => Root::AlwaysOn,
            Sampler::AlwaysOff => Root::AlwaysOff,
            Sampler::Ratio(r) => Root::Ratio(r),
            Sampler::ParentBased(root) => match parent {
                Some(p) => return p.sampled(),
                None => root,
            },
        };
        match root {
            Root::AlwaysOn => true,
            Root::AlwaysOff => false,
            Root::Ratio(r) => ratio_says(trace_id, r),
        }
    }
}

/// The OTel SDKs' TraceIdRatioBased rule: the trace id's low 8 bytes, read
/// big-endian and shifted right once, below `ratio` × 2^63.
fn ratio_says(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bytes = trace_id.to_bytes();
    let low = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")) >> 1;
    (low as f64) < ratio * (1u64 << 63) as f64
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags};

    use super::*;

    fn id(low: u64) -> TraceId {
        TraceId::from(u128::from(low) | 1 << 100)
    }

    #[test]
    fn variables_are_read_and_checked() {
        assert_eq!(Sampler::from_env(None, None), Ok(Sampler::default()));
        assert_eq!(
            Sampler::from_env(Some("parentbased_traceidratio"), Some("0.25")),
            Ok(Sampler::ParentBased(Root::Ratio(0.25)))
        );
        assert_eq!(
            Sampler::from_env(Some("traceidratio"), None),
            Ok(Sampler::Ratio(1.0))
        );
        assert!(Sampler::from_env(Some("traceidratio"), Some("2")).is_err());
        assert!(Sampler::from_env(Some("jaeger_remote"), None).is_err());
    }

    #[test]
    fn parent_based_follows_the_caller_and_ratio_splits_by_trace_id() {
        let parent = |sampled: bool| Parent {
            trace_id: id(1),
            span_id: SpanId::from(1u64),
            flags: if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
        };
        let s = Sampler::ParentBased(Root::Ratio(0.0));
        assert!(s.sample(id(1), Some(parent(true))));
        assert!(!s.sample(id(1), Some(parent(false))));
        assert!(!s.sample(id(1), None));
        let half = Sampler::Ratio(0.5);
        assert!(half.sample(id(0), None));
        assert!(half.sample(id(u64::MAX / 2 - (1 << 20)), None));
        assert!(!half.sample(id(u64::MAX), None));
        // A ratio does not look at the parent.
        assert!(!half.sample(id(u64::MAX), Some(parent(true))));
        let sampled = (0..10_000u64)
            .filter(|i| half.sample(id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), None))
            .count();
        assert!((4_500..5_500).contains(&sampled), "{sampled}");
    }
}
