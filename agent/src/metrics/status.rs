//! The status page at `/` (issue 14): what the metrics say, for a person, in
//! the spirit of HAProxy's stats page. Plain HTML and inline SVG, nothing
//! fetched from elsewhere and no script. Read from the same registry as
//! `/metrics`, under either schema's names.
//!
//! Rates, error ratios and quantiles are over the last minute, from
//! snapshots of the registry kept in a bounded ring (one every
//! [`SAMPLE_EVERY`], [`HISTORY`] of them: ten minutes for the sparklines).
//! Every label value comes from traffic (paths, hosts) and is escaped.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    time::{Duration, Instant},
};

use prometheus::{proto::MetricFamily, Registry};

use super::families::{Schema, Stat, EVENTS_LOST, HTTP_UPSTREAM_REQUESTS, TARGET_PROCESSES};

/// How often the page's sampler takes a snapshot.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Snapshots kept: ten minutes of sparkline.
const HISTORY: usize = 61;
/// The window of the rates and quantiles.
const WINDOW: Duration = Duration::from_mins(1);

/// The families the page reads, under one schema's names.
#[derive(Clone, Copy, Debug)]
pub struct Names {
    requests: &'static str,
    latency: &'static str,
    /// Seconds per unit of the latency family.
    latency_unit_s: f64,
    connections: &'static str,
}

impl Names {
    pub fn of(schema: &Schema) -> Self {
        let connections = schema
            .downstream
            .iter()
            .find(|s| s.stat == Stat::Reading)
            .map_or("", |s| s.family.name);
        Names {
            requests: schema.http.requests.name,
            latency: schema.http.request_latency.name,
            latency_unit_s: schema.http.ns_per_unit / 1e9,
            connections,
        }
    }
}

/// One (service, route)'s counters at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
struct RouteCounts {
    requests: f64,
    errors: f64,
    /// Cumulative bucket counts by upper bound (seconds), +Inf last.
    buckets: Vec<(f64, f64)>,
}

/// What the page needs from one gather.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    routes: BTreeMap<(String, String), RouteCounts>,
    /// (peer, code) -> calls.
    peers: BTreeMap<(String, String), f64>,
    /// state -> connections.
    connections: BTreeMap<String, f64>,
    /// reason -> events lost.
    lost: BTreeMap<String, f64>,
    targets: f64,
}

/// The snapshots and the names to read them by.
#[derive(Debug)]
pub struct StatusPage {
    names: Names,
    history: VecDeque<(Instant, Snapshot)>,
}

impl StatusPage {
    pub fn new(names: Names) -> Self {
        StatusPage {
            names,
            history: VecDeque::with_capacity(HISTORY),
        }
    }

    /// Takes a snapshot of `registry` (the sampler, every [`SAMPLE_EVERY`]).
    pub fn sample(&mut self, registry: &Registry, now: Instant) {
        let snap = snapshot(&registry.gather(), &self.names);
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((now, snap));
    }

    /// The page, as of a snapshot taken now (not kept).
    pub fn render(&self, registry: &Registry, now: Instant) -> String {
        let current = snapshot(&registry.gather(), &self.names);
        // The newest kept snapshot at least WINDOW old, else the oldest.
        let base = self
            .history
            .iter()
            .rev()
            .find(|(t, _)| now.duration_since(*t) >= WINDOW)
            .or_else(|| self.history.front());
        render(
            &current,
            base.map(|(t, s)| (now.duration_since(*t), s)),
            self,
        )
    }

    /// Requests per second of `service` between consecutive snapshots.
    fn sparkline(&self, service: &str) -> Vec<f64> {
        let total = |s: &Snapshot| -> f64 {
            s.routes
                .iter()
                .filter(|((svc, _), _)| svc == service)
                .map(|(_, c)| c.requests)
                .sum()
        };
        self.history
            .iter()
            .zip(self.history.iter().skip(1))
            .map(|((t0, a), (t1, b))| {
                let dt = t1.duration_since(*t0).as_secs_f64();
                if dt > 0.0 {
                    (total(b) - total(a)).max(0.0) / dt
                } else {
                    0.0
                }
            })
            .collect()
    }
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.get_name() == name)
        .map_or("", |l| l.get_value())
}

