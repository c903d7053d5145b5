//! One direction's HTTP/2 framing (RFC 9113 section 4) over sparse transfers.
//!
//! A transfer is known by its length and the pieces of it the kernel
//! captured. Frames are followed through uncaptured bytes by their lengths:
//! a DATA payload (or any payload) in an uncaptured region costs nothing but
//! its content. What cannot be recovered is a frame header (or the preface)
//! that falls in an uncaptured region: the frame boundaries are lost, the
//! walker reports `Lost` and skips to the next transfer that starts with a
//! plausible frame header (`sync`). The payloads the connection needs whole
//! (header blocks, SETTINGS, RST_STREAM, GOAWAY) come with a `complete` flag
//! that is false when part of them was not captured.

use super::Transfer;

/// The client connection preface (RFC 9113 section 3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const HEADER_LEN: u32 = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value.
pub(crate) const DEFAULT_MAX_FRAME: u32 = 16_384;
/// Longest payload kept for a frame whose content is needed: nginx refuses
/// header blocks past its large_client_header_buffers (4 x 8k by default).
const MAX_KEPT: usize = 64 * 1024;

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const PADDED: u8 = 0x8;
pub(crate) const PRIORITY_FLAG: u8 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    /// The reserved bit (ignored by receivers; only resync looks at it).
    reserved: bool,
}

impl FrameHeader {
    pub(crate) fn parse(b: &[u8; 9]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
            reserved: b[5] & 0x80 != 0,
        }
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// What RFC 9113 requires of every frame of a known type: a stream id
    /// where one is needed, none where none is allowed, fixed lengths. A
    /// header that breaks these was not where the walker thought.
    fn valid(&self) -> bool {
        let on_stream = self.stream != 0;
        match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => {
                !on_stream && self.len.is_multiple_of(6) && !(self.has(ACK) && self.len != 0)
            }
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => true,
        }
    }

    /// Stricter, for finding frame sync in the middle of a connection: a
    /// known type, only its defined flags, the reserved bit clear, a length
    /// within the peer's limit, and not a CONTINUATION (its HEADERS would be
    /// missing anyway).
    fn plausible(&self, max_frame: u32) -> bool {
        let flags = match self.kind {
            DATA => END_STREAM | PADDED,
            HEADERS => END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
            SETTINGS | PING => ACK,
            PUSH_PROMISE => END_HEADERS | PADDED,
            PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => 0,
            _ => return false,
        };
        self.valid() && self.flags & !flags == 0 && !self.reserved && self.len <= max_frame
    }

    /// Whether the connection needs this frame's payload bytes.
    fn keeps_payload(&self) -> bool {
        matches!(
            self.kind,
            HEADERS | CONTINUATION | PUSH_PROMISE | SETTINGS | RST_STREAM | GOAWAY
        )
    }
}

/// A frame the walker went through.
#[derive(Debug)]
pub(crate) struct Frame {
    pub hdr: FrameHeader,
    /// Times of the transfers holding its first and last bytes.
    pub first_ns: u64,
    pub last_ns: u64,
    /// The payload for the kinds whose content is needed; for DATA only its
    /// first byte (the pad length of a padded frame). Empty otherwise.
    pub payload: Vec<u8>,
    /// Every byte of `payload` was captured (and it was not too long).
    pub complete: bool,
}

#[derive(Debug)]
pub(crate) enum Event {
    Frame(Frame),
    /// The client preface, as expected.
    Preface,
    /// The bytes where the preface belongs are something else: not HTTP/2.
    BadPreface,
    /// A frame header (or the preface) fell in an uncaptured region.
    Lost,
    /// Frame sync found at the start of a transfer after `skipped` bytes.
    Resync {
        skipped: u64,
    },
}

#[derive(Debug)]
enum State {
    Preface {
        got: usize,
    },
    Header {
        buf: [u8; 9],
        have: usize,
        first_ns: u64,
    },
    Payload {
        frame: Frame,
        left: u64,
    },
    /// Waiting for a transfer that starts with a plausible frame header.
    Lost,
}

/// One direction's frame walker.
#[derive(Debug)]
pub(crate) struct Walker {
    state: State,
    /// SETTINGS_MAX_FRAME_SIZE of the receiving peer, for `plausible`.
    pub max_frame: u32,
    skipped: u64,
}

impl Walker {
    /// A direction from its first byte; the client's starts with the preface.
    pub(crate) fn new(preface: bool) -> Self {
        let state = if preface {
            State::Preface { got: 0 }
        } else {
            State::Header {
                buf: [0; 9],
                have: 0,
                first_ns: 0,
            }
        };
        Self {
            state,
            max_frame: DEFAULT_MAX_FRAME,
            skipped: 0,
        }
    }

