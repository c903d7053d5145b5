//! What `gatescope check` found, rendered as a table, and its verdict.
//!
//! The verdict says what gatescope uses for each job here and whether the core can run.

use std::fmt::Write as _;

use gatescope_common::{EVENTS_DEFAULT_BYTES, MAP_EVENTS};

use super::hooks::{Hook, HookResult, Outcome, BTF_PATH};
use crate::preflight::TRACEFS;

pub(super) const CAP_NET_RAW: u32 = 13;
pub(super) const CAP_SYS_ADMIN: u32 = 21;
pub(super) const CAP_PERFMON: u32 = 38;
pub(super) const CAP_BPF: u32 = 39;

/// The capabilities shown, in the order shown.
pub(super) const SHOWN_CAPS: [(u32, &str); 4] = [
    (CAP_BPF, "CAP_BPF"),
    (CAP_PERFMON, "CAP_PERFMON"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    (CAP_NET_RAW, "CAP_NET_RAW"),
];

/// A kind of eBPF hook, each tried with one program of the object.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracefs {
    Mounted,
    /// Was not mounted; this run mounted it.
    MountedNow,
    Unavailable(String),
}

/// Everything `gatescope check` found.
#[derive(Clone, Debug)]
pub struct Report {
    pub kernel: String,
    /// The effective capability set (CapEff).
    pub caps: u64,
    pub btf: Result<(), String>,
    pub tracefs: Tracefs,
    pub ring_buffer: Outcome,
    pub hooks: Vec<HookResult>,
}

impl Report {
    pub(super) fn has_cap(&self, cap: u32) -> bool {
        self.caps & (1u64 << cap) != 0
    }

    pub(super) fn hook(&self, hook: Hook) -> Option<&HookResult> {
        self.hooks.iter().find(|h| h.hook == hook)
    }

    pub(super) fn works(&self, hook: Hook) -> bool {
        self.hook(hook).is_some_and(HookResult::works)
    }

    /// The capabilities the core lacks: CAP_BPF and CAP_PERFMON, unless
    /// CAP_SYS_ADMIN (which implies both) is there.
    pub fn missing_caps(&self) -> Vec<&'static str> {
        if self.has_cap(CAP_SYS_ADMIN) {
            return Vec::new();
        }
        [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .into_iter()
            .filter(|&(cap, _)| !self.has_cap(cap))
            .map(|(_, name)| name)
            .collect()
    }

