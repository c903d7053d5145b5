//! Stage 1, capture: loads the kernel programs, attaches them to their
//! tracepoints, and hands out the maps the agent reads and writes.

pub mod decode;
pub mod wire;

use std::os::fd::{AsFd, OwnedFd};

use anyhow::Context as _;
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        raw_trace_point::RawTracePointLink, tp_btf::BtfTracePointLink, trace_point::TracePointLink,
        BtfTracePoint, Program, RawTracePoint, SocketFilter, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use gatescope_common::{
    DataHeader, PtRegsArgs, SockInfo, SockOffsets, WireCounts, WireKey, COMM_LEN, DATA_TAIL_MAX,
    GLOBAL_CAPTURE_BYTES, GLOBAL_PT_REGS_ARGS, GLOBAL_SOCK_OFFSETS, GLOBAL_WAKE_CHECK_MASK,
    MAP_DISCOVER, MAP_EVENTS, MAP_LISTEN_PORTS, MAP_LISTEN_PORT_BITS, MAP_LOST, MAP_REFUSED,
    MAP_RELEASES, MAP_SOCKS, MAP_SYSCALLS, MAP_TARGETS, MAP_TARGET_BITS, MAP_WIRE, PROGRAM_WIRE,
    SYSCALL_CLEAR, SYSCALL_SPLICE, TARGET_BITS_LEN,
};
use tracing::{debug, info, warn};

use crate::error::StartError;

/// The kernel programs' object (built by agent/build.rs), shared with
/// `gatescope check`.
pub const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gatescope"));

/// Largest `--max-sockets`: the socket map is preallocated (88 bytes of kernel
/// memory per entry, measured), so this bounds it to 352 MiB; more is far
/// beyond what one gateway host holds open.
pub const MAX_SOCKETS_LIMIT: u32 = 4 << 20;

/// `--max-sockets`, checked by its value parser (cli.rs) before anything is loaded.
pub fn check_max_sockets(n: u32) -> Result<u32, StartError> {
    if (1..=MAX_SOCKETS_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(StartError::MaxSockets(n))
    }
}

/// Each program and the tracepoints it is attached to. Process tracking comes
/// first so that no worker forked (and no gateway started) during start-up is
/// missed; buffer saving (the fallback's only) before the length tracepoints
/// that read the buffers.
const PROGRAMS: &[(&str, &[(&str, &str)])] = &[
    ("sched_process_fork", &[("sched", "sched_process_fork")]),
    ("sched_process_exit", &[("sched", "sched_process_exit")]),
    ("sched_process_exec", &[("sched", "sched_process_exec")]),
    ("inet_sock_set_state", &[("sock", "inet_sock_set_state")]),
    // The fallback's syscall entry hook (ebpf/src/syscalls.rs), attached only
    // with `PayloadFrom::SyscallHook`: every syscall entry hook in one (one
    // detach at shutdown, not thirteen).
    (SYSCALL_ENTRY, &[("raw_syscalls", "sys_enter")]),
    ("tcp_retransmit_skb", &[("tcp", "tcp_retransmit_skb")]),
    ("tcp_send_reset", &[("tcp", "tcp_send_reset")]),
    ("tcp_receive_reset", &[("tcp", "tcp_receive_reset")]),
    ("sock_send_length", &[("sock", "sock_send_length")]),
    ("sock_recv_length", &[("sock", "sock_recv_length")]),
];

/// Programs with a raw tracepoint form (program, raw tracepoint), which the
/// agent attaches instead where the host allows it: a raw tracepoint runs
/// without a perf record built first, and detaches without the grace-period
/// waits a perf trace event holds the kernel's global event_mutex for
/// (perf_trace_event_unreg), one trace event after another, which is most
/// of a shutdown under load. The trace event stays the fallback.
const RAW_FORMS: &[(&str, &str, &str)] = &[
    (SYSCALL_ENTRY, SYSCALL_ENTRY_RAW, "sys_enter"),
    (
        "sched_process_exit",
        "sched_process_exit_raw",
        "sched_process_exit",
    ),
    (
        "tcp_retransmit_skb",
        "tcp_retransmit_skb_raw",
        "tcp_retransmit_skb",
    ),
    (
        "tcp_receive_reset",
        "tcp_receive_reset_raw",
        "tcp_receive_reset",
    ),
];