    /// A direction joined at an unknown position.
    pub(crate) fn new_lost() -> Self {
        Self {
            state: State::Lost,
            max_frame: DEFAULT_MAX_FRAME,
            skipped: 0,
        }
    }

    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    pub(crate) fn feed(&mut self, t: &Transfer<'_>, out: &mut Vec<Event>) {
        let mut pos = 0u64;
        if matches!(self.state, State::Lost) {
            if self.sync(t) {
                out.push(Event::Resync {
                    skipped: std::mem::take(&mut self.skipped),
                });
                self.state = header_state();
            } else {
                self.skipped = self.skipped.saturating_add(t.len);
                return;
            }
        }
        while pos < t.len {
            let room = t.len - pos;
            match &mut self.state {
                State::Lost => {
                    self.skipped = self.skipped.saturating_add(room);
                    return;
                }
                State::Preface { got } => {
                    let n = (PREFACE.len() - *got).min(room as usize);
                    let mut buf = [0u8; 24];
                    if !copy(t, pos, &mut buf[..n]) {
                        self.lose(t, pos, out);
                    } else if buf[..n] != PREFACE[*got..*got + n] {
                        out.push(Event::BadPreface);
                        self.state = State::Lost;
                        self.skipped = room;
                        return;
                    } else {
                        *got += n;
                        pos += n as u64;
                        if *got == PREFACE.len() {
                            out.push(Event::Preface);
                            self.state = header_state();
                        }
                    }
                }
                State::Header {
                    buf,
                    have,
                    first_ns,
                } => {
                    if *have == 0 {
                        *first_ns = t.ts_ns;
                    }
                    let n = (9 - *have).min(room as usize);
                    if !copy(t, pos, &mut buf[*have..*have + n]) {
                        self.lose(t, pos, out);
                        continue;
                    }
                    pos += n as u64;
                    *have += n;
                    if *have < 9 {
                        continue;
                    }
                    let hdr = FrameHeader::parse(buf);
                    if !hdr.valid() {
                        self.lose(t, pos, out);
                        continue;
                    }
                    let frame = Frame {
                        hdr,
                        first_ns: *first_ns,
                        last_ns: t.ts_ns,
                        payload: Vec::new(),
                        complete: !hdr.keeps_payload() || (hdr.len as usize) <= MAX_KEPT,
                    };
                    if hdr.len == 0 {
                        out.push(Event::Frame(frame));
                        self.state = header_state();
                    } else {
                        self.state = State::Payload {
                            frame,
                            left: u64::from(hdr.len),
                        };
                    }
                }
                State::Payload { frame, left } => {
                    let n = (*left).min(room);
                    let at = u64::from(frame.hdr.len) - *left;
                    if frame.hdr.keeps_payload() && frame.complete {
                        let from = frame.payload.len();
                        frame.payload.resize(from + n as usize, 0);
                        frame.complete = copy(t, pos, &mut frame.payload[from..]);
                    } else if frame.hdr.kind == DATA && at == 0 {
                        let mut b = [0u8; 1];
                        if copy(t, pos, &mut b) {
                            frame.payload.push(b[0]);
                        }
                    }
                    pos += n;
                    *left -= n;
                    frame.last_ns = t.ts_ns;
                    if *left == 0 {
                        let State::Payload { mut frame, .. } =
                            std::mem::replace(&mut self.state, header_state())
                        else {
                            unreachable!("in State::Payload");
                        };
                        if !frame.complete {
                            frame.payload.clear();
                        }
                        out.push(Event::Frame(frame));
                    }
                }
            }
        }
    }

    fn lose(&mut self, t: &Transfer<'_>, pos: u64, out: &mut Vec<Event>) {
        out.push(Event::Lost);
        self.state = State::Lost;
        self.skipped = t.len - pos;
    }

    /// Whether `t` starts with a plausible frame header followed, as far as
    /// the first captured piece goes, by more plausible frame headers. A
    /// transfer that starts mid-frame passes only if its bytes happen to
    /// look like such a chain; one frame header alone has about 40 bits
    /// that must fit (type, flags, reserved bit, stream-id rules, length
    /// bound), and each chained one as many again.
    fn sync(&self, t: &Transfer<'_>) -> bool {
        let Some(p) = t.pieces.first().filter(|p| p.offset == 0) else {
            return false;
        };
        chain(p.bytes, t.len, self.max_frame).is_some()
    }
}

