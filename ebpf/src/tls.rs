//! TLS plaintext at OpenSSL: uprobes on `SSL_read`, `SSL_read_ex`,
//! `SSL_write` and `SSL_write_ex` (entry: which `SSL*`, which buffer) and
//! `SSL_do_handshake` (the binding only), one
//! uretprobe for all five (the bytes moved). The plaintext is taken at the
//! return of a successful call: nginx retries a write that wanted to write
//! with the same buffer, so its entry would count twice.
//!
//! Which socket an `SSL*` is on comes without OpenSSL's struct offsets (they
//! moved in 3.0, 3.2 and 3.5): the socket whose length tracepoint saw TLS
//! records inside the call, on the same thread (payload.rs calls
//! [`note_socket`]). A read that OpenSSL serves from its buffer, with no
//! syscall, uses the socket the `SSL*` was last seen on (`TLS_SOCKS`). The
//! length tracepoints run in the syscall, never in softirq, so the binding
//! cannot come from another connection's packet (Beyla's nginx misbinding).

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use gatescope_common::{Direction, LostReason, TlsCall, TlsKey};

use crate::{
    emit::{count_lost, current},
    maps::{is_target, SOCKS, TLS_CALLS, TLS_SOCKS},
    payload::{emit_plaintext, Transfer},
};

/// 1 when the agent captures TLS plaintext (`--tls`); the length programs
/// then look for TLS records in what they captured.
#[unsafe(no_mangle)]
static TLS_ON: u32 = 0;

#[inline(always)]
pub fn on() -> bool {
    // SAFETY: a constant global the agent may patch before load.
    unsafe { read_volatile(&raw const TLS_ON) != 0 }
}

/// `int SSL_read(SSL *ssl, void *buf, int num)`
#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::INGRESS, false);
    0
}

/// `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`
#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::INGRESS, true);
    0
}

/// `int SSL_write(SSL *ssl, const void *buf, int num)`
#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::EGRESS, false);
    0
}

/// `int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written)`
#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, Direction::EGRESS, true);
    0
}

/// `int SSL_do_handshake(SSL *s)`: the handshake's own reads and writes bind
/// the `SSL*` to its socket. With TLS 1.3 a client's first request often
/// arrives with its last handshake flight, so OpenSSL has read it before the
/// first `SSL_read`, which then returns it without any syscall.
#[uprobe]
pub fn ssl_do_handshake(ctx: ProbeContext) -> u32 {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return 0;
    }
    let Some(ssl) = ctx.arg::<u64>(0) else {
        return 0;
    };
    // No buffer: a handshake, bound at its return, no plaintext.
    let call = TlsCall {
        ssl,
        buf: 0,
        count_at: 0,
        sk: 0,
        dir: Direction::INGRESS,
        mismatch: 0,
    };
    if TLS_CALLS.insert(tid, call, 0).is_err() {
        count_lost(LostReason::TLS_CALLS_FULL);
    }
    0
}

/// The return of any of the five: the call saved at its entry says which.
#[uretprobe]
pub fn ssl_ret(ctx: RetProbeContext) -> u32 {
    leave(&ctx);
    0
}

#[inline(always)]
fn enter(ctx: &ProbeContext, dir: Direction, ex: bool) {
    let (tgid, tid) = current();
    if !is_target(tgid) {
        return;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let count_at = if ex {
        let Some(at) = ctx.arg::<u64>(3) else {
            return;
        };
        at
    } else {
        0
    };
    let call = TlsCall {
        ssl,
        buf,
        count_at,
        sk: 0,
        dir,
        mismatch: 0,
    };
    if TLS_CALLS.insert(tid, call, 0).is_err() {
        count_lost(LostReason::TLS_CALLS_FULL);
    }
}

/// TLS records moved on socket `sk` in the current thread: if it is inside
/// an OpenSSL call, that call's `SSL*` is on `sk`.
#[inline(always)]
pub fn note_socket(tid: u32, sk: u64) {
    let Some(call) = TLS_CALLS.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: the thread's own entry; only this thread writes it.
    let call = unsafe { &mut *call };
    if call.sk == 0 {
        call.sk = sk;
    } else if call.sk != sk {
        call.mismatch = 1;
    }
}

#[inline(always)]
fn leave(ctx: &RetProbeContext) {
    let (tgid, tid) = current();
    // SAFETY: copied out at once.
    let Some(call) = (unsafe { TLS_CALLS.get(tid) }).copied() else {
        return;
    };
    let _ = TLS_CALLS.remove(tid);
    let key = TlsKey {
        tgid,
        _pad: 0,
        ssl: call.ssl,
    };
    if call.buf == 0 {
        // A handshake: only the binding.
        if call.sk != 0 && call.mismatch == 0 {
            let _ = TLS_SOCKS.insert(key, call.sk, 0);
        }
        return;
    }
    let ret: i32 = ctx.ret();
    let len = if call.count_at != 0 {
        if ret != 1 {
            return;
        }
        // SAFETY: user memory read through the helper, which may fail.
        match unsafe { bpf_probe_read_user(call.count_at as *const u64) } {
            Ok(n) => n,
            Err(_) => return,
        }
    } else if ret > 0 {
        ret.unsigned_abs().into()
    } else {
        return;
    };
    if len == 0 {
        return;
    }
    if call.mismatch != 0 {
        count_lost(LostReason::TLS_MISMATCH);
        return;
    }
    let sk = if call.sk != 0 {
        // SAFETY: reading the existing binding, copied out at once.
        if unsafe { TLS_SOCKS.get(key) }.copied() != Some(call.sk) {
            let _ = TLS_SOCKS.insert(key, call.sk, 0);
        }
        call.sk
    } else {
        // SAFETY: copied out at once.
        let Some(sk) = (unsafe { TLS_SOCKS.get(key) }).copied() else {
            count_lost(LostReason::TLS_UNBOUND);
            return;
        };
        sk
    };
    // The plaintext's own head windows, in the socket's entry (the
    // ciphertext keeps its own in per-socket storage on the BTF path).
    let heads = match SOCKS.get_ptr_mut(sk) {
        Some(info) => {
            // The field's address only after the null check: computed
            // before it (LLVM may hoist it to a select), the verifier
            // refuses arithmetic on a map value that may be null. A
            // volatile reload keeps it after.
            // SAFETY: reads a local.
            let info = unsafe { read_volatile(&raw const info) };
            // SAFETY: a preallocated hash map's value stays in place while
            // the program runs; one direction's calls are serialised by
            // the caller.
            Some(unsafe { &mut (*info).heads })
        }
        None => None,
    };
    let t = Transfer {
        dir: call.dir,
        tgid,
        tid,
        sk,
        len,
        error: 0,
    };
    emit_plaintext(t, call.buf, heads);
}