/// Programs with a BTF tracepoint (tp_btf) form (program, tp_btf program,
/// tracepoint), attached instead where the host allows it and BTF gave the
/// `struct sock` offsets: the classic form has the kernel build a perf
/// record for every TCP send and receive on the host before the program
/// runs; tp_btf passes the arguments as they are (ebpf/src/bytes.rs).
const BTF_FORMS: &[(&str, &str, &str)] = &[
    (
        "sock_send_length",
        "sock_send_length_btf",
        "sock_send_length",
    ),
    (
        "sock_recv_length",
        "sock_recv_length_btf",
        "sock_recv_length",
    ),
];

/// Counts bytes spliced from sockets (BTF path only).
const SPLICE_PROGRAM: &str = "tcp_rcv_space_adjust_btf";

/// The syscall entry hook's trace-event form; its raw tracepoint form is
/// [`SYSCALL_ENTRY_RAW`].
const SYSCALL_ENTRY: &str = "sys_enter";
const SYSCALL_ENTRY_RAW: &str = "sys_enter_raw";

/// Where this architecture's `struct pt_regs` keeps the syscall number and
/// the second and third arguments. On x86-64 (arch/x86/include/asm/ptrace.h:
/// r15 .. r8, ax, cx, dx, si, di, orig_ax, ip, cs, 8 bytes each) the
/// payload programs read them themselves (`from_regs`, patched in at load);
/// `cs` is `__USER_CS` (0x33) for a 64-bit syscall (measured, KERNEL.md).
#[cfg(target_arch = "x86_64")]
const PT_REGS_ARGS: PtRegsArgs = PtRegsArgs {
    enabled: 1,
    arg1: 13 * 8,
    arg2: 12 * 8,
    nr: 15 * 8,
    mode: 17 * 8,
    mode_value: 0x33,
    ..PtRegsArgs::NONE
};
/// arm64 (arch/arm64/include/asm/ptrace.h): regs[1] and regs[2]. Reading
/// the registers from the payload programs is not verified on arm64 (its
/// compat check is a pstate bit, not a value), so there only the syscall
/// hook gives buffers.
#[cfg(target_arch = "aarch64")]
const PT_REGS_ARGS: PtRegsArgs = PtRegsArgs {
    enabled: 1,
    arg1: 8,
    arg2: 16,
    ..PtRegsArgs::NONE
};
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const PT_REGS_ARGS: PtRegsArgs = PtRegsArgs::NONE;
/// Whether the payload programs can read the saved registers on this
/// architecture.
const REGS_KNOWN: bool = cfg!(target_arch = "x86_64");

/// Where the payload programs find a transfer's buffer (`--payload-from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadFrom {
    /// The saved registers where the host allows it, else the syscall hook.
    Auto,
    /// The saved registers of the syscall in progress, read in
    /// `sock_send_length`/`sock_recv_length`: no syscall hook at all.
    Regs,
    /// A `sys_enter` hook saving every send/recv-family buffer: costs every
    /// syscall of every process on the host (see BENCHMARKS.md).
    SyscallHook,
}

/// What [`Capture::load`] loads and how.
#[derive(Clone, Debug)]
pub struct CaptureConfig<'a> {
    /// Ring buffer size (`--ring-buffer-bytes`): a power of two, at least 4096.
    pub ring_buffer_bytes: u32,
    /// Head capture per transfer (`--capture-bytes`), at most `DATA_HEAD_MAX`.
    pub capture_bytes: u32,
    /// Capacity of the socket map (`--max-sockets`).
    pub max_sockets: u32,
    /// `struct sock` offsets from BTF (`enabled == 0` without BTF).
    pub sock_offsets: SockOffsets,
    /// Command names (`--discover`) whose execs become targets.
    pub discover: &'a [String],
    /// Lets the programs in [`RAW_FORMS`] use their raw tracepoint form.
    pub raw_tracepoints: bool,
    /// `--payload-from`.
    pub payload_from: PayloadFrom,
}

