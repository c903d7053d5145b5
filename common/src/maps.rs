//! Maps and globals the programs share with the agent: names, capacities, keys and values.

use crate::values::{Direction, Role};

/// Ring buffer holding every record ([`crate::records`]) for the agent.
pub const MAP_EVENTS: &str = "EVENTS";
/// `HashMap<u32 tgid/tid, u32>`: processes (and their threads) being observed.
pub const MAP_TARGETS: &str = "TARGETS";
/// `HashMap<ListenKey, u64>`: TCP ports the targets listen on, per network
/// namespace. The value is the `bpf_ktime_get_ns()` of the `listen()` the kernel
/// saw when a program added the port, 0 when the agent added it from /proc.
pub const MAP_LISTEN_PORTS: &str = "LISTEN_PORTS";
/// `HashMap<[u8; COMM_LEN], u32>`: command names (`--discover`) whose
/// processes become targets when they exec.
pub const MAP_DISCOVER: &str = "DISCOVER";
/// `HashMap<u64 sock address, SockInfo>` (preallocated, fixed size): TCP
/// sockets owned by targets.
pub const MAP_SOCKS: &str = "SOCKS";
/// `Array<DataEvent>`, one entry per possible CPU (the agent sets the
/// size): where the kernel builds a data record.
pub const MAP_SCRATCH: &str = "SCRATCH";
/// `Array<PieceEvent>`, one entry per possible CPU (the agent sets the
/// size): where the kernel builds a [`crate::DataPiece`] record.
pub const MAP_PIECES: &str = "PIECES";
/// `PerCpuArray<PieceState>` of one entry: what is left of the transfer
/// whose pieces are being taken.
pub const MAP_PIECE_STATE: &str = "PIECE_STATE";
/// `ProgramArray`s of one entry each: the program that takes the pieces of
/// a transfer seen by each length program (a tail call must stay with one
/// program type and, for tp_btf, one tracepoint). Filled by the agent.
pub const MAP_PIECES_SEND_BTF: &str = "PIECES_SEND_BTF";
pub const MAP_PIECES_RECV_BTF: &str = "PIECES_RECV_BTF";
pub const MAP_PIECES_SEND: &str = "PIECES_SEND";
pub const MAP_PIECES_RECV: &str = "PIECES_RECV";
/// The programs that take pieces: (program, its array, tracepoint).
pub const PIECE_PROGRAMS_BTF: [(&str, &str, &str); 2] = [
    ("pieces_send_btf", MAP_PIECES_SEND_BTF, "sock_send_length"),
    ("pieces_recv_btf", MAP_PIECES_RECV_BTF, "sock_recv_length"),
];
pub const PIECE_PROGRAMS: [(&str, &str, &str); 2] = [
    ("pieces_send", MAP_PIECES_SEND, "sock_send_length"),
    ("pieces_recv", MAP_PIECES_RECV, "sock_recv_length"),
];

