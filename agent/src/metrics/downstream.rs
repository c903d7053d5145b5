//! stub_status's families: client connections and requests, as counted.
//!
//! Each count moves the series a naming schema gives it (see
//! [`super::families::Schema`]).

use prometheus::{IntCounter, IntGauge, Registry};

use super::families::{Kind, Schema, Stat, NODE_ID, STATS, VERSION};

/// One series; a stat may move several (Kong shows requests twice).
#[derive(Clone)]
enum Handle {
    Counter(IntCounter),
    Gauge(IntGauge),
}

/// Cloned by the metrics sink, which counts requests: clones move the same
/// series.
#[derive(Clone)]
pub struct Downstream {
    by_stat: [Vec<Handle>; STATS],
}

/// A registered family, unlabelled families as plain counters and gauges.
enum Registered {
    Counters(prometheus::IntCounterVec),
    Gauges(prometheus::IntGaugeVec),
    Counter(IntCounter),
    Gauge(IntGauge),
}

impl Downstream {
    /// Registers `schema`'s downstream families and creates every series,
    /// so they read 0 before any traffic.
    pub fn new(registry: &Registry, schema: &Schema, node_id: &str, version: &str) -> Self {
        let mut families: Vec<(&str, Registered)> = Vec::new();
        let mut by_stat: [Vec<Handle>; STATS] = Default::default();
        for series in schema.downstream {
            let f = series.family;
            let i = if let Some(i) = families.iter().position(|(name, _)| *name == f.name) {
                i
            } else {
                let registered = match (f.kind, f.labels.is_empty()) {
                    (Kind::Counter, true) => Registered::Counter(f.single_counter(registry)),
                    (Kind::Counter, false) => Registered::Counters(f.counter(registry)),
                    (Kind::Gauge, true) => Registered::Gauge(f.single_gauge(registry)),
                    (Kind::Gauge, false) => Registered::Gauges(f.gauge(registry)),
                    (Kind::Histogram(_), _) => {
                        panic!("{}: stub_status has no histograms", f.name)
                    }
                };
                families.push((f.name, registered));
                families.len() - 1
            };
            let values: Vec<&str> = series
                .values
                .iter()
                .map(|&v| match v {
                    NODE_ID => node_id,
                    VERSION => version,
                    v => v,
                })
                .collect();
            let handle = match &families[i].1 {
                Registered::Counters(c) => Handle::Counter(c.with_label_values(&values)),
                Registered::Gauges(g) => Handle::Gauge(g.with_label_values(&values)),
                Registered::Counter(c) => Handle::Counter(c.clone()),
                Registered::Gauge(g) => Handle::Gauge(g.clone()),
            };
            let settable = matches!(handle, Handle::Gauge(_));
            match series.stat {
                Stat::Accepted | Stat::Handled | Stat::Requests => {}
                Stat::Active | Stat::Reading | Stat::Writing | Stat::Waiting => {
                    assert!(settable, "{}: a level is a gauge", f.name);
                }
                Stat::Info => {
                    assert!(settable, "{}: an info series is a gauge", f.name);
                    if let Handle::Gauge(g) = &handle {
                        g.set(1);
                    }
                }
            }
            by_stat[series.stat as usize].push(handle);
        }
        Downstream { by_stat }
    }

    /// Counts `n` more of `stat`.
    pub fn add(&self, stat: Stat, n: u64) {
        for handle in &self.by_stat[stat as usize] {
            match handle {
                Handle::Counter(c) => c.inc_by(n),
                Handle::Gauge(g) => g.add(n as i64),
            }
        }
    }

    /// Sets a level (active connections, a phase); its series are gauges
    /// (checked in [`Downstream::new`]).
    pub fn set(&self, stat: Stat, value: u64) {
        for handle in &self.by_stat[stat as usize] {
            if let Handle::Gauge(g) = handle {
                g.set(value as i64);
            }
        }
    }
}
