//! The benchmark's report: per-round lines while it runs, then the summary against issue 3's
//! targets and the raw numbers, as Markdown for the terminal and for BENCHMARKS.md.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};

use crate::bench::{Mode, Round, RunInfo};

mod raw;
use raw::{agent_table, pairs_table, rounds_table};

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// Issue 3's targets.
const MIN_THROUGHPUT: f64 = 0.98;
const LOSS_RATE: f64 = 20_000.0;
const MAX_CORES_PER_10K: f64 = 0.1;
const MAX_RSS_MIB: f64 = 50.0;

const MIB: f64 = 1024.0 * 1024.0;

/// Written when BENCHMARKS.md does not exist yet; the part between the markers is replaced
/// by every run.
fn intro() -> String {
    format!(
        r#"# Benchmarks

What gatescope costs the gateway it observes, measured by `cargo xtask bench`
(xtask/src/bench.rs). It is a measurement, not a test: it fails only when the stack breaks.

## Method

- **Stack, all on loopback.** A real nginx reverse proxy (2 workers, keep-alive pool to the
  upstream; `deploy/bench/proxy.conf`) in front of a second, separate nginx (its own master,
  2 workers; `deploy/bench/upstream.conf`) that answers every request itself with a fixed
  88-byte JSON body, so the proxy, not the upstream, is what limits throughput. gatescope
  attaches to the proxy's master only; the upstream is not a descendant of it, so it is not
  observed. Access logs are off: the faster the proxy, the larger the agent's share.
- **Load.** Debian's wrk 4.1.0, closed loop (`wrk -tT -cC -dDs --latency`), keep-alive
  connections. A short unrecorded warm-up comes first.
- **Rounds.** Pairs of rounds, one without the agent (baseline) and one with
  `gatescope --pid <proxy master>` attached (a fresh agent each round, started before the
  round and stopped after it), the order alternating from pair to pair (baseline first,
  then gatescope first, ...) so that slow drift on the machine cancels out. Every round uses
  the same copy of the agent binary.
- **Per round.** Requests/s and p50/p99 latency from wrk's `--latency` report; the proxy's
  CPU (master + workers, utime + stime from `/proc/<pid>/stat`) per request, which is where
  the in-kernel cost of the eBPF programs shows, as they run in the workers' system calls;
  for the agent: CPU seconds (utime + stime, in `_SC_CLK_TCK` ticks) while wrk runs and until
  its metrics settle afterwards, peak RSS (`VmHWM` from `/proc/<pid>/status` just before it
  is stopped), and `gatescope_events_received_total` / `gatescope_events_lost_total` (all
  kinds and reasons summed) from scrapes that have settled (two scrapes 1.2 s apart
  agree) at the start and the end of the window.
  The machine's load is recorded too: the 1-minute load average before each round, and the
  CPU that processes outside the benchmark used while wrk ran (`/proc/stat` user + nice +
  system less the CPU of the proxy, the upstream, wrk, xtask and the agent).
- **Summary.** Throughput and latency ratios are gatescope / baseline within a pair, median
  over the pairs. Agent CPU is the median over the gatescope rounds; CPU cores per 10k
  requests/s is the agent's CPU seconds during the load divided by the load's duration and
  by the request rate in units of 10k/s. Peak RSS is the largest over the rounds. Events
  lost are summed over the gatescope rounds.
- **20k requests/s.** wrk cannot hold a fixed rate (and wrk2 is not packaged for Debian).
  The flat-out rounds give the losses at the highest rate the proxy reaches. Then one more
  pair runs paced (`--paced-rate`, default 20,000 requests/s): a wrk Lua script makes each
  connection wait {delay} ms before each request, and unrecorded {calibration} s runs (at most 3) just
  before each of the two rounds, in that round's conditions (agent attached or not), set the
  number of connections that reaches the rate. This is a closed loop with think time, not a constant
  arrival rate: the achieved rate is reported and the verdict uses it. The paced pair also
  gives the latency overhead and the agent's CPU at that rate rather than at saturation.
  The agent's event counts are the difference between a scrape at the start of the measured
  window and one at its end, so calibration traffic is not counted.
- **Where the CPU goes.** Everything runs on the same machine, so the rounds table also
  gives the cores used by the proxy, the upstream, wrk and the agent while wrk ran. When
  they add up to the machine's CPUs, the agent's CPU and the programs' cost in the proxy's
  system calls come straight out of the proxy's throughput.
- **Load on the machine.** The load average includes the benchmark's own processes (wrk,
  two nginx, the agent), so it rises during a run by itself; the "other processes" column
  is the better measure of interference. Other gatescope agents running at the same time
  (someone else's tests) are counted per round too: their tracepoint programs run in every
  process's system calls, including the benchmark's, so a round that had any is suspect.

"#,
        delay = crate::bench::PACE_DELAY_MS,
        calibration = crate::bench::CALIBRATION_SECONDS,
    )
}