/// `HashMap<u32, TlsCall>`: the OpenSSL read or write each target thread is
/// inside (from its uprobe to its uretprobe).
pub const MAP_TLS_CALLS: &str = "TLS_CALLS";
/// `LruHashMap<TlsKey, u64>`: the socket each (process, `SSL*`) was seen
/// moving TLS records on, for calls served from OpenSSL's buffer without a
/// syscall.
pub const MAP_TLS_SOCKS: &str = "TLS_SOCKS";
/// Global `u32`: 1 when the agent captures TLS plaintext (`--tls`).
pub const GLOBAL_TLS_ON: &str = "TLS_ON";
/// `Array<u8>` of [`TARGET_BITS_LEN`] entries: 1 at `id & (TARGET_BITS_LEN - 1)`
/// for every id ever put in [`MAP_TARGETS`] (set by whoever inserts, never
/// cleared). The programs' first, inlined, check: a process whose slot is 0
/// is no target without a hash lookup.
pub const MAP_TARGET_BITS: &str = "TARGET_BITS";
/// `Array<u8>` of 65,536 entries: 1 at every port [`MAP_LISTEN_PORTS`] holds
/// (set with it by the kernel at listen() and by the agent, cleared by the
/// agent with it): the wire view's per-packet check, an inlined array load
/// instead of a hash lookup.
pub const MAP_LISTEN_PORT_BITS: &str = "LISTEN_PORT_BITS";
/// Entries of [`MAP_TARGET_BITS`] (a power of two).
pub const TARGET_BITS_LEN: u32 = 1 << 16;
/// `Array<u32>` of one entry: bumped by the agent each time it removes
/// entries from [`MAP_SOCKS`] (after lost opens), so the per-socket
/// "seen" storage of the length programs, stamped with it, is trusted no
/// more and the socket is looked up (and claimed again) at its next
/// transfer.
pub const MAP_RELEASES: &str = "RELEASES";
/// `PerCpuArray<u64>` of one entry: client connections the kernel could not
/// track ([`MAP_SOCKS`] full). The gateway accepts them all the same, so the
/// agent counts them as accepted; nothing else of them is known.
pub const MAP_REFUSED: &str = "REFUSED";
/// `PerCpuArray<u64>` indexed by [`crate::values::LostReason`]: every place
/// an event can be lost.
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
/// `HashMap<PeerKey, u8>`: the upstreams `[[genai.provider]]` sections name,
/// filled by the agent before the programs attach: a target's connection to
/// one is captured whole (up to 32 KiB per transfer) from its first byte,
/// whatever its paths, so its usage is read.
pub const MAP_GENAI_PEERS: &str = "GENAI_PEERS";
/// Global `u32`: 1 when [`MAP_GENAI_PEERS`] holds any peer; otherwise an
/// upstream open skips the lookup.
pub const GLOBAL_GENAI_PEERS_ON: &str = "GENAI_PEERS_ON";
/// `LruHashMap<FlowKey, SynSeen>`: a client's first SYN, until its handshake
/// completes.
pub const MAP_HANDSHAKES: &str = "HANDSHAKES";
/// The socket filter program (attached by the agent to AF_PACKET sockets).
pub const PROGRAM_WIRE: &str = "wire";
/// `Array<u32>` indexed by syscall number: what the raw syscall tracepoints
/// do for it (`ARGS_*`, [`SYSCALL_CLEAR`]). The agent fills it with its
/// architecture's numbers, so the programs need none compiled in.
pub const MAP_SYSCALLS: &str = "SYSCALLS";
/// Global (`.rodata`) holding the head capture size in bytes.
pub const GLOBAL_CAPTURE_BYTES: &str = "CAPTURE_BYTES";
/// Global (`.rodata`) holding [`crate::offsets::SockOffsets`].
pub const GLOBAL_SOCK_OFFSETS: &str = "SOCK_OFFSETS";
/// Global (`.rodata`) holding [`crate::offsets::PtRegsArgs`].
pub const GLOBAL_PT_REGS_ARGS: &str = "PT_REGS_ARGS";
/// Global (`.rodata`, u32): records of one CPU between two looks at the
/// ring buffer's fill, less one (a power of two less one).
pub const GLOBAL_WAKE_CHECK_MASK: &str = "WAKE_CHECK_MASK";

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
/// is full new connections are refused and counted
/// ([`crate::values::LostReason::SOCKS_FULL`]), never evicted; closed
/// connections free their entries.
pub const SOCKS_MAX: u32 = 262_144;
/// Capacity of [`MAP_WIRE`]: (interface, port or peer, direction) keys.
pub const WIRE_MAX: u32 = 4_096;
/// Capacity of [`MAP_PEERS`].
pub const PEERS_MAX: u32 = 4_096;
/// Capacity of [`MAP_GENAI_PEERS`] (addresses in `[[genai.provider]]`
/// sections; more are a configuration error).
pub const GENAI_PEERS_MAX: u32 = 1_024;
/// Capacity of [`MAP_HANDSHAKES`]; LRU, so a SYN flood that never completes
/// its handshakes pushes out only untimed handshakes, never other state.
pub const HANDSHAKES_MAX: u32 = 65_536;
/// Capacity of [`MAP_SYSCALLS`]: syscall numbers below it (x86_64 and
/// arm64 use fewer than 500).
pub const SYSCALLS_MAX: u32 = 1_024;
/// Capacity of [`MAP_ARGS`]: threads inside a send/recv syscall at once.
pub const ARGS_MAX: u32 = 16_384;
/// Default ring buffer size; the agent may override it at load time.
pub const EVENTS_DEFAULT_BYTES: u32 = 4 << 20;

