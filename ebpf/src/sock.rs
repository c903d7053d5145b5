//! Fields of `struct sock` read directly, at offsets the agent resolves from
//! the running kernel's BTF and patches in before load (rustc emits no CO-RE
//! relocations with our bpf-linker toolchain), never compiled in.

use core::ptr::read_volatile;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use gatescope_common::SockOffsets;

/// Set by the agent at load time; `enabled == 0` when BTF was unavailable.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockOffsets = SockOffsets {
    enabled: 0,
    family: 0,
    num: 0,
    dport: 0,
    rcv_saddr: 0,
    daddr: 0,
    v6_rcv_saddr: 0,
    v6_daddr: 0,
    state: 0,
    receive_queue_len: 0,
    protocol: 0,
    copied_seq: 0,
    net: 0,
    net_inum: 0,
};

/// The offsets, when the agent could resolve them.
#[inline(always)]
pub fn offsets() -> Option<SockOffsets> {
    // SAFETY: a constant global the agent patches before load.
    let off: SockOffsets = unsafe { read_volatile(&raw const SOCK_OFFSETS) };
    (off.enabled != 0).then_some(off)
}

#[inline(always)]
pub fn read<T>(sk: u64, offset: u32) -> Option<T> {
    // SAFETY: the helper checks the kernel address and may fail.
    unsafe { bpf_probe_read_kernel((sk + u64::from(offset)) as *const T) }.ok()
}

/// Buffers still queued for reading on `sk` (0 when unknown). At TCP_CLOSE
/// after a reset the receive queue is kept (tcp_reset() purges only the write
/// queue), so the gateway still reads what is in it; a close by the gateway
/// itself has emptied it (tcp_close()).
#[inline(always)]
pub fn queued_buffers(sk: u64) -> u32 {
    offsets()
        .and_then(|off| read::<u32>(sk, off.receive_queue_len))
        .unwrap_or(0)
}

/// The inode of `sk`'s network namespace (`/proc/PID/ns/net`), 0 when the
/// layout is unknown or a read fails: then every namespace shares key 0,
/// as before namespaces were told apart. Two reads, `sk->skc_net` and
/// `net->ns.inum`; only at listen() and at opens, never per transfer.
#[inline(always)]
pub fn netns(sk: u64) -> u32 {
    let Some(off) = offsets().filter(SockOffsets::knows_netns) else {
        return 0;
    };
    read::<u64>(sk, off.net)
        .filter(|&net| net != 0)
        .and_then(|net| read::<u32>(net, off.net_inum))
        .unwrap_or(0)
}
