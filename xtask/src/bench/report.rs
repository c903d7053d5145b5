//! The benchmark's report as Markdown, for the terminal and for BENCHMARKS.md: how the
//! run was made, the summary (`summary`), the raw numbers (`summary/raw.rs`), and the
//! splice of it all between the markers of BENCHMARKS.md.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};

use super::{
    summary::{self, loadavg_text, raw, span, thousands},
    Gateway, Results, Round, RunInfo, CALIBRATION_SECONDS,
};

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

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
        delay = super::PACE_DELAY_MS,
        calibration = CALIBRATION_SECONDS,
    )
}

/// The section between the markers: how the run was made, the summary, the raw numbers.
pub fn render(info: &RunInfo, results: &Results) -> String {
    let rounds = &results.rounds;
    let all: Vec<&Round> = rounds.iter().chain(&results.stats).collect();
    let versions: Vec<&str> = all
        .iter()
        .filter_map(|r| r.agent.as_ref()?.version.as_deref())
        .collect();
    let loads: Vec<f64> = all.iter().map(|r| r.load1).collect();
    let others: Vec<f64> = all.iter().map(|r| r.other_cores).collect();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        span(lo, hi, |x| format!("{x:.2}"))
    };
    let flat_pairs = |gateway: Gateway| {
        rounds
            .iter()
            .filter(|r| !r.paced && r.gateway == gateway)
            .count()
            / 2
    };
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
    let _ = writeln!(
        out,
        "- {}, {}{}",
        info.nginx,
        info.wrk,
        info.haproxy
            .as_ref()
            .map_or_else(String::new, |h| format!(", {h}"))
    );
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
        "- flat out: {} pair(s) of rounds through nginx, {} through HAProxy, {} each",
        flat_pairs(Gateway::Nginx),
        flat_pairs(Gateway::Haproxy),
        info.load.describe()
    );
    if let Some(s) = results.stats.first() {
        let _ = writeln!(
            out,
            "- bpf_stats: one more round with gatescope after each flat-out pair, {}, `kernel.bpf_stats_enabled` on during its window only",
            s.load.describe()
        );
    }
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
            CALIBRATION_SECONDS,
            paced.join("; ")
        );
    }
    let disturbed: Vec<String> = all
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
    out += &summary::summary_table(results);
    let _ = writeln!(out, "\n### Rounds\n");
    out += &raw::rounds_table(&all);
    let _ = writeln!(out, "\n### Agent, per gatescope round\n");
    out += &raw::agent_table(&all);
    let _ = writeln!(out, "\n### Pairs\n");
    out += &raw::pairs_table(rounds);
    out
}

/// Replaces what lies between the markers in `path`; appends the markers if the file has
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
mod tests {
    use super::*;

    #[test]
    fn splices_between_the_markers() {
        let block = format!("{BEGIN}\nnew\n{END}\n");
        let old = format!("# B\n\nintro\n{BEGIN}\nold\n{END}\n\n## Notes\nkept\n");
        assert_eq!(
            splice(&old, &block),
            format!("# B\n\nintro\n{BEGIN}\nnew\n{END}\n\n## Notes\nkept\n")
        );
        assert_eq!(
            splice("# B\nno markers", &block),
            format!("# B\nno markers\n\n{block}")
        );
    }
}