fn snapshot(families: &[MetricFamily], names: &Names) -> Snapshot {
    let mut s = Snapshot::default();
    for f in families {
        let name = f.get_name();
        for m in f.get_metric() {
            if name == names.requests {
                let key = (label(m, "service").to_owned(), label(m, "route").to_owned());
                let v = counter_or_gauge(m);
                let r = s.routes.entry(key).or_default();
                r.requests += v;
                if label(m, "code").starts_with('5') {
                    r.errors += v;
                }
            } else if name == names.latency {
                let key = (label(m, "service").to_owned(), label(m, "route").to_owned());
                let h = m.get_histogram();
                let r = s.routes.entry(key).or_default();
                let mut buckets: Vec<(f64, f64)> = h
                    .get_bucket()
                    .iter()
                    .map(|b| {
                        (
                            b.get_upper_bound() * names.latency_unit_s,
                            b.get_cumulative_count() as f64,
                        )
                    })
                    .collect();
                buckets.push((f64::INFINITY, h.get_sample_count() as f64));
                r.buckets = buckets;
            } else if name == HTTP_UPSTREAM_REQUESTS.name {
                let key = (label(m, "peer").to_owned(), label(m, "code").to_owned());
                *s.peers.entry(key).or_default() += counter_or_gauge(m);
            } else if name == names.connections {
                let state = label(m, "state");
                if !state.is_empty() {
                    *s.connections.entry(state.to_owned()).or_default() += counter_or_gauge(m);
                }
            } else if name == EVENTS_LOST.name {
                *s.lost.entry(label(m, "reason").to_owned()).or_default() += counter_or_gauge(m);
            } else if name == TARGET_PROCESSES.name {
                s.targets = counter_or_gauge(m);
            }
        }
    }
    s
}

/// A counter's or a gauge's value (the page reads both kinds; the families
/// of Kong's schema are gauges where native ones are counters).
fn counter_or_gauge(m: &prometheus::proto::Metric) -> f64 {
    // The field of the other kind is absent: its default value, 0.
    m.get_counter().get_value() + m.get_gauge().get_value()
}

