//! Trying each eBPF hook type: load one program of the agent's object and
//! attach it (detached again at once), and say why not when it fails.

use std::{error::Error, fs, io, net::UdpSocket, path::Path, time::Instant};

use aya::{
    programs::{
        uprobe::UProbeScope, BtfTracePoint, FEntry, KProbe, Program, ProgramError, RawTracePoint,
        SocketFilter, TracePoint, UProbe,
    },
    Btf, Ebpf, EbpfError,
};
use tracing::debug;

use super::host::libc_path;

pub(super) const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
pub(super) const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Tracepoint,
    RawTracepoint,
    BtfTracepoint,
    Fentry,
    Kprobe,
    Uprobe,
    SocketFilter,
}

impl Hook {
    pub const ALL: [Hook; 7] = [
        Hook::Tracepoint,
        Hook::RawTracepoint,
        Hook::BtfTracepoint,
        Hook::Fentry,
        Hook::Kprobe,
        Hook::Uprobe,
        Hook::SocketFilter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Tracepoint => "tracepoint",
            Hook::RawTracepoint => "raw tracepoint",
            Hook::BtfTracepoint => "BTF tracepoint",
            Hook::Fentry => "fentry",
            Hook::Kprobe => "kprobe",
            Hook::Uprobe => "uprobe",
            Hook::SocketFilter => "socket filter",
        }
    }

    /// The program of the object that is tried (ebpf/src/probe.rs, and the
    /// agent's own fork tracepoint).
    pub(super) fn program(self) -> &'static str {
        match self {
            Hook::Tracepoint => "sched_process_fork",
            Hook::RawTracepoint => "probe_raw_tp",
            Hook::BtfTracepoint => "probe_btf_tp",
            Hook::Fentry => "probe_fentry",
            Hook::Kprobe => "probe_kprobe",
            Hook::Uprobe => "probe_uprobe",
            Hook::SocketFilter => "probe_sock_filter",
        }
    }

    /// Where it is attached.
    pub fn target(self) -> &'static str {
        match self {
            Hook::Tracepoint => "sched:sched_process_fork",
            Hook::RawTracepoint => "sys_enter",
            Hook::BtfTracepoint => "sched_process_fork",
            Hook::Fentry | Hook::Kprobe => "tcp_sendmsg",
            Hook::Uprobe => "libc getpid",
            Hook::SocketFilter => "a UDP socket",
        }
    }
}

