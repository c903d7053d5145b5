//! The rest of a transfer on a socket captured whole (HTTP/2), past the
//! head a data record holds: the head is gathered from the first 4 iovecs
//! and stops at 32 KiB (payload.rs), but one HTTP/2 write holds many frames
//! (nginx writes a frame header and its payload as two iovecs), and a
//! HEADERS frame past the head would be lost.
//!
//! The length programs cannot take more themselves: gathering more iovecs
//! there took the verifier over its 1M-instruction budget (BENCHMARKS.md).
//! So they tail-call a program of their own type and tracepoint (the kernel
//! requires both of a tail call) with the transfer's state in PIECE_STATE.
//! Each run takes up to [`PIECE_MAX`] bytes from up to [`IOVECS_PER_RUN`]
//! iovecs into one piece record, then calls itself for the next, up to
//! [`PIECES_MAX`] runs; the last run sends the data record, which the
//! length program left in SCRATCH. Pieces thus reach the agent before their
//! data record, and the agent holds nothing back waiting for them.

use core::{cmp::min, mem::size_of, ptr::read_volatile};

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_probe_read_user_buf},
    macros::{btf_tracepoint, tracepoint},
    maps::ProgramArray,
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use gatescope_common::{
    DataPiece, Direction, LostReason, PieceEvent, PieceState, Record, PIECES_MAX, PIECE_MAX,
};

use crate::{
    emit::{count_lost, wakeup_flags_now},
    maps::{
        EVENTS, PIECES, PIECES_RECV, PIECES_RECV_BTF, PIECES_SEND, PIECES_SEND_BTF, PIECE_STATE,
        SCRATCH,
    },
    payload::{output, read_iovec, Iovec},
};

/// Iovecs looked at per run: each costs a user read (100-200 ns, KERNEL.md),
/// and the verifier walks each.
const IOVECS_PER_RUN: usize = 8;

#[btf_tracepoint(function = "sock_send_length")]
pub fn pieces_send_btf(ctx: BtfTracePointContext) -> i32 {
    run(&ctx, &PIECES_SEND_BTF);
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn pieces_recv_btf(ctx: BtfTracePointContext) -> i32 {
    run(&ctx, &PIECES_RECV_BTF);
    0
}

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn pieces_send(ctx: TracePointContext) -> u32 {
    run(&ctx, &PIECES_SEND);
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn pieces_recv(ctx: TracePointContext) -> u32 {
    run(&ctx, &PIECES_RECV);
    0
}

/// Notes the transfer whose bytes `pos..len` are still to take, from
/// `ptr` (an iovec array of `count`, or a buffer when `count` is 0).
/// False when there is nowhere to note it.
#[inline(always)]
pub fn start(ptr: u64, count: u64, len: u64, pos: u64) -> bool {
    let Some(state) = PIECE_STATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; programs do not migrate while running.
    unsafe {
        *state = PieceState {
            ptr,
            count,
            len,
            pos,
            at: 0,
            index: 0,
            pieces: 0,
        };
    }
    true
}

/// Tail-calls the piece program of a length program: in `send` or `recv`,
/// its arrays, by the transfer's direction.
#[inline(always)]
pub fn call<C: EbpfContext>(ctx: &C, dir: Direction, send: &ProgramArray, recv: &ProgramArray) {
    let array = if dir == Direction::EGRESS { send } else { recv };
    // SAFETY: returns only when the call failed (an empty array: the agent
    // did not load the program); the caller then goes on as without pieces.
    unsafe { array.tail_call(ctx, 0) };
}

#[inline(always)]
fn run<C: EbpfContext>(ctx: &C, again: &ProgramArray) {
    // SAFETY: a helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let (Some(state), Some(event), Some(piece)) = (
        PIECE_STATE.get_ptr_mut(0),
        SCRATCH.get_ptr_mut(cpu),
        PIECES.get_ptr_mut(cpu),
    ) else {
        return;
    };
    // SAFETY: this CPU's slots, used by one program at a time on this CPU;
    // the length program that called us built the data record in `event`.
    let (state, event, piece) = unsafe { (&mut *state, &*event, &mut *piece) };
    let h = &event.header;
    piece.header = Record::new(
        h.header.tgid,
        h.header.tid,
        h.header.ts_ns,
        DataPiece {
            sk: h.data.sk,
            offset: state.pos,
            dir: h.data.dir,
            piece_len: 0,
        },
    );
    let filled = take(state, piece);
    state.pieces += 1;
    if filled > 0 {
        piece.header.data.piece_len = filled as u32;
        let size = size_of::<Record<DataPiece>>() + filled;
        if size <= size_of::<PieceEvent>() {
            // SAFETY: `size` is within the piece value, which is plain bytes.
            let record = unsafe {
                core::slice::from_raw_parts(
                    core::ptr::from_ref::<PieceEvent>(piece).cast::<u8>(),
                    size,
                )
            };
            if EVENTS.output::<[u8]>(record, wakeup_flags_now()).is_err() {
                count_lost(LostReason::RINGBUF_FULL);
            }
        }
        if state.pos < state.len && (state.pieces as usize) < PIECES_MAX {
            // SAFETY: as in `call`; on failure the data record goes out below.
            unsafe { again.tail_call(ctx, 0) };
        }
    }
    // The last run, or a call that failed: the data record follows its
    // pieces.
    output(event, true);
}

/// Copies the next bytes of the transfer into `piece`, up to PIECE_MAX;
/// returns how many.
#[inline(always)]
fn take(state: &mut PieceState, piece: &mut PieceEvent) -> usize {
    let mut filled: usize = 0;
    for _ in 0..IOVECS_PER_RUN {
        if state.pos >= state.len || filled >= PIECE_MAX {
            break;
        }
        let v = if state.count == 0 {
            Iovec {
                base: state.ptr,
                len: state.len,
            }
        } else if u64::from(state.index) < state.count {
            match read_iovec(state.ptr, state.index as usize) {
                Some(v) => v,
                None => break,
            }
        } else {
            break;
        };
        let end = state.at + v.len;
        if end > state.pos && state.pos >= state.at {
            let n = min(min(end, state.len) - state.pos, (PIECE_MAX - filled) as u64) as usize;
            if !read_into(piece, filled, v.base + (state.pos - state.at), n) {
                // Unreadable (a page not present): the rest is a gap,
                // which the agent steps over by the frames' lengths.
                state.len = state.pos;
                break;
            }
            filled += n;
            state.pos += n as u64;
        }
        if state.pos >= end {
            state.at = end;
            state.index += 1;
        }
    }
    filled
}

/// Masks for offsets into a piece, as payload.rs's SCRATCH_MASK.
#[unsafe(no_mangle)]
static PIECE_MASK: u64 = (PIECE_MAX - 1) as u64;

/// Copies `n` (1 to PIECE_MAX) user bytes from `src` to `at` in the piece.
#[inline(always)]
fn read_into(piece: &mut PieceEvent, at: usize, src: u64, n: usize) -> bool {
    if n == 0 || n > PIECE_MAX {
        return false;
    }
    // SAFETY: a constant global.
    let mask = unsafe { read_volatile(&raw const PIECE_MASK) } as usize;
    let n = ((n - 1) & mask) + 1;
    let at = at & mask;
    let Some(dst) = piece.data.get_mut(at..at + n) else {
        return false;
    };
    // SAFETY: the helper checks the user address; dst is in bounds.
    unsafe { bpf_probe_read_user_buf(src as *const u8, dst) }.is_ok()
}
