//! Kernel layouts the agent resolves at start and patches into the programs' globals before load.

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

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for PtRegsArgs {}

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

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for SockOffsets {}

const _: () = assert!(size_of::<SockOffsets>() == 40);
const _: () = assert!(size_of::<PtRegsArgs>() == 16);