/// One attachment; dropping it detaches the program.
enum Link {
    TraceEvent(
        #[expect(dead_code, reason = "held only to be dropped, which detaches")] TracePointLink,
    ),
    Raw(#[expect(dead_code, reason = "held only to be dropped, which detaches")] RawTracePointLink),
    Btf(#[expect(dead_code, reason = "held only to be dropped, which detaches")] BtfTracePointLink),
}

/// The loaded programs; dropping it detaches them all.
pub struct Capture {
    ebpf: Ebpf,
    /// Every attachment, owned here so that each can be detached on its own.
    links: Vec<Link>,
    pub programs_attached: usize,
}

/// The target processes (and threads) in the kernel: TARGETS and the
/// TARGET_BITS slots the programs check first (common's MAP_TARGET_BITS).
pub struct TargetMap {
    map: HashMap<MapData, u32, u32>,
    bits: Array<MapData, u8>,
}

impl TargetMap {
    /// Adds `id`, its slot first so that no program misses it; false when
    /// TARGETS is full.
    pub fn insert(&mut self, id: u32) -> bool {
        // Without its slot the programs would never look `id` up: a failed
        // slot write is a failed insert.
        self.bits.set(id & (TARGET_BITS_LEN - 1), 1, 0).is_ok() && self.map.insert(id, 1, 0).is_ok()
    }

    /// Removes `id` (its slot stays: others may share it).
    pub fn remove(&mut self, id: u32) {
        let _ = self.map.remove(&id);
    }

    /// Every id in TARGETS.
    pub fn ids(&self) -> Vec<u32> {
        self.map.keys().filter_map(Result::ok).collect()
    }
}

/// The gateway's listening ports in the kernel: LISTEN_PORTS (port -> when
/// the kernel added it, 0 when the agent did) and the LISTEN_PORT_BITS slots
/// mirroring it for the wire view.
pub struct ListenPorts {
    map: HashMap<MapData, u16, u64>,
    bits: Array<MapData, u8>,
}

impl ListenPorts {
    /// Every port held.
    pub fn ports(&self) -> Vec<u16> {
        self.map.keys().filter_map(Result::ok).collect()
    }

    /// When the kernel added `port` (0: the agent did); `None` if absent.
    pub fn added(&self, port: u16) -> Option<u64> {
        self.map.get(&port, 0).ok()
    }

    /// Holds `port` (stamp 0: the agent's); false when the map is full.
    pub fn insert(&mut self, port: u16) -> bool {
        let held = self.map.insert(port, 0, 0).is_ok();
        if held {
            // A failed slot write only hides the port from the wire view.
            let _ = self.bits.set(u32::from(port), 1, 0);
        }
        held
    }

    /// Gives `port` up.
    pub fn remove(&mut self, port: u16) {
        let _ = self.map.remove(&port);
        let _ = self.bits.set(u32::from(port), 0, 0);
    }
}

/// The maps the agent works with, taken out of the loaded object.
pub struct Maps {
    pub targets: TargetMap,
    pub listen_ports: ListenPorts,
    pub lost: PerCpuArray<MapData, u64>,
    /// Client connections the kernel could not track, counted as accepted.
    pub refused: PerCpuArray<MapData, u64>,
    /// The kernel's tracked sockets: read only to recover from lost closes.
    pub socks: HashMap<MapData, u64, SockInfo>,
    /// Bumped after removing `socks` entries (see [`Maps::released`]).
    pub releases: Array<MapData, u32>,
    /// The wire view's counters (socket filter `wire`).
    pub wire: PerCpuHashMap<MapData, WireKey, WireCounts>,
    /// The loaded `wire` socket filter, for the taps to attach; `None` when
    /// this host does not load socket filters.
    pub wire_program: Option<OwnedFd>,
}

impl Maps {
    /// Tells the length programs that `socks` entries were removed: their
    /// per-socket record that a socket is tracked is stale, so each socket
    /// is looked up, and claimed again if it must be, at its next transfer
    /// (ebpf/src/bytes.rs).
    pub fn released(&mut self) {
        let now = self.releases.get(&0, 0).unwrap_or(0);
        // A failure leaves stale records trusted: the sockets' bytes stay
        // untracked until they close, as without the fast path.
        let _ = self.releases.set(0, now.wrapping_add(1), 0);
    }
}

impl Capture {
    /// Detaches every attachment, all at once, then unloads the programs.
    /// Each tracepoint detach waits for an RCU grace period in the kernel;
    /// one after another, our two dozen attachments took more than two
    /// seconds under load. Concurrent waits overlap, so each link is dropped
    /// on its own thread.
    pub fn detach(mut self) {
        let links = std::mem::take(&mut self.links);
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
        let programs: Vec<&mut Program> = self.ebpf.programs_mut().map(|(_, p)| p).collect();
        std::thread::scope(|scope| {
            for program in programs {
                scope.spawn(move || {
                    let _ = match program {
                        Program::TracePoint(p) => p.unload(),
                        Program::UProbe(p) => p.unload(),
                        Program::RawTracePoint(p) => p.unload(),
                        Program::BtfTracePoint(p) => p.unload(),
                        Program::SocketFilter(p) => p.unload(),
                        _ => Ok(()),
                    };
                });
            }
        });
    }

    /// Loads and attaches everything as `config` says; returns the
    /// programs' owner, the maps the pipeline maintains, and the ring buffer
    /// it reads. Logs the hooks it chose. With `PayloadFrom::Auto`, a
    /// failure to load or attach with the saved registers falls back to the
    /// syscall hook (said in a warning).
    pub fn load(
        config: &CaptureConfig<'_>,
    ) -> Result<(Capture, Maps, RingBuf<MapData>), StartError> {
        match config.payload_from {
            PayloadFrom::Regs => Self::load_as(config, true),
            PayloadFrom::SyscallHook => Self::load_as(config, false),
            PayloadFrom::Auto if !REGS_KNOWN => {
                info!("payload buffers from the syscall hook: no register layout for this CPU");
                Self::load_as(config, false)
            }
            PayloadFrom::Auto => Self::load_as(config, true).or_else(|e| {
                warn!(
                    "payload buffers from the saved registers failed ({:#}); falling back to \
                     the syscall hook, which costs every syscall of the host",
                    anyhow::Error::from(e)
                );
                Self::load_as(config, false)
            }),
        }
    }

    fn load_as(
        config: &CaptureConfig<'_>,
        from_regs: bool,
    ) -> Result<(Capture, Maps, RingBuf<MapData>), StartError> {
        let &CaptureConfig {
            ring_buffer_bytes,
            capture_bytes,
            max_sockets,
            ref sock_offsets,
            discover,
            raw_tracepoints,
            payload_from: _,
        } = config;
        let regs = PtRegsArgs {
            from_regs: u32::from(from_regs),
            ..PT_REGS_ARGS
        };
        let wake_mask = wake_check_mask(ring_buffer_bytes, capture_bytes, possible_cpus());
        // The sizes were checked by the command line's value parsers (cli.rs).
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_EVENTS, ring_buffer_bytes)
            .map_max_entries(MAP_SOCKS, max_sockets)
            .override_global(GLOBAL_CAPTURE_BYTES, &capture_bytes, true)
            .override_global(GLOBAL_SOCK_OFFSETS, sock_offsets, true)
            .override_global(GLOBAL_PT_REGS_ARGS, &regs, true)
            .override_global(GLOBAL_WAKE_CHECK_MASK, &wake_mask, true)
            .load(OBJECT)
            .map_err(StartError::Load)?;
        fill_syscalls(&mut ebpf)?;

        // The names are in place before the exec program attaches; a gateway
        // started before that is found by the agent's /proc scan, which runs
        // after it (kernel_targets.rs).
        let mut names: HashMap<_, [u8; COMM_LEN], u32> = HashMap::try_from(
            ebpf.map_mut(MAP_DISCOVER)
                .ok_or_else(|| StartError::MapMissing(MAP_DISCOVER.into()))?,
        )
        .map_err(|source| map_err(MAP_DISCOVER, source))?;
        for name in discover {
            names
                .insert(comm_key(name), 1, 0)
                .map_err(|source| map_err(MAP_DISCOVER, source))?;
        }

        if !raw_tracepoints {
            info!(
                "raw tracepoints off (--raw-tracepoints=false): every program on its trace event"
            );
        }
        let mut attached = 0;
        let mut links = Vec::new();
        // Which programs run on raw tracepoints and which on trace events,
        // for the start-up line.
        let mut on_raw = Vec::new();
        let mut on_trace_events = Vec::new();
        // BTF for the tp_btf forms; they need the `struct sock` offsets too.
        let btf = (raw_tracepoints && sock_offsets.enabled != 0)
            .then(|| {
                Btf::from_sys_fs()
                    .map_err(|e| warn!("no kernel BTF for tp_btf programs ({e}); trace events"))
                    .ok()
            })
            .flatten();
        for &(program, tracepoints) in PROGRAMS {
            if program == SYSCALL_ENTRY && from_regs {
                continue;
            }
            let attach_err = |(category, name): (&str, &str), source| StartError::Attach {
                program: program.into(),
                category: category.into(),
                name: name.into(),
                source: Box::new(source),
            };
            // The cheaper form where it exists and loads: a BTF tracepoint,
            // else a raw tracepoint; the trace event below otherwise.
            let btf_form = BTF_FORMS
                .iter()
                .find(|(p, _, _)| *p == program)
                .zip(btf.as_ref());
            let raw_form = RAW_FORMS
                .iter()
                .find(|(p, _, _)| *p == program)
                .filter(|_| raw_tracepoints);
            let fast = if let Some(&(&(_, prog, tp_name), btf)) = btf_form.as_ref() {
                let link = attach_btf(&mut ebpf, prog, tp_name, btf).map(Link::Btf);
                Some((
                    link,
                    "BTF",
                    tp_name,
                    "builds a perf record for every TCP transfer on the host",
                ))
            } else if let Some(&(_, raw, tp_name)) = raw_form {
                let link = attach_raw(&mut ebpf, raw, tp_name).map(Link::Raw);
                Some((link, "raw", tp_name, "costs more per run and at shutdown"))
            } else {
                None
            };
            match fast {
                Some((Ok(link), kind, tp_name, _)) => {
                    info!(program, "attached as the {kind} tracepoint {tp_name}");
                    links.push(link);
                    on_raw.push(program);
                    attached += 1;
                    continue;
                }
                Some((Err(reason), kind, tp_name, cost)) => warn!(
                    program,
                    "the {kind} tracepoint {tp_name} is not available ({reason:#}); using the \
                     trace event, which {cost}"
                ),
                None => {}
            }
            let first = tracepoints[0];
            let tracepoint: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| StartError::ProgramMissing {
                    program: program.into(),
                    category: first.0.into(),
                    name: first.1.into(),
                })?
                .try_into()
                .map_err(|e| attach_err(first, e))?;
            tracepoint.load().map_err(|e| attach_err(first, e))?;
            for &(category, name) in tracepoints {
                let id = tracepoint
                    .attach(category, name)
                    .map_err(|e| attach_err((category, name), e))?;
                let link = tracepoint
                    .take_link(id)
                    .map_err(|e| attach_err((category, name), e))?;
                links.push(Link::TraceEvent(link));
                debug!(program, "attached to {category}:{name}");
            }
            on_trace_events.push(program);
            attached += 1;
        }

        // Bytes spliced from a socket pass no length tracepoint; counting them
        // needs the BTF path's per-socket records (ebpf/src/splice.rs).
        let splice = match &btf {
            Some(btf) if on_raw.contains(&"sock_recv_length") => {
                match attach_btf(&mut ebpf, SPLICE_PROGRAM, "tcp_rcv_space_adjust", btf) {
                    Ok(link) => {
                        links.push(Link::Btf(link));
                        attached += 1;
                        true
                    }
                    Err(reason) => {
                        warn!("bytes spliced from sockets are not counted: {reason:#}");
                        false
                    }
                }
            }
            _ => false,
        };

        // The socket filter is only loaded here; the wire view's taps
        // attach it to their own packet sockets (capture/wire.rs). It is
        // optional: without it the agent runs without the wire view.
        let wire_program = load_wire(&mut ebpf)
            .map_err(|reason| warn!("wire view off: the socket filter does not load: {reason:#}"))
            .ok();
        info!(
            "{}",
            hooks_line(
                from_regs,
                splice,
                &on_raw,
                &on_trace_events,
                wire_program.is_some()
            )
        );

        let events = take(&mut ebpf, MAP_EVENTS)?;
        let maps = Maps {
            targets: TargetMap {
                map: take(&mut ebpf, MAP_TARGETS)?,
                bits: take(&mut ebpf, MAP_TARGET_BITS)?,
            },
            listen_ports: ListenPorts {
                map: take(&mut ebpf, MAP_LISTEN_PORTS)?,
                bits: take(&mut ebpf, MAP_LISTEN_PORT_BITS)?,
            },
            lost: take(&mut ebpf, MAP_LOST)?,
            refused: take(&mut ebpf, MAP_REFUSED)?,
            socks: take(&mut ebpf, MAP_SOCKS)?,
            releases: take(&mut ebpf, MAP_RELEASES)?,
            wire: take(&mut ebpf, MAP_WIRE)?,
            wire_program,
        };
        Ok((
            Capture {
                ebpf,
                links,
                programs_attached: attached,
            },
            maps,
            events,
        ))
    }
}

