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

use core::{
    cmp::{max, min},
    mem::size_of,
    ptr::read_volatile,
};

use aya_ebpf::helpers::{
    bpf_get_smp_processor_id, bpf_probe_read_user, bpf_probe_read_user_buf, generated as gen,
};
use gatescope_common::{
    Data, DataEvent, DataHeader, Direction, HeadWindow, Kind, LostReason, SyscallArgs, ARGS_BUF,
    ARGS_IOVEC, ARGS_MSGHDR, CAPTURE_BYTES_DEFAULT, DATA_HEAD_MAX, DATA_TAIL_MAX, HEAD_CAPTURE_MAX,
    SYSCALL_SPLICE,
};

use crate::{
    emit::{count_lost, current, now, wakeup_flags, wakeup_flags_now},
    genai_mark,
    maps::{is_target, ARGS, EVENTS, SCRATCH},
    pieces, regs, tls,
};

/// Head capture size, set by the agent at load time (`--capture-bytes`).
#[unsafe(no_mangle)]
static CAPTURE_BYTES: u32 = CAPTURE_BYTES_DEFAULT;

/// Iovecs walked to gather the head, and to find the tail's iovec.
const HEAD_IOVECS: usize = 4;
const TAIL_IOVECS: usize = 32;
/// `struct user_msghdr`: msg_iov at 16, msg_iovlen right after it at 24
/// (user ABI), read together as one `Iovec`-shaped pair.
const MSG_IOV: u64 = 16;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Iovec {
    pub base: u64,
    pub len: u64,
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

/// One transfer on a socket, as a data record names it.
#[derive(Clone, Copy)]
pub struct Transfer {
    pub dir: Direction,
    pub tgid: u32,
    pub tid: u32,
    pub sk: u64,
    /// Bytes moved (0: end of file, or a failed read with `error`).
    pub len: u64,
    pub error: u32,
}

/// Emits a data record for the bytes the current thread moved on a socket,
/// with head and tail when `with_payload` and its buffer is known (saved
/// registers, or the fallback's ARGS). `heads`: the socket's head capture
/// (see common's `HeadWindow`), where one is kept.
#[inline(always)]
pub fn emit_data(
    t: Transfer,
    with_payload: bool,
    heads: Option<&mut HeadWindow>,
    pieces: impl FnOnce(),
) {
    let args = if t.len > 0 && with_payload {
        let at = regs::layout();
        if at.from_regs != 0 {
            regs::current_buffer(&at)
        } else {
            // SAFETY: copied out at once.
            let args = unsafe { ARGS.get(t.tid) }.copied();
            if args.is_some() {
                let _ = ARGS.remove(t.tid);
            }
            args
        }
    } else {
        None
    };
    emit(Kind::DATA, t, args.as_ref(), heads, pieces);
}

/// Emits a record of `t.len` bytes of plaintext OpenSSL moved for socket
/// `t.sk` from or to the caller's buffer `buf` (tls.rs).
#[inline(always)]
pub fn emit_plaintext(t: Transfer, buf: u64, heads: Option<&mut HeadWindow>) {
    let args = SyscallArgs {
        kind: ARGS_BUF,
        _pad: 0,
        ptr: buf,
        count: t.len,
    };
    // OpenSSL moves at most 16 KiB of plaintext per call (a record): no
    // pieces.
    emit(Kind::TLS_DATA, t, Some(&args), heads, || {});
}

#[inline(always)]
fn emit(
    kind: Kind,
    t: Transfer,
    args: Option<&SyscallArgs>,
    heads: Option<&mut HeadWindow>,
    pieces: impl FnOnce(),
) {
    let Transfer {
        dir,
        tgid,
        tid,
        sk,
        len,
        error,
    } = t;
    // SAFETY: a helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(event) = SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    // SAFETY: this CPU's scratch, used by one program at a time on this CPU.
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
    event.header.header.kind = kind;
    // SAFETY: a constant global the agent may patch before load.
    let cap = min(
        u64::from(unsafe { read_volatile(&raw const CAPTURE_BYTES) }),
        DATA_HEAD_MAX as u64,
    );
    let slot = HeadWindow::index(dir);
    let open = heads.as_deref().map_or(0, |h| u64::from(h.0[slot]));
    let mut left = open.saturating_sub(len);
    let mut buffer = None;
    if let Some(args) = args {
        let mut at = Capture {
            event: &mut *event,
            len,
            cap,
            open,
            keep: heads.is_some(),
            unreadable: false,
            buffer: None,
        };
        left = at.run(args);
        buffer = at.buffer;
        // Plaintext is read from the caller's buffer after the call
        // returned; a page not present makes the helper fail (it may not
        // fault pages in). Clear text is counted by the syscall's length
        // either way and not reported here.
        if kind == Kind::TLS_DATA && at.unreadable {
            count_lost(LostReason::TLS_UNREADABLE);
        }
    }
    let mut whole = false;
    if let Some(h) = heads {
        whole = open == u64::from(HeadWindow::STICKY)
            || starts_h2(event)
            || (dir == Direction::EGRESS && genai_mark::starts_genai_request(event));
        if whole {
            h.0 = [HeadWindow::STICKY; 2];
        } else {
            h.0[slot] = min(left, HEAD_CAPTURE_MAX as u64) as u16;
        }
    }
    // TLS records moved inside an OpenSSL call tie its SSL* to this socket.
    if kind == Kind::DATA && tls::on() && looks_like_tls(event) {
        tls::note_socket(tid, sk);
    }
    // A socket captured whole whose head stopped short (the 4th iovec, or
    // 32 KiB): the rest goes in piece records before this one (pieces.rs),
    // whose program sends this record after them.
    if whole && kind == Kind::DATA {
        let d = &event.header.data;
        if let Some((ptr, count)) = buffer {
            if u64::from(d.head_len) + u64::from(d.tail_len) < len
                && pieces::start(ptr, count, len, u64::from(d.head_len))
            {
                pieces();
            }
        }
    }
    let large = u64::from(event.header.data.head_len) > cap;
    output(event, large);
}

/// Sends the data record built in `event`. `large`: a head taken whole,
/// up to 30 times the usual record: the ring's fill is looked at for it now,
/// not only every WAKE_CHECK_MASK records.
#[inline(always)]
pub fn output(event: &DataEvent, large: bool) {
    let head = (event.header.data.head_len as usize) & (HEAD_CAPTURE_MAX * 2 - 1);
    let size = size_of::<DataHeader>() + DATA_TAIL_MAX + head;
    if size > size_of::<DataEvent>() {
        return;
    }
    let flags = if large {
        wakeup_flags_now()
    } else {
        wakeup_flags()
    };
    // SAFETY: `size` is within the scratch value, which is plain bytes.
    let record = unsafe {
        core::slice::from_raw_parts(core::ptr::from_ref::<DataEvent>(event).cast::<u8>(), size)
    };
    if EVENTS.output::<[u8]>(record, flags).is_err() {
        count_lost(LostReason::RINGBUF_FULL);
    }
}

/// The HTTP/2 client preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the captured head starts with the HTTP/2 client preface: the
/// socket then carries HTTP/2 both ways (h2c with prior knowledge, or the
/// plaintext of h2 over TLS, which also starts so).
#[inline(always)]
fn starts_h2(event: &DataEvent) -> bool {
    if (event.header.data.head_len as usize) < H2_PREFACE.len() {
        return false;
    }
    same(
        &event.data[DATA_TAIL_MAX..DATA_TAIL_MAX + H2_PREFACE.len()],
        H2_PREFACE,
    )
}

/// Byte-wise equality of two slices of equal length (no memcmp call).
#[inline(always)]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// One transfer's capture: a head of `cap` bytes (more while a message head
/// may be arriving: `open` bytes of the window left before it), a tail, and
/// the window after it (`keep`: the socket has one).
struct Capture<'a> {
    event: &'a mut DataEvent,
    pub len: u64,
    cap: u64,
    open: u64,
    keep: bool,
    /// A head was to be taken from a single buffer and could not be read.
    unreadable: bool,
    /// Where the bytes were (see `PieceState`): the iovec array and its
    /// count, or the buffer and 0.
    buffer: Option<(u64, u64)>,
}

