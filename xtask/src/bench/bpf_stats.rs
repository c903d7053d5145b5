//! The agent's programs' own cost, from the kernel's `bpf_stats`: `run_time_ns` and
//! `run_cnt` of every program the agent holds, before and after wrk's window of a stats
//! round, per proxied request.
//!
//! The counters are read from `/proc/<agent>/fdinfo/<fd>` of the agent's `bpf-prog` fds
//! rather than from `bpftool prog show`: the fds name exactly the programs this agent
//! loaded (other agents on the machine, someone else's tests, load programs of the same
//! names), and reading them is a file read, not a process per snapshot. `bpftool` is asked
//! once per round for the programs' names and types, which fdinfo does not give.
//!
//! `kernel.bpf_stats_enabled` is on only during a stats round's window: the accounting
//! costs about 80 ns per program run (two clock reads around each run; KERNEL.md), paid in
//! the proxy's system calls, so it would distort the throughput and CPU of the rounds that
//! measure those.

use std::{collections::BTreeMap, fmt::Write as _, fs};

use anyhow::{bail, ensure, Context as _, Result};

use super::{summary, Gateway, Round};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` turned on; its previous value is written back by
/// [`Enabled::restore`], or on drop (an error or Ctrl-C in the window).
pub(crate) struct Enabled {
    previous: Option<String>,
}

impl Enabled {
    pub(crate) fn on() -> Result<Enabled> {
        let previous = fs::read_to_string(SYSCTL)
            .with_context(|| format!("reading {SYSCTL} (bpf_stats needs Linux 5.1)"))?
            .trim()
            .to_string();
        if previous != "0" {
            eprintln!(
                "xtask: warning: {SYSCTL} was already {previous} (someone else's): every round, \
                 baselines included, paid its ~80 ns per program run"
            );
        }
        fs::write(SYSCTL, "1").with_context(|| format!("writing 1 to {SYSCTL} (run as root)"))?;
        Ok(Enabled {
            previous: Some(previous),
        })
    }

    pub(crate) fn restore(mut self) -> Result<()> {
        match self.previous.take() {
            Some(previous) => fs::write(SYSCTL, &previous)
                .with_context(|| format!("writing {previous} back to {SYSCTL}")),
            None => Ok(()),
        }
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            if let Err(e) = fs::write(SYSCTL, &previous) {
                eprintln!(
                    "xtask: could not write {previous} back to {SYSCTL}: {e}; do it yourself"
                );
            }
        }
    }
}

/// One program's counters at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counters {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The counters in one `/proc/<pid>/fdinfo/<fd>` of a `bpf-prog` fd: `(prog_id, counters)`.
fn parse_fdinfo(text: &str) -> Option<(u32, Counters)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((
        u32::try_from(field("prog_id")?).ok()?,
        Counters {
            run_time_ns: field("run_time_ns")?,
            run_cnt: field("run_cnt")?,
        },
    ))
}

/// The counters of every program `pid` holds an fd of, by program id (a program behind
/// several fds once).
pub(crate) fn read(pid: u32) -> Result<BTreeMap<u32, Counters>> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry?;
        // An fd closed since the listing is not a program of the agent's any more.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf-prog" {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(text) = fs::read_to_string(&info) else {
            continue;
        };
        let (id, counters) = parse_fdinfo(&text).with_context(|| {
            format!("{info} has no prog_id, run_time_ns or run_cnt (Linux 5.1 or later)")
        })?;
        out.insert(id, counters);
    }
    ensure!(
        !out.is_empty(),
        "gatescope (pid {pid}) holds no bpf-prog fd: nothing to read bpf_stats from"
    );
    Ok(out)
}

/// One program's cost over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgCost {
    pub name: String,
    pub kind: String,
    pub runs: u64,
    pub ns: u64,
}

/// Each program's runs and run time between `start` and `end`, named by `bpftool`.
pub(crate) fn costs(
    start: &BTreeMap<u32, Counters>,
    end: &BTreeMap<u32, Counters>,
) -> Result<Vec<ProgCost>> {
    let names: BTreeMap<u32, (String, String)> = match gatescope_tests::bpftool::progs() {
        Ok(progs) => progs
            .into_iter()
            .map(|p| (p.id, (p.name, p.kind)))
            .collect(),
        Err(e) => {
            eprintln!("xtask: warning: programs named by id only: {e:#}");
            BTreeMap::new()
        }
    };
    let mut out = Vec::new();
    for (id, after) in end {
        let Some(before) = start.get(id) else {
            bail!("program {id} appeared during the window (the agent reloaded?)");
        };
        let (name, kind) = names
            .get(id)
            .cloned()
            .unwrap_or_else(|| (format!("id {id}"), "?".into()));
        out.push(ProgCost {
            name,
            kind,
            runs: after.run_cnt.saturating_sub(before.run_cnt),
            ns: after.run_time_ns.saturating_sub(before.run_time_ns),
        });
    }
    Ok(out)
}

/// Summed ns per proxied request of a stats round.
pub(crate) fn ns_per_request(r: &Round) -> Option<f64> {
    let progs = r.programs.as_ref()?;
    let ns: u64 = progs.iter().map(|p| p.ns).sum();
    Some(ns as f64 / r.wrk.requests.max(1) as f64)
}

/// Every program over `rounds` (the stats rounds of one gateway), summed by name and type.
fn by_program(rounds: &[&Round]) -> (Vec<ProgCost>, u64) {
    let mut sums: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for p in rounds.iter().filter_map(|r| r.programs.as_ref()).flatten() {
        let e = sums.entry((p.name.clone(), p.kind.clone())).or_default();
        e.0 += p.runs;
        e.1 += p.ns;
    }
    let requests = rounds.iter().map(|r| r.wrk.requests).sum();
    let progs = sums
        .into_iter()
        .map(|((name, kind), (runs, ns))| ProgCost {
            name,
            kind,
            runs,
            ns,
        })
        .collect();
    (progs, requests)
}

/// The report's programs section: one table per gateway with stats rounds.
pub(crate) fn section(stats: &[Round]) -> String {
    if stats.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n### Programs (bpf_stats)\n\n\
         Separate flat-out rounds with gatescope attached and `kernel.bpf_stats_enabled` on \
         during wrk's window only; each program's `run_time_ns` and `run_cnt` from the \
         agent's fds, deltas over the window, divided by the requests wrk completed in it. \
         The stats themselves add about 80 ns per program run to the proxy, not all of it \
         inside `run_time_ns`, so these rounds' throughput is not used elsewhere.\n",
    );
    for gateway in [
        Gateway::Nginx,
        Gateway::Haproxy,
        Gateway::NginxTls,
        Gateway::NginxH2,
    ] {
        let rounds: Vec<&Round> = stats.iter().filter(|r| r.gateway == gateway).collect();
        if rounds.is_empty() {
            continue;
        }
        let (progs, requests) = by_program(&rounds);
        let per = |v: u64| v as f64 / requests.max(1) as f64;
        let mut rows: Vec<Vec<String>> = progs
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.kind.clone(),
                    format!("{:.2}", per(p.runs)),
                    if p.runs == 0 {
                        "—".into()
                    } else {
                        format!("{:.0}", p.ns as f64 / p.runs as f64)
                    },
                    format!("{:.0}", per(p.ns)),
                ]
            })
            .collect();
        let runs: u64 = progs.iter().map(|p| p.runs).sum();
        let ns: u64 = progs.iter().map(|p| p.ns).sum();
        rows.push(vec![
            "**all programs**".into(),
            String::new(),
            format!("{:.2}", per(runs)),
            if runs == 0 {
                "—".into()
            } else {
                format!("{:.0}", ns as f64 / runs as f64)
            },
            format!("**{:.0}**", per(ns)),
        ]);
        let numbers: Vec<String> = rounds.iter().map(|r| r.number.to_string()).collect();
        let _ = write!(
            s,
            "\n{}: round(s) {}, {} requests.\n\n",
            gateway.title(),
            numbers.join(", "),
            summary::thousands(requests)
        );
        s += &summary::table(
            &[
                "program",
                "type",
                "runs per request",
                "ns per run",
                "ns per request",
            ],
            &rows,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t26\n\
                    prog_jited:\t1\nprog_tag:\t5a1d6c8a5ed2e9f0\nmemlock:\t4096\nprog_id:\t412\n\
                    run_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t0\n\
                    verified_insns:\t300\n";
        assert_eq!(
            parse_fdinfo(text),
            Some((
                412,
                Counters {
                    run_time_ns: 123_456,
                    run_cnt: 789
                }
            ))
        );
        // A map's fdinfo has no program counters.
        assert_eq!(parse_fdinfo("map_type:\t27\nmap_id:\t9\n"), None);
    }
}
