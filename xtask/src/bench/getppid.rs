//! The host tax: getppid(2) timed in xtask's own process, a process the agent does not
//! observe, with no agent, with the agent as started by default, and with the agent on its
//! syscall-hook fallback (`--payload-from syscall-hook`) when the binary has that flag.
//! A `syscalls:*` or `raw_syscalls` program sends every task of the host down the slow
//! system call path (+66 ns per call, +164 ns with the 2026-11 `sys_enter` program;
//! KERNEL.md), which `bpf_stats` does not show; getppid does almost nothing else.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    thread,
    time::Instant,
};

use anyhow::Result;

use gatescope_tests::util::free_port;

use super::{summary, Stack, QUIET};
use crate::{stack, util};

/// getppid(2) calls per timing.
pub(super) const CALLS: u32 = 5_000_000;
/// Timings per agent mode, the modes alternating.
const REPEATS: usize = 3;
/// The agent's syscall-hook fallback, timed when its `--help` lists the flag.
const FALLBACK_FLAG: &str = "--payload-from";
const FALLBACK: &str = "--payload-from=syscall-hook";

/// One way of running (or not running) the agent while getppid is timed.
pub(crate) struct HostMode {
    pub name: String,
    /// `None`: no agent.
    pub args: Option<Vec<String>>,
    /// ns per call, one per timing.
    pub ns: Vec<f64>,
}

/// The timings, and why a mode was left out.
pub(crate) struct HostTax {
    pub modes: Vec<HostMode>,
    pub note: Option<String>,
}

impl HostTax {
    fn median(&self, i: usize) -> Option<f64> {
        let mut v = self.modes.get(i)?.ns.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    /// Each mode's median over no agent's median: `(name, ratio)`, the agent's modes.
    pub(crate) fn ratios(&self) -> Vec<(String, f64)> {
        let Some(none) = self.median(0) else {
            return Vec::new();
        };
        (1..self.modes.len())
            .filter_map(|i| Some((self.modes[i].name.clone(), self.median(i)? / none)))
            .collect()
    }
}

/// ns per getppid(2) call in this process, `CALLS` calls.
fn getppid_ns() -> f64 {
    let t = Instant::now();
    for _ in 0..CALLS {
        // SAFETY: getppid has no preconditions and cannot fail; glibc does
        // not cache it, so each call is a system call.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    t.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS)
}

/// The modes to time: no agent, the default agent (with `--agent-arg`s, as in the rounds),
/// and the fallback when `agent --help` has it (the agent before issue 10's hot path has not).
fn modes(stack: &Stack) -> (Vec<HostMode>, Option<String>) {
    let default = stack.agent_args.clone();
    let mut modes = vec![
        HostMode {
            name: "no agent".into(),
            args: None,
            ns: Vec::new(),
        },
        HostMode {
            name: "default".into(),
            args: Some(default.clone()),
            ns: Vec::new(),
        },
    ];
    let help = util::output(Command::new(&stack.agent).arg("--help")).unwrap_or_default();
    let note = if help.contains(FALLBACK_FLAG) {
        let mut args = default;
        args.push(FALLBACK.into());
        modes.push(HostMode {
            name: format!("`{FALLBACK}`"),
            args: Some(args),
            ns: Vec::new(),
        });
        None
    } else {
        Some(format!(
            "the agent's --help has no {FALLBACK_FLAG}: the syscall-hook fallback is not timed"
        ))
    };
    (modes, note)
}

impl Stack {
    /// getppid(2) under each mode, alternating, with the agent attached to the proxy.
    pub(crate) fn host_tax(&self) -> Result<HostTax> {
        let (mut modes, note) = modes(self);
        if let Some(note) = &note {
            println!("bench: getppid(2): {note}");
        }
        // One unrecorded timing first: in smoke runs the first timing of a run came out
        // 2-5× the later ones (74, 310, 115 and 706, 122, 139 ns with no agent).
        let _ = getppid_ns();
        for repeat in 1..=REPEATS {
            for (i, mode) in modes.iter_mut().enumerate() {
                util::check_interrupted()?;
                let mut agent = match &mode.args {
                    None => None,
                    Some(args) => {
                        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let (guard, _) = stack::start_gatescope(
                            &self.agent,
                            self.proxy.pid(),
                            metrics,
                            &args,
                            &self.dir.join(format!("getppid-{repeat}-{i}.gatescope.log")),
                        )?;
                        Some(guard)
                    }
                };
                thread::sleep(QUIET);
                let ns = getppid_ns();
                if let Some(guard) = agent.as_mut() {
                    stack::stop_gatescope(guard)?;
                }
                println!("bench: getppid(2), {}: {ns:.0} ns per call", mode.name);
                mode.ns.push(ns);
            }
        }
        Ok(HostTax { modes, note })
    }
}

/// The report's host tax section: each mode's timings and its ratio to no agent.
pub(crate) fn section(tax: &HostTax) -> String {
    let mut s = format!(
        "\n### Host tax\n\n\
         getppid(2) timed in xtask's own process, which the agent does not observe ({} million \
         calls per timing, after one unrecorded timing, the modes alternating, {REPEATS} timings each; the agent attached \
         to the proxy): a system call hook runs on, or slows, every system call of the \
         host.{}\n\n",
        CALLS / 1_000_000,
        tax.note
            .as_ref()
            .map_or_else(String::new, |n| format!(" Left out: {n}."))
    );
    let ratios = tax.ratios();
    let rows: Vec<Vec<String>> = tax
        .modes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let list: Vec<String> = m.ns.iter().map(|ns| format!("{ns:.0}")).collect();
            let ratio = if i == 0 {
                "—".to_string()
            } else {
                ratios
                    .iter()
                    .find(|(name, _)| *name == m.name)
                    .map_or_else(|| "—".into(), |(_, r)| format!("{r:.2}×"))
            };
            vec![m.name.clone(), list.join(", "), ratio]
        })
        .collect();
    let _ = write!(
        s,
        "{}",
        summary::table(&["agent", "ns per call", "median / no agent"], &rows)
    );
    s
}
