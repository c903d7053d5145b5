//! `gatescope check`: what this host allows, found by trying it. Loads the
//! agent's own object, loads and attaches one program of each hook type (each
//! attach is detached again at once), prints a table, says what gatescope
//! uses for each job, and exits non-zero when the core cannot run.
//!
//! The agent runs the hook part of the same probe at start ([`log_hooks`]) to
//! log its choice per job. The tracepoint path is complete on its own; the
//! other hook types are optional accelerators or later features.

use std::{
    error::Error,
    fmt::Write as _,
    fs, io,
    net::UdpSocket,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use aya::{
    programs::{
        uprobe::UProbeScope, BtfTracePoint, FEntry, KProbe, Program, ProgramError, RawTracePoint,
        SocketFilter, TracePoint, UProbe,
    },
    Btf, Ebpf, EbpfError, EbpfLoader,
};
use gatescope_common::{EVENTS_DEFAULT_BYTES, MAP_EVENTS};
use tracing::{debug, info};

use crate::{
    capture::OBJECT,
    identity,
    preflight::{self, TRACEFS},
};
const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities shown, in the order shown.
const SHOWN_CAPS: [(u32, &str); 4] = [
    (CAP_BPF, "CAP_BPF"),
    (CAP_PERFMON, "CAP_PERFMON"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    (CAP_NET_RAW, "CAP_NET_RAW"),
];

/// A kind of eBPF hook, each tried with one program of the object.
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

    /// What the agent does not already prove by attaching its tracepoints.
    pub const OPTIONAL: [Hook; 6] = [
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
    fn program(self) -> &'static str {
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

    fn cell(&self) -> &'static str {
        match self {
            Outcome::Yes => "yes",
            Outcome::No(_) => "no",
            Outcome::NotTried => "-",
        }
    }

    fn from_result(r: Result<(), String>) -> Self {
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
    fn note(&self) -> Option<String> {
        match (&self.loads, &self.attaches) {
            (Outcome::No(r), _) => Some(format!("load: {r}")),
            (_, Outcome::No(r)) => Some(format!("attach: {r}")),
            _ => None,
        }
    }

    /// The short reason for the start-up log line.
    fn short_reason(&self) -> String {
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
    fn has_cap(&self, cap: u32) -> bool {
        self.caps & (1u64 << cap) != 0
    }

    fn hook(&self, hook: Hook) -> Option<&HookResult> {
        self.hooks.iter().find(|h| h.hook == hook)
    }

    fn works(&self, hook: Hook) -> bool {
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
        let later = |hook: Hook, what: &str| {
            let here = match self.hook(hook) {
                Some(h) if h.works() => "available here".to_owned(),
                Some(h) => format!("unavailable here: {}", h.short_reason()),
                None => "not probed".to_owned(),
            };
            format!("{what}, later: {here}")
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
                core("sock:inet_sock_set_state, syscalls:sys_exit_accept4/accept"),
            ),
            (
                "bytes and payload",
                core("syscalls:sys_enter_read/write/..., sock:sock_send_length/recv_length"),
            ),
            ("TLS", later(Hook::Uprobe, "uprobes on OpenSSL")),
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

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `gatescope check`: probe, print, exit 0 only when the core can run.
pub fn run() -> ExitCode {
    let report = probe_host();
    print!("{}", report.render());
    match report.verdict() {
        Ok(()) => ExitCode::SUCCESS,
        Err(reasons) => {
            eprintln!("error: the core cannot run here: {}", reasons.join("; "));
            ExitCode::FAILURE
        }
    }
}

/// Tries everything, in the order a user would want to fix it.
pub fn probe_host() -> Report {
    let caps = effective_caps(&fs::read_to_string("/proc/self/status").unwrap_or_default());
    let btf = if Path::new(BTF_PATH).exists() {
        Ok(())
    } else {
        Err(format!("{BTF_PATH} does not exist"))
    };
    let tracefs = ensure_tracefs();
    let loaded = EbpfLoader::new()
        .map_max_entries(MAP_EVENTS, EVENTS_DEFAULT_BYTES)
        .load(OBJECT);
    let (ring_buffer, hooks) = match loaded {
        Ok(mut ebpf) => {
            let ring_buffer = match ebpf.map(MAP_EVENTS) {
                Some(aya::maps::Map::RingBuf(_)) => Outcome::Yes,
                Some(_) => Outcome::No(format!("{MAP_EVENTS} is not a ring buffer")),
                None => Outcome::No(format!("{MAP_EVENTS} missing from the object")),
            };
            let hooks = probe_hooks(&mut ebpf, &Hook::ALL, Detach::Now);
            (ring_buffer, hooks)
        }
        Err(e) => {
            let why = format!("the object did not load: {}", ebpf_reason(&e));
            let hooks = Hook::ALL
                .iter()
                .map(|&hook| HookResult {
                    hook,
                    loads: Outcome::No("the object did not load (see ring buffer)".into()),
                    attaches: Outcome::NotTried,
                })
                .collect();
            (Outcome::No(why), hooks)
        }
    };
    Report {
        kernel: identity::kernel_release(),
        caps,
        btf,
        tracefs,
        ring_buffer,
        hooks,
    }
}

/// At agent start: which optional hook types work here, tried on the
/// agent's loaded object, logged as the choice per job. Never fails.
pub fn log_hooks(ebpf: &mut Ebpf) {
    let started = Instant::now();
    let hooks = probe_hooks(ebpf, &Hook::OPTIONAL, Detach::InBackground);
    debug!(elapsed = ?started.elapsed(), "hook probe done");
    info!("{}", hooks_line(&hooks));
}

/// "hooks: process tracking=tracepoint, ...; fentry unavailable (EPERM), ..."
pub fn hooks_line(hooks: &[HookResult]) -> String {
    let wire = match hooks.iter().find(|h| h.hook == Hook::SocketFilter) {
        Some(h) if h.works() => "socket filter",
        Some(_) => "off",
        None => "not probed",
    };
    let optional = hooks
        .iter()
        .filter(|h| h.hook != Hook::SocketFilter)
        .map(|h| {
            let name = match h.hook {
                Hook::Tracepoint => "tracepoints",
                Hook::RawTracepoint => "raw tracepoints",
                Hook::BtfTracepoint => "BTF tracepoints",
                Hook::Fentry => "fentry",
                Hook::Kprobe => "kprobes",
                Hook::Uprobe => "uprobes",
                Hook::SocketFilter => "socket filters",
            };
            if h.works() {
                format!("{name} available")
            } else {
                format!("{name} unavailable ({})", h.short_reason())
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "hooks: process tracking=tracepoint, connections=tracepoint, \
         payload=syscall tracepoints, wire view={wire}; {optional} (optional accelerators: \
         none used yet)"
    )
}

/// Loads and attaches one program per hook, detaching at once. The probe
/// programs are unloaded again (but for the uprobe one while its link is
/// dropped in the background); the agent's own tracepoint program is left
/// loaded (only `gatescope check`, which exits next, tries it).
fn probe_hooks(ebpf: &mut Ebpf, hooks: &[Hook], detach: Detach) -> Vec<HookResult> {
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
                    let r = probe_one(program, hook, &mut btf, detach);
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

fn probe_one(
    program: &mut Program,
    hook: Hook,
    btf: &mut Option<Result<Btf, String>>,
    detach: Detach,
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
                match detach {
                    Detach::Now => p.detach(id).map_err(|e| reason(&e)),
                    Detach::InBackground => {
                        // Unregistering a uprobe waits for the kernel's RCU
                        // grace periods (~140 ms here): off the start-up path.
                        let link = p.take_link(id).map_err(|e| reason(&e))?;
                        std::thread::spawn(move || drop(link));
                        Ok(())
                    }
                }
            },
            // A program whose link is still being dropped stays loaded (until the
            // agent exits), so the programs the agent holds are stable.
            detach == Detach::Now,
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

/// When a probe's attachment is undone: at once (`gatescope check`), or, for
/// the slow ones, on a thread of its own (agent start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detach {
    Now,
    InBackground,
}

/// Program types whose probe program can be unloaded again.
trait Unload {
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
fn try_hook<P>(
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
fn try_hook_with<P>(
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
pub fn libc_path(maps: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            name.starts_with("libc.so") || (name.starts_with("libc-") && name.ends_with(".so"))
        })
        .map(PathBuf::from)
}

/// The effective capability set from /proc/self/status.
pub fn effective_caps(proc_status: &str) -> u64 {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Mounted already, or mounted now (as the agent does), or why not.
fn ensure_tracefs() -> Tracefs {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if tracefs_mounted(&mounts) || Path::new(TRACEFS).join("events").is_dir() {
        return Tracefs::Mounted;
    }
    match preflight::mount_tracefs() {
        Ok(()) => Tracefs::MountedNow,
        Err(e) => Tracefs::Unavailable(format!("mounting it failed: {}", errno(&e))),
    }
}

/// Whether /proc/self/mounts lists tracefs at /sys/kernel/tracing.
pub fn tracefs_mounted(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, at, fstype) = (f.next(), f.next(), f.next());
        at == Some(TRACEFS) && fstype == Some("tracefs")
    })
}

/// A load or attach error, short: the BPF_PROG_LOAD errno without the
/// verifier log, or aya's message chain with errno names.
fn reason(e: &ProgramError) -> String {
    if let ProgramError::LoadError { io_error, .. } = e {
        return format!("BPF_PROG_LOAD returned {}", errno(io_error));
    }
    chain(e)
}

fn ebpf_reason(e: &EbpfError) -> String {
    chain(e)
}

/// An error and its sources, each once, io errors written with their errno
/// name (`EPERM (Operation not permitted)`).
fn chain(e: &(dyn Error + 'static)) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn all_caps() -> u64 {
        (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_RAW)
    }

    fn result(hook: Hook, loads: Outcome, attaches: Outcome) -> HookResult {
        HookResult {
            hook,
            loads,
            attaches,
        }
    }

    /// What our CI machines give (../shared/KERNEL.md).
    fn this_machine() -> Report {
        let yes = |hook| result(hook, Outcome::Yes, Outcome::Yes);
        Report {
            kernel: "6.18.0".into(),
            caps: all_caps(),
            btf: Ok(()),
            tracefs: Tracefs::Mounted,
            ring_buffer: Outcome::Yes,
            hooks: vec![
                yes(Hook::Tracepoint),
                yes(Hook::RawTracepoint),
                yes(Hook::BtfTracepoint),
                result(
                    Hook::Fentry,
                    Outcome::No("BPF_PROG_LOAD returned EPERM (Operation not permitted)".into()),
                    Outcome::NotTried,
                ),
                result(
                    Hook::Kprobe,
                    Outcome::Yes,
                    Outcome::No(format!("not built into this kernel (no {KPROBE_PMU})")),
                ),
                yes(Hook::Uprobe),
                yes(Hook::SocketFilter),
            ],
        }
    }

    /// The row of `program` in a rendered table, split at the header's columns.
    fn row<'a>(table: &'a str, program: &str) -> Vec<&'a str> {
        let header = table
            .lines()
            .find(|l| l.starts_with("program type"))
            .expect("header");
        let cols: Vec<usize> = ["hook", "loads", "attaches", "note"]
            .iter()
            .map(|c| header.find(c).expect("column"))
            .collect();
        let line = table
            .lines()
            .find(|l| l.get(..cols[0]).map(str::trim_end) == Some(program))
            .unwrap_or_else(|| panic!("no row {program} in\n{table}"));
        let mut cells = vec![line[..cols[0]].trim()];
        for (i, &start) in cols.iter().enumerate() {
            let end = cols
                .get(i + 1)
                .copied()
                .unwrap_or(line.len())
                .min(line.len());
            cells.push(line.get(start..end).unwrap_or("").trim());
        }
        cells
    }

    #[test]
    fn renders_every_program_type_with_its_verdicts() {
        let table = this_machine().render();
        for hook in Hook::ALL {
            row(&table, hook.name());
        }
        assert_eq!(
            row(&table, "tracepoint"),
            ["tracepoint", "sched:sched_process_fork", "yes", "yes", ""]
        );
        assert_eq!(
            row(&table, "fentry"),
            [
                "fentry",
                "tcp_sendmsg",
                "no",
                "-",
                "load: BPF_PROG_LOAD returned EPERM (Operation not permitted)"
            ]
        );
        let kprobe = row(&table, "kprobe");
        assert_eq!(kprobe[2..4], ["yes", "no"]);
        assert!(kprobe[4].starts_with("attach: not built into this kernel"));
        assert_eq!(row(&table, "uprobe")[2..4], ["yes", "yes"]);
        assert_eq!(row(&table, "socket filter")[2..4], ["yes", "yes"]);
        assert!(table.contains(
            "capabilities    CAP_BPF yes, CAP_PERFMON yes, CAP_SYS_ADMIN yes, CAP_NET_RAW yes"
        ));
        assert!(table.contains("tracefs         mounted at /sys/kernel/tracing"));
        assert!(table.contains("process tracking      tracepoints (sched:sched_process_fork"));
        assert!(table.contains("TLS                   uprobes on OpenSSL, later: available here"));
        assert!(table.ends_with(
            "verdict: the core can run here (capabilities, tracefs, tracepoints, ring buffer)\n"
        ));
    }

    #[test]
    fn the_core_needs_capabilities_tracefs_tracepoints_and_a_ring_buffer() {
        assert_eq!(this_machine().verdict(), Ok(()));

        let mut r = this_machine();
        r.caps = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert_eq!(r.verdict(), Ok(()), "CAP_BPF + CAP_PERFMON suffice");
        r.caps = 1 << CAP_SYS_ADMIN;
        assert_eq!(r.verdict(), Ok(()), "CAP_SYS_ADMIN implies both");
        r.caps = 1 << CAP_BPF;
        let why = r.verdict().unwrap_err();
        assert_eq!(why.len(), 1);
        assert!(
            why[0].starts_with("missing capabilities CAP_PERFMON:"),
            "{why:?}"
        );

        let mut r = this_machine();
        r.caps = 0;
        r.tracefs = Tracefs::Unavailable("mounting it failed: EPERM".into());
        r.ring_buffer = Outcome::No("the object did not load: EPERM".into());
        r.hooks[0] = result(
            Hook::Tracepoint,
            Outcome::No("EPERM".into()),
            Outcome::NotTried,
        );
        let why = r.verdict().unwrap_err();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].starts_with("missing capabilities CAP_BPF and CAP_PERFMON"));
        assert!(why[1].starts_with("tracefs is not mounted"));
        assert!(why[2].starts_with("no ring buffer"));
        assert_eq!(why[3], "tracepoints do not attach (load: EPERM)");
        assert!(r
            .render()
            .contains("verdict: the core cannot run here: missing capabilities"));
        assert!(r
            .render()
            .contains("process tracking      nothing: tracepoints do not attach here"));

        // Optional hooks do not matter to the verdict.
        let mut r = this_machine();
        for h in &mut r.hooks[1..] {
            h.loads = Outcome::No("EPERM".into());
            h.attaches = Outcome::NotTried;
        }
        assert_eq!(r.verdict(), Ok(()));
        assert!(r
            .render()
            .contains("wire view             off: socket filters unavailable here: EPERM"));
    }

    #[test]
    fn start_up_line_names_the_choice_and_the_unavailable_accelerators() {
        let hooks = this_machine().hooks[1..].to_vec();
        assert_eq!(
            hooks_line(&hooks),
            "hooks: process tracking=tracepoint, connections=tracepoint, payload=syscall \
             tracepoints, wire view=socket filter; raw tracepoints available, BTF tracepoints \
             available, fentry unavailable (EPERM), kprobes unavailable (not built into this \
             kernel), uprobes available (optional accelerators: none used yet)"
        );
    }

    #[test]
    fn reads_caps_mounts_and_libc() {
        assert_eq!(
            effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            0x1ff_ffff_ffff
        );
        assert_eq!(effective_caps("CapEff:\t0000000000000000\n"), 0);
        assert_eq!(effective_caps(""), 0);
        assert!(tracefs_mounted(
            "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw,relatime 0 0\n"
        ));
        assert!(!tracefs_mounted(
            "tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n"
        ));
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 1 /usr/bin/gatescope
7f0000000000-7f0000028000 r--p 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libcap.so.2
7f0000100000-7f0000128000 r--p 00000000 08:01 3 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            libc_path(maps),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            libc_path("7f00-7f01 r--p 0 08:01 3 /lib/libc-2.31.so\n"),
            Some(PathBuf::from("/lib/libc-2.31.so"))
        );
        assert_eq!(libc_path("7ffd-7ffe rw-p 0 00:00 0 [stack]\n"), None);
    }

    #[test]
    fn errors_are_short_with_errno_names() {
        assert_eq!(
            errno(&io::Error::from_raw_os_error(libc::EPERM)),
            "EPERM (Operation not permitted)"
        );
        assert_eq!(
            errno(&io::Error::from_raw_os_error(libc::ENOENT)),
            "ENOENT (No such file or directory)"
        );
    }
}
