//! Joins the pieces of a transfer (records the kernel sends before its data
//! record when an HTTP/2 socket's transfer goes past the head: see
//! ebpf/src/pieces.rs) to that data record's head, so later stages see one
//! longer head and never know pieces existed.
//!
//! A thread's records arrive in the order its programs sent them (one ring
//! buffer), and a transfer's pieces are sent by the same syscall's programs
//! right before its data record. So pieces wait per thread, and the thread's
//! next data record takes them when it is their transfer (same socket,
//! direction and time); anything else (a piece lost to a full ring, so the
//! next one no longer follows on) leaves a gap, which HTTP/2 framing steps
//! over by the frames' lengths, and the pieces that cannot be joined are
//! counted as lost.

use std::collections::HashMap;

use super::decode::{Direction, Observation};

/// Pieces waiting for their data record, per thread.
#[derive(Debug, Default)]
pub struct Joiner {
    waiting: HashMap<u32, Waiting>,
    /// Piece records dropped unjoined since the last [`Joiner::take_dropped`].
    dropped: u64,
}

#[derive(Debug)]
struct Waiting {
    sk: u64,
    dir: Direction,
    ts_ns: u64,
    /// Offset of `bytes` in the transfer.
    offset: u64,
    bytes: Vec<u8>,
    pieces: u64,
}

impl Waiting {
    fn of(&self, sk: u64, dir: Direction, ts_ns: u64) -> bool {
        (self.sk, self.dir, self.ts_ns) == (sk, dir, ts_ns)
    }
}

impl Joiner {
    /// Keeps a piece (an [`Observation::Piece`]; anything else is ignored)
    /// for its thread's next data record.
    pub fn piece(&mut self, obs: &Observation<'_>) {
        let Observation::Piece {
            sk,
            dir,
            tid,
            ts_ns,
            offset,
            bytes,
        } = *obs
        else {
            return;
        };
        if let Some(w) = self.waiting.get_mut(&tid) {
            if w.of(sk, dir, ts_ns) && w.offset + w.bytes.len() as u64 == offset {
                w.bytes.extend_from_slice(bytes);
                w.pieces += 1;
                return;
            }
            // Another transfer's, or this one's with a piece missing before
            // it: only what follows on from the head can be joined.
            if w.of(sk, dir, ts_ns) {
                self.dropped += 1;
                return;
            }
            self.dropped += w.pieces;
        }
        self.waiting.insert(
            tid,
            Waiting {
                sk,
                dir,
                ts_ns,
                offset,
                bytes: bytes.to_vec(),
                pieces: 1,
            },
        );
    }

    /// A data record of a thread with pieces waiting: when they are its
    /// transfer's and follow on from its head, the record with its head
    /// and the pieces in `buf` (its tail cut to what lies past them).
    /// Anything else is returned as it is; pieces of another transfer are
    /// dropped.
    pub fn join<'a>(&mut self, mut obs: Observation<'a>, buf: &'a mut Vec<u8>) -> Observation<'a> {
        // Every record passes here; pieces are rare (HTTP/2 past a head).
        if self.waiting.is_empty() {
            return obs;
        }
        let Observation::Data {
            sk,
            dir,
            len,
            tid,
            ts_ns,
            ref mut head,
            ref mut tail,
            ..
        } = obs
        else {
            return obs;
        };
        let Some(w) = self.waiting.remove(&tid) else {
            return obs;
        };
        if !w.of(sk, dir, ts_ns) || w.offset != head.len() as u64 {
            self.dropped += w.pieces;
            return obs;
        }
        buf.clear();
        buf.extend_from_slice(head);
        let room = len.saturating_sub(head.len() as u64) as usize;
        buf.extend_from_slice(&w.bytes[..w.bytes.len().min(room)]);
        // The tail is the transfer's last bytes: keep what the head now
        // does not reach.
        let tail_from = len - tail.len() as u64;
        let cut = (buf.len() as u64).saturating_sub(tail_from) as usize;
        *tail = &tail[cut.min(tail.len())..];
        *head = buf;
        obs
    }

    /// Pieces dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests;
