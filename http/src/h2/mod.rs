//! HTTP/2 (RFC 9113) over sparse captures: frames, HPACK, streams to
//! exchanges, with no I/O (`H2Conn`, the counterpart of `HttpConn`).
//!
//! What is recoverable from a sparse capture:
//! - Payload bytes in uncaptured regions: DATA is counted by its frame's
//!   length, and any frame is stepped over by its length.
//! - A header block not captured whole: its stream is still followed (its
//!   frame headers give its id and END_STREAM), but its fields are unknown
//!   and that direction's HPACK table becomes unreliable (`hpack` module:
//!   indices into what was lost decode as unknown, never as a wrong value).
//! - A frame header in an uncaptured region: framing is lost for that
//!   direction (`H2Anomaly::Desync`) until a transfer starts with a plausible
//!   frame header (`frame::Walker::sync`); streams whose frames went by
//!   meanwhile end without their last bytes or are not reported.
//!
//! Input: a `Segment` (the captured head and tail of a transfer), or a
//! `Transfer` listing any number of captured pieces, for a richer capture
//! (for example a kernel frame walker emitting every frame header and
//! header block).

mod conn;
mod frame;
mod hpack;
mod huffman;

pub use conn::H2Conn;

use crate::Segment;

/// Bytes of one transfer that were captured, at their offset in it.
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// One syscall's transfer as pieces: `pieces` in increasing offset, not
/// overlapping, within `0..len`.
#[derive(Clone, Copy, Debug)]
pub struct Transfer<'a> {
    /// Monotonic time of the syscall (ns).
    pub ts_ns: u64,
    /// True number of bytes transferred.
    pub len: u64,
    pub pieces: &'a [Piece<'a>],
}

/// A `Segment`'s head and tail as pieces.
pub fn segment_pieces<'a>(seg: &Segment<'a>) -> [Piece<'a>; 2] {
    [
        Piece {
            offset: 0,
            bytes: seg.head,
        },
        Piece {
            offset: seg.len.saturating_sub(seg.tail.len() as u64),
            bytes: seg.tail,
        },
    ]
}

/// Whether a connection's first client bytes are (the start of) the HTTP/2
/// client preface (h2c with prior knowledge, or h2 after ALPN). Any prefix
/// of at least 4 bytes counts, so a short first read is not misjudged.
pub fn looks_like_h2_preface(bytes: &[u8]) -> bool {
    let n = bytes.len().min(frame::PREFACE.len());
    n >= 4 && bytes[..n] == frame::PREFACE[..n]
}

/// Whether a transfer of `len` bytes, of which `head` was captured from its
/// start, is HTTP/2 frames: for a connection open before gatescope, whose
/// preface was not seen. Stricter than the parser's own resync: two
/// plausible frame headers chained by their lengths, or one that ends
/// exactly where a wholly captured transfer ends (about 40 bits must fit per
/// header), so HTTP/1 bytes, text or body, are not taken for it.
pub fn looks_like_h2_frames(head: &[u8], len: u64) -> bool {
    let whole = head.len() as u64 == len;
    match frame::chain(head, len, frame::DEFAULT_MAX_FRAME) {
        Some((n, end)) => n >= 2 || (whole && end == head.len()),
        None => false,
    }
}

/// Whether the first bytes a server sent on a connection, before any
/// request, are an HTTP/2 server preface: a SETTINGS frame (not an ACK) on
/// stream 0, its length a multiple of 6. An HTTP/2 server may send it
/// before the client's preface arrives (RFC 9113 section 3.4; grpcio does
/// at once), while an HTTP/1 server never speaks first.
pub fn looks_like_h2_server_preface(bytes: &[u8]) -> bool {
    let Some(h) = bytes.get(..frame::HEADER_LEN as usize) else {
        return false;
    };
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    h[3] == frame::SETTINGS
        && h[4] & frame::ACK == 0
        && h[5..9] == [0; 4]
        && len.is_multiple_of(6)
        && len <= frame::DEFAULT_MAX_FRAME
}

/// Whether an HTTP/1 request head asks to switch to h2c (`Upgrade: h2c`,
/// RFC 7540 section 3.2; nginx 1.22 does not accept it, other gateways do).
pub fn is_h2c_upgrade(head: &[u8]) -> bool {
    head.split(|&c| c == b'\n').skip(1).any(|line| {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return false;
        };
        line[..colon].trim_ascii().eq_ignore_ascii_case(b"upgrade")
            && line[colon + 1..]
                .split(|&c| c == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"))
    })
}

#[cfg(test)]
mod tests;
