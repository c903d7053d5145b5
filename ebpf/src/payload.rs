//! Payload capture without kernel struct offsets (Linux >= 6.3 for
//! sock:sock_*_length). `sock:sock_send_length` / `sock_recv_length` fire
//! inside the send/recv syscall once the bytes have moved; they read a
//! bounded head and tail of the caller's buffer with `bpf_probe_read_user`.
//! Where the buffer is comes from the syscall's saved registers (regs.rs,
//! the default), or, in the fallback, from what the `sys_enter` hook saved
//! in ARGS at the syscall's entry (syscalls.rs), consumed here. In the
//! fallback an entry left by a call that never reached a socket (a read of
//! a file) is overwritten by the thread's next call, and the syscalls that
//! can reach sock_*_length without passing the hooks above (sendfile,
//! splice, sendmmsg, recvmmsg, io_uring_enter) clear it on entry, so a stale
//! buffer is never read.

use core::{cmp::min, mem::size_of, ptr::read_volatile};

use aya_ebpf::helpers::{bpf_probe_read_user, bpf_probe_read_user_buf, generated as gen};
use gatescope_common::{
    Data, DataEvent, DataHeader, Direction, LostReason, SyscallArgs, ARGS_BUF, ARGS_IOVEC,
    ARGS_MSGHDR, CAPTURE_BYTES_DEFAULT, DATA_HEAD_MAX, DATA_TAIL_MAX, SYSCALL_SPLICE,
};

use crate::{
    emit::{count_lost, current, now, wakeup_flags},
    maps::{is_target, ARGS, EVENTS, SCRATCH},
    regs,
};

/// Head capture size, set by the agent at load time (`--capture-bytes`).
#[unsafe(no_mangle)]
static CAPTURE_BYTES: u32 = CAPTURE_BYTES_DEFAULT;

/// Iovecs walked to gather the head, and to find the tail's iovec.
const HEAD_IOVECS: usize = 4;
const TAIL_IOVECS: usize = 32;
const HEAD_MASK: usize = DATA_HEAD_MAX - 1;
/// `struct user_msghdr`: msg_iov at 16, msg_iovlen right after it at 24
/// (user ABI), read together as one `Iovec`-shaped pair.
const MSG_IOV: u64 = 16;

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Whether the current thread is inside splice(2), as the fallback's hook
/// saved it (the entry stays for the syscall's other socket reads).
#[inline(always)]
pub fn in_splice(tid: u32) -> bool {
    // SAFETY: copied out at once.
    unsafe { ARGS.get(tid) }.is_some_and(|a| a.kind == SYSCALL_SPLICE)
}

/// A target thread is leaving a transfer whose buffer we cannot follow
/// (sendfile, splice, the mmsg calls, io_uring): forget any saved one, so
/// the length tracepoints count its bytes by length only.
#[inline(always)]
pub fn clear() {
    let (tgid, tid) = current();
    if is_target(tgid) {
        let _ = ARGS.remove(tid);
    }
}

/// Saves where the calling target thread's buffer (`kind`: a buffer, an
/// iovec array or a msghdr) is, for the length tracepoints of the same
/// syscall. `args` gives the syscall's second and third arguments: read only
/// for a target.
#[inline(always)]
pub fn save(kind: u32, args: impl FnOnce() -> Option<(u64, u64)>) {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return;
    }
    let Some((ptr, count)) = args() else {
        return;
    };
    let args = SyscallArgs {
        kind,
        _pad: 0,
        ptr,
        count,
    };
    if ARGS.insert(tid, args, 0).is_err() {
        count_lost(LostReason::ARGS_FULL);
    }
}

/// Emits a data record for `len` bytes moved on socket `sk` by the current
/// thread, with head and tail when `with_payload` and its buffer is known.
#[inline(always)]
pub fn emit_data(
    dir: Direction,
    tgid: u32,
    tid: u32,
    sk: u64,
    len: u64,
    error: u32,
    with_payload: bool,
) {
    let Some(event) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, used by one program at a time on this CPU.
    let event: &mut DataEvent = unsafe { &mut *event };
    let data = Data {
        sk,
        len,
        dir,
        head_len: 0,
        tail_len: 0,
        error,
    };
    event.header = DataHeader::new(tgid, tid, now(), data);
    if len > 0 && with_payload {
        let at = regs::layout();
        let args = if at.from_regs != 0 {
            regs::current_buffer(&at)
        } else {
            // SAFETY: copied out at once.
            let args = unsafe { ARGS.get(tid) }.copied();
            if args.is_some() {
                let _ = ARGS.remove(tid);
            }
            args
        };
        if let Some(args) = args {
            capture(event, &args, len);
        }
    }
    let head = (event.header.data.head_len as usize) & (DATA_HEAD_MAX * 2 - 1);
    let size = size_of::<DataHeader>() + DATA_TAIL_MAX + head;
    if size > size_of::<DataEvent>() {
        return;
    }
    // SAFETY: `size` is within the scratch value, which is plain bytes.
    let record = unsafe {
        core::slice::from_raw_parts(core::ptr::from_ref::<DataEvent>(event).cast::<u8>(), size)
    };
    if EVENTS.output::<[u8]>(record, wakeup_flags()).is_err() {
        count_lost(LostReason::RINGBUF_FULL);
    }
}

