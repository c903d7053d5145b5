//! The benchmark's numbers as text: per-round lines while it runs, the summary table
//! against issue 10's targets, and the formatting both share with the report.

use std::fmt::Write as _;

use super::{bpf_stats, Gateway, Mode, Results, Round};

pub(super) mod raw;

/// Issue 10's targets (they replace issue 3's).
const MAX_PROGRAM_NS: f64 = 1500.0;
const MAX_HOST_TAX: f64 = 1.02;
const MAX_PROXY_CPU: f64 = 1.10;
const MIN_THROUGHPUT: f64 = 0.90;
const MAX_PACED_P99: f64 = 1.3;
const MAX_CORES_PER_10K: f64 = 0.03;

const MIB: f64 = 1024.0 * 1024.0;

pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => f64::midpoint(values[n / 2 - 1], values[n / 2]),
    }
}

pub fn loadavg_text(load: Option<[f64; 3]>) -> String {
    load.map_or_else(
        || "unknown".to_string(),
        |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
    )
}

/// 21345 -> "21,345".
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn ms(seconds: f64) -> String {
    format!("{:.2}", seconds * 1e3)
}

pub(super) fn pct(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

pub(super) fn list(values: &[f64], f: impl Fn(f64) -> String) -> String {
    values.iter().map(|&v| f(v)).collect::<Vec<_>>().join(", ")
}

/// `lo–hi`, or one value when they are equal as printed.
pub(super) fn span(lo: f64, hi: f64, f: impl Fn(f64) -> String) -> String {
    let (lo, hi) = (f(lo), f(hi));
    if lo == hi {
        lo
    } else {
        format!("{lo}–{hi}")
    }
}

pub(super) fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "missing".to_string(), |v| thousands(v.round() as u64))
}

/// A Markdown table with padded columns (readable in a terminal too).
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
                .max(3)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.iter().map(ToString::to_string).collect());
    out += &line(widths.iter().map(|&w| "-".repeat(w)).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

pub(super) fn proxy_us_per_request(r: &Round) -> f64 {
    r.proxy_cpu / r.wrk.requests.max(1) as f64 * 1e6
}

/// Agent CPU cores used during the load, per 10k requests/s of that load.
pub(super) fn cores_per_10k(r: &Round) -> Option<f64> {
    let a = r.agent.as_ref()?;
    Some(a.cpu_load / r.wall / (r.wrk.requests_per_second / 1e4))
}

/// Agent CPU seconds (load and draining) per 10k requests.
pub(super) fn cpu_per_10k_requests(r: &Round) -> Option<f64> {
    let a = r.agent.as_ref()?;
    Some(a.cpu_total / r.wrk.requests.max(1) as f64 * 1e4)
}

/// One line per round while the benchmark runs.
pub fn round_line(r: &Round) -> String {
    let mut line = format!(
        "bench: round {} (pair {}, {}, {}{}{}{}): {:.0} requests/s, p50 {} ms, p99 {} ms, proxy {:.1} µs CPU/request, load {:.2}, other processes {:.2} cores",
        r.number,
        r.pair,
        r.gateway.title(),
        r.mode.name(),
        if r.paced { ", paced" } else { "" },
        if r.tracing { ", tracing" } else { "" },
        if r.programs.is_some() { ", bpf_stats" } else { "" },
        r.wrk.requests_per_second,
        ms(r.wrk.p50),
        ms(r.wrk.p99),
        proxy_us_per_request(r),
        r.load1,
        r.other_cores
    );
    if r.foreign_agents > 0 {
        let _ = write!(
            line,
            " (WARNING: {} other gatescope agent(s) running)",
            r.foreign_agents
        );
    }
    if let Some(a) = &r.agent {
        let _ = write!(
            line,
            "; agent {:.2} CPU-s ({:.3} cores per 10k requests/s), peak RSS {:.1} MiB, events {} received, {} lost",
            a.cpu_load,
            cores_per_10k(r).unwrap_or(f64::NAN),
            a.peak_rss as f64 / MIB,
            opt(a.events_received),
            opt(a.events_lost)
        );
    }
    if let (Some(progs), Some(ns)) = (&r.programs, bpf_stats::ns_per_request(r)) {
        let runs: u64 = progs.iter().map(|p| p.runs).sum();
        let _ = write!(
            line,
            "; programs {ns:.0} ns per request ({:.1} runs per request, {} programs)",
            runs as f64 / r.wrk.requests.max(1) as f64,
            progs.len()
        );
    }
    line
}

pub(super) struct Pair<'a> {
    pub number: usize,
    pub baseline: &'a Round,
    pub gatescope: &'a Round,
}

