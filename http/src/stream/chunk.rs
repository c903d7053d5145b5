//! The chunked transfer coding decoder.
//!
//! It skips uncaptured chunk data by arithmetic; beside it, the check for a chunked body's
//! last chunk at the end of a segment.

/// Chunked transfer coding decoder over known bytes, skipping uncaptured
/// chunk data by arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    /// In a chunk-size line: the size so far, its digit count, and whether
    /// an extension (or whitespace) has started, with its length.
    Size {
        size: u64,
        digits: u8,
        ext: Option<u16>,
    },
    /// Size line's CR seen.
    SizeLf {
        size: u64,
    },
    Data(u64),
    /// The CRLF after chunk data.
    DataCr,
    DataLf,
    /// Trailer section: bytes in the current line.
    Trailer(u32),
    /// A trailer line's CR seen; `empty` if the line was empty.
    TrailerLf {
        empty: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkStep {
    More,
    Done,
    Bad,
}

const MAX_CHUNK_EXT: u16 = 4096;
const MAX_TRAILER_LINE: u32 = 64 * 1024;

impl Chunk {
    pub(super) fn new() -> Self {
        Chunk::Size {
            size: 0,
            digits: 0,
            ext: None,
        }
    }

    fn after_size(size: u64) -> Self {
        if size == 0 {
            Chunk::Trailer(0)
        } else {
            Chunk::Data(size)
        }
    }

    /// Consumes known bytes; returns how many and whether the body ended
    /// (the bytes after it are not consumed) or the framing is broken.
    pub(super) fn known(&mut self, b: &[u8]) -> (usize, ChunkStep) {
        self.known_data(b, &mut |_| {})
    }

    /// [`Chunk::known`], handing the chunk data (the payload) to `data`.
    pub(super) fn known_data(
        &mut self,
        b: &[u8],
        data: &mut impl FnMut(&[u8]),
    ) -> (usize, ChunkStep) {
        let mut i = 0;
        while i < b.len() {
            if let Chunk::Data(left) = self {
                let t = (*left).min((b.len() - i) as u64);
                data(&b[i..i + t as usize]);
                *left -= t;
                i += t as usize;
                if *left == 0 {
                    *self = Chunk::DataCr;
                }
                continue;
            }
            let c = b[i];
            let next = match *self {
                Chunk::Data(_) => return (i, ChunkStep::Bad), // handled above
                Chunk::Size { size, digits, ext } => match (c, ext) {
                    (b'\r', _) if digits > 0 => Chunk::SizeLf { size },
                    (b'\n', _) if digits > 0 => Self::after_size(size),
                    (_, None) if c.is_ascii_hexdigit() => {
                        if digits >= 15 {
                            return (i, ChunkStep::Bad);
                        }
                        let d = u64::from((c as char).to_digit(16).unwrap_or(0));
                        Chunk::Size {
                            size: size * 16 + d,
                            digits: digits + 1,
                            ext: None,
                        }
                    }
                    (b';' | b' ' | b'\t', None) if digits > 0 => Chunk::Size {
                        size,
                        digits,
                        ext: Some(1),
                    },
                    (_, Some(n)) if n < MAX_CHUNK_EXT && c != 0 && c != b'\n' => Chunk::Size {
                        size,
                        digits,
                        ext: Some(n + 1),
                    },
                    _ => return (i, ChunkStep::Bad),
                },
                Chunk::SizeLf { size } if c == b'\n' => Self::after_size(size),
                Chunk::DataCr if c == b'\r' => Chunk::DataLf,
                Chunk::DataCr | Chunk::DataLf if c == b'\n' => Chunk::new(),
                Chunk::Trailer(0) if c == b'\n' => {
                    return (i + 1, ChunkStep::Done);
                }
                Chunk::Trailer(n) if c == b'\r' => Chunk::TrailerLf { empty: n == 0 },
                Chunk::Trailer(_) if c == b'\n' => Chunk::Trailer(0),
                Chunk::Trailer(n) if n < MAX_TRAILER_LINE => Chunk::Trailer(n + 1),
                Chunk::TrailerLf { empty: true } if c == b'\n' => {
                    return (i + 1, ChunkStep::Done);
                }
                Chunk::TrailerLf { empty: false } if c == b'\n' => Chunk::Trailer(0),
                _ => return (i, ChunkStep::Bad),
            };
            *self = next;
            i += 1;
        }
        (i, ChunkStep::More)
    }

    /// Skips `n` uncaptured bytes as far as they are chunk data; returns how
    /// many were (fewer than `n`: the framing fell in the gap).
    pub(super) fn gap(&mut self, n: u64) -> u64 {
        match self {
            Chunk::Data(left) => {
                let t = (*left).min(n);
                *left -= t;
                if *left == 0 {
                    *self = Chunk::DataCr;
                }
                t
            }
            _ => 0,
        }
    }
}

/// How many of a chunked body's latest known bytes [`Recent`] keeps: a
/// last chunk with short trailers, as the kernel's 64-byte tail holds it.
const RECENT: usize = 64;

/// The latest known bytes of a chunked body whose framing fell in an
/// uncaptured region, contiguous up to its latest byte: where its last chunk
/// is looked for. A gateway's HTTP/1.1 connections carry one message at a
/// time in each direction (no pipelining towards upstreams; clients that
/// pipeline are rare), so a chunked body's last chunk ends a transfer and
/// sits in the tail the capture always takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Recent {
    buf: [u8; RECENT],
    n: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            buf: [0; RECENT],
            n: 0,
        }
    }
}