#[inline(always)]
fn capture(event: &mut DataEvent, args: &SyscallArgs, len: u64) {
    // SAFETY: a constant global the agent may patch before load.
    let cap = min(
        u64::from(unsafe { read_volatile(&raw const CAPTURE_BYTES) }),
        DATA_HEAD_MAX as u64,
    );
    match args.kind {
        ARGS_BUF => capture_buf(event, args.ptr, min(len, args.count), cap),
        ARGS_IOVEC => capture_iovecs(event, args.ptr, args.count, len, cap),
        ARGS_MSGHDR => {
            // msg_iov and msg_iovlen are adjacent: one read for both.
            // SAFETY: user memory read through the helper, which may fail.
            if let Ok(Iovec { base, len: cnt }) =
                unsafe { bpf_probe_read_user((args.ptr + MSG_IOV) as *const Iovec) }
            {
                capture_iovecs(event, base, cnt, len, cap);
            }
        }
        _ => {}
    }
}

#[inline(always)]
fn capture_buf(event: &mut DataEvent, buf: u64, len: u64, cap: u64) {
    let head = min(len, cap) as usize;
    if read_into(event, DATA_TAIL_MAX, buf, head) {
        event.header.data.head_len = head as u32;
    }
    let tail = min(
        len - u64::from(event.header.data.head_len),
        DATA_TAIL_MAX as u64,
    ) as usize;
    if tail > 0 && read_into(event, 0, buf + len - tail as u64, tail) {
        event.header.data.tail_len = tail as u32;
    }
}

#[inline(always)]
fn capture_iovecs(event: &mut DataEvent, iov: u64, count: u64, len: u64, cap: u64) {
    // The first iovecs in one read (gateways pass one to three: nginx's
    // writev of a response head and body), reused for the tail: each
    // bpf_probe_read_user costs 100-200 ns whatever its size (KERNEL.md).
    let first = min(count, HEAD_IOVECS as u64);
    let mut cached = [Iovec { base: 0, len: 0 }; HEAD_IOVECS];
    let size = (first as usize * size_of::<Iovec>()) & (HEAD_IOVECS * size_of::<Iovec>() * 2 - 1);
    if size == 0 || size > size_of::<[Iovec; HEAD_IOVECS]>() {
        return;
    }
    // SAFETY: the helper checks the user address; `size` bytes fit `cached`.
    let read = unsafe {
        gen::bpf_probe_read_user(
            cached.as_mut_ptr().cast(),
            size as u32,
            iov as *const core::ffi::c_void,
        )
    };
    if read != 0 {
        return;
    }
    let iovec = |i: usize| {
        if i < HEAD_IOVECS {
            cached.get(i).copied()
        } else {
            read_iovec(iov, i)
        }
    };

    // Head: gather from the first iovecs until `cap` or `len` bytes.
    let mut filled: u64 = 0;
    for i in 0..HEAD_IOVECS {
        if i as u64 >= first || filled >= cap || filled >= len {
            break;
        }
        let Some(v) = iovec(i) else {
            break;
        };
        let n = min(v.len, min(cap - filled, len - filled)) as usize;
        if n > 0
            && !read_into(
                event,
                DATA_TAIL_MAX + (filled as usize & HEAD_MASK),
                v.base,
                n,
            )
        {
            break;
        }
        filled += n as u64;
    }
    event.header.data.head_len = filled as u32;

    // Tail: the end of the transfer lies in the iovec where the running
    // total reaches `len`; take what of it is past the head.
    let mut before: u64 = 0;
    for i in 0..TAIL_IOVECS {
        if i as u64 >= count {
            break;
        }
        let Some(v) = iovec(i) else {
            break;
        };
        if before + v.len >= len {
            let in_this = len - before;
            let tail = min(min(in_this, len - filled), DATA_TAIL_MAX as u64) as usize;
            if tail > 0 && read_into(event, 0, v.base + in_this - tail as u64, tail) {
                event.header.data.tail_len = tail as u32;
            }
            break;
        }
        before += v.len;
    }
}

#[inline(always)]
fn read_iovec(iov: u64, i: usize) -> Option<Iovec> {
    // SAFETY: user memory read through the helper, which may fail.
    unsafe { bpf_probe_read_user((iov + (i * size_of::<Iovec>()) as u64) as *const Iovec) }.ok()
}

/// Mask for offsets into the scratch. A global rather than a literal: LLVM
/// can prove the mask redundant and drop it, but the verifier cannot always
/// prove the bound through the gather loop; a load from read-only data stays,
/// and the verifier knows its value.
#[unsafe(no_mangle)]
static SCRATCH_MASK: u64 = (DATA_HEAD_MAX * 2 - 1) as u64;

/// Copies `n` user bytes from `src` to `event.data[offset..]`; both bounds
/// are masked so the verifier can prove the write stays inside the scratch.
#[inline(always)]
fn read_into(event: &mut DataEvent, offset: usize, src: u64, n: usize) -> bool {
    // SAFETY: a constant global.
    let mask = unsafe { read_volatile(&raw const SCRATCH_MASK) } as usize;
    let offset = offset & mask;
    let n = n & mask;
    if n == 0 || n > DATA_HEAD_MAX || offset + n > event.data.len() {
        return false;
    }
    let Some(dst) = event.data.get_mut(offset..offset + n) else {
        return false;
    };
    // SAFETY: the helper checks the user address; dst is in bounds.
    unsafe { bpf_probe_read_user_buf(src as *const u8, dst) }.is_ok()
}