impl Capture<'_> {
    /// Captures, and returns the bytes of the window left after it.
    #[inline(always)]
    fn run(&mut self, args: &SyscallArgs) -> u64 {
        match args.kind {
            ARGS_BUF => {
                self.len = min(self.len, args.count);
                self.buffer = Some((args.ptr, 0));
                self.buf(args.ptr)
            }
            ARGS_IOVEC => {
                self.buffer = Some((args.ptr, args.count));
                self.iovecs(args.ptr, args.count)
            }
            ARGS_MSGHDR => {
                // msg_iov and msg_iovlen are adjacent: one read for both.
                // SAFETY: user memory read through the helper, which may fail.
                match unsafe { bpf_probe_read_user((args.ptr + MSG_IOV) as *const Iovec) } {
                    Ok(Iovec { base, len: cnt }) => {
                        self.buffer = Some((base, cnt));
                        self.iovecs(base, cnt)
                    }
                    Err(_) => self.open.saturating_sub(self.len),
                }
            }
            _ => self.open.saturating_sub(self.len),
        }
    }

    /// The first head to take: the usual capture, or as far as an open
    /// window reaches.
    #[inline(always)]
    fn first(&self) -> u64 {
        min(
            self.len,
            max(self.cap, min(self.open, HEAD_CAPTURE_MAX as u64)),
        )
    }

    /// Whether this transfer starts like an HTTP/1 message (a request
    /// method or `HTTP`: three capitals, then a capital or a space); the
    /// head it starts is then taken whole. A transfer of one to three
    /// capitals counts too: Go's servers (Caddy) keep a 1-byte read pending
    /// on an idle connection, which takes a request's first byte alone.
    /// Body bytes that happen to look so only cost a larger capture.
    #[inline(always)]
    fn starts_message(&self) -> bool {
        let n = self.event.header.data.head_len;
        if !self.keep || n == 0 || (n < 4 && u64::from(n) != self.len) {
            return false;
        }
        let b = &self.event.data[DATA_TAIL_MAX..DATA_TAIL_MAX + 4];
        let cap = |c: u8| c.is_ascii_uppercase();
        cap(b[0])
            && (n < 2 || cap(b[1]))
            && (n < 3 || cap(b[2]))
            && (n < 4 || cap(b[3]) || b[3] == b' ')
    }

    /// The window after this transfer: `open` (or a full one when it
    /// started a message) less its bytes; closed when the transfer ends
    /// with the blank line that ends a head.
    #[inline(always)]
    fn left(&self, started: bool) -> u64 {
        let open = if started {
            HEAD_CAPTURE_MAX as u64
        } else {
            self.open
        };
        if self.ends_blank_line() {
            0
        } else {
            open.saturating_sub(self.len)
        }
    }

    #[inline(always)]
    fn ends_blank_line(&self) -> bool {
        let d = &self.event.header.data;
        let (head, tail) = (u64::from(d.head_len), d.tail_len as usize);
        if tail >= 4 {
            blank_line_at(self.event, tail - 4)
        } else if tail == 0 && head == self.len && head >= 4 {
            blank_line_at(self.event, DATA_TAIL_MAX + head as usize - 4)
        } else {
            false
        }
    }

    #[inline(always)]
    fn buf(&mut self, buf: u64) -> u64 {
        let len = self.len;
        let head = self.first() as usize;
        if read_into(self.event, Area::Head, 0, buf, head) {
            self.event.header.data.head_len = head as u32;
        } else {
            self.unreadable = head > 0;
        }
        let started = self.starts_message();
        if started {
            let have = u64::from(self.event.header.data.head_len);
            let want = min(len, HEAD_CAPTURE_MAX as u64);
            if want > have
                && read_into(
                    self.event,
                    Area::Head,
                    have as usize,
                    buf + have,
                    (want - have) as usize,
                )
            {
                self.event.header.data.head_len = want as u32;
            }
        }
        let tail = min(
            len - u64::from(self.event.header.data.head_len),
            DATA_TAIL_MAX as u64,
        ) as usize;
        if tail > 0 && read_into(self.event, Area::Tail, 0, buf + len - tail as u64, tail) {
            self.event.header.data.tail_len = tail as u32;
        }
        self.left(started)
    }

    #[inline(always)]
    fn iovecs(&mut self, iov: u64, count: u64) -> u64 {
        let len = self.len;
        let miss = self.open.saturating_sub(len);
        // The first iovecs in one read (gateways pass one to three: nginx's
        // writev of a response head and body), reused for the tail: each
        // bpf_probe_read_user costs 100-200 ns whatever its size (KERNEL.md).
        let first = min(count, HEAD_IOVECS as u64);
        let mut cached = [Iovec { base: 0, len: 0 }; HEAD_IOVECS];
        let size =
            (first as usize * size_of::<Iovec>()) & (HEAD_IOVECS * size_of::<Iovec>() * 2 - 1);
        if size == 0 || size > size_of::<[Iovec; HEAD_IOVECS]>() {
            return miss;
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
            return miss;
        }

        let mut filled = gather(self.event, &cached, first, 0, self.first());
        self.event.header.data.head_len = filled as u32;
        let started = self.starts_message();
        // nginx writes a head in a buffer of its own, the body in others: a
        // first iovec ending with the head's blank line ends the head.
        let head_in_first = started
            && cached[0].len >= 4
            && cached[0].len <= filled
            && blank_line_at(self.event, DATA_TAIL_MAX + cached[0].len as usize - 4);
        if started && !head_in_first {
            let want = min(len, HEAD_CAPTURE_MAX as u64);
            if want > filled {
                filled = gather(self.event, &cached, first, filled, want);
                self.event.header.data.head_len = filled as u32;
            }
        }

        // Tail: the end of the transfer lies in the iovec where the running
        // total reaches `len`; take what of it is past the head, and the end
        // of the iovec before when that is short (nginx writes a chunked
        // body's `0\r\n\r\n` in an iovec of its own, after the CR LF that
        // ends the chunk before it).
        let iovec = |i: usize| {
            if i < HEAD_IOVECS {
                cached.get(i).copied()
            } else {
                read_iovec(iov, i)
            }
        };
        let mut before: u64 = 0;
        let mut prev = Iovec { base: 0, len: 0 };
        for i in 0..TAIL_IOVECS {
            if i as u64 >= count {
                break;
            }
            let Some(v) = iovec(i) else {
                break;
            };
            if before + v.len >= len {
                let in_this = len - before;
                let want = min(len - filled, DATA_TAIL_MAX as u64);
                let last = min(in_this, want);
                let early = min(want - last, prev.len) as usize;
                let last = last as usize;
                if (early == 0
                    || read_into(
                        self.event,
                        Area::Tail,
                        0,
                        prev.base + prev.len - early as u64,
                        early,
                    ))
                    && last > 0
                    && read_into(
                        self.event,
                        Area::Tail,
                        early,
                        v.base + in_this - last as u64,
                        last,
                    )
                {
                    self.event.header.data.tail_len = (early + last) as u32;
                }
                break;
            }
            before += v.len;
            prev = v;
        }
        if head_in_first {
            0
        } else {
            self.left(started)
        }
    }
}

