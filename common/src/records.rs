//! Ring-buffer records: a common [`Header`], then one payload struct per [`Kind`], each field meaning one thing.
//!
//! A record is a [`Record<T>`]: the header, whose `kind` says which payload
//! `T` follows. [`Payload::KIND`] ties each payload type to its kind, so the
//! kernel cannot stamp a record with another kind's number. Data records add
//! captured bytes after their payload (see [`Data`]).

use crate::values::{Direction, Kind, Role, TcpEvent, TcpState};

/// What every record starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// The process the record is about (see each payload for whose).
    pub tgid: u32,
    /// The thread that caused it, 0 where the program runs outside one
    /// (softirq) or the owner was looked up instead.
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
}

/// A payload of a ring-buffer record, and the kind that announces it.
pub trait Payload: Copy {
    const KIND: Kind;
}

/// One ring-buffer record: a header and a kind's payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record<T> {
    pub header: Header,
    pub data: T,
}

impl<T: Payload> Record<T> {
    /// A record of `T`'s kind.
    #[inline(always)]
    pub const fn new(tgid: u32, tid: u32, ts_ns: u64, data: T) -> Self {
        Record {
            header: Header {
                kind: T::KIND,
                tgid,
                tid,
                _pad: 0,
                ts_ns,
            },
            data,
        }
    }
}

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

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers and byte arrays, explicit padding (size asserted).
unsafe impl aya::Pod for Tuple {}

/// A TCP socket of a target changed to ESTABLISHED (passive open on a
/// listening port: `role` is downstream, header `tgid` 0) or began
/// connecting (active open by a target: `role` is upstream, `tgid` the
/// target).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnOpen {
    /// Kernel address of the `struct sock`, used only as an identity.
    pub sk: u64,
    pub role: Role,
    /// For a passive open whose first SYN the wire view saw: the interface
    /// it came in on; else 0.
    pub ifindex: u32,
    /// For a passive open whose first SYN the wire view saw: first SYN to
    /// the final ACK's processing, in ns; else 0.
    pub handshake_ns: u64,
    pub tuple: Tuple,
    /// The socket's network namespace (its inode, as `/proc/PID/ns/net`
    /// shows it); 0 when the kernel's layout is unknown (no BTF).
    pub netns: u32,
    pub _pad: u32,
}

/// A target moved bytes on a TCP socket whose open was never seen (it was
/// open before gatescope started): its addresses, read from the socket with
/// offsets from BTF, and `role` decided by its local port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnFound {
    pub sk: u64,
    pub role: Role,
    /// See [`ConnOpen::netns`].
    pub netns: u32,
    pub tuple: Tuple,
}

/// A tracked socket changed TCP state (`old` -> `new`); header `tgid` is
/// the socket's owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub sk: u64,
    pub old: TcpState,
    pub new: TcpState,
    /// At [`TcpState::CLOSE`]: buffers still queued for the gateway to read
    /// (data that arrived before a reset); 0 otherwise or when unknown.
    pub queued: u32,
    /// 1 when a target process made this transition itself (its close() or
    /// shutdown(): ESTABLISHED -> FIN_WAIT1, CLOSE_WAIT -> LAST_ACK, or a
    /// reset sent by closing with unread data): the gateway had accepted the
    /// connection. 0 otherwise.
    pub by_target: u32,
    pub tuple: Tuple,
}

/// The target `tgid` forked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fork {
    /// The new task's pid: a thread id when the target created a thread.
    pub child: u32,
    pub _pad: u32,
}

/// The last thread of the target `tgid` exited. The header says it all.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {}

/// A process exec'd a program whose command name is in
/// [`crate::maps::MAP_DISCOVER`] and became the target `tgid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exec {}

/// A TCP event on a tracked socket. With `sk` 0, a reset the gateway sent on
/// a socket it had just closed (no longer tracked): `role` and `tuple` say
/// whose; otherwise `tuple` is zero (the agent knows the socket).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tcp {
    pub sk: u64,
    pub event: TcpEvent,
    pub role: Role,
    pub tuple: Tuple,
}

/// A target put a TCP socket into LISTEN; `tuple` holds its local address
/// (its port is in [`crate::maps::MAP_LISTEN_PORTS`] from then on).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listen {
    pub tuple: Tuple,
    /// See [`ConnOpen::netns`].
    pub netns: u32,
    pub _pad: u32,
}

