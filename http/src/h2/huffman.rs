//! HPACK's Huffman code (RFC 7541 section 5.2, Appendix B), decode only.
//!
//! The code is canonical (codes of one length are consecutive and ordered by
//! symbol, checked against Appendix B's codes when this table was made), so
//! the bit lengths alone define it and decoding needs three small tables
//! built at compile time instead of Appendix B's 257 codes. Decoding walks
//! one bit at a time: header strings are short, and only the few headers
//! gatescope keeps or must size are decoded.

/// Appendix B's code length of each symbol, 0..=255 then EOS (256).
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

struct Canon {
    /// First code of each length.
    first: [u32; MAX_LEN + 1],
    /// Number of codes of each length.
    count: [u32; MAX_LEN + 1],
    /// Index in `symbols` of the first symbol of each length.
    offset: [u32; MAX_LEN + 1],
    /// Symbols ordered by (length, symbol).
    symbols: [u16; 257],
}

const CANON: Canon = build();

const fn build() -> Canon {
    let mut c = Canon {
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut s = 0;
    while s < 257 {
        c.count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut code = 0u32;
    let mut at = 0u32;
    let mut len = 1;
    while len <= MAX_LEN {
        c.first[len] = code;
        c.offset[len] = at;
        let mut s = 0;
        while s < 257 {
            if LENGTHS[s] as usize == len {
                c.symbols[at as usize] = s as u16;
                at += 1;
            }
            s += 1;
        }
        code = (code + c.count[len]) << 1;
        len += 1;
    }
    c
}

/// The string is not a valid Huffman encoding (RFC 7541 section 5.2: EOS
/// decoded, padding longer than 7 bits or not all ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadHuffman;

/// Appends the decoding of `bytes` to `out`.
pub(crate) fn decode(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), BadHuffman> {
    let mut code = 0u32;
    let mut len = 0usize;
    for &b in bytes {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((b >> shift) & 1);
            len += 1;
            let i = code.wrapping_sub(CANON.first[len]);
            if i < CANON.count[len] {
                let sym = CANON.symbols[(CANON.offset[len] + i) as usize];
                if sym == EOS {
                    return Err(BadHuffman);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                return Err(BadHuffman);
            }
        }
    }
    // Padding: the most significant bits of EOS (all ones), at most 7.
    if len > 7 || code != (1 << len) - 1 {
        return Err(BadHuffman);
    }
    Ok(())
}

/// Encodes `s` (tests build header blocks with it).
#[cfg(test)]
pub(crate) fn encode(s: &[u8]) -> Vec<u8> {
    let code_of = |sym: usize| -> (u64, usize) {
        let len = LENGTHS[sym] as usize;
        let rank = (CANON.offset[len]..)
            .zip(&CANON.symbols[CANON.offset[len] as usize..])
            .find(|(_, &x)| usize::from(x) == sym)
            .map(|(r, _)| r - CANON.offset[len])
            .unwrap_or_default();
        (u64::from(CANON.first[len] + rank), len)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0usize);
    for &b in s {
        let (c, l) = code_of(usize::from(b));
        acc = (acc << l) | c;
        bits += l;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn appendix_b_codes() {
        // A few codes as Appendix B prints them.
        let code = |sym: usize| {
            let len = LENGTHS[sym] as usize;
            let rank = CANON.symbols[CANON.offset[len] as usize..]
                .iter()
                .position(|&x| usize::from(x) == sym)
                .unwrap();
            (CANON.first[len] + rank as u32, len)
        };
        assert_eq!(code(usize::from(b'0')), (0x0, 5));
        assert_eq!(code(usize::from(b'a')), (0x3, 5));
        assert_eq!(code(usize::from(b' ')), (0x14, 6));
        assert_eq!(code(usize::from(b'~')), (0x1ffd, 13));
        assert_eq!(code(0), (0x1ff8, 13));
        assert_eq!(code(255), (0x3ffffee, 26));
        assert_eq!(code(256), (0x3fffffff, 30));
    }

    #[test]
    fn rfc7541_c4_strings() {
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
        ];
        for (h, s) in cases {
            let mut out = Vec::new();
            decode(&hex(h), &mut out).unwrap();
            assert_eq!(out, s.as_bytes());
            assert_eq!(encode(s.as_bytes()), hex(h));
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        decode(&encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn bad_padding_and_eos() {
        let mut out = Vec::new();
        // 'a' (00011) padded with zeros instead of ones
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(BadHuffman));
        // a whole byte of padding
        assert_eq!(decode(&[0b0001_1111, 0xff], &mut out), Err(BadHuffman));
        // EOS itself
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff], &mut out), Err(BadHuffman));
    }
}