/// Whether the captured bytes start with a TLS record header: content type
/// 20-23 (change cipher spec, alert, handshake, application data), then
/// version 3.x. OpenSSL reads a record's 5-byte header in a read of its
/// own, and writes whole records, so every OpenSSL call that touches the
/// socket has such a transfer.
#[inline(always)]
fn looks_like_tls(event: &DataEvent) -> bool {
    if event.header.data.head_len < 3 {
        return false;
    }
    gatescope_common::is_tls_record_start(&event.data[DATA_TAIL_MAX..DATA_TAIL_MAX + 3])
}

/// Copies bytes `from..to` of the transfer (within the first `first`
/// iovecs of `cached`) to the head; returns how far the head is filled.
#[inline(always)]
fn gather(
    event: &mut DataEvent,
    cached: &[Iovec; HEAD_IOVECS],
    first: u64,
    from: u64,
    to: u64,
) -> u64 {
    let mut filled = from;
    let mut before: u64 = 0;
    for (i, v) in cached.iter().enumerate() {
        if i as u64 >= first || filled >= to {
            break;
        }
        let end = before + v.len;
        if end > filled && filled >= before {
            let n = (min(end, to) - filled) as usize;
            if !read_into(
                event,
                Area::Head,
                filled as usize,
                v.base + (filled - before),
                n,
            ) {
                break;
            }
            filled += n as u64;
        }
        before = end;
    }
    filled
}

