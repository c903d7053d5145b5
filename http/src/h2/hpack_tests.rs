//! RFC 7541 Appendix C, gaps, and what is (not) stored.

use super::*;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn kept(name: Name, v: &str) -> Field {
    Field {
        name,
        value: Value::Kept(v.into()),
    }
}

fn len(name: Name, n: u32) -> Field {
    Field {
        name,
        value: Value::Len(n),
    }
}

const UNKNOWN: Field = Field {
    name: Name::Unknown,
    value: Value::Unknown,
};

fn decode(d: &mut Decoder, block: &[u8]) -> Vec<Field> {
    let mut out = Vec::new();
    d.decode(block, &mut out).unwrap();
    out
}

/// C.3 (plain literals) and C.4 (Huffman): three requests on one connection.
#[test]
fn rfc7541_c3_c4_requests() {
    let c3 = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    let c4 = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    for blocks in [c3, c4] {
        let mut d = Decoder::new();
        let host = || kept(Name::Authority, "www.example.com");
        assert_eq!(
            decode(&mut d, &hex(blocks[0])),
            [
                kept(Name::Method, "GET"),
                len(Name::Other, 4),
                kept(Name::Path, "/"),
                host()
            ]
        );
        assert_eq!(d.table(), (1, 57));
        assert_eq!(
            decode(&mut d, &hex(blocks[1])),
            [
                kept(Name::Method, "GET"),
                len(Name::Other, 4),
                kept(Name::Path, "/"),
                host(),
                len(Name::Other, 8)
            ]
        );
        assert_eq!(d.table(), (2, 110));
        assert_eq!(
            decode(&mut d, &hex(blocks[2])),
            [
                kept(Name::Method, "GET"),
                len(Name::Other, 5),
                kept(Name::Path, "/index.html"),
                host(),
                len(Name::Other, 12)
            ]
        );
        assert_eq!(d.table(), (3, 164));
    }
}

/// C.5 (plain) and C.6 (Huffman): three responses with a 256-byte table,
/// so entries are evicted.
#[test]
fn rfc7541_c5_c6_responses_with_eviction() {
    let c5 = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ];
    let c6 = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ff c1 c0 bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];
    for blocks in [c5, c6] {
        let mut d = Decoder::new();
        d.max = 256;
        let rest = [
            len(Name::Other, 7),
            len(Name::Other, 29),
            len(Name::Other, 23),
        ];
        let out = decode(&mut d, &hex(blocks[0]));
        assert_eq!(out[0], kept(Name::Status, "302"));
        assert_eq!(out[1..], rest);
        assert_eq!(d.table(), (4, 222));
        // ":status: 307" evicts the oldest entry (":status: 302")
        let out = decode(&mut d, &hex(blocks[1]));
        assert_eq!(out[0], kept(Name::Status, "307"));
        assert_eq!(out[1..], rest);
        assert_eq!(d.table(), (4, 222));
        let out = decode(&mut d, &hex(blocks[2]));
        assert_eq!(
            out,
            [
                kept(Name::Status, "200"),
                len(Name::Other, 7),
                len(Name::Other, 29),
                len(Name::Other, 23),
                len(Name::Other, 4),
                len(Name::Other, 56)
            ]
        );
        assert_eq!(d.table(), (3, 215));
    }
}

/// Test encoder pieces: a literal with incremental indexing and a new name,
/// plain or Huffman-coded.
pub(crate) fn lit_inc(name: &str, value: &str, huff: bool) -> Vec<u8> {
    let mut b = vec![0x40];
    for s in [name, value] {
        let (flag, raw) = if huff {
            (0x80, huffman::encode(s.as_bytes()))
        } else {
            (0, s.as_bytes().to_vec())
        };
        int(&mut b, raw.len(), 7, flag);
        b.extend_from_slice(&raw);
    }
    b
}

/// An integer with an `n`-bit prefix and the first byte's other bits `flags`.
pub(crate) fn int(b: &mut Vec<u8>, v: usize, n: u32, flags: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        b.push(flags | v as u8);
        return;
    }
    b.push(flags | max as u8);
    let mut v = v - max;
    while v >= 128 {
        b.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    b.push(v as u8);
}

pub(crate) fn idx(i: usize) -> Vec<u8> {
    let mut b = Vec::new();
    int(&mut b, i, 7, 0x80);
    b
}

