//! What the BTF length programs remember per socket, in per-socket storage
//! (`SEEN`, freed by the kernel with the socket): that a target moved bytes
//! on this tracked TCP socket, so later transfers need one lookup instead of
//! the TARGETS and SOCKS lookups, and how far its reads were counted, for
//! the bytes splice(2) takes past the length tracepoints (splice.rs).
//! Only programs whose `struct sock` pointer the verifier trusts (tp_btf)
//! may use it.

use aya_ebpf::{bindings::BPF_SK_STORAGE_GET_F_CREATE, helpers::generated::bpf_sk_storage_get};
use gatescope_common::HeadWindow;

use crate::{
    maps::{releases, SockSeen, SEEN},
    sock::{offsets, read},
};

/// The socket's record when process `tgid` moved bytes on it since the
/// agent last released kernel entries (see maps.rs, RELEASES).
#[inline(always)]
pub fn get(sk: u64, tgid: u32) -> Option<&'static mut SockSeen> {
    let seen = storage(sk, 0);
    // SAFETY: null, or the socket's storage value, live while the program
    // runs; the socket's transfers are serialised by its lock, so no other
    // run writes it meanwhile.
    let seen = unsafe { seen.as_mut() }?;
    (seen.tgid == tgid && seen.releases == releases()).then_some(seen)
}

/// Remembers that `tgid` moved bytes on tracked socket `sk`, with every
/// byte read so far counted. Without room (the kernel's memory limit for
/// socket storage) the socket simply takes the slower path every time.
#[inline(always)]
pub fn remember(sk: u64, tgid: u32) -> Option<&'static mut SockSeen> {
    let seen = storage(sk, u64::from(BPF_SK_STORAGE_GET_F_CREATE));
    // SAFETY: as in `get`.
    let seen = unsafe { seen.as_mut() }?;
    seen.tgid = tgid;
    seen.releases = releases();
    seen.consumed = copied_seq(sk).unwrap_or(0);
    seen.heads = HeadWindow::default();
    Some(seen)
}

/// The socket's `tcp_sock.copied_seq` (the next byte its reader takes);
/// outside `struct sock`, so read with the helper.
#[inline(always)]
pub fn copied_seq(sk: u64) -> Option<u32> {
    offsets().and_then(|off| read::<u32>(sk, off.copied_seq))
}

#[inline(always)]
fn storage(sk: u64, flags: u64) -> *mut SockSeen {
    // SAFETY: the helper takes the map, the trusted `struct sock` of the
    // tracepoint, no initial value (zeroes) and the flags; it returns null
    // or the value. The map's address is what the loader relocates to the
    // map (as aya's own `as_ptr`, which is crate-private).
    unsafe {
        bpf_sk_storage_get(
            core::ptr::from_ref(&SEEN).cast_mut().cast(),
            sk as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            flags,
        )
    }
    .cast()
}