/// The `q` quantile of the requests between `base` and `now` (cumulative
/// buckets, seconds), interpolated within its bucket as Prometheus'
/// `histogram_quantile` does; `None` without requests.
fn quantile(q: f64, now: &[(f64, f64)], base: Option<&[(f64, f64)]>) -> Option<f64> {
    let counts: Vec<(f64, f64)> = now
        .iter()
        .enumerate()
        .map(|(i, &(le, c))| {
            let before = base
                .and_then(|b| b.get(i))
                .filter(|(l, _)| *l == le || (l.is_infinite() && le.is_infinite()))
                .map_or(0.0, |(_, c)| *c);
            (le, (c - before).max(0.0))
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in &counts {
        if c >= rank {
            if le.is_infinite() {
                // Above the largest finite bound: that bound, as Prometheus.
                return Some(prev.0);
            }
            let span = c - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, c);
    }
    Some(prev.0)
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small inline SVG line of `values` (requests per second), 120 x 24.
fn svg(values: &[f64]) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let max = values.iter().copied().fold(0.0, f64::max).max(1e-9);
    let step = 120.0 / (values.len() - 1) as f64;
    let mut points = String::new();
    for (i, v) in values.iter().enumerate() {
        let _ = write!(
            points,
            "{:.1},{:.1} ",
            i as f64 * step,
            23.0 - 22.0 * v / max
        );
    }
    format!(
        "<svg width=\"120\" height=\"24\" viewBox=\"0 0 120 24\" role=\"img\" aria-label=\"requests per second\"><polyline fill=\"none\" stroke=\"#2a6\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        points.trim_end()
    )
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "–".to_owned(), |s| format!("{:.1}", s * 1000.0))
}

fn render(now: &Snapshot, base: Option<(Duration, &Snapshot)>, page: &StatusPage) -> String {
    let dt = base.map_or(0.0, |(d, _)| d.as_secs_f64());
    // A series absent from the base snapshot was 0 then.
    let rate = |cur: f64, old: Option<f64>| -> String {
        if dt > 0.0 {
            format!("{:.2}", (cur - old.unwrap_or(0.0)).max(0.0) / dt)
        } else {
            "–".to_owned()
        }
    };
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gatescope status</title>\n\
<style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}td.l,th.l{text-align:left}\
h2{font-size:1.1em;margin-top:1.2em}.err{color:#b00}</style></head><body>\n<h1>gatescope</h1>\n",
    );
    let _ = writeln!(
        h,
        "<p>Rates and quantiles over the last {}; refresh the page for new numbers. Metrics: <a href=\"/metrics\">/metrics</a>.</p>",
        if dt > 0.0 {
            format!("{dt:.0} s")
        } else {
            "minute (none yet: the first sample is taken at start)".to_owned()
        }
    );

    // Services and routes.
    h.push_str("<h2>Services and routes</h2>\n<table id=\"routes\"><tr><th class=\"l\">service</th><th class=\"l\">route</th><th>requests</th><th>req/s</th><th>5xx ratio</th><th>p50 ms</th><th>p99 ms</th><th class=\"l\">req/s, 10 min</th></tr>\n");
    let mut last_service = None;
    for ((service, route), c) in &now.routes {
        let old = base.and_then(|(_, b)| b.routes.get(&(service.clone(), route.clone())));
        let d_req = c.requests - old.map_or(0.0, |o| o.requests);
        let d_err = c.errors - old.map_or(0.0, |o| o.errors);
        let ratio = if base.is_some() && d_req > 0.0 {
            format!("{:.1}%", 100.0 * d_err / d_req)
        } else {
            "–".to_owned()
        };
        let old_buckets = old.map(|o| o.buckets.as_slice());
        let spark = if last_service.as_ref() == Some(service) {
            String::new()
        } else {
            last_service = Some(service.clone());
            svg(&page.sparkline(service))
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"requests\">{}</td><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            escape(service),
            escape(route),
            c.requests,
            rate(c.requests, old.map(|o| o.requests)),
            if d_err > 0.0 { " class=\"err\"" } else { "" },
            ratio,
            ms(quantile(0.5, &c.buckets, old_buckets)),
            ms(quantile(0.99, &c.buckets, old_buckets)),
            spark,
        );
    }
    h.push_str("</table>\n");

    // Upstream peers.
    h.push_str("<h2>Upstream peers</h2>\n<table id=\"peers\"><tr><th class=\"l\">peer</th><th class=\"l\">status</th><th>calls</th><th>calls/s</th></tr>\n");
    for ((peer, code), calls) in &now.peers {
        let old = base.and_then(|(_, b)| b.peers.get(&(peer.clone(), code.clone())).copied());
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"calls\">{calls}</td><td>{}</td></tr>",
            escape(peer),
            escape(if code == "0" { "0 (no answer)" } else { code }),
            rate(*calls, old),
        );
    }
    h.push_str("</table>\n");

    // Connections.
    h.push_str("<h2>Client connections</h2>\n<table id=\"connections\"><tr>");
    for state in now.connections.keys() {
        let _ = write!(h, "<th>{}</th>", escape(state));
    }
    h.push_str("</tr><tr>");
    for n in now.connections.values() {
        let _ = write!(h, "<td>{n}</td>");
    }
    h.push_str("</tr></table>\n");

    // The agent.
    let _ = writeln!(
        h,
        "<h2>Agent</h2>\n<p>Gateway processes observed: <span id=\"targets\">{}</span>.</p>",
        now.targets
    );
    h.push_str(
        "<table id=\"lost\"><tr><th class=\"l\">events lost: reason</th><th>total</th></tr>\n",
    );
    for (reason, n) in &now.lost {
        let class = if *n > 0.0 { " class=\"err\"" } else { "" };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td{class}>{n}</td></tr>",
            escape(reason)
        );
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_would_read() {
        assert_eq!(
            escape(r#"/a/<b>&"x"'y'"#),
            "/a/&lt;b&gt;&amp;&quot;x&quot;&#39;y&#39;"
        );
    }

    #[test]
    fn quantiles_as_prometheus_interpolates_them() {
        // 10 requests: 1 within 0.1 s, 9 more within 0.5 s.
        let now = [(0.1, 1.0), (0.5, 10.0), (f64::INFINITY, 10.0)];
        let p50 = quantile(0.5, &now, None).unwrap();
        assert!((p50 - (0.1 + 0.4 * 4.0 / 9.0)).abs() < 1e-9, "{p50}");
        // Over a window: only the 9 since the base.
        let base = [(0.1, 1.0), (0.5, 1.0), (f64::INFINITY, 1.0)];
        let p50 = quantile(0.5, &now, Some(&base)).unwrap();
        assert!((p50 - (0.1 + 0.4 * 4.5 / 9.0)).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(0.5, &base, Some(&base)), None);
        // Beyond the last finite bound: that bound.
        let slow = [(0.1, 0.0), (0.5, 0.0), (f64::INFINITY, 4.0)];
        assert_eq!(quantile(0.99, &slow, None), Some(0.5));
    }

    #[test]
    fn sparklines_need_two_points() {
        assert_eq!(svg(&[1.0]), "");
        let s = svg(&[0.0, 2.0, 1.0]);
        assert!(
            s.starts_with("<svg") && s.contains("points=\"0.0,23.0 60.0,1.0 120.0,12.0\""),
            "{s}"
        );
    }
}
