//! Every map the programs share with the agent (names in gatescope_common).

use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};
use gatescope_common::{
    DataEvent, FlowKey, HeadWindow, ListenKey, PeerKey, PieceEvent, PieceState, Role, SockInfo,
    SynSeen, SyscallArgs, TlsCall, TlsKey, Tuple, WireCounts, WireKey, ARGS_MAX, COMM_LEN,
    DISCOVER_MAX, EVENTS_DEFAULT_BYTES, GENAI_PEERS_MAX, HANDSHAKES_MAX, LISTEN_PORTS_MAX,
    LOST_REASONS, PEERS_MAX, SOCKS_MAX, SYSCALLS_MAX, TARGETS_MAX, TARGET_BITS_LEN, TLS_CALLS_MAX,
    TLS_SOCKS_MAX, WIRE_MAX,
};

/// Events for the agent; the agent may resize it at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_DEFAULT_BYTES, 0);

/// tgid (or tid of a target's thread) -> 1. The first lookup of every
/// process-context program, so non-targets cost one hash lookup.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(TARGETS_MAX, 0);

/// Local TCP ports the targets listen on, per network namespace, kept
/// current by the agent and added to by `conn.rs` when a target calls
/// listen(). Passive opens complete in softirq context where the owning
/// process is unknown, so the listening port in the socket's namespace is
/// what ties a new connection to the gateway. Value: when the kernel
/// added the port (ns), 0 when the agent did.
#[map]
pub static LISTEN_PORTS: HashMap<ListenKey, u64> = HashMap::with_max_entries(LISTEN_PORTS_MAX, 0);

/// See common's MAP_LISTEN_PORT_BITS.
#[map]
pub static LISTEN_PORT_BITS: Array<u8> = Array::with_max_entries(1 << 16, 0);

/// Command names (NUL-padded comm) whose processes become targets when they
/// exec (`--discover`), filled by the agent before the exec program attaches.
#[map]
pub static DISCOVER: HashMap<[u8; COMM_LEN], u32> = HashMap::with_max_entries(DISCOVER_MAX, 0);

/// Sockets owned by targets, keyed by `struct sock` address. A plain,
/// preallocated hash map, not an LRU one: when it is full a new connection is
/// refused (and counted as `LostReason::SOCKS_FULL`) instead of the kernel silently
/// evicting a live connection's entry. The agent sets the capacity at load
/// time (`--max-sockets`); entries leave at `TCP_CLOSE`.
#[map]
pub static SOCKS: HashMap<u64, SockInfo> = HashMap::with_max_entries(SOCKS_MAX, 0);

/// Per-socket storage (freed by the kernel with the socket): a target's TCP
/// socket that the BTF length programs have seen, with the process that
/// moved bytes on it. Its one lookup replaces the TARGETS and SOCKS lookups
/// on every later transfer (bytes.rs).
#[btf_map]
pub static SEEN: SkStorage<SockSeen> = SkStorage::new();

/// What [`SEEN`] keeps for a socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockSeen {
    /// The target process that moved bytes on it.
    pub tgid: u32,
    /// [`RELEASES`] when it was stored: valid while that is unchanged.
    pub releases: u32,
    /// `copied_seq` as far as the length tracepoints counted reads.
    pub consumed: u32,
    /// Head capture per direction (see `HeadWindow`).
    pub heads: HeadWindow,
}

/// How many times the agent released SOCKS entries (common's MAP_RELEASES).
#[map]
pub static RELEASES: Array<u32> = Array::with_max_entries(1, 0);

/// [`RELEASES`] now (an array lookup the verifier inlines).
#[inline(always)]
pub fn releases() -> u32 {
    RELEASES.get(0).copied().unwrap_or(0)
}

/// Client connections refused for a full SOCKS (common's MAP_REFUSED).
#[map]
pub static REFUSED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Records submitted per CPU, for the wake-up decision (emit.rs).
#[map]
pub static WAKE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Lost-event counters by reason (`LostReason`), per CPU so increments need no atomics.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_REASONS, 0);

/// See common's MAP_TARGET_BITS.
#[map]
pub static TARGET_BITS: Array<u8> = Array::with_max_entries(TARGET_BITS_LEN, 0);

/// Whether `id` is a target: an inlined array load rules out almost every
/// other process (the length tracepoints run for every TCP transfer on the
/// host: a hash lookup is ~120 ns, KERNEL.md), the hash lookup decides.
#[inline(always)]
pub fn is_target(id: u32) -> bool {
    if !may_be_target(id) {
        return false;
    }
    // SAFETY: only existence is checked; the value is not read.
    unsafe { TARGETS.get(id).is_some() }
}

/// False for almost every process that is not a target, from its
/// TARGET_BITS slot alone (no helper call, no hash lookup).
#[inline(always)]
pub fn may_be_target(id: u32) -> bool {
    TARGET_BITS.get(id & (TARGET_BITS_LEN - 1)).copied() == Some(1)
}