/// The start-up line naming the hooks chosen: "hooks: process
/// tracking=tracepoint, ...; raw tracepoints: sched_process_exit, ...; trace
/// events: ...". Only `gatescope check` tries the hook types the agent does
/// not use.
fn hooks_line(
    from_regs: bool,
    splice: bool,
    on_raw: &[&str],
    on_trace_events: &[&str],
    wire: bool,
) -> String {
    let list = |programs: &[&str]| {
        if programs.is_empty() {
            "none".to_owned()
        } else {
            programs.join(", ")
        }
    };
    format!(
        "hooks: process tracking=tracepoint, connections=tracepoint, payload={}, spliced \
         bytes={}, wire view={}; raw/BTF tracepoints: {}; trace events: {}",
        if from_regs {
            "sock_*_length with the saved registers (no syscall hook)"
        } else {
            "syscall hook sys_enter (taxes every syscall of the host)"
        },
        if splice {
            "tcp_rcv_space_adjust"
        } else {
            "not counted"
        },
        if wire { "socket filter" } else { "off" },
        list(on_raw),
        list(on_trace_events),
    )
}

/// CPUs the kernel may run programs on (per-CPU maps have one slot each).
fn possible_cpus() -> u32 {
    aya::util::nr_cpus()
        .ok()
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
        .max(1)
}

