//! Types shared by the kernel programs (`gatescope-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` plain integers with explicit padding, so the
//! byte layout the kernel writes into the ring buffer is exactly the layout the
//! agent reads. No enums, `Option`s or `bool`s cross the boundary: kinds and
//! roles are `u32` constants.
#![no_std]

/// Ring buffer holding every [`Event`] for the agent.
pub const MAP_EVENTS: &str = "EVENTS";
/// `HashMap<u32 tgid/tid, u32>`: processes (and their threads) being observed.
pub const MAP_TARGETS: &str = "TARGETS";
/// `HashMap<u16 port, u64>`: TCP ports the targets listen on (host byte
/// order). The value is the `bpf_ktime_get_ns()` of the `listen()` the kernel
/// saw when a program added the port, 0 when the agent added it from /proc.
pub const MAP_LISTEN_PORTS: &str = "LISTEN_PORTS";
/// `HashMap<[u8; COMM_LEN], u32>`: command names (`--discover`) whose
/// processes become targets when they exec.
pub const MAP_DISCOVER: &str = "DISCOVER";
/// `HashMap<u64 sock address, SockInfo>` (preallocated, fixed size): TCP
/// sockets owned by targets.
pub const MAP_SOCKS: &str = "SOCKS";
/// `PerCpuArray<u64>` indexed by `LOST_*`: every place an event can be lost.
pub const MAP_LOST: &str = "LOST";
/// `HashMap<u32 tid, SyscallArgs>`: buffer arguments of a target thread's
/// send/recv-family syscall in progress, joined at sock_*_length.
pub const MAP_ARGS: &str = "ARGS";
/// `PerCpuHashMap<WireKey, WireCounts>`: packets seen by the socket filter on
/// the gateway's listening ports and upstream peers.
pub const MAP_WIRE: &str = "WIRE";
/// `HashMap<PeerKey, u32>`: upstream peers the gateway connected to, so the
/// socket filter can tell their packets from other traffic.
pub const MAP_PEERS: &str = "PEERS";
/// `LruHashMap<FlowKey, SynSeen>`: a client's first SYN, until its handshake
/// completes.
pub const MAP_HANDSHAKES: &str = "HANDSHAKES";
/// The socket filter program (attached by the agent to AF_PACKET sockets).
pub const PROGRAM_WIRE: &str = "wire";
/// `Array<u32>` indexed by syscall number: what the raw syscall tracepoints
/// do for it (`SYSCALL_*`). The agent fills it with its architecture's
/// numbers, so the programs need none compiled in.
pub const MAP_SYSCALLS: &str = "SYSCALLS";
/// Global (`.rodata`) holding the head capture size in bytes.
pub const GLOBAL_CAPTURE_BYTES: &str = "CAPTURE_BYTES";
/// Global (`.rodata`) holding [`SockOffsets`].
pub const GLOBAL_SOCK_OFFSETS: &str = "SOCK_OFFSETS";
/// Global (`.rodata`) holding [`PtRegsArgs`].
pub const GLOBAL_PT_REGS_ARGS: &str = "PT_REGS_ARGS";