/// Whether the four bytes at `at` in the scratch are CR LF CR LF.
#[inline(always)]
fn blank_line_at(event: &DataEvent, at: usize) -> bool {
    // SAFETY: a constant global.
    let mask = unsafe { read_volatile(&raw const SCRATCH_MASK) } as usize;
    let at = at & mask;
    event.data.get(at..at + 4).is_some_and(|b| b == b"\r\n\r\n")
}

#[inline(always)]
pub(crate) fn read_iovec(iov: u64, i: usize) -> Option<Iovec> {
    // SAFETY: user memory read through the helper, which may fail.
    unsafe { bpf_probe_read_user((iov + (i * size_of::<Iovec>()) as u64) as *const Iovec) }.ok()
}

/// Masks for offsets into the scratch. Globals rather than literals: LLVM
/// can prove a mask redundant and drop it, but the verifier cannot always
/// prove the bound through the gather loop; a load from read-only data
/// stays, and the verifier knows its value.
#[unsafe(no_mangle)]
static SCRATCH_MASK: u64 = (HEAD_CAPTURE_MAX * 2 - 1) as u64;
#[unsafe(no_mangle)]
static HEAD_AT_MASK: u64 = (HEAD_CAPTURE_MAX - 1) as u64;

/// Where in the scratch a read lands: the tail area, or the head after it.
#[derive(Clone, Copy)]
enum Area {
    Tail = 0,
    Head = DATA_TAIL_MAX as isize,
}

/// Copies `n` (1 to HEAD_CAPTURE_MAX) user bytes from `src` to `at` in
/// `area` of the scratch. Offset and length are masked so that the verifier
/// sees the write inside the scratch: `at` below HEAD_CAPTURE_MAX, `n` at
/// most that, after the 64-byte tail area: within its twice-the-head size.
#[inline(always)]
fn read_into(event: &mut DataEvent, area: Area, at: usize, src: u64, n: usize) -> bool {
    if n == 0 || n > HEAD_CAPTURE_MAX {
        return false;
    }
    // SAFETY: a constant global.
    let mask = unsafe { read_volatile(&raw const HEAD_AT_MASK) } as usize;
    let n = ((n - 1) & mask) + 1;
    let offset = area as usize + (at & mask);
    let Some(dst) = event.data.get_mut(offset..offset + n) else {
        return false;
    };
    // SAFETY: the helper checks the user address; dst is in bounds.
    unsafe { bpf_probe_read_user_buf(src as *const u8, dst) }.is_ok()
}
