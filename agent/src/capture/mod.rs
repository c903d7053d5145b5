//! Stage 1, capture: loads the kernel programs, attaches them to their
//! tracepoints, and hands out the maps the agent reads and writes.

pub mod decode;
mod globals;
pub mod join;
mod maps;
mod pieces;
pub mod tls;
pub mod wire;

pub(crate) use globals::possible_cpus;
pub use globals::PayloadFrom;
use globals::{wake_check_mask, PT_REGS_ARGS, REGS_KNOWN};
pub use maps::{ListenPorts, Maps, TargetMap};

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::Context as _;
use aya::{
    maps::{Array, HashMap, MapData, RingBuf},
    programs::{
        raw_trace_point::RawTracePointLink, tp_btf::BtfTracePointLink, trace_point::TracePointLink,
        uprobe::UProbeLink, BtfTracePoint, Program, RawTracePoint, SocketFilter, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use gatescope_common::{
    PtRegsArgs, SockOffsets, COMM_LEN, GLOBAL_CAPTURE_BYTES, GLOBAL_GENAI_PEERS_ON,
    GLOBAL_PT_REGS_ARGS, GLOBAL_SOCK_OFFSETS, GLOBAL_TLS_ON, GLOBAL_WAKE_CHECK_MASK, MAP_DISCOVER,
    MAP_EVENTS, MAP_LISTEN_PORTS, MAP_LISTEN_PORT_BITS, MAP_LOST, MAP_PIECES, MAP_REFUSED,
    MAP_RELEASES, MAP_SCRATCH, MAP_SOCKS, MAP_SYSCALLS, MAP_TARGETS, MAP_TARGET_BITS, MAP_WIRE,
    PROGRAM_WIRE, SYSCALL_CLEAR, SYSCALL_SPLICE,
};
use tracing::{debug, info, warn};

use crate::error::StartError;

/// The kernel programs' object (built by agent/build.rs), shared with
/// `gatescope check`.
pub const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gatescope"));

/// Largest `--max-sockets`: the socket map is preallocated (96 bytes of kernel
/// memory per entry, measured), so this bounds it to 384 MiB; more is far
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
    /// `--tls`: load the OpenSSL probes (attached per library by
    /// [`tls::TlsProbes`]).
    pub tls: bool,
    /// Upstreams of named GenAI providers, captured whole (`MAP_GENAI_PEERS`).
    pub genai_peers: &'a [SocketAddr],
}

/// One attachment; dropping it detaches the program.
enum Link {
    TraceEvent(
        #[expect(dead_code, reason = "held only to be dropped, which detaches")] TracePointLink,
    ),
    Raw(#[expect(dead_code, reason = "held only to be dropped, which detaches")] RawTracePointLink),
    Btf(#[expect(dead_code, reason = "held only to be dropped, which detaches")] BtfTracePointLink),
    UProbe(#[expect(dead_code, reason = "held only to be dropped, which detaches")] UProbeLink),
}

/// The loaded programs; dropping it detaches them all.
pub struct Capture {
    ebpf: Ebpf,
    /// Every attachment, owned here so that each can be detached on its own.
    links: Vec<Link>,
    pub programs_attached: usize,
    /// The OpenSSL probes loaded (`--tls` and they passed the verifier).
    pub tls: bool,
    /// The OpenSSL probes attached somewhere (counted in `programs_attached`).
    tls_linked: std::collections::HashSet<&'static str>,
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
            tls: tls_on,
            genai_peers,
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
            .map_max_entries(MAP_SCRATCH, possible_cpus())
            .map_max_entries(MAP_PIECES, possible_cpus())
            .override_global(GLOBAL_CAPTURE_BYTES, &capture_bytes, true)
            .override_global(GLOBAL_SOCK_OFFSETS, sock_offsets, true)
            .override_global(GLOBAL_PT_REGS_ARGS, &regs, true)
            .override_global(GLOBAL_WAKE_CHECK_MASK, &wake_mask, true)
            .override_global(GLOBAL_TLS_ON, &u32::from(tls_on), true)
            .override_global(
                GLOBAL_GENAI_PEERS_ON,
                &u32::from(!genai_peers.is_empty()),
                true,
            )
            .load(OBJECT)
            .map_err(StartError::Load)?;
        fill_syscalls(&mut ebpf)?;
        maps::fill_genai_peers(&mut ebpf, genai_peers)?;

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

        // Before anything is read: a transfer on an HTTP/2 socket past its
        // head's 32 KiB or 4th iovec is otherwise cut.
        if let Err(reason) = pieces::load(&mut ebpf, btf.as_ref(), &on_raw) {
            warn!(
                "HTTP/2 transfers are captured up to 32 KiB or 4 iovecs, past which a stream's \
                 headers can be lost: the piece programs do not load ({reason:#})"
            );
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

        // The OpenSSL probes are only loaded here; they are attached per
        // library as target processes map them (tls.rs).
        let tls = tls_on && tls::load(&mut ebpf);

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
                tls,
                tls_linked: std::collections::HashSet::new(),
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
    fn comm_keys_are_nul_padded() {
        let key = comm_key("nginx");
        assert_eq!(&key[..6], b"nginx\0");
        assert!(key[5..].iter().all(|&b| b == 0));
        let key = comm_key("fifteen-bytes-x");
        assert_eq!(&key[..15], b"fifteen-bytes-x");
        assert_eq!(key[15], 0);
    }
}