/// The programs look at the ring's fill once per `mask + 1` records of a CPU
/// (ebpf/src/emit.rs). Between two looks all CPUs together add at most
/// `cpus * (mask + 1)` of the largest data record; that stays within an
/// eighth of the ring, so with the eighth that triggers a wake-up the ring
/// is at most a quarter full when the agent is woken. At most 256.
fn wake_check_mask(ring_bytes: u32, capture_bytes: u32, cpus: u32) -> u32 {
    let record = (size_of::<DataHeader>() + DATA_TAIL_MAX) as u32 + capture_bytes;
    let per_cpu = ring_bytes / 8 / record.max(1) / cpus.max(1);
    let every = if per_cpu == 0 {
        1
    } else {
        1 << per_cpu.ilog2()
    };
    every.min(256) - 1
}

/// This architecture's numbers of the syscalls the raw syscall hooks act
/// on, with what they do for each (`ARGS_*` / `SYSCALL_*`).
fn syscall_kinds() -> Vec<(libc::c_long, u32)> {
    use gatescope_common::{ARGS_BUF, ARGS_IOVEC, ARGS_MSGHDR};
    vec![
        (libc::SYS_read, ARGS_BUF),
        (libc::SYS_recvfrom, ARGS_BUF),
        (libc::SYS_write, ARGS_BUF),
        (libc::SYS_sendto, ARGS_BUF),
        (libc::SYS_readv, ARGS_IOVEC),
        (libc::SYS_writev, ARGS_IOVEC),
        (libc::SYS_recvmsg, ARGS_MSGHDR),
        (libc::SYS_sendmsg, ARGS_MSGHDR),
        (libc::SYS_sendfile, SYSCALL_CLEAR),
        (libc::SYS_splice, SYSCALL_SPLICE),
        (libc::SYS_sendmmsg, SYSCALL_CLEAR),
        (libc::SYS_recvmmsg, SYSCALL_CLEAR),
        (libc::SYS_io_uring_enter, SYSCALL_CLEAR),
    ]
}

