//! Kernel layouts the agent resolves at start and patches into the programs' globals before load.

/// Where the current syscall's number and arguments are in the `struct
/// pt_regs` of the user registers saved at syscall entry (a fixed layout per
/// architecture, which the agent knows from its own), and how the payload
/// programs get a transfer's buffer. `enabled == 0` on an architecture the
/// agent has no layout for.
///
/// - `from_regs == 1` (the default): `sock:sock_send_length` /
///   `sock_recv_length` read the buffer themselves, from the registers that
///   `bpf_task_pt_regs(bpf_get_current_task_btf())` gives: no syscall hook,
///   so no cost on the syscalls of the rest of the host (see
///   ebpf/src/regs.rs).
/// - `from_regs == 0` (the fallback): the `sys_enter` hook saves the buffer
///   in ARGS at every syscall entry, read from `arg1`/`arg2` of the registers
///   the raw tracepoint passes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtRegsArgs {
    pub enabled: u32,
    /// The syscall's second and third arguments (a buffer and its length,
    /// an iovec array and its count, a msghdr).
    pub arg1: u32,
    pub arg2: u32,
    /// The syscall number as the entry saved it (`orig_ax` on x86-64).
    pub nr: u32,
    /// Where the code segment selector is, which tells a 64-bit syscall from
    /// a compat (32-bit) one, whose numbers and layouts differ; 0: nothing
    /// to check on this architecture.
    pub mode: u32,
    /// The selector of a 64-bit syscall (`__USER_CS`, 0x33 on x86-64).
    pub mode_value: u32,
    /// 1: the payload programs read the registers themselves; 0: they take
    /// what the `sys_enter` hook saved.
    pub from_regs: u32,
    pub _pad: u32,
}

impl PtRegsArgs {
    /// No layout: the programs' default until the agent patches its own.
    pub const NONE: PtRegsArgs = PtRegsArgs {
        enabled: 0,
        arg1: 0,
        arg2: 0,
        nr: 0,
        mode: 0,
        mode_value: 0,
        from_regs: 0,
        _pad: 0,
    };
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
    /// `sk_protocol` (u16): the BTF tracepoints get only the `struct sock`,
    /// not the protocol the classic tracepoint's record carries.
    pub protocol: u32,
    /// `struct tcp_sock`'s `copied_seq` (u32): the next byte the reader will
    /// take, advanced by reads and by splice alike.
    pub copied_seq: u32,
    /// `skc_net`: the `struct net *` of the socket's network namespace.
    pub net: u32,
    /// `struct net`'s `ns.inum`: the namespace's inode number (u32), the
    /// one `/proc/PID/ns/net` shows.
    pub net_inum: u32,
}

impl SockOffsets {
    /// Whether the programs read sockets' network namespaces: otherwise
    /// every listener is keyed in namespace 0, and the agent must key its
    /// own entries the same way.
    pub const fn knows_netns(&self) -> bool {
        self.enabled != 0 && self.net != 0 && self.net_inum != 0
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers without implicit padding (size asserted).
unsafe impl aya::Pod for SockOffsets {}

const _: () = assert!(size_of::<SockOffsets>() == 56);
const _: () = assert!(size_of::<PtRegsArgs>() == 32);