/// The result of one step (loading, or attaching).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Yes,
    No(String),
    /// Not tried, because an earlier step failed.
    NotTried,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Yes)
    }

    pub(super) fn cell(&self) -> &'static str {
        match self {
            Outcome::Yes => "yes",
            Outcome::No(_) => "no",
            Outcome::NotTried => "-",
        }
    }

    pub(super) fn from_result(r: Result<(), String>) -> Self {
        match r {
            Ok(()) => Outcome::Yes,
            Err(reason) => Outcome::No(reason),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookResult {
    pub hook: Hook,
    pub loads: Outcome,
    pub attaches: Outcome,
}

impl HookResult {
    pub fn works(&self) -> bool {
        self.loads.ok() && self.attaches.ok()
    }

    /// Why it does not work, if it does not.
    pub(super) fn note(&self) -> Option<String> {
        match (&self.loads, &self.attaches) {
            (Outcome::No(r), _) => Some(format!("load: {r}")),
            (_, Outcome::No(r)) => Some(format!("attach: {r}")),
            _ => None,
        }
    }

    /// The short reason for the start-up log line.
    pub(super) fn short_reason(&self) -> String {
        let reason = match (&self.loads, &self.attaches) {
            (Outcome::No(r), _) | (_, Outcome::No(r)) => r.as_str(),
            _ => return String::new(),
        };
        // The errno name, when the reason has one, says it best; else the
        // reason without its parenthesised detail.
        reason
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| {
                w.len() > 2
                    && w.starts_with('E')
                    && w[1..]
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            })
            .unwrap_or_else(|| reason.split(" (").next().unwrap_or(reason))
            .to_owned()
    }
}

/// Loads and attaches one program per hook, detaching at once. The probe
/// programs are unloaded again; the agent's own tracepoint program is left
/// loaded (only `gatescope check`, which exits next, tries it).
pub(super) fn probe_hooks(ebpf: &mut Ebpf, hooks: &[Hook]) -> Vec<HookResult> {
    // Parsed once, and only when a hook needs it.
    let mut btf: Option<Result<Btf, String>> = None;
    hooks
        .iter()
        .map(|&hook| {
            let (loads, attaches) = match ebpf.program_mut(hook.program()) {
                None => (
                    Outcome::No(format!(
                        "program {} missing from the object",
                        hook.program()
                    )),
                    Outcome::NotTried,
                ),
                Some(program) => {
                    let started = Instant::now();
                    let r = probe_one(program, hook, &mut btf);
                    debug!(hook = hook.name(), elapsed = ?started.elapsed(), "probed");
                    r
                }
            };
            HookResult {
                hook,
                loads,
                attaches,
            }
        })
        .collect()
}

pub(super) fn probe_one(
    program: &mut Program,
    hook: Hook,
    btf: &mut Option<Result<Btf, String>>,
) -> (Outcome, Outcome) {
    // BTF is parsed at most once per probe, only for the hooks that need it.
    let btf = move || -> Result<&Btf, String> {
        let cell = btf;
        cell.get_or_insert_with(|| {
            Btf::from_sys_fs().map_err(|e| format!("cannot read BTF: {}", chain(&e)))
        })
        .as_ref()
        .map_err(Clone::clone)
    };
    match hook {
        Hook::Tracepoint => try_hook::<TracePoint>(
            program,
            |p| p.load().map_err(|e| reason(&e)),
            |p| {
                let id = p.attach("sched", "sched_process_fork")?;
                p.detach(id)
            },
            false,
        ),
        Hook::RawTracepoint => try_hook::<RawTracePoint>(
            program,
            |p| p.load().map_err(|e| reason(&e)),
            |p| {
                let id = p.attach("sys_enter")?;
                p.detach(id)
            },
            true,
        ),
        Hook::BtfTracepoint => try_hook::<BtfTracePoint>(
            program,
            |p| p.load("sched_process_fork", btf()?).map_err(|e| reason(&e)),
            |p| {
                let id = p.attach()?;
                p.detach(id)
            },
            true,
        ),
        Hook::Fentry => try_hook::<FEntry>(
            program,
            |p| p.load("tcp_sendmsg", btf()?).map_err(|e| reason(&e)),
            |p| {
                let id = p.attach()?;
                p.detach(id)
            },
            true,
        ),
        Hook::Kprobe => try_hook_with::<KProbe>(
            program,
            |p| p.load().map_err(|e| reason(&e)),
            |p| {
                let id = p.attach("tcp_sendmsg", 0).map_err(|e| {
                    if Path::new(KPROBE_PMU).exists() {
                        reason(&e)
                    } else {
                        format!("not built into this kernel (no {KPROBE_PMU})")
                    }
                })?;
                p.detach(id).map_err(|e| reason(&e))
            },
            true,
        ),
        Hook::Uprobe => try_hook_with::<UProbe>(
            program,
            |p| p.load().map_err(|e| reason(&e)),
            |p| {
                let maps = fs::read_to_string("/proc/self/maps")
                    .map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
                let libc = libc_path(&maps).ok_or("libc is not mapped in this process")?;
                let id = p
                    .attach("getpid", &libc, UProbeScope::CallingProcess)
                    .map_err(|e| reason(&e))?;
                p.detach(id).map_err(|e| reason(&e))
            },
            true,
        ),
        Hook::SocketFilter => try_hook_with::<SocketFilter>(
            program,
            |p| p.load().map_err(|e| reason(&e)),
            |p| {
                let socket = UdpSocket::bind("127.0.0.1:0")
                    .map_err(|e| format!("cannot create a UDP socket: {}", errno(&e)))?;
                p.attach(&socket).map_err(|e| reason(&e))?;
                SocketFilter::detach(&socket).map_err(|e| reason(&e))
            },
            true,
        ),
    }
}

/// Program types whose probe program can be unloaded again.
pub(super) trait Unload {
    fn unload_now(&mut self) -> Result<(), ProgramError>;
}

macro_rules! impl_unload {
    ($($t:ty),*) => {$(
        impl Unload for $t {
            fn unload_now(&mut self) -> Result<(), ProgramError> {
                self.unload()
            }
        }
    )*};
}
impl_unload!(
    TracePoint,
    RawTracePoint,
    BtfTracePoint,
    FEntry,
    KProbe,
    UProbe,
    SocketFilter
);

/// [`try_hook_with`] for attach steps whose only errors are aya's.
pub(super) fn try_hook<P>(
    program: &mut Program,
    load: impl FnOnce(&mut P) -> Result<(), String>,
    attach: impl FnOnce(&mut P) -> Result<(), ProgramError>,
    unload: bool,
) -> (Outcome, Outcome)
where
    for<'a> &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
    P: Unload,
{
    try_hook_with(program, load, |p| attach(p).map_err(|e| reason(&e)), unload)
}

/// Loads, and if that worked attaches (and detaches); then unloads.
pub(super) fn try_hook_with<P>(
    program: &mut Program,
    load: impl FnOnce(&mut P) -> Result<(), String>,
    attach: impl FnOnce(&mut P) -> Result<(), String>,
    unload: bool,
) -> (Outcome, Outcome)
where
    for<'a> &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
    P: Unload,
{
    let p: &mut P = match program.try_into() {
        Ok(p) => p,
        Err(e) => return (Outcome::No(reason(&e)), Outcome::NotTried),
    };
    if let Err(why) = load(p) {
        return (Outcome::No(why), Outcome::NotTried);
    }
    let attaches = Outcome::from_result(attach(p));
    if unload {
        if let Err(e) = p.unload_now() {
            debug!("unloading a probe program: {}", reason(&e));
        }
    }
    (Outcome::Yes, attaches)
}

/// The C library mapped into this process, from /proc/self/maps.
/// A load or attach error, short: the BPF_PROG_LOAD errno without the
/// verifier log, or aya's message chain with errno names.
pub(super) fn reason(e: &ProgramError) -> String {
    if let ProgramError::LoadError { io_error, .. } = e {
        return format!("BPF_PROG_LOAD returned {}", errno(io_error));
    }
    chain(e)
}

pub(super) fn ebpf_reason(e: &EbpfError) -> String {
    chain(e)
}

/// An error and its sources, each once, io errors written with their errno
/// name (`EPERM (Operation not permitted)`).
pub(super) fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let part = match err.downcast_ref::<io::Error>() {
            Some(io) => errno(io),
            None => err.to_string(),
        };
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        next = err.source();
    }
    text
}

/// `EPERM (Operation not permitted)`.
pub fn errno(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return e.to_string();
    };
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::E2BIG => "E2BIG",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        524 => "ENOTSUPP",
        _ => return e.to_string(),
    };
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("{name} ({text})")
}