impl Pair<'_> {
    pub fn ratio(&self, f: impl Fn(&Round) -> f64) -> f64 {
        f(self.gatescope) / f(self.baseline)
    }
}

/// The pairs, in the order run.
pub(super) fn pairs(rounds: &[Round]) -> Vec<Pair<'_>> {
    let mut out = Vec::new();
    for r in rounds.iter().filter(|r| r.mode == Mode::Gatescope) {
        if let Some(b) = rounds
            .iter()
            .find(|b| b.mode == Mode::Baseline && b.pair == r.pair && b.gateway == r.gateway)
        {
            out.push(Pair {
                number: r.pair,
                baseline: b,
                gatescope: r,
            });
        }
    }
    out
}

/// The summary's numbers for the flat-out pairs or for the paced pair.
/// The summary's numbers for one gateway's flat-out pairs or paced pair.
struct Group {
    throughput: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    proxy_cpu: Vec<f64>,
    cpu_per_10k_requests: Vec<f64>,
    cores_per_10k: Vec<f64>,
    peak_rss_mib: f64,
    received: f64,
    lost: Option<f64>,
    lost_reasons: Vec<String>,
    /// Requests/s of the gatescope rounds.
    rates: Vec<f64>,
}

impl Group {
    fn of(rounds: &[Round], gateway: Gateway, paced: bool) -> Option<Group> {
        let ps: Vec<Pair> = pairs(rounds)
            .into_iter()
            .filter(|p| p.gatescope.paced == paced && p.gatescope.gateway == gateway)
            .collect();
        let with: Vec<&Round> = rounds
            .iter()
            .filter(|r| r.agent.is_some() && r.paced == paced && r.gateway == gateway)
            .collect();
        if with.is_empty() {
            return None;
        }
        let agents = || with.iter().filter_map(|r| r.agent.as_ref());
        let ratios = |f: fn(&Round) -> f64| ps.iter().map(|p| p.ratio(f)).collect();
        Some(Group {
            throughput: ratios(|r| r.wrk.requests_per_second),
            p50: ratios(|r| r.wrk.p50),
            p99: ratios(|r| r.wrk.p99),
            proxy_cpu: ratios(proxy_us_per_request),
            cpu_per_10k_requests: with
                .iter()
                .filter_map(|r| cpu_per_10k_requests(r))
                .collect(),
            cores_per_10k: with.iter().filter_map(|r| cores_per_10k(r)).collect(),
            peak_rss_mib: agents()
                .map(|a| a.peak_rss as f64 / MIB)
                .fold(0.0, f64::max),
            received: agents().filter_map(|a| a.events_received).sum(),
            lost: agents().map(|a| a.events_lost).sum(),
            lost_reasons: agents().flat_map(|a| a.lost_reasons.clone()).collect(),
            rates: with.iter().map(|r| r.wrk.requests_per_second).collect(),
        })
    }