/// Capacity of [`MAP_TARGETS`]: processes plus threads of all targets.
pub const TARGETS_MAX: u32 = 16_384;
/// Capacity of [`MAP_LISTEN_PORTS`].
pub const LISTEN_PORTS_MAX: u32 = 1_024;
/// Capacity of [`MAP_DISCOVER`]: distinct `--discover` names.
pub const DISCOVER_MAX: u32 = 64;
/// A task's command name as the kernel keeps it (`TASK_COMM_LEN`): at most
/// 15 bytes and a NUL, NUL-padded by `bpf_get_current_comm`.
pub const COMM_LEN: usize = 16;
/// Default capacity of [`MAP_SOCKS`] (the agent's `--max-sockets`). When it
/// is full new connections are refused and counted ([`LOST_SOCKS_FULL`]),
/// never evicted; closed connections free their entries.
pub const SOCKS_MAX: u32 = 262_144;
/// Capacity of [`MAP_WIRE`]: (interface, port or peer, direction) keys.
pub const WIRE_MAX: u32 = 4_096;
/// Capacity of [`MAP_PEERS`].
pub const PEERS_MAX: u32 = 4_096;
/// Capacity of [`MAP_HANDSHAKES`]; LRU, so a SYN flood that never completes
/// its handshakes pushes out only untimed handshakes, never other state.
pub const HANDSHAKES_MAX: u32 = 65_536;
/// Capacity of [`MAP_SYSCALLS`]: syscall numbers below it (x86_64 and
/// arm64 use fewer than 500).
pub const SYSCALLS_MAX: u32 = 1_024;
/// Default ring buffer size; the agent may override it at load time.
pub const EVENTS_DEFAULT_BYTES: u32 = 4 << 20;

/// Reasons an event was lost in the kernel (indices into [`MAP_LOST`]).
pub const LOST_RINGBUF_FULL: u32 = 0;
pub const LOST_TARGETS_FULL: u32 = 1;
/// A connection open refused because [`MAP_SOCKS`] was full (once per open).
pub const LOST_SOCKS_FULL: u32 = 2;
/// Payload of a transfer not captured because ARGS was full (bytes still counted).
pub const LOST_ARGS_FULL: u32 = 3;
/// Packets not counted in the wire view because WIRE was full.
pub const LOST_WIRE_FULL: u32 = 4;
/// An upstream peer left out of the wire view because PEERS was full.
pub const LOST_PEERS_FULL: u32 = 5;
pub const LOST_REASONS: u32 = 6;
/// Names of the `LOST_*` reasons, as exported in the `reason` label.
pub const LOST_REASON_NAMES: [&str; LOST_REASONS as usize] = [
    "ringbuf_full",
    "targets_map_full",
    "sockets_map_full",
    "args_map_full",
    "wire_map_full",
    "peers_map_full",
];

/// A TCP socket of a target changed to ESTABLISHED (passive open on a
/// listening port: `role` is downstream) or began connecting (active open by a
/// target: `role` is upstream). For a passive open whose first SYN the wire
/// view saw, `value` is the handshake's length in ns (first SYN to the final
/// ACK's processing) and `tid` the interface it came in on; else both 0.
pub const KIND_CONN_OPEN: u32 = 1;
/// A tracked socket changed TCP state (`old_state` -> `new_state`).
pub const KIND_STATE: u32 = 2;
/// A target moved bytes on a TCP socket: a [`DataEvent`] whose header says
/// how many, with the head and tail of the transfer when they could be read.
pub const KIND_DATA: u32 = 3;
/// `accept`/`accept4` returned a new connection in a target (`value` = fd).
pub const KIND_ACCEPT: u32 = 4;
/// A target forked (`tgid` = parent, `value` = child pid, may be a thread).
pub const KIND_FORK: u32 = 5;
/// The last thread of a target exited (`tgid` = the process that ended).
pub const KIND_EXIT: u32 = 6;
/// A target moved bytes on a TCP socket whose open was never seen (it was
/// open before gatescope started): its addresses, read from the socket with
/// offsets from BTF, and `role` decided by its local port.
pub const KIND_CONN_FOUND: u32 = 7;
/// A TCP event on a tracked socket (`value` = `TCP_EVENT_*`). With `sk` 0,
/// a reset the gateway sent on a socket it had just closed (no longer
/// tracked): `role` and `tuple` say whose.
pub const KIND_TCP: u32 = 8;
/// A process exec'd a program whose command name is in [`MAP_DISCOVER`] and
/// became a target (`tgid`).
pub const KIND_EXEC: u32 = 9;
/// A target put a TCP socket into LISTEN (`tuple` holds its local address;
/// its port is in [`MAP_LISTEN_PORTS`] from then on).
pub const KIND_LISTEN: u32 = 10;

