//! Regression tests from the `http_conn` fuzz target (http/fuzz, `cargo xtask fuzz`).
//!
//! Its seed corpus and every input it found crashing, replayed through the same decoding
//! and invariants (`script.rs`, which the target runs).

use std::{fs, path::Path};

use super::{script, HttpEvent, Side};

/// Real curl/nginx traffic (downstream and upstream legs) the fuzzer starts from: each
/// replays without breaking an invariant and yields an exchange.
#[test]
fn seed_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/http_conn");
    let mut n = 0;
    for entry in fs::read_dir(&dir).expect("http/fuzz/corpus/http_conn") {
        let path = entry.unwrap().path();
        let events = script::replay(&fs::read(&path).unwrap());
        assert!(
            events.iter().any(|e| matches!(e, HttpEvent::Exchange(_))),
            "{}: {events:#?}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 10, "only {n} seeds in {}", dir.display());
}

#[test]
fn decoding_keeps_head_and_tail_within_len() {
    // config: client, midstream; a request with head "GET /", tail "x\r\n", gap 5 << 3
    let mut input = vec![0b11, 3 << 2, 7, 0, 5, 0, 3, 5, 0];
    input.extend_from_slice(b"GET /x\r\n");
    // a response step cut short by the end of the input
    input.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, b'H']);
    let s = script::decode(&input);
    assert_eq!((s.side, s.midstream), (Side::Client, true));
    match &s.steps[..] {
        [script::Step::Request(q), script::Step::Response(r)] => {
            assert_eq!(
                (q.ts_ns, q.len, q.head, q.tail),
                (1_007, 48, &b"GET /"[..], &b"x\r\n"[..])
            );
            assert_eq!(
                (r.ts_ns, r.len, r.head, r.tail),
                (1_007, 65_536, &b"H"[..], &b""[..])
            );
        }
        steps => panic!("{steps:#?}"),
    }
    script::replay(&input);
}
