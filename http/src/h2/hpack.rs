//! HPACK decoding (RFC 7541) for one direction of one connection, keeping
//! only what gatescope reports.
//!
//! Privacy: a header's value is stored only when its name is one gatescope
//! reports (`Name::keeps_value`); every other value is reduced to its length.
//! Every literal with incremental indexing is still inserted, with its true
//! size, so the table evicts exactly as the encoder's does.
//!
//! Unknown, never wrong: after a lost header block (or when joining a
//! connection late) the dynamic table is *unreliable*: its old entries are
//! dropped, and an index past the entries inserted since then decodes as
//! `Value::Unknown` instead of an error. Indices count newest first, so the
//! entries inserted since the gap are the encoder's newest ones and resolve
//! exactly whatever the lost blocks did. Eviction that differs from the
//! encoder's is harmless: keeping entries the encoder evicted only keeps
//! entries it never references; evicting entries it still has turns their
//! references into `Unknown`. A size update to 0 empties the encoder's table
//! too, so the table is reliable again from there.

use std::collections::VecDeque;

use super::huffman;
use crate::parse::{
    bounded, split_target, strip_userinfo, MAX_HOST, MAX_METHOD, MAX_PATH, MAX_REQUEST_ID,
    MAX_TRACEPARENT, MAX_TRACESTATE,
};

/// Table size a dynamic table size update may set here. A larger one (legal
/// when the decoder advertised it) is clamped: entries evicted early are
/// `Unknown`, never wrong. Clients use 4096 towards nginx (which advertises
/// no other size) and nginx asks gRPC upstreams for 0.
pub(crate) const CAP: usize = 64 * 1024;
/// RFC 7541's initial table size (SETTINGS_HEADER_TABLE_SIZE's default).
pub(crate) const DEFAULT_SIZE: usize = 4096;
/// Per-entry overhead (RFC 7541 section 4.1).
const OVERHEAD: usize = 32;

/// The header names gatescope tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    Method,
    Path,
    Authority,
    Host,
    Status,
    ContentType,
    GrpcStatus,
    /// Only its value's length is kept.
    GrpcMessage,
    Te,
    Traceparent,
    Tracestate,
    RequestId,
    /// Any other header: only its value's length is kept.
    Other,
    /// Indexed from a table entry lost in a gap.
    Unknown,
}

impl Name {
    fn of(n: &[u8]) -> Self {
        // Names are lowercase in HTTP/2 (RFC 9113 section 8.2.1); a mixed-case
        // one is malformed, and taken as the header it spells.
        let is = |s: &str| n.eq_ignore_ascii_case(s.as_bytes());
        match n.len() {
            2 if is("te") => Self::Te,
            4 if is("host") => Self::Host,
            5 if is(":path") => Self::Path,
            7 if is(":method") => Self::Method,
            7 if is(":status") => Self::Status,
            10 if is(":authority") => Self::Authority,
            10 if is("tracestate") => Self::Tracestate,
            11 if is("traceparent") => Self::Traceparent,
            11 if is("grpc-status") => Self::GrpcStatus,
            12 if is("content-type") => Self::ContentType,
            12 if is("grpc-message") => Self::GrpcMessage,
            12 if is("x-request-id") => Self::RequestId,
            _ => Self::Other,
        }
    }

    /// Longest value kept, and whether a longer one is cut (else dropped).
    fn bound(self) -> Option<(usize, bool)> {
        match self {
            Self::Method => Some((MAX_METHOD, false)),
            Self::Path => Some((MAX_PATH, true)),
            Self::Authority | Self::Host => Some((MAX_HOST, true)),
            Self::Status | Self::GrpcStatus => Some((8, false)),
            Self::ContentType => Some((128, false)),
            Self::Te => Some((32, false)),
            Self::Traceparent => Some((MAX_TRACEPARENT, false)),
            Self::Tracestate => Some((MAX_TRACESTATE, false)),
            Self::RequestId => Some((MAX_REQUEST_ID, false)),
            Self::GrpcMessage | Self::Other | Self::Unknown => None,
        }
    }

    /// The value to store for this name: the kept part, or only its length.
    fn value(self, raw: &[u8]) -> Value {
        let len = raw.len() as u32;
        let Some((max, cut)) = self.bound() else {
            return Value::Len(len);
        };
        let raw = match self {
            Self::Path => split_target(raw).0,
            Self::Authority | Self::Host => strip_userinfo(raw),
            _ => raw,
        };
        if raw.len() > max && !cut {
            return Value::Len(len);
        }
        Value::Kept(bounded(raw, max).into_boxed_str())
    }
}

/// A decoded header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// The value as kept (a path without its query).
    Kept(Box<str>),
    /// Not kept: its decoded length only.
    Len(u32),
    /// Indexed from a table entry lost in a gap.
    Unknown,
}

