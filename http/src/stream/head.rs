//! The head accumulator: one message head gathered across segments and gaps.
//!
//! Bounded by MAX_HEAD.

use crate::parse::{
    check_start, check_start_strict, find_head_end, synth_start_line, Kind, Start, MAX_HEAD,
};

/// A head being received piece by piece.
#[derive(Debug)]
pub(super) struct HeadAcc {
    /// Known bytes of the head; once holed, only complete lines (and a start
    /// line made up from its visible part if the gap cut it).
    pub(super) buf: Vec<u8>,
    /// True bytes consumed, uncaptured ones included.
    pub(super) total: u64,
    pub(super) first_ts: u64,
    pub(super) last_ts: u64,
    /// Some of the head fell in an uncaptured region.
    pub(super) holed: bool,
    /// Holed, its end not found, and it took in a later segment, which may
    /// have been (or held) other messages: reported as a desync.
    pub(super) spilled: bool,
    /// After a gap: the bytes up to the next line end belong to a line whose
    /// beginning was not seen.
    pub(super) skip_line: bool,
    /// The start line is complete and valid.
    pub(super) start_ok: bool,
    /// Where to resume looking for the empty line.
    pub(super) scan: usize,
    /// Found by resynchronising: the start line must pass the strict check.
    pub(super) strict: bool,
    /// The sink's clock at the first byte.
    pub(super) clock: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeadStep {
    More,
    Complete,
    Invalid,
}

impl HeadAcc {
    pub(super) fn new(ts: u64, strict: bool, clock: u64) -> Self {
        Self {
            strict,
            clock,
            buf: Vec::new(),
            total: 0,
            first_ts: ts,
            last_ts: ts,
            holed: false,
            spilled: false,
            skip_line: false,
            start_ok: false,
            scan: 0,
        }
    }

    /// Takes bytes of `b` up to the end of the head; returns how many.
    pub(super) fn known(&mut self, kind: Kind, b: &[u8], ts: u64) -> (usize, HeadStep) {
        self.last_ts = ts;
        let mut used = 0;
        if self.skip_line {
            match b.iter().position(|&c| c == b'\n') {
                None => {
                    self.total = self.total.saturating_add(b.len() as u64);
                    return (b.len(), HeadStep::More);
                }
                Some(i) => {
                    used = i + 1;
                    self.skip_line = false;
                }
            }
        }
        let rest = &b[used..];
        let old = self.buf.len();
        // one byte over the limit is enough to know the head is too long
        let take = rest.len().min((MAX_HEAD + 1).saturating_sub(old));
        grow(&mut self.buf, take);
        self.buf.extend_from_slice(&rest[..take]);
        if !self.start_ok && (self.buf.len() <= 64 || rest[..take].contains(&b'\n')) {
            let start = if self.strict {
                check_start_strict(kind, &self.buf)
            } else {
                check_start(kind, &self.buf)
            };
            match start {
                Start::Invalid => {
                    self.total = self.total.saturating_add((used + take) as u64);
                    return (used + take, HeadStep::Invalid);
                }
                Start::Line(_) => self.start_ok = true,
                Start::Partial { .. } => {}
            }
        }
        if self.start_ok {
            if let Some(end) = find_head_end(&self.buf, self.scan) {
                let n = used + end.saturating_sub(old);
                self.buf.truncate(end);
                self.total = self.total.saturating_add(n as u64);
                return (n, HeadStep::Complete);
            }
            self.scan = self.buf.len().saturating_sub(2);
        }
        self.total = self.total.saturating_add((used + take) as u64);
        if self.buf.len() > MAX_HEAD {
            return (used + take, HeadStep::Invalid);
        }
        (used + take, HeadStep::More)
    }

    /// `n` uncaptured bytes inside the head. False when too little of the
    /// start line is visible to go on.
    pub(super) fn gap(&mut self, kind: Kind, n: u64, ts: u64) -> bool {
        if self.start_ok {
            // a line cut by the gap is dropped (a partial value would lie)
            let keep = self
                .buf
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |i| i + 1);
            self.buf.truncate(keep);
        } else {
            match synth_start_line(kind, &self.buf) {
                Some(line) => {
                    self.buf = line;
                    self.start_ok = true;
                }
                None => return false,
            }
        }
        self.holed = true;
        self.skip_line = true;
        self.total = self.total.saturating_add(n);
        self.last_ts = ts;
        self.scan = self.buf.len().saturating_sub(2);
        true
    }
}

/// Grows `buf` for `more` bytes, doubling but never past the head limit, so
/// a head split into tiny pieces is not copied over and over and the buffer
/// stays within MAX_HEAD + 1 bytes.
fn grow(buf: &mut Vec<u8>, more: usize) {
    let need = buf.len() + more;
    if need > buf.capacity() {
        let target = (buf.capacity() * 2).clamp(256, MAX_HEAD + 1).max(need);
        buf.reserve_exact(target - buf.len());
    }
}