/// Fills SYSCALLS before anything attaches.
fn fill_syscalls(ebpf: &mut Ebpf) -> Result<(), StartError> {
    let map = ebpf
        .map_mut(MAP_SYSCALLS)
        .ok_or_else(|| StartError::MapMissing(MAP_SYSCALLS.into()))?;
    let mut syscalls: Array<&mut MapData, u32> =
        Array::try_from(map).map_err(|source| map_err(MAP_SYSCALLS, source))?;
    for (nr, kind) in syscall_kinds() {
        syscalls
            .set(nr as u32, kind, 0)
            .map_err(|source| map_err(&format!("{MAP_SYSCALLS}[{nr}]"), source))?;
    }
    Ok(())
}

/// `program` on the raw tracepoint `tracepoint`.
fn attach_raw(
    ebpf: &mut Ebpf,
    program: &str,
    tracepoint: &str,
) -> anyhow::Result<RawTracePointLink> {
    if program == SYSCALL_ENTRY_RAW && PT_REGS_ARGS.enabled == 0 {
        anyhow::bail!("no pt_regs layout for this architecture");
    }
    let raw: &mut RawTracePoint = ebpf
        .program_mut(program)
        .context("program missing from the object")?
        .try_into()?;
    raw.load()?;
    let link = raw
        .attach(tracepoint)
        .and_then(|id| raw.take_link(id))
        .map_err(anyhow::Error::from);
    if link.is_err() {
        // The trace event takes over; nothing of this one stays loaded.
        let _ = raw.unload();
    }
    link
}