/// `tcp:tcp_retransmit_skb`: the gateway retransmitted a segment.
pub const TCP_EVENT_RETRANSMIT: i64 = 1;
/// `tcp:tcp_send_reset`: the gateway's socket sent a reset.
pub const TCP_EVENT_RESET_SENT: i64 = 2;
/// `tcp:tcp_receive_reset`: the peer reset the connection.
pub const TCP_EVENT_RESET_RECEIVED: i64 = 3;

/// Connection roles.
pub const ROLE_DOWNSTREAM: u32 = 1;
pub const ROLE_UPSTREAM: u32 = 2;

/// Byte directions from the gateway's point of view.
pub const DIR_INGRESS: u32 = 1;
pub const DIR_EGRESS: u32 = 2;

/// Address families as the kernel numbers them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_SYN_SENT: u32 = 2;
pub const TCP_SYN_RECV: u32 = 3;
pub const TCP_FIN_WAIT1: u32 = 4;
pub const TCP_FIN_WAIT2: u32 = 5;
pub const TCP_TIME_WAIT: u32 = 6;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_CLOSE_WAIT: u32 = 8;
pub const TCP_LAST_ACK: u32 = 9;
pub const TCP_LISTEN: u32 = 10;
pub const TCP_CLOSING: u32 = 11;

/// A connection's addresses, seen from the gateway's socket: `l*` is the
/// gateway's end, `r*` the peer. IPv4 addresses sit in the first four bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    pub family: u16,
    pub lport: u16,
    pub rport: u16,
    pub _pad: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

/// One record in the ring buffer. A single fixed layout for every kind keeps
/// the kernel side simple; fields a kind does not use are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// One of `KIND_*`.
    pub kind: u32,
    /// `ROLE_*` for connection events, `DIR_*` for bytes.
    pub role: u32,
    pub tgid: u32,
    pub tid: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`, used only as an identity.
    pub sk: u64,
    /// Kind-specific: byte count, fd, child pid.
    pub value: i64,
    pub old_state: u32,
    pub new_state: u32,
    pub tuple: Tuple,
}

/// Largest head capture (`--capture-bytes`); a power of two so that masking
/// proves the bound to the verifier.
pub const DATA_HEAD_MAX: usize = 4096;
/// Tail capture: enough for a chunked body's terminator and a CRLF or two.
pub const DATA_TAIL_MAX: usize = 64;
pub const CAPTURE_BYTES_DEFAULT: u32 = 1024;
/// Capacity of [`MAP_ARGS`]: threads inside a send/recv syscall at once.
pub const ARGS_MAX: u32 = 16_384;

/// Header of a [`KIND_DATA`] record. The record is the header, then a
/// [`DATA_TAIL_MAX`]-byte area whose first `tail_len` bytes are the end of the
/// transfer, then `head_len` bytes from its start. Head and tail never
/// overlap. (Tail first: both reads then land at offsets the verifier can
/// bound.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataHeader {
    pub kind: u32,
    /// `DIR_*`.
    pub dir: u32,
    pub tgid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    pub sk: u64,
    /// True length of the transfer (0 = a read that hit end-of-file).
    pub len: u64,
    pub head_len: u32,
    pub tail_len: u32,
}

/// The kernel's per-CPU scratch for building a data record; only the used
/// prefix is copied into the ring buffer. Twice the head size so that a
/// gather from several iovecs at a masked offset is provably in bounds.
#[repr(C)]
pub struct DataEvent {
    pub header: DataHeader,
    pub data: [u8; DATA_TAIL_MAX + 2 * DATA_HEAD_MAX],
}

/// How a syscall passed its buffer (`SyscallArgs::kind`), and the
/// [`MAP_SYSCALLS`] value of the syscalls that pass it so.
pub const ARGS_BUF: u32 = 1;
pub const ARGS_IOVEC: u32 = 2;
pub const ARGS_MSGHDR: u32 = 3;
/// [`MAP_SYSCALLS`]: a transfer that the length tracepoints may see but whose
/// buffer is not one of the above (sendfile, splice, the mmsg calls,
/// io_uring): any saved buffer is forgotten.
pub const SYSCALL_CLEAR: u32 = 4;

/// A send/recv-family syscall's buffer, saved at `raw_syscalls:sys_enter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallArgs {
    pub kind: u32,
    pub _pad: u32,
    /// User address of the buffer, the iovec array or the msghdr.
    pub ptr: u64,
    /// Buffer length or iovec count (unused for msghdr).
    pub count: u64,
}