#[test]
fn gap_then_old_entries_unknown_and_new_ones_exact() {
    let mut d = Decoder::new();
    // request 1 inserts :authority (62)
    decode(
        &mut d,
        &hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"),
    );
    // request 2 is lost: it inserted :path /secret (now 62, authority 63)
    d.gap();
    assert!(d.is_unreliable());
    // request 3 inserts its own :path /api/users (now 62) and refers to the
    // entries from before the gap (63, 64)
    let mut b = lit_inc(":path", "/api/users?id=7", true);
    b.extend(idx(63));
    b.extend(idx(64));
    b.extend(idx(2));
    let out = decode(&mut d, &b);
    assert_eq!(
        out,
        [
            kept(Name::Path, "/api/users"),
            UNKNOWN,
            UNKNOWN,
            kept(Name::Method, "GET")
        ]
    );
    // request 4 refers to the new entry: exact
    let mut b = idx(62);
    b.extend(lit_inc("x-request-id", "abc", false));
    b.extend(idx(62));
    b.extend(idx(63));
    b.extend(idx(64));
    assert_eq!(
        decode(&mut d, &b),
        [
            kept(Name::Path, "/api/users"),
            kept(Name::RequestId, "abc"),
            kept(Name::RequestId, "abc"),
            kept(Name::Path, "/api/users"),
            UNKNOWN
        ]
    );
    // a literal whose name is indexed from a lost entry: name and value unknown,
    // and it is still inserted (so newer indices stay right)
    let mut b = Vec::new();
    int(&mut b, 66, 6, 0x40);
    b.push(3);
    b.extend_from_slice(b"xyz");
    b.extend(idx(62));
    b.extend(idx(63));
    assert_eq!(
        decode(&mut d, &b),
        [UNKNOWN, UNKNOWN, kept(Name::RequestId, "abc")]
    );
}

#[test]
fn size_update_to_zero_makes_the_table_reliable_again() {
    let mut d = Decoder::new_unreliable();
    let mut out = Vec::new();
    assert!(d.decode(&idx(70), &mut out).is_ok());
    assert_eq!(out, [UNKNOWN]);
    // 0x20: size update to 0; 0x3f e1 1f: size update to 4096
    let mut b = vec![0x20, 0x3f, 0xe1, 0x1f];
    b.extend(lit_inc(":authority", "a.example", false));
    assert_eq!(decode(&mut d, &b), [kept(Name::Authority, "a.example")]);
    assert!(!d.is_unreliable());
    assert_eq!(d.table(), (1, 10 + 9 + 32));
    // reliable: a reference past the table is an error, and makes it unreliable
    let mut out = Vec::new();
    assert_eq!(d.decode(&idx(63), &mut out), Err(HpackError::Index));
    assert!(d.is_unreliable());
}

#[test]
fn values_not_kept_are_sized_not_stored() {
    let mut d = Decoder::new();
    let secret = "Bearer ".to_owned() + &"s".repeat(200);
    let mut b = lit_inc("authorization", &secret, true);
    b.extend(lit_inc("cookie", "session=42", false));
    b.extend(lit_inc("grpc-message", "not found", false));
    b.extend(idx(64));
    let out = decode(&mut d, &b);
    assert_eq!(
        out,
        [
            len(Name::Other, 207),
            len(Name::Other, 10),
            len(Name::GrpcMessage, 9),
            len(Name::Other, 207)
        ]
    );
    // sizes as the encoder counts them, values not held
    assert_eq!(
        d.table(),
        (3, (13 + 207 + 32) + (6 + 10 + 32) + (12 + 9 + 32))
    );
    assert!(
        d.heap_bytes() < 3 * size_of::<Entry>() + 512,
        "{}",
        d.heap_bytes()
    );
}

#[test]
fn kept_values_are_cleaned_and_bounded() {
    let mut d = Decoder::new();
    let mut b = lit_inc(":authority", "user:pw@api.example:8443", false);
    b.extend(lit_inc(":path", "/v1/items?token=secret#frag", false));
    b.extend(lit_inc("traceparent", &"0".repeat(300), false));
    b.extend(lit_inc("te", "trailers", false));
    assert_eq!(
        decode(&mut d, &b),
        [
            kept(Name::Authority, "api.example:8443"),
            kept(Name::Path, "/v1/items"),
            len(Name::Traceparent, 300),
            kept(Name::Te, "trailers")
        ]
    );
}

#[test]
fn malformed_blocks_are_errors() {
    for (block, err) in [
        (vec![0x80], HpackError::Index),
        (vec![0x7f], HpackError::Truncated),
        (
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            HpackError::Integer,
        ),
        (vec![0x40, 0x85, b'a'], HpackError::Truncated),
        (vec![0x40, 0x81, 0x00, 0x00], HpackError::Huffman),
    ] {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        assert_eq!(d.decode(&block, &mut out), Err(err), "{block:02x?}");
        assert!(d.is_unreliable());
    }
}

#[test]
fn an_entry_larger_than_the_table_empties_it() {
    let mut d = Decoder::new();
    decode(&mut d, &lit_inc("a", "b", false));
    assert_eq!(d.table(), (1, 34));
    decode(&mut d, &lit_inc("big", &"v".repeat(5000), false));
    assert_eq!(d.table(), (0, 0));
}