/// One decoded header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: Name,
    pub value: Value,
}

/// A malformed header block (RFC 7541 section 6): the table is unreliable
/// from here on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HpackError {
    Truncated,
    Integer,
    Huffman,
    /// Index 0, past the static table with no such dynamic entry while the
    /// table is reliable.
    Index,
}

#[derive(Clone, Debug)]
struct Entry {
    name: Name,
    /// Octets of the name (0 when the name is `Unknown`: sizes then only
    /// shift when this entry is evicted, which is harmless, see above).
    name_len: u32,
    value: Value,
    /// RFC 7541 size: name and value octets plus 32.
    size: u32,
}

/// RFC 7541 Appendix A.
const STATIC: [(&[u8], &str); 61] = [
    (b":authority", ""),                   // 1
    (b":method", "GET"),                   // 2
    (b":method", "POST"),                  // 3
    (b":path", "/"),                       // 4
    (b":path", "/index.html"),             // 5
    (b":scheme", "http"),                  // 6
    (b":scheme", "https"),                 // 7
    (b":status", "200"),                   // 8
    (b":status", "204"),                   // 9
    (b":status", "206"),                   // 10
    (b":status", "304"),                   // 11
    (b":status", "400"),                   // 12
    (b":status", "404"),                   // 13
    (b":status", "500"),                   // 14
    (b"accept-charset", ""),               // 15
    (b"accept-encoding", "gzip, deflate"), // 16
    (b"accept-language", ""),              // 17
    (b"accept-ranges", ""),                // 18
    (b"accept", ""),                       // 19
    (b"access-control-allow-origin", ""),  // 20
    (b"age", ""),                          // 21
    (b"allow", ""),                        // 22
    (b"authorization", ""),                // 23
    (b"cache-control", ""),                // 24
    (b"content-disposition", ""),          // 25
    (b"content-encoding", ""),             // 26
    (b"content-language", ""),             // 27
    (b"content-length", ""),               // 28
    (b"content-location", ""),             // 29
    (b"content-range", ""),                // 30
    (b"content-type", ""),                 // 31
    (b"cookie", ""),                       // 32
    (b"date", ""),                         // 33
    (b"etag", ""),                         // 34
    (b"expect", ""),                       // 35
    (b"expires", ""),                      // 36
    (b"from", ""),                         // 37
    (b"host", ""),                         // 38
    (b"if-match", ""),                     // 39
    (b"if-modified-since", ""),            // 40
    (b"if-none-match", ""),                // 41
    (b"if-range", ""),                     // 42
    (b"if-unmodified-since", ""),          // 43
    (b"last-modified", ""),                // 44
    (b"link", ""),                         // 45
    (b"location", ""),                     // 46
    (b"max-forwards", ""),                 // 47
    (b"proxy-authenticate", ""),           // 48
    (b"proxy-authorization", ""),          // 49
    (b"range", ""),                        // 50
    (b"referer", ""),                      // 51
    (b"refresh", ""),                      // 52
    (b"retry-after", ""),                  // 53
    (b"server", ""),                       // 54
    (b"set-cookie", ""),                   // 55
    (b"strict-transport-security", ""),    // 56
    (b"transfer-encoding", ""),            // 57
    (b"user-agent", ""),                   // 58
    (b"vary", ""),                         // 59
    (b"via", ""),                          // 60
    (b"www-authenticate", ""),             // 61
];