/// Where a syscall's second and third arguments are in the `struct pt_regs`
/// that the raw `sys_enter` tracepoint passes (the user registers at syscall
/// entry; a fixed layout per architecture, which the agent knows from its
/// own). `enabled == 0` on an architecture the agent has no layout for: the
/// syscall entry hook then uses the `raw_syscalls:sys_enter` trace event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtRegsArgs {
    pub enabled: u32,
    pub arg1: u32,
    pub arg2: u32,
    pub _pad: u32,
}

/// Byte offsets of `struct sock` fields (most in its `struct sock_common`),
/// resolved by the agent from the running kernel's BTF (rustc emits no CO-RE
/// relocations, so offsets are never compiled in). `enabled == 0` when BTF
/// was unavailable: sockets open before start then stay untracked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    pub enabled: u32,
    /// `skc_family` (u16).
    pub family: u32,
    /// `skc_num`: local port, host byte order (u16).
    pub num: u32,
    /// `skc_dport`: remote port, network byte order (u16).
    pub dport: u32,
    /// `skc_rcv_saddr`: local IPv4 address (4 bytes).
    pub rcv_saddr: u32,
    /// `skc_daddr`: remote IPv4 address (4 bytes).
    pub daddr: u32,
    /// `skc_v6_rcv_saddr` (16 bytes).
    pub v6_rcv_saddr: u32,
    /// `skc_v6_daddr` (16 bytes).
    pub v6_daddr: u32,
    /// `skc_state` (u8).
    pub state: u32,
    /// `sk_receive_queue.qlen`: buffers queued for reading (u32).
    pub receive_queue_len: u32,
}

/// What the kernel remembers about a tracked socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    pub role: u32,
    pub tgid: u32,
    /// `ts_ns` of the connection's open (or found) record: which connection
    /// at this socket address the entry is, so the agent can tell a stale
    /// entry of its own from the kernel's current one.
    pub opened_ns: u64,
}

/// A wire-view counter's key. Downstream keys are per listening port
/// (`family` and `addr` zero); upstream keys per peer address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WireKey {
    pub ifindex: u32,
    /// `ROLE_*`.
    pub role: u32,
    /// `DIR_*`, from the gateway's point of view.
    pub dir: u32,
    pub port: u16,
    pub family: u16,
    pub addr: [u8; 16],
}

/// A wire-view counter's value. `bytes` are IP bytes (headers included) as
/// they crossed the interface, segment by segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireCounts {
    pub packets: u64,
    pub bytes: u64,
    /// Segments with RST set.
    pub resets: u64,
    /// Segments with SYN set and ACK clear (connection attempts).
    pub syns: u64,
}

/// An upstream peer as the socket filter matches it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    pub addr: [u8; 16],
}

/// When and where the socket filter saw a client's first SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynSeen {
    pub ts_ns: u64,
    pub ifindex: u32,
    pub _pad: u32,
}