/// `program` on the BTF tracepoint `tracepoint`.
fn attach_btf(
    ebpf: &mut Ebpf,
    program: &str,
    tracepoint: &str,
    btf: &Btf,
) -> anyhow::Result<BtfTracePointLink> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .context("program missing from the object")?
        .try_into()?;
    prog.load(tracepoint, btf)?;
    let link = prog
        .attach()
        .and_then(|id| prog.take_link(id))
        .map_err(anyhow::Error::from);
    if link.is_err() {
        // The trace event takes over; nothing of this one stays loaded.
        let _ = prog.unload();
    }
    link
}

fn load_wire(ebpf: &mut Ebpf) -> anyhow::Result<OwnedFd> {
    let filter: &mut SocketFilter = ebpf
        .program_mut(PROGRAM_WIRE)
        .context("program missing from the object")?
        .try_into()?;
    filter.load()?;
    Ok(filter.fd()?.as_fd().try_clone_to_owned()?)
}

/// `name` as the kernel holds a comm: at most 15 bytes, NUL-padded to
/// [`COMM_LEN`] (as bpf_get_current_comm writes it). Longer names are
/// refused by the command line; here they are cut as the kernel would.
pub fn comm_key(name: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let bytes = name.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, StartError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| StartError::MapMissing(name.into()))?;
    T::try_from(map).map_err(|source| map_err(name, source))
}