fn median(values: &mut [f64]) -> f64 {
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
fn thousands(n: u64) -> String {
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

fn ms(seconds: f64) -> String {
    format!("{:.2}", seconds * 1e3)
}

fn pct(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

fn list(values: &[f64], f: impl Fn(f64) -> String) -> String {
    values.iter().map(|&v| f(v)).collect::<Vec<_>>().join(", ")
}

/// `lo–hi`, or one value when they are equal as printed.
fn span(lo: f64, hi: f64, f: impl Fn(f64) -> String) -> String {
    let (lo, hi) = (f(lo), f(hi));
    if lo == hi {
        lo
    } else {
        format!("{lo}–{hi}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "missing".to_string(), |v| thousands(v.round() as u64))
}

/// A Markdown table with padded columns (readable in a terminal too).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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

fn proxy_us_per_request(r: &Round) -> f64 {
    r.proxy_cpu / r.wrk.requests.max(1) as f64 * 1e6
}

/// Agent CPU cores used during the load, per 10k requests/s of that load.
fn cores_per_10k(r: &Round) -> Option<f64> {
    let a = r.agent.as_ref()?;
    Some(a.cpu_load / r.wall / (r.wrk.requests_per_second / 1e4))
}

/// Agent CPU seconds (load and draining) per 10k requests.
fn cpu_per_10k_requests(r: &Round) -> Option<f64> {
    let a = r.agent.as_ref()?;
    Some(a.cpu_total / r.wrk.requests.max(1) as f64 * 1e4)
}

/// One line per round while the benchmark runs.
pub fn round_line(r: &Round) -> String {
    let mut line = format!(
        "bench: round {} (pair {}, {}{}{}): {:.0} requests/s, p50 {} ms, p99 {} ms, proxy {:.1} µs CPU/request, load {:.2}, other processes {:.2} cores",
        r.number,
        r.pair,
        r.mode.name(),
        if r.paced { ", paced" } else { "" },
        if r.tracing { ", tracing" } else { "" },
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
    line
}

struct Pair<'a> {
    number: usize,
    baseline: &'a Round,
    gatescope: &'a Round,
}

impl Pair<'_> {
    fn ratio(&self, f: impl Fn(&Round) -> f64) -> f64 {
        f(self.gatescope) / f(self.baseline)
    }
}

/// The pairs, flat-out ones first, then the paced one.
fn pairs(rounds: &[Round]) -> Vec<Pair<'_>> {
    let mut out = Vec::new();
    for r in rounds.iter().filter(|r| r.mode == Mode::Gatescope) {
        if let Some(b) = rounds
            .iter()
            .find(|b| b.mode == Mode::Baseline && b.pair == r.pair)
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
    fn of(rounds: &[Round], paced: bool) -> Option<Group> {
        let ps: Vec<Pair> = pairs(rounds)
            .into_iter()
            .filter(|p| p.gatescope.paced == paced)
            .collect();
        let with: Vec<&Round> = rounds
            .iter()
            .filter(|r| r.agent.is_some() && r.paced == paced)
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

/// `median (pairs: a, b, c)`, or just the value when there is one.
fn with_parts(values: &[f64], what: &str, f: impl Fn(f64) -> String) -> String {
    if values.len() == 1 {
        f(values[0])
    } else {
        format!("{} ({what}: {})", f(med(values)), list(values, f))
    }
}

fn cores_verdict(cores: f64) -> String {
    if cores <= MAX_CORES_PER_10K {
        format!("met ({:.1}× below)", MAX_CORES_PER_10K / cores)
    } else {
        format!(
            "**missed** by {:.3} core ({:.1}× the target)",
            cores - MAX_CORES_PER_10K,
            cores / MAX_CORES_PER_10K
        )
    }
}

/// The value and verdict cells of an "events lost" row; `elsewhere`: another row checks
/// 20k requests/s.
fn loss_cells(g: &Group, elsewhere: bool) -> (String, String) {
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
    let verdict = if lost > 0.0 && g.max_rate() >= LOSS_RATE {
        format!(
            "**missed** by {} events ({:.2}% of all)",
            thousands(lost.round() as u64),
            lost / (g.received + lost) * 100.0
        )
    } else if lost > 0.0 {
        format!(
            "**missed**: {:.2}% lost already below 20k requests/s",
            lost / (g.received + lost) * 100.0
        )
    } else if g.min_rate() >= LOSS_RATE {
        "met".into()
    } else if g.max_rate() >= LOSS_RATE {
        "met in the rounds at ≥ 20k requests/s; none lost in the others either".into()
    } else if elsewhere {
        "none lost (below 20k requests/s: the flat-out row is the check)".into()
    } else {
        format!(
            "**not checked at 20k**: the proxy reached {}; none lost",
            g.rates()
        )
    };
    (value, verdict)
}

fn summary_table(flat: &Group, paced: Option<&Group>) -> String {
    let throughput = med(&flat.throughput);
    let throughput_verdict = if throughput >= MIN_THROUGHPUT {
        format!(
            "met ({:.1} points to spare)",
            (throughput - MIN_THROUGHPUT) * 100.0
        )
    } else {
        format!(
            "**missed** by {:.1} points",
            (MIN_THROUGHPUT - throughput) * 100.0
        )
    };
    let peak_rss = paced.map_or(flat.peak_rss_mib, |p| p.peak_rss_mib.max(flat.peak_rss_mib));
    let rss_verdict = if peak_rss <= MAX_RSS_MIB {
        format!("met ({:.1} MiB below)", MAX_RSS_MIB - peak_rss)
    } else {
        format!("**missed** by {:.1} MiB", peak_rss - MAX_RSS_MIB)
    };
    let four = |v: f64| format!("{v:.4}");
    let flat_at = format!("flat out, {}", flat.rates());
    let mut rows = vec![
        vec![
            "throughput, gatescope / baseline (flat out)".into(),
            with_parts(&flat.throughput, "pairs", pct),
            "≥ 98%".into(),
            throughput_verdict,
        ],
        vec![
            "p50 latency, gatescope / baseline (flat out)".into(),
            with_parts(&flat.p50, "pairs", times),
            "none".into(),
            "—".into(),
        ],
        vec![
            "p99 latency, gatescope / baseline (flat out)".into(),
            with_parts(&flat.p99, "pairs", times),
            "none".into(),
            "—".into(),
        ],
    ];
    if let Some(p) = paced {
        rows.push(vec![
            format!(
                "p50 / p99 latency, gatescope / baseline (paced, {})",
                p.rates()
            ),
            format!(
                "{} / {}",
                with_parts(&p.p50, "pairs", times),
                with_parts(&p.p99, "pairs", times)
            ),
            "none".into(),
            "—".into(),
        ]);
    }
    rows.extend([
        vec![
            "proxy CPU per request, gatescope / baseline (flat out)".into(),
            with_parts(&flat.proxy_cpu, "pairs", times),
            "none".into(),
            "— (the in-kernel programs run in the workers' system calls)".into(),
        ],
        vec![
            "agent CPU-seconds per 10k requests (flat out, incl. draining)".into(),
            with_parts(&flat.cpu_per_10k_requests, "rounds", four),
            "none".into(),
            "—".into(),
        ],
        vec![
            format!("agent CPU cores per 10k requests/s ({flat_at})"),
            with_parts(&flat.cores_per_10k, "rounds", four),
            "≤ 0.1".into(),
            cores_verdict(med(&flat.cores_per_10k)),
        ],
    ]);
    if let Some(p) = paced {
        rows.push(vec![
            format!("agent CPU cores per 10k requests/s (paced, {})", p.rates()),
            with_parts(&p.cores_per_10k, "rounds", four),
            "≤ 0.1".into(),
            cores_verdict(med(&p.cores_per_10k)),
        ]);
    }
    rows.push(vec![
        "agent peak RSS (largest over the rounds)".into(),
        format!("{peak_rss:.1} MiB"),
        "≤ 50 MiB".into(),
        rss_verdict,
    ]);
    let (value, verdict) = loss_cells(flat, false);
    rows.push(vec![
        format!("events lost ({flat_at})"),
        value,
        "0 at ≥ 20k requests/s".into(),
        verdict,
    ]);
    if let Some(p) = paced {
        let (value, verdict) = loss_cells(p, flat.max_rate() >= LOSS_RATE);
        rows.push(vec![
            format!("events lost (paced, {})", p.rates()),
            value,
            "0 at ≥ 20k requests/s".into(),
            verdict,
        ]);
    }
    table(&["measure", "value", "target", "verdict"], &rows)
}

/// The section between the markers: how the run was made, the summary, the raw numbers.
pub fn render(info: &RunInfo, rounds: &[Round]) -> String {
    let versions: Vec<&str> = rounds
        .iter()
        .filter_map(|r| r.agent.as_ref()?.version.as_deref())
        .collect();
    let loads: Vec<f64> = rounds.iter().map(|r| r.load1).collect();
    let others: Vec<f64> = rounds.iter().map(|r| r.other_cores).collect();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        span(lo, hi, |x| format!("{x:.2}"))
    };
    let flat_pairs = rounds.iter().filter(|r| !r.paced).count() / 2;
    let mut out = String::new();
    let _ = writeln!(out, "## Latest run\n");
    let _ = writeln!(out, "- command: `{}`", info.command);
    let _ = writeln!(out, "- date: {}", info.date);
    let _ = writeln!(
        out,
        "- machine: {} CPUs ({}), Linux {}",
        info.machine.cpus, info.machine.model, info.machine.kernel
    );
    let _ = writeln!(
        out,
        "- load: load average {} before the run, {} after; 1-minute load {} before the rounds; processes outside the benchmark used {} cores during the rounds",
        loadavg_text(info.load_before),
        loadavg_text(info.load_after),
        range(&loads),
        range(&others)
    );
    let _ = writeln!(out, "- {}, {}", info.nginx, info.wrk);
    let _ = writeln!(
        out,
        "- agent: {}{}",
        info.agent,
        versions
            .first()
            .map_or_else(String::new, |v| format!(", version {v}"))
    );
    let _ = writeln!(
        out,
        "- flat out: {flat_pairs} pair(s) of rounds, {} each",
        info.load.describe()
    );
    let paced: Vec<String> = rounds
        .iter()
        .filter(|r| r.paced)
        .map(|r| format!("{}: {}", r.mode.name(), r.load.describe()))
        .collect();
    if !paced.is_empty() {
        let _ = writeln!(
            out,
            "- paced: 1 pair (baseline first), each round's connections calibrated for {} requests/s by unrecorded {} s runs just before it; {}",
            thousands(u64::from(info.paced_rate)),
            crate::bench::CALIBRATION_SECONDS,
            paced.join("; ")
        );
    }
    let disturbed: Vec<String> = rounds
        .iter()
        .filter(|r| r.foreign_agents > 0)
        .map(|r| r.number.to_string())
        .collect();
    if !disturbed.is_empty() {
        let _ = writeln!(
            out,
            "- **warning**: other gatescope agents (someone else's tests) ran during round(s) {}; their programs run in every process's system calls, baseline rounds included, so those rounds understate throughput",
            disturbed.join(", ")
        );
    }
    let _ = writeln!(out, "\n### Summary\n");
    match Group::of(rounds, false) {
        Some(flat) => out += &summary_table(&flat, Group::of(rounds, true).as_ref()),
        None => out += "No round with gatescope attached.\n",
    }
    let _ = writeln!(out, "\n### Rounds\n");
    out += &rounds_table(rounds);
    let _ = writeln!(out, "\n### Agent, per gatescope round\n");
    out += &agent_table(rounds);
    let _ = writeln!(out, "\n### Pairs\n");
    out += &pairs_table(rounds);
    out
}

/// Replaces what lies between the markers in `path`; appends the markers if the file has
/// none; creates the file (intro, then markers) if it does not exist.
pub fn write(path: &Path, section: &str) -> Result<()> {
    let block = format!("{BEGIN}\n{section}{END}\n");
    let text = match fs::read_to_string(path) {
        Ok(old) => splice(&old, &block),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("{}{block}", intro()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn splice(old: &str, block: &str) -> String {
    match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            let after = &old[e + END.len()..];
            let after = after.strip_prefix('\n').unwrap_or(after);
            format!("{}{block}{after}", &old[..b])
        }
        _ => {
            let sep = if old.is_empty() || old.ends_with("\n\n") {
                ""
            } else if old.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{old}{sep}{block}")
        }
    }
}

#[cfg(test)]
mod tests;