/// A client's connection during its handshake, as the packets name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub family: u16,
    pub client_port: u16,
    pub server_port: u16,
    pub _pad: u16,
    pub client: [u8; 16],
    pub server: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integer structs without implicit padding.
    unsafe impl aya::Pod for super::Tuple {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::DataHeader {}
    unsafe impl aya::Pod for super::SyscallArgs {}
    unsafe impl aya::Pod for super::SockOffsets {}
    unsafe impl aya::Pod for super::PtRegsArgs {}
    unsafe impl aya::Pod for super::WireKey {}
    unsafe impl aya::Pod for super::WireCounts {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::SynSeen {}
}

// The layouts are part of the kernel/agent contract: fail the build, not the
// run, if a field change introduces implicit padding.
const _: () = assert!(core::mem::size_of::<Tuple>() == 40);
const _: () = assert!(core::mem::size_of::<Event>() == 88);
const _: () = assert!(core::mem::size_of::<SockInfo>() == 16);
const _: () = assert!(core::mem::size_of::<DataHeader>() == 48);
const _: () = assert!(core::mem::size_of::<SyscallArgs>() == 24);
const _: () = assert!(core::mem::size_of::<SockOffsets>() == 40);
const _: () = assert!(core::mem::size_of::<PtRegsArgs>() == 16);
const _: () = assert!(core::mem::size_of::<WireKey>() == 32);
const _: () = assert!(core::mem::size_of::<WireCounts>() == 32);
const _: () = assert!(core::mem::size_of::<PeerKey>() == 20);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<SynSeen>() == 16);

/// Field offsets in the tracepoint records we read, as
/// /sys/kernel/tracing/events/<category>/<name>/format gives them on Linux
/// 6.x. The kernel programs use these constants; the agent compares them with
/// the running kernel's format files at start and refuses to run on a
/// mismatch, so a changed layout is an error message, not wrong numbers.
pub mod tp {
    /// `sock:inet_sock_set_state` (include/trace/events/sock.h).
    pub mod inet_sock_set_state {
        pub const SKADDR: usize = 8;
        pub const OLDSTATE: usize = 16;
        pub const NEWSTATE: usize = 20;
        pub const SPORT: usize = 24;
        pub const DPORT: usize = 26;
        pub const FAMILY: usize = 28;
        pub const PROTOCOL: usize = 30;
        pub const SADDR: usize = 32;
        pub const DADDR: usize = 36;
        pub const SADDR_V6: usize = 40;
        pub const DADDR_V6: usize = 56;
    }
    /// `sock:sock_send_length` and `sock:sock_recv_length` share a layout.
    pub mod sock_length {
        pub const SK: usize = 8;
        pub const FAMILY: usize = 16;
        pub const PROTOCOL: usize = 18;
        pub const RET: usize = 20;
        pub const FLAGS: usize = 24;
    }
    /// `sched:sched_process_fork`.
    pub mod sched_process_fork {
        pub const CHILD_PID: usize = 20;
    }
    /// `sched:sched_process_exit`.
    pub mod sched_process_exit {
        pub const GROUP_DEAD: usize = 32;
    }
    /// `sched:sched_process_exec` (include/trace/events/sched.h).
    pub mod sched_process_exec {
        /// The task's pid after exec: its tgid, since exec made it the
        /// thread-group leader.
        pub const PID: usize = 12;
    }
    /// `tcp:tcp_retransmit_skb` and `tcp:tcp_send_reset`.
    pub mod tcp_skb {
        pub const SKADDR: usize = 16;
    }
    /// `tcp:tcp_send_reset`: the two ends as `struct sockaddr_in{,6}`
    /// (family, then the port in network order, then the address: at 4
    /// for IPv4, at 8 for IPv6).
    pub mod tcp_send_reset {
        pub const SADDR: usize = 32;
        pub const DADDR: usize = 60;
    }
    /// `tcp:tcp_receive_reset`.
    pub mod tcp_receive_reset {
        pub const SKADDR: usize = 8;
    }
    /// `syscalls:sys_exit_*`.
    pub mod sys_exit {
        pub const RET: usize = 16;
    }
    /// `raw_syscalls:sys_enter`: the syscall number, then its six arguments.
    pub mod raw_syscalls {
        pub const ID: usize = 8;
        pub const ARGS: usize = 16;
        /// The second argument: the buffer, iovec array or msghdr of the
        /// send/recv family.
        pub const PTR: usize = ARGS + 8;
        /// The third argument: the buffer length or iovec count.
        pub const COUNT: usize = ARGS + 16;
    }