/// One direction's HPACK decoding context.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Newest first, as indices count.
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
    unreliable: bool,
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder from the connection's start.
    pub(crate) fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max: DEFAULT_SIZE,
            unreliable: false,
            scratch: Vec::new(),
        }
    }

    /// A decoder joining late: unreliable from the start.
    pub(crate) fn new_unreliable() -> Self {
        let mut d = Self::new();
        d.gap();
        d
    }

    /// A header block was lost: what the table held is unknown from here.
    /// The size the encoder uses is unknown too, so the table keeps up to
    /// `CAP` (keeping more than the encoder is harmless) until the next size
    /// update.
    pub(crate) fn gap(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.max = CAP;
        self.unreliable = true;
    }

    #[cfg(test)]
    pub(crate) fn is_unreliable(&self) -> bool {
        self.unreliable
    }

    /// Decodes one complete header block, appending its fields to `out`. On
    /// an error, the fields decoded before it stay in `out` and the table is
    /// unreliable from here.
    pub(crate) fn decode(&mut self, block: &[u8], out: &mut Vec<Field>) -> Result<(), HpackError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.decode_with(block, out, &mut scratch);
        scratch.clear();
        self.scratch = scratch;
        if r.is_err() {
            self.gap();
        }
        r
    }

    fn decode_with(
        &mut self,
        b: &[u8],
        out: &mut Vec<Field>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), HpackError> {
        let mut pos = 0;
        while let Some(&first) = b.get(pos) {
            if first & 0x80 != 0 {
                // indexed field (6.1)
                let i = integer(b, &mut pos, 7)?;
                let (name, value) = self.lookup(i)?;
                out.push(Field { name, value });
            } else if first & 0xe0 == 0x20 {
                // dynamic table size update (6.3)
                let n = integer(b, &mut pos, 5)?;
                self.max = n.min(CAP);
                if n == 0 {
                    // the encoder's table is empty too: known again
                    self.unreliable = false;
                }
                self.evict(0);
            } else {
                // literal (6.2): with incremental indexing (01), without (0000)
                // or never indexed (0001)
                let index = first & 0xc0 == 0x40;
                let i = integer(b, &mut pos, if index { 6 } else { 4 })?;
                let (name, name_len) = if i == 0 {
                    scratch.clear();
                    string(b, &mut pos, scratch)?;
                    (Name::of(scratch), scratch.len())
                } else {
                    self.name_at(i)?
                };
                scratch.clear();
                string(b, &mut pos, scratch)?;
                let value = match name {
                    Name::Unknown => Value::Unknown,
                    n => n.value(scratch),
                };
                if index {
                    self.insert(Entry {
                        name,
                        name_len: name_len as u32,
                        value: value.clone(),
                        size: (name_len + scratch.len() + OVERHEAD) as u32,
                    });
                }
                out.push(Field { name, value });
            }
        }
        Ok(())
    }

    /// Name and value at index `i` (1-based, static then dynamic).
    fn lookup(&self, i: usize) -> Result<(Name, Value), HpackError> {
        if let Some(&(n, v)) = i.checked_sub(1).and_then(|i| STATIC.get(i)) {
            let name = Name::of(n);
            return Ok((name, name.value(v.as_bytes())));
        }
        match self.dynamic(i)? {
            Some(e) => Ok((e.name, e.value.clone())),
            None => Ok((Name::Unknown, Value::Unknown)),
        }
    }

    /// Name and name length at index `i`, for a literal with an indexed name.
    fn name_at(&self, i: usize) -> Result<(Name, usize), HpackError> {
        if let Some(&(n, _)) = STATIC.get(i - 1) {
            return Ok((Name::of(n), n.len()));
        }
        Ok(self
            .dynamic(i)?
            .map_or((Name::Unknown, 0), |e| (e.name, e.name_len as usize)))
    }

    /// The dynamic entry at index `i`; `None` when it was lost in a gap.
    fn dynamic(&self, i: usize) -> Result<Option<&Entry>, HpackError> {
        let Some(d) = i.checked_sub(STATIC.len() + 1) else {
            return Err(HpackError::Index);
        };
        match self.entries.get(d) {
            Some(e) => Ok(Some(e)),
            None if self.unreliable => Ok(None),
            None => Err(HpackError::Index),
        }
    }

    fn insert(&mut self, e: Entry) {
        let size = e.size as usize;
        if size > self.max {
            // RFC 7541 4.4: an entry larger than the table empties it
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.entries.push_front(e);
    }

    /// Evicts oldest entries until `room` more octets fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= e.size as usize;
        }
    }

    /// Heap bytes held, for the bounded-memory tests.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.scratch.capacity()
            + self
                .entries
                .iter()
                .map(|e| match &e.value {
                    Value::Kept(s) => s.len(),
                    _ => 0,
                })
                .sum::<usize>()
    }

    #[cfg(test)]
    pub(crate) fn table(&self) -> (usize, usize) {
        (self.entries.len(), self.size)
    }
}

/// An integer with an `n`-bit prefix (5.1). Values past 2^28 are refused:
/// no table size, index or string length gets near it.
fn integer(b: &[u8], pos: &mut usize, n: u32) -> Result<usize, HpackError> {
    let mask = (1u8 << n) - 1;
    let first = *b.get(*pos).ok_or(HpackError::Truncated)? & mask;
    *pos += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut v = usize::from(mask);
    let mut shift = 0;
    loop {
        let c = *b.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        v += usize::from(c & 0x7f) << shift;
        shift += 7;
        if v > 1 << 28 || shift > 28 {
            return Err(HpackError::Integer);
        }
        if c & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// A string literal (5.2), decoded into `out`.
fn string(b: &[u8], pos: &mut usize, out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huff = b.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(b, pos, 7)?;
    let raw = b.get(*pos..*pos + len).ok_or(HpackError::Truncated)?;
    *pos += len;
    if huff {
        huffman::decode(raw, out).map_err(|_| HpackError::Huffman)
    } else {
        out.extend_from_slice(raw);
        Ok(())
    }
}

#[cfg(test)]
#[path = "hpack_tests.rs"]
pub(crate) mod tests;