fn map_err(name: &str, source: aya::maps::MapError) -> StartError {
    StartError::Map {
        name: name.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_sockets_range() {
        assert_eq!(check_max_sockets(1).unwrap(), 1);
        assert_eq!(
            check_max_sockets(gatescope_common::SOCKS_MAX).unwrap(),
            gatescope_common::SOCKS_MAX
        );
        assert_eq!(
            check_max_sockets(MAX_SOCKETS_LIMIT).unwrap(),
            MAX_SOCKETS_LIMIT
        );
        for bad in [0, MAX_SOCKETS_LIMIT + 1, u32::MAX] {
            let e = check_max_sockets(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("--max-sockets {bad} must be between 1 and {MAX_SOCKETS_LIMIT}")
            );
        }
    }

    #[test]
    fn start_up_line_names_the_hooks_chosen() {
        assert_eq!(
            hooks_line(
                true,
                true,
                &["sched_process_exit", "tcp_retransmit_skb"],
                &["sched_process_fork"],
                true
            ),
            "hooks: process tracking=tracepoint, connections=tracepoint, payload=sock_*_length \
             with the saved registers (no syscall hook), spliced bytes=tcp_rcv_space_adjust, \
             wire view=socket filter; raw/BTF \
             tracepoints: sched_process_exit, tcp_retransmit_skb; trace events: \
             sched_process_fork"
        );
        assert_eq!(
            hooks_line(false, false, &[], &["sys_enter"], false),
            "hooks: process tracking=tracepoint, connections=tracepoint, payload=syscall hook \
             sys_enter (taxes every syscall of the host), spliced bytes=not counted, wire \
             view=off; raw/BTF tracepoints: none; trace events: sys_enter"
        );
    }

    #[test]
    fn ring_fill_is_looked_at_often_enough() {
        // Default ring (4 MiB) and capture (1 KiB), 2 CPUs: records up to
        // 1144 bytes, an eighth of the ring is 229 of them per CPU.
        assert_eq!(wake_check_mask(4 << 20, 1024, 2), 127);
        assert_eq!(wake_check_mask(1 << 30, 64, 1), 255, "at most 256");
        assert_eq!(
            wake_check_mask(4096, 4096, 64),
            0,
            "a tiny ring: every record"
        );
        for (ring, cap, cpus) in [(4 << 20, 4096, 2), (1 << 20, 1024, 16), (64 << 20, 512, 96)] {
            let every = wake_check_mask(ring, cap, cpus) + 1;
            assert!(every.is_power_of_two());
            let record = (size_of::<DataHeader>() + DATA_TAIL_MAX) as u32 + cap;
            assert!(
                every == 1 || cpus * every * record <= ring / 8,
                "{ring} {cap} {cpus}"
            );
        }
    }

    #[test]
    fn comm_keys_are_nul_padded() {
        let key = comm_key("nginx");
        assert_eq!(&key[..6], b"nginx\0");
        assert!(key[5..].iter().all(|&b| b == 0));
        let key = comm_key("fifteen-bytes-x");
        assert_eq!(&key[..15], b"fifteen-bytes-x");
        assert_eq!(key[15], 0);
    }
}