    /// Every (category, event, field, offset, size) the programs depend on.
    pub const EXPECTED: &[(&str, &str, &str, usize, usize)] = &[
        (
            "sock",
            "inet_sock_set_state",
            "skaddr",
            inet_sock_set_state::SKADDR,
            8,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "oldstate",
            inet_sock_set_state::OLDSTATE,
            4,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "newstate",
            inet_sock_set_state::NEWSTATE,
            4,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "sport",
            inet_sock_set_state::SPORT,
            2,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "dport",
            inet_sock_set_state::DPORT,
            2,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "family",
            inet_sock_set_state::FAMILY,
            2,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "protocol",
            inet_sock_set_state::PROTOCOL,
            2,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "saddr",
            inet_sock_set_state::SADDR,
            4,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "daddr",
            inet_sock_set_state::DADDR,
            4,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "saddr_v6",
            inet_sock_set_state::SADDR_V6,
            16,
        ),
        (
            "sock",
            "inet_sock_set_state",
            "daddr_v6",
            inet_sock_set_state::DADDR_V6,
            16,
        ),
        ("sock", "sock_send_length", "sk", sock_length::SK, 8),
        ("sock", "sock_send_length", "family", sock_length::FAMILY, 2),
        (
            "sock",
            "sock_send_length",
            "protocol",
            sock_length::PROTOCOL,
            2,
        ),
        ("sock", "sock_send_length", "ret", sock_length::RET, 4),
        ("sock", "sock_send_length", "flags", sock_length::FLAGS, 4),
        ("sock", "sock_recv_length", "sk", sock_length::SK, 8),
        ("sock", "sock_recv_length", "family", sock_length::FAMILY, 2),
        (
            "sock",
            "sock_recv_length",
            "protocol",
            sock_length::PROTOCOL,
            2,
        ),
        ("sock", "sock_recv_length", "ret", sock_length::RET, 4),
        ("sock", "sock_recv_length", "flags", sock_length::FLAGS, 4),
        (
            "sched",
            "sched_process_fork",
            "child_pid",
            sched_process_fork::CHILD_PID,
            4,
        ),
        (
            "sched",
            "sched_process_exit",
            "group_dead",
            sched_process_exit::GROUP_DEAD,
            1,
        ),
        (
            "sched",
            "sched_process_exec",
            "pid",
            sched_process_exec::PID,
            4,
        ),
        ("tcp", "tcp_retransmit_skb", "skaddr", tcp_skb::SKADDR, 8),
        ("tcp", "tcp_send_reset", "skaddr", tcp_skb::SKADDR, 8),
        ("tcp", "tcp_send_reset", "saddr", tcp_send_reset::SADDR, 28),
        ("tcp", "tcp_send_reset", "daddr", tcp_send_reset::DADDR, 28),
        (
            "tcp",
            "tcp_receive_reset",
            "skaddr",
            tcp_receive_reset::SKADDR,
            8,
        ),
        ("raw_syscalls", "sys_enter", "id", raw_syscalls::ID, 8),
        ("raw_syscalls", "sys_enter", "args", raw_syscalls::ARGS, 48),
        ("syscalls", "sys_exit_accept4", "ret", sys_exit::RET, 8),
        ("syscalls", "sys_exit_accept", "ret", sys_exit::RET, 8),
    ];
}

/// `recvmsg` flag: the data stays queued, so peeked bytes are not received.
pub const MSG_PEEK: i32 = 2;