/// Adds `id` to TARGETS (and its TARGET_BITS slot first, so it is never
/// missed); false when TARGETS is full.
#[inline(always)]
pub fn add_target(id: u32) -> bool {
    if let Some(bit) = TARGET_BITS.get_ptr_mut(id & (TARGET_BITS_LEN - 1)) {
        // SAFETY: an array slot; every writer writes 1.
        unsafe { *bit = 1 };
    }
    TARGETS.insert(id, 1, 0).is_ok()
}

/// tid -> the buffer of its send/recv-family syscall in progress.
#[map]
pub static ARGS: HashMap<u32, SyscallArgs> = HashMap::with_max_entries(ARGS_MAX, 0);

/// The OpenSSL call each target thread is inside (tls.rs).
#[map]
pub static TLS_CALLS: HashMap<u32, TlsCall> = HashMap::with_max_entries(TLS_CALLS_MAX, 0);

/// The socket each (process, `SSL*`) last moved TLS records on (tls.rs).
#[map]
pub static TLS_SOCKS: LruHashMap<TlsKey, u64> = LruHashMap::with_max_entries(TLS_SOCKS_MAX, 0);

/// Space to build a data record (too large for the 512-byte stack), one
/// entry per CPU (the agent sets the count at load: common's MAP_SCRATCH).
/// Not a per-CPU array: its values are limited to 32 KiB. Programs run
/// with migration disabled, and those that build data records run in
/// process context (the send and receive paths), as with the per-CPU
/// array this replaced.
#[map]
pub static SCRATCH: Array<DataEvent> = Array::with_max_entries(1, 0);

/// Space to build a piece record (pieces.rs), one entry per CPU, as
/// SCRATCH.
#[map]
pub static PIECES: Array<PieceEvent> = Array::with_max_entries(1, 0);

/// The transfer whose pieces this CPU is taking (pieces.rs).
#[map]
pub static PIECE_STATE: PerCpuArray<PieceState> = PerCpuArray::with_max_entries(1, 0);

/// The piece-taking program of each length program (common's
/// MAP_PIECES_*), filled by the agent; an empty one fails the tail call and
/// the data record goes out with its head alone, as before pieces.
#[map]
pub static PIECES_SEND_BTF: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
pub static PIECES_RECV_BTF: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
pub static PIECES_SEND: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
pub static PIECES_RECV: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Wire-view counters, per CPU so the socket filter needs no atomics.
#[map]
pub static WIRE: PerCpuHashMap<WireKey, WireCounts> = PerCpuHashMap::with_max_entries(WIRE_MAX, 0);

/// Upstream peers (address and port) the targets connected to.
#[map]
pub static PEERS: HashMap<PeerKey, u32> = HashMap::with_max_entries(PEERS_MAX, 0);

/// Upstreams of named GenAI providers (the agent fills it before attaching).
#[map]
pub static GENAI_PEERS: HashMap<PeerKey, u8> = HashMap::with_max_entries(GENAI_PEERS_MAX, 0);

/// 1 when [`GENAI_PEERS`] holds any peer.
#[unsafe(no_mangle)]
static GENAI_PEERS_ON: u32 = 0;

/// The head capture a target's connection starts with, opened (conn.rs) or
/// found (found.rs): wide from the first byte when it goes to a named GenAI
/// provider, whatever its paths (payload.rs marks only known ones); else
/// the usual.
#[inline(always)]
pub fn opening_heads(role: Role, tuple: &Tuple) -> HeadWindow {
    // SAFETY: a constant global the agent may patch before load.
    if role != Role::UPSTREAM || unsafe { core::ptr::read_volatile(&raw const GENAI_PEERS_ON) } == 0
    {
        return HeadWindow::default();
    }
    let key = PeerKey {
        family: tuple.family,
        port: tuple.rport,
        addr: tuple.raddr,
    };
    // SAFETY: existence check only.
    if unsafe { GENAI_PEERS.get(key) }.is_some() {
        HeadWindow([HeadWindow::STICKY; 2])
    } else {
        HeadWindow::default()
    }
}

/// 1 at every port number some entry of PEERS has: the wire filter's
/// first, inlined, check, so a packet whose ports no peer uses (a client's
/// of the gateway, anyone else's on the host) costs no PEERS hash lookup.
/// Set with PEERS, never cleared (nor are PEERS entries).
#[map]
pub static PEER_PORTS: Array<u8> = Array::with_max_entries(1 << 16, 0);

/// Client handshakes in progress: when and where the first SYN was seen.
#[map]
pub static HANDSHAKES: LruHashMap<FlowKey, SynSeen> =
    LruHashMap::with_max_entries(HANDSHAKES_MAX, 0);

/// Syscall number -> `SYSCALL_*` (see syscalls.rs), filled by the agent.
#[map]
pub static SYSCALLS: Array<u32> = Array::with_max_entries(SYSCALLS_MAX, 0);