    /// Ok when the core (tracepoints into a ring buffer) can run, else every
    /// reason why not, the one to fix first first.
    pub fn verdict(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        let missing = self.missing_caps();
        if !missing.is_empty() {
            reasons.push(format!(
                "missing capabilities {}: gatescope needs root, or CAP_BPF and CAP_PERFMON",
                missing.join(" and ")
            ));
        }
        if let Tracefs::Unavailable(why) = &self.tracefs {
            reasons.push(format!("tracefs is not mounted at {TRACEFS} ({why})"));
        }
        if let Outcome::No(why) = &self.ring_buffer {
            reasons.push(format!("no ring buffer ({why})"));
        }
        match self.hook(Hook::Tracepoint) {
            Some(h) if h.works() => {}
            Some(h) => reasons.push(format!(
                "tracepoints do not attach{}",
                h.note().map(|n| format!(" ({n})")).unwrap_or_default()
            )),
            None => reasons.push("tracepoints were not tried".into()),
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// What gatescope uses for each job here.
    pub fn jobs(&self) -> Vec<(&'static str, String)> {
        let tracepoints = self.works(Hook::Tracepoint);
        let core = |what: &str| {
            if tracepoints {
                format!("tracepoints ({what})")
            } else {
                "nothing: tracepoints do not attach here".into()
            }
        };
        let tls = match self.hook(Hook::Uprobe) {
            Some(h) if h.works() => {
                "uprobes on OpenSSL's SSL_read/SSL_write in each libssl a target \
                                     maps (the agent's log names each file)"
                    .to_owned()
            }
            Some(h) => format!(
                "off: uprobes unavailable here ({}); TLS is counted as bytes only",
                h.short_reason()
            ),
            None => "not probed".to_owned(),
        };
        vec![
            (
                "process tracking",
                core(
                    "sched:sched_process_fork, sched:sched_process_exit, sched:sched_process_exec",
                ),
            ),
            (
                "connection lifecycle",
                core("sock:inet_sock_set_state (accepts derived, no syscall hook)"),
            ),
            (
                "bytes and payload",
                // Buffers from the saved registers by default; the
                // fallback's syscall entry hook in its cheaper form where it
                // works (ebpf/src/syscalls.rs), the trace event otherwise.
                core(
                    if self
                        .hook(Hook::RawTracepoint)
                        .is_some_and(HookResult::works)
                    {
                        "sock:sock_send_length/recv_length, buffers from the saved registers \
                         (fallback: raw tracepoint sys_enter)"
                    } else {
                        "sock:sock_send_length/recv_length, buffers from the saved registers \
                         (fallback: raw_syscalls:sys_enter)"
                    },
                ),
            ),
            ("TLS", tls),
            (
                "wire view",
                match self.hook(Hook::SocketFilter) {
                    Some(h) if h.works() => "socket filter on AF_PACKET sockets".to_owned(),
                    Some(h) => {
                        format!("off: socket filters unavailable here: {}", h.short_reason())
                    }
                    None => "not probed".to_owned(),
                },
            ),
        ]
    }

    /// The table `gatescope check` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let caps = SHOWN_CAPS
            .iter()
            .map(|&(cap, name)| format!("{name} {}", yes_no(self.has_cap(cap))))
            .collect::<Vec<_>>()
            .join(", ");
        let btf = match &self.btf {
            Ok(()) => format!("yes ({BTF_PATH})"),
            Err(why) => format!("no ({why})"),
        };
        let tracefs = match &self.tracefs {
            Tracefs::Mounted => format!("mounted at {TRACEFS}"),
            Tracefs::MountedNow => format!("was not mounted; mounted it at {TRACEFS}"),
            Tracefs::Unavailable(why) => format!("not mounted, not mountable: {why}"),
        };
        let ring_buffer = match &self.ring_buffer {
            Outcome::Yes => format!("yes ({MAP_EVENTS}, {EVENTS_DEFAULT_BYTES} bytes)"),
            Outcome::No(why) => format!("no: {why}"),
            Outcome::NotTried => "not tried".into(),
        };
        let host = [
            ("kernel", self.kernel.clone()),
            ("capabilities", caps),
            ("BTF", btf),
            ("tracefs", tracefs),
            ("ring buffer", ring_buffer),
        ];
        for (what, value) in host {
            let _ = writeln!(out, "{what:<14}  {value}");
        }

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<14}  {:<24}  {:<5}  {:<8}  note",
            "program type", "hook", "loads", "attaches"
        );
        for h in &self.hooks {
            let line = format!(
                "{:<14}  {:<24}  {:<5}  {:<8}  {}",
                h.hook.name(),
                h.hook.target(),
                h.loads.cell(),
                h.attaches.cell(),
                h.note().unwrap_or_default()
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }

        let _ = writeln!(out);
        let _ = writeln!(out, "{:<20}  gatescope uses", "job");
        for (job, uses) in self.jobs() {
            let _ = writeln!(out, "{job:<20}  {uses}");
        }

        let _ = writeln!(out);
        match self.verdict() {
            Ok(()) => {
                let _ = writeln!(
                    out,
                    "verdict: the core can run here (capabilities, tracefs, tracepoints, ring buffer)"
                );
            }
            Err(reasons) => {
                let _ = writeln!(
                    out,
                    "verdict: the core cannot run here: {}",
                    reasons.join("; ")
                );
            }
        }
        out
    }
}

pub(super) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