/// What the kernel remembers about a tracked socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    pub role: Role,
    pub tgid: u32,
    /// `ts_ns` of the connection's open (or found) record: which connection
    /// at this socket address the entry is, so the agent can tell a stale
    /// entry of its own from the kernel's current one.
    pub opened_ns: u64,
    /// Per direction, bytes still to capture in full because a message head
    /// may still be arriving (see [`HeadWindow`]); kept here for the
    /// classic tracepoints, which cannot use per-socket storage.
    pub heads: HeadWindow,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for SockInfo {}

/// Per direction of a socket (index [`HeadWindow::index`]), how many more
/// bytes the kernel captures in full because a message head may still be
/// arriving. A transfer that starts like an HTTP/1 message opens the window
/// at [`crate::HEAD_CAPTURE_MAX`]; the bytes moved close it, and so does a
/// transfer (or a first iovec) that ends with the blank line ending a head.
/// Heads larger than the head capture (cookies and bearer tokens; nginx
/// takes up to 4 x 8 KiB) are so parsed whole, also when they span reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadWindow(pub [u16; 2]);

impl HeadWindow {
    /// Both slots hold this once the socket carries HTTP/2 (its client
    /// preface was seen): every transfer, both ways, is captured whole up to
    /// [`crate::HEAD_CAPTURE_MAX`]. HTTP/2 frames have no message boundary a
    /// parser could find again after a gap, and a read or write holds many
    /// of them; TLS plaintext comes at most 16 KiB per OpenSSL call.
    pub const STICKY: u16 = u16::MAX;

    /// The slot of direction `dir`.
    #[inline(always)]
    pub fn index(dir: Direction) -> usize {
        usize::from(dir == Direction::EGRESS)
    }
}

/// The transfer whose pieces are being taken ([`MAP_PIECE_STATE`]): its
/// buffer, as the data record's capture saw it, and how far it is taken.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PieceState {
    /// The iovec array, or the buffer when `count` is 0.
    pub ptr: u64,
    /// Iovecs in the array; 0 for a single buffer of `len` bytes.
    pub count: u64,
    /// Bytes moved.
    pub len: u64,
    /// Next byte of the transfer to take.
    pub pos: u64,
    /// Where iovec `index` starts in the transfer.
    pub at: u64,
    pub index: u32,
    /// Pieces taken so far.
    pub pieces: u32,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for PieceState {}

/// How a syscall passed its buffer (`SyscallArgs::kind`), and the
/// [`MAP_SYSCALLS`] value of the syscalls that pass it so.
pub const ARGS_BUF: u32 = 1;
pub const ARGS_IOVEC: u32 = 2;
pub const ARGS_MSGHDR: u32 = 3;
/// [`MAP_SYSCALLS`]: a transfer that the length tracepoints may see but whose
/// buffer is not one of the above (sendfile, splice, the mmsg calls,
/// io_uring): any saved buffer is forgotten.
pub const SYSCALL_CLEAR: u32 = 4;
/// [`MAP_SYSCALLS`]: splice(2). As [`SYSCALL_CLEAR`] for the buffers; the
/// bytes it takes from a socket into a pipe pass no length tracepoint, so
/// the BTF path counts them from the socket's `copied_seq` (ebpf/src/splice.rs).
pub const SYSCALL_SPLICE: u32 = 5;

