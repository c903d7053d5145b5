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

/// The hand-written head of BENCHMARKS.md (title and Method) as committed, written when
/// the file does not exist yet; the part between the markers is replaced by every run.
fn intro() -> &'static str {
    let text = include_str!("../../../BENCHMARKS.md");
    text.find(BEGIN).map_or(text, |at| &text[..at])
}

/// The section between the markers: how the run was made, the summary, the raw numbers.
pub fn render(info: &RunInfo, results: &Results) -> String {
    let rounds = &results.rounds;
    // In the order run: each stats round right after its pair.
    let mut all: Vec<&Round> = rounds.iter().chain(&results.stats).collect();
    all.sort_by_key(|r| r.number);
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
        "- flat out: {} pair(s) of rounds through nginx, {} through HAProxy, {} through nginx \
         over TLS, {} through nginx over HTTP/2 (h2load, 10 connections x 5 streams), {} each",
        flat_pairs(Gateway::Nginx),
        flat_pairs(Gateway::Haproxy),
        flat_pairs(Gateway::NginxTls),
        flat_pairs(Gateway::NginxH2),
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

    /// The Method section states the constants the code runs with.
    #[test]
    fn method_states_the_constants() {
        let method = intro();
        for needle in [
            format!(
                "wait {} ms before each request",
                super::super::PACE_DELAY_MS
            ),
            format!("unrecorded {CALIBRATION_SECONDS} s runs"),
            format!(
                "for {} s (at most `--duration`)",
                super::super::STATS_SECONDS
            ),
            format!(
                "({} million calls per timing)",
                super::super::getppid::CALLS / 1_000_000
            ),
        ] {
            assert!(
                method.contains(&needle),
                "BENCHMARKS.md's Method lacks {needle:?}"
            );
        }
    }

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