/// A target moved `len` bytes on a TCP socket (`len` 0: a read that hit
/// end-of-file). The record is `Record<Data>`, then a [`DATA_TAIL_MAX`]-byte
/// area whose first `tail_len` bytes are the end of the transfer, then
/// `head_len` bytes from its start. Head and tail never overlap. (Tail
/// first: both reads then land at offsets the verifier can bound.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Data {
    pub sk: u64,
    /// True length of the transfer.
    pub len: u64,
    pub dir: Direction,
    pub head_len: u32,
    pub tail_len: u32,
    /// The errno of a read that failed (`len` 0), such as a reset seen by
    /// `recv()`; 0 for a transfer. Correlation reads it as I/O the thread
    /// did (nginx retries another peer from the handler of that read).
    pub error: u32,
}

/// More bytes of the transfer that the next [`Data`] record of the same
/// thread reports: those past its head, on a socket captured whole
/// (HTTP/2), where the head stops at the 4th iovec or at
/// [`HEAD_CAPTURE_MAX`]. A record holds `piece_len` bytes (at most
/// [`PIECE_MAX`]) after this payload, from `offset` in the transfer; the
/// pieces of one transfer come in order, each starting where the one before
/// ended, and before its data record (which the agent then finds them for:
/// same thread, socket, direction and `ts_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataPiece {
    pub sk: u64,
    /// Where these bytes start in the transfer.
    pub offset: u64,
    pub dir: Direction,
    pub piece_len: u32,
}

macro_rules! payloads {
    ($($ty:ident => $kind:ident,)*) => {
        $(impl Payload for $ty {
            const KIND: Kind = Kind::$kind;
        })*
    };
}

payloads! {
    ConnOpen => CONN_OPEN,
    ConnFound => CONN_FOUND,
    State => STATE,
    Data => DATA,
    DataPiece => DATA_PIECE,
    Tcp => TCP,
    Fork => FORK,
    Exit => EXIT,
    Exec => EXEC,
    Listen => LISTEN,
}

/// The fixed part of a data record.
pub type DataHeader = Record<Data>;

/// Largest head capture (`--capture-bytes`); a power of two so that masking
/// proves the bound to the verifier.
pub const DATA_HEAD_MAX: usize = 4096;
/// Tail capture: enough for a chunked body's terminator and a CRLF or two.
pub const DATA_TAIL_MAX: usize = 64;
pub const CAPTURE_BYTES_DEFAULT: u32 = 1024;
/// Largest head of a transfer while a message head is arriving (see
/// [`crate::HeadWindow`]): message heads up to this size are captured whole.
/// A power of two, and it fits the window's `u16`.
pub const HEAD_CAPTURE_MAX: usize = 32 * 1024;

/// Largest [`DataPiece`]; a power of two, for masking.
pub const PIECE_MAX: usize = 16 * 1024;
/// How many pieces one transfer may have: each comes from one run of the
/// program that takes them, which calls itself for the next (the kernel
/// allows 33 tail calls in a row).
pub const PIECES_MAX: usize = 32;

/// Where the kernel builds a [`DataPiece`] record (twice the largest piece,
/// so that a read at a masked offset is provably in bounds).
#[repr(C)]
pub struct PieceEvent {
    pub header: Record<DataPiece>,
    pub data: [u8; 2 * PIECE_MAX],
}

/// The kernel's per-CPU scratch for building a data record; only the used
/// prefix is copied into the ring buffer. Twice the largest head so that a
/// gather from several iovecs at a masked offset is provably in bounds
/// (64 KiB per CPU: above the 32 KiB limit of a per-CPU array's value, so
/// it is an array indexed by CPU).
#[repr(C)]
pub struct DataEvent {
    pub header: DataHeader,
    pub data: [u8; DATA_TAIL_MAX + 2 * HEAD_CAPTURE_MAX],
}

// The layouts are part of the kernel/agent contract: fail the build, not the
// run, if a field change introduces implicit padding. Every payload is a
// multiple of 8 bytes, so a record has no trailing padding either.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<Header>() == 24);
    assert!(size_of::<Tuple>() == 40);
    assert!(size_of::<ConnOpen>() == 72);
    assert!(size_of::<ConnFound>() == 56);
    assert!(size_of::<State>() == 64);
    assert!(size_of::<Fork>() == 8);
    assert!(size_of::<Exit>() == 0);
    assert!(size_of::<Exec>() == 0);
    assert!(size_of::<Tcp>() == 56);
    assert!(size_of::<Listen>() == 48);
    assert!(size_of::<Data>() == 32);
    assert!(size_of::<DataPiece>() == 24);
    assert!(size_of::<Record<DataPiece>>() == 48);
    assert!(size_of::<Record<ConnOpen>>() == 96);
    assert!(size_of::<Record<Exit>>() == 24);
    assert!(size_of::<DataHeader>() == 56);
};