/// A send/recv-family syscall's buffer, saved at `raw_syscalls:sys_enter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallArgs {
    /// `ARGS_*`.
    pub kind: u32,
    pub _pad: u32,
    /// User address of the buffer, the iovec array or the msghdr.
    pub ptr: u64,
    /// Buffer length or iovec count (unused for msghdr).
    pub count: u64,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for SyscallArgs {}

/// A wire-view counter's key. Downstream keys are per listening port
/// (`family` and `addr` zero); upstream keys per peer address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WireKey {
    pub ifindex: u32,
    pub role: Role,
    /// From the gateway's point of view.
    pub dir: Direction,
    pub port: u16,
    pub family: u16,
    pub addr: [u8; 16],
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for WireKey {}

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

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for WireCounts {}

/// An upstream peer as the socket filter matches it.
/// A listening port in one network namespace: key of
/// [`MAP_LISTEN_PORTS`]. Every pod has its own namespace, so two gateway pods
/// on one node both listen on port 80; the namespace tells their clients
/// apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenKey {
    /// The namespace's inode (`/proc/PID/ns/net`); 0 when the kernel's
    /// layout is unknown (no BTF), then for every namespace alike.
    pub netns: u32,
    /// Host byte order.
    pub port: u16,
    pub _pad: u16,
}

impl ListenKey {
    pub const fn new(netns: u32, port: u16) -> Self {
        ListenKey {
            netns,
            port,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers, explicit padding (size asserted).
unsafe impl aya::Pod for ListenKey {}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    pub addr: [u8; 16],
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for PeerKey {}

/// When and where the socket filter saw a client's first SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynSeen {
    pub ts_ns: u64,
    pub ifindex: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for SynSeen {}

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
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for FlowKey {}

/// Capacity of [`MAP_TLS_CALLS`]: threads inside an OpenSSL call at once
/// (about 0.5 MiB of kernel memory).
pub const TLS_CALLS_MAX: u32 = 4_096;
/// Capacity of [`MAP_TLS_SOCKS`]: live `SSL*` of all targets, about 2.9 MiB
/// (LRU: a freed one's entry ages out, and so may a live one's beyond this
/// many; an `SSL*` is bound again by any of its calls that touches its
/// socket, so only a read served from OpenSSL's buffer in between is lost,
/// counted as `tls_unbound`).
pub const TLS_SOCKS_MAX: u32 = 32_768;

/// An OpenSSL read or write in progress on a target thread, from its entry
/// to its return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCall {
    /// The `SSL*`.
    pub ssl: u64,
    /// The caller's plaintext buffer.
    pub buf: u64,
    /// `_ex` calls: where OpenSSL writes the byte count (`size_t *`); 0 for
    /// `SSL_read`/`SSL_write`, which return it.
    pub count_at: u64,
    /// The socket TLS records moved on inside the call, 0 if none yet.
    pub sk: u64,
    pub dir: Direction,
    /// TLS records went to a second socket inside the call.
    pub mismatch: u32,
}

/// Key of [`MAP_TLS_SOCKS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for TlsKey {}

// Map layouts are shared with the kernel: fail the build, not the run, if a
// field change introduces implicit padding.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<SockInfo>() == 24);
    assert!(size_of::<HeadWindow>() == 4);
    assert!(size_of::<SyscallArgs>() == 24);
    assert!(size_of::<PieceState>() == 48);
    assert!(size_of::<WireKey>() == 32);
    assert!(size_of::<WireCounts>() == 32);
    assert!(size_of::<PeerKey>() == 20);
    assert!(size_of::<ListenKey>() == 8);
    assert!(size_of::<FlowKey>() == 40);
    assert!(size_of::<SynSeen>() == 16);
    assert!(size_of::<TlsCall>() == 40);
    assert!(size_of::<TlsKey>() == 16);
};