impl Recent {
    /// Known bytes, contiguous with the ones before.
    pub(super) fn known(&mut self, b: &[u8]) {
        if b.len() >= RECENT {
            self.buf.copy_from_slice(&b[b.len() - RECENT..]);
            self.n = RECENT;
            return;
        }
        let keep = self.n.min(RECENT - b.len());
        self.buf.copy_within(self.n - keep..self.n, 0);
        self.buf[keep..keep + b.len()].copy_from_slice(b);
        self.n = keep + b.len();
    }

    /// Uncaptured bytes: what was kept is no longer contiguous.
    pub(super) fn gap(&mut self) {
        self.n = 0;
    }

    /// Whether the bytes end with a last chunk (`0`, any extension, trailer
    /// lines, the blank line) that starts a line.
    pub(super) fn ends_body(&self) -> bool {
        let b = &self.buf[..self.n];
        (0..b.len().saturating_sub(1)).rev().any(|p| {
            b[p] == b'\n'
                && b[p + 1] == b'0'
                && Chunk::new().known(&b[p + 1..]) == (b.len() - p - 1, ChunkStep::Done)
        })
    }
}

/// Whether the last known bytes of a segment are a chunked body's last chunk
/// (`0\r\n\r\n` after a line end, or alone at the segment's start).
pub(super) fn ends_with_last_chunk(head: &[u8], tail: &[u8], gap: u64) -> bool {
    const LAST: &[u8] = b"0\r\n\r\n";
    // the last (up to) 6 contiguous known bytes that end the segment
    let mut w = [0u8; 6];
    let mut n = 0;
    let parts: [&[u8]; 2] = if gap == 0 { [head, tail] } else { [&[], tail] };
    for part in parts.iter().rev() {
        for &c in part.iter().rev() {
            if n == w.len() {
                break;
            }
            n += 1;
            w[w.len() - n] = c;
        }
    }
    let w = &w[w.len() - n..];
    match n {
        6 => w[0] == b'\n' && &w[1..] == LAST,
        5 => gap == 0 && w == LAST,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_decoder() {
        let body = b"1f4;name=x\r\n"
            .iter()
            .copied()
            .chain([b'a'; 500])
            .chain(*b"\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT");
        let body: Vec<u8> = body.collect();
        let mut c = Chunk::new();
        assert_eq!(c.known(&body), (body.len() - 4, ChunkStep::Done));
        // the same byte by byte
        let mut c = Chunk::new();
        for (i, b) in body.iter().enumerate() {
            let (n, step) = c.known(std::slice::from_ref(b));
            assert_eq!(n, 1, "byte {i}");
            if i == body.len() - 5 {
                assert_eq!(step, ChunkStep::Done);
                break;
            }
            assert_eq!(step, ChunkStep::More, "byte {i}");
        }
        // data skipped by a gap, framing visible
        let mut c = Chunk::new();
        assert_eq!(c.known(b"10\r\nabc"), (7, ChunkStep::More));
        assert_eq!(c.gap(13), 13);
        assert_eq!(c.known(b"\r\n0\r\n\r\n"), (7, ChunkStep::Done));
        // a gap past the data
        let mut c = Chunk::new();
        assert_eq!(c.known(b"4\r\n"), (3, ChunkStep::More));
        assert_eq!(c.gap(10), 4);
        assert_eq!(c.gap(1), 0);
        // bad framing
        assert_eq!(Chunk::new().known(b"zz\r\n"), (0, ChunkStep::Bad));
        assert_eq!(Chunk::new().known(b"\r\n"), (0, ChunkStep::Bad));
        assert_eq!(Chunk::new().known(b"2\r\nabX"), (5, ChunkStep::Bad));
        assert_eq!(
            Chunk::new().known(b"fffffffffffffffff\r\n").1,
            ChunkStep::Bad
        );
    }

    #[test]
    fn recent_bytes_find_the_last_chunk() {
        let mut r = Recent::default();
        assert!(!r.ends_body());
        r.known(b"abc\r\n0\r\n\r\n");
        assert!(r.ends_body());
        // split across segments, and with trailers
        let mut r = Recent::default();
        r.known(&[b'x'; 100]);
        r.known(b"\r\n0\r\n");
        assert!(!r.ends_body());
        r.known(b"\r\n");
        assert!(r.ends_body());
        let mut r = Recent::default();
        r.known(b"yy\r\n0;ext=1\r\nGrpc-Status: 0\r\nX-T: a\r\n\r\n");
        assert!(r.ends_body());
        // a gap between the line end and the last chunk: not a line start
        let mut r = Recent::default();
        r.known(b"\r\n");
        r.gap();
        r.known(b"0\r\n\r\n");
        assert!(!r.ends_body());
        // data that is not a last chunk, or has bytes after it
        for not in [
            &b"\r\n10\r\n\r\n"[..],
            b"\r\n0\r\n\r\nGET",
            b"\r\n0\r\nX: y\r\n",
        ] {
            let mut r = Recent::default();
            r.known(not);
            assert!(!r.ends_body(), "{:?}", String::from_utf8_lossy(not));
        }
        // a non-last chunk ending in one: still the end
        let mut r = Recent::default();
        r.known(b"\r\n02\r\nab\r\n0\r\n\r\n");
        assert!(r.ends_body());
        // only the latest 64 bytes are kept
        let mut r = Recent::default();
        r.known(b"\r\n0\r\n\r\n");
        r.known(&[b'z'; 70]);
        assert!(!r.ends_body());
        assert_eq!(r.n, RECENT);
    }

    #[test]
    fn last_chunk_detection() {
        assert!(ends_with_last_chunk(b"", b"xxxx\r\n0\r\n\r\n", 10));
        assert!(ends_with_last_chunk(b"0\r\n\r\n", b"", 0));
        assert!(ends_with_last_chunk(b"abc\r", b"\n0\r\n\r\n", 0));
        assert!(!ends_with_last_chunk(b"", b"0\r\n\r\n", 10));
        assert!(!ends_with_last_chunk(b"", b"xx10\r\n\r\n", 10));
        assert!(!ends_with_last_chunk(b"0\r\n\r\n", b"", 10));
    }
}