    fn min_rate(&self) -> f64 {
        self.rates.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max_rate(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    fn rates(&self) -> String {
        format!(
            "{} requests/s",
            span(self.min_rate(), self.max_rate(), |v| thousands(
                v.round() as u64
            ))
        )
    }
}

fn med(values: &[f64]) -> f64 {
    median(&mut values.to_vec())
}

fn times(v: f64) -> String {
    format!("{v:.2}×")
}

/// A ratio's distance from its target: one more digit than the ratio, so that a value
/// printed as the target itself still shows by how much it missed.
fn times_by(v: f64) -> String {
    format!("{v:.3}×")
}

fn ns(v: f64) -> String {
    format!("{v:.0} ns")
}

fn four(v: f64) -> String {
    format!("{v:.4}")
}

/// `median (pairs: a, b, c)`, or just the value when there is one.
fn with_parts(values: &[f64], what: &str, f: impl Fn(f64) -> String) -> String {
    if values.len() == 1 {
        f(values[0])
    } else {
        format!("{} ({what}: {})", f(med(values)), list(values, f))
    }
}

/// The verdict on `value` against an upper bound `target`, the difference shown by `f`.
fn at_most(value: f64, target: f64, f: impl Fn(f64) -> String) -> String {
    if value.is_nan() {
        "unknown: not measured".into()
    } else if value <= target {
        format!("met ({} to spare)", f(target - value))
    } else {
        format!(
            "**missed** by {} ({:.1}× the target)",
            f(value - target),
            value / target
        )
    }
}

/// The verdict on a throughput ratio against its lower bound.
fn throughput_verdict(ratio: f64) -> String {
    if ratio >= MIN_THROUGHPUT {
        format!(
            "met ({:.1} points to spare)",
            (ratio - MIN_THROUGHPUT) * 100.0
        )
    } else {
        format!(
            "**missed** by {:.1} points",
            (MIN_THROUGHPUT - ratio) * 100.0
        )
    }
}

/// The value and verdict cells of an "events lost" row (target: none lost).
fn loss_cells(g: &Group) -> (String, String) {
    let Some(lost) = g.lost else {
        return (
            "not reported".into(),
            "unknown: the agent has no `gatescope_events_lost_total`".into(),
        );
    };
    let value = format!(
        "{} of {}{}",
        thousands(lost.round() as u64),
        thousands((g.received + lost).round() as u64),
        if g.lost_reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", g.lost_reasons.join(", "))
        }
    );
    let verdict = if lost > 0.0 {
        format!(
            "**missed** by {} events ({:.2}% of all)",
            thousands(lost.round() as u64),
            lost / (g.received + lost) * 100.0
        )
    } else {
        "met".into()
    };
    (value, verdict)
}

/// Summed ns per request of each stats round through `gateway`, and their request rates.
fn program_costs(results: &Results, gateway: Gateway) -> (Vec<f64>, String) {
    let rounds: Vec<&Round> = results
        .stats
        .iter()
        .filter(|r| r.gateway == gateway)
        .collect();
    let costs = rounds
        .iter()
        .filter_map(|r| bpf_stats::ns_per_request(r))
        .collect();
    let rates: Vec<f64> = rounds.iter().map(|r| r.wrk.requests_per_second).collect();
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().copied().fold(0.0, f64::max);
    (
        costs,
        format!(
            "{} requests/s",
            span(lo, hi, |v| thousands(v.round() as u64))
        ),
    )
}

type Row = Vec<String>;

fn row(measure: String, value: String, target: &str, verdict: String) -> Row {
    vec![measure, value, target.into(), verdict]
}

/// The host tax rows: each agent mode's getppid(2) over no agent's.
fn host_tax_rows(results: &Results) -> Vec<Row> {
    let Some(tax) = &results.host_tax else {
        return Vec::new();
    };
    let mut rows: Vec<Row> = tax
        .ratios()
        .into_iter()
        .enumerate()
        .map(|(i, (name, ratio))| {
            let measure = format!("host tax: getppid(2) elsewhere, agent {name} / no agent");
            if i == 0 {
                row(
                    measure,
                    times(ratio),
                    "≤ 1.02×",
                    at_most(ratio, MAX_HOST_TAX, times_by),
                )
            } else {
                row(measure, times(ratio), "none (fallback)", "—".into())
            }
        })
        .collect();
    if let Some(note) = &tax.note {
        rows.push(row(
            "host tax, syscall-hook fallback".into(),
            "not timed".into(),
            "none (fallback)",
            format!("— ({note})"),
        ));
    }
    rows
}

/// The rows of one gateway's flat-out pairs (nginx: all of them; HAProxy: its own).
fn flat_rows(results: &Results, gateway: Gateway, flat: &Group) -> Vec<Row> {
    let g = gateway.title();
    let flat_at = format!("{g}, flat out, {}", flat.rates());
    let mut rows = Vec::new();
    let (costs, stats_at) = program_costs(results, gateway);
    if !costs.is_empty() {
        rows.push(row(
            format!("programs' cost per proxied request, summed ({g}, bpf_stats, {stats_at})"),
            with_parts(&costs, "rounds", ns),
            "≤ 1.5 µs",
            at_most(med(&costs), MAX_PROGRAM_NS, ns),
        ));
    }
    if gateway == Gateway::Nginx {
        rows.extend(host_tax_rows(results));
    }
    rows.push(row(
        format!("proxy CPU per request, gatescope / baseline ({g}, flat out)"),
        with_parts(&flat.proxy_cpu, "pairs", times),
        "≤ 1.10×",
        at_most(med(&flat.proxy_cpu), MAX_PROXY_CPU, times_by),
    ));
    rows.push(row(
        format!("throughput, gatescope / baseline ({g}, flat out)"),
        with_parts(&flat.throughput, "pairs", pct),
        "≥ 90%",
        throughput_verdict(med(&flat.throughput)),
    ));
    rows.push(row(
        format!("p50 / p99 latency, gatescope / baseline ({g}, flat out)"),
        format!(
            "{} / {}",
            with_parts(&flat.p50, "pairs", times),
            with_parts(&flat.p99, "pairs", times)
        ),
        "none",
        "—".into(),
    ));
    rows.push(row(
        format!("agent CPU cores per 10k requests/s ({flat_at})"),
        with_parts(&flat.cores_per_10k, "rounds", four),
        "≤ 0.03",
        at_most(med(&flat.cores_per_10k), MAX_CORES_PER_10K, four),
    ));
    if gateway == Gateway::Nginx {
        rows.push(row(
            format!("agent CPU-seconds per 10k requests ({g}, flat out, incl. draining)"),
            with_parts(&flat.cpu_per_10k_requests, "rounds", four),
            "none",
            "—".into(),
        ));
    }
    let (value, verdict) = loss_cells(flat);
    rows.push(row(
        format!("events lost at the highest rate ({flat_at})"),
        value,
        "0",
        verdict,
    ));
    rows
}

/// The summary: issue 10's measures, nginx first, then HAProxy.
pub(super) fn summary_table(results: &Results) -> String {
    let rounds = &results.rounds;
    let Some(flat) = Group::of(rounds, Gateway::Nginx, false) else {
        return "No round with gatescope attached.\n".into();
    };
    let paced = Group::of(rounds, Gateway::Nginx, true);
    let mut rows = flat_rows(results, Gateway::Nginx, &flat);
    if let Some(p) = &paced {
        let at = format!("nginx, paced, {}", p.rates());
        rows.push(row(
            format!("p99 latency, gatescope / baseline ({at})"),
            with_parts(&p.p99, "pairs", times),
            "≤ 1.3×",
            at_most(med(&p.p99), MAX_PACED_P99, times_by),
        ));
        rows.push(row(
            format!("p50 latency, gatescope / baseline ({at})"),
            with_parts(&p.p50, "pairs", times),
            "none",
            "—".into(),
        ));
        rows.push(row(
            format!("agent CPU cores per 10k requests/s ({at})"),
            with_parts(&p.cores_per_10k, "rounds", four),
            "≤ 0.03",
            at_most(med(&p.cores_per_10k), MAX_CORES_PER_10K, four),
        ));
        let (value, verdict) = loss_cells(p);
        rows.push(row(format!("events lost ({at})"), value, "0", verdict));
    }
    let peak_rss = paced
        .as_ref()
        .map_or(flat.peak_rss_mib, |p| p.peak_rss_mib.max(flat.peak_rss_mib));
    rows.push(row(
        "agent peak RSS (largest over the nginx rounds)".into(),
        format!("{peak_rss:.1} MiB"),
        "none",
        "—".into(),
    ));
    for gateway in [Gateway::Haproxy, Gateway::NginxTls, Gateway::NginxH2] {
        if let Some(g) = Group::of(rounds, gateway, false) {
            rows.extend(flat_rows(results, gateway, &g));
        }
    }
    table(&["measure", "value", "target", "verdict"], &rows)
}

#[cfg(test)]
mod tests;