/// How many plausible frame headers `bytes` (the first captured bytes of a
/// transfer of `len`) start with, chained by their lengths, and where the
/// last frame ends; `None` when one is not plausible, the first is a
/// CONTINUATION, there is none, or a header is cut at the end of a transfer
/// the bytes cover entirely.
pub(crate) fn chain(bytes: &[u8], len: u64, max_frame: u32) -> Option<(usize, usize)> {
    let mut at = 0usize;
    let mut n = 0;
    while let Some(h) = bytes.get(at..at + 9) {
        let hdr = FrameHeader::parse(h.try_into().unwrap_or(&[0; 9]));
        if !hdr.plausible(max_frame) || (n == 0 && hdr.kind == CONTINUATION) {
            return None;
        }
        n += 1;
        at += 9 + hdr.len as usize;
    }
    (n > 0 && (at >= bytes.len() || (bytes.len() as u64) < len)).then_some((n, at))
}

fn header_state() -> State {
    State::Header {
        buf: [0; 9],
        have: 0,
        first_ns: 0,
    }
}

/// Fills `dst` with the transfer's bytes from `pos`; false when any of them
/// was not captured.
fn copy(t: &Transfer<'_>, pos: u64, dst: &mut [u8]) -> bool {
    let end = pos + dst.len() as u64;
    let mut covered = 0usize;
    for p in t.pieces {
        let (ps, pe) = (p.offset, p.offset + p.bytes.len() as u64);
        let (s, e) = (ps.max(pos), pe.min(end));
        if s < e {
            let d = (s - pos) as usize..(e - pos) as usize;
            covered += d.len();
            dst[d].copy_from_slice(&p.bytes[(s - ps) as usize..(e - ps) as usize]);
        }
    }
    covered == dst.len()
}

/// A HEADERS or PUSH_PROMISE frame's header block fragment: its length as
/// counted, and its bytes when captured. When the payload was not captured
/// the padding is unknown and counted as fragment.
pub(crate) fn fragment(f: &Frame) -> (u64, Option<&[u8]>) {
    let h = f.hdr;
    let len = h.len as usize;
    let mut start = 0;
    if h.has(PADDED) {
        start += 1;
    }
    if h.kind == HEADERS && h.has(PRIORITY_FLAG) {
        start += 5;
    }
    if h.kind == PUSH_PROMISE {
        start += 4;
    }
    let pad = if h.has(PADDED) && f.complete {
        usize::from(f.payload[0])
    } else {
        0
    };
    if start + pad > len {
        return (0, None);
    }
    let frag = f.complete.then(|| &f.payload[start..len - pad]);
    ((len - start - pad) as u64, frag)
}

/// A DATA frame's payload less padding (the pad length byte is its first
/// byte; when not captured the padding is counted as data).
pub(crate) fn data_len(f: &Frame) -> u64 {
    let len = u64::from(f.hdr.len);
    if !f.hdr.has(PADDED) {
        return len;
    }
    let pad = f.payload.first().map_or(0, |&p| u64::from(p));
    len.saturating_sub(1 + pad)
}

#[cfg(test)]
mod tests {
    use super::super::Piece;
    use super::*;

    fn frames(w: &mut Walker, ts: u64, pieces: &[Piece<'_>], len: u64) -> Vec<Event> {
        let mut out = Vec::new();
        w.feed(
            &Transfer {
                ts_ns: ts,
                len,
                pieces,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn sync_accepts_frame_chains_and_refuses_mid_frame_bytes() {
        let w = Walker::new_lost();
        let settings = [0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        let ping = [0, 0, 8, PING, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut both = settings.to_vec();
        both.extend_from_slice(&ping);
        let ok = |b: &[u8]| {
            let p = [Piece {
                offset: 0,
                bytes: b,
            }];
            w.sync(&Transfer {
                ts_ns: 0,
                len: b.len() as u64,
                pieces: &p,
            })
        };
        assert!(ok(&settings));
        assert!(ok(&both));
        // body bytes of a text response
        assert!(!ok(b"hello world, this is not a frame"));
        // a chain whose second header is cut by the end of the transfer
        assert!(!ok(&both[..20]));
        // CONTINUATION first
        assert!(!ok(&[0, 0, 1, CONTINUATION, END_HEADERS, 0, 0, 0, 1, 0x82]));
    }

    #[test]
    fn header_in_an_uncaptured_region_loses_framing() {
        let mut w = Walker::new(false);
        // a DATA frame of 100 bytes, then a PING whose header is not captured
        let mut b = vec![0, 0, 100, DATA, 0, 0, 0, 0, 1];
        b.extend([7; 100]);
        b.extend([0, 0, 8, PING, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let head = &b[..20];
        let tail = &b[b.len() - 4..];
        let pieces = [
            Piece {
                offset: 0,
                bytes: head,
            },
            Piece {
                offset: b.len() as u64 - 4,
                bytes: tail,
            },
        ];
        let ev = frames(&mut w, 5, &pieces, b.len() as u64);
        assert!(matches!(&ev[0], Event::Frame(f) if f.hdr.kind == DATA && f.hdr.len == 100));
        assert!(matches!(ev[1], Event::Lost));
        assert!(w.is_lost());
    }
}
