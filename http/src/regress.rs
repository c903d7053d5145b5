//! Regression tests from the `http_conn` fuzz target (http/fuzz, `cargo xtask fuzz`).
//!
//! Its seed corpus and every input it found crashing, replayed through the same decoding
//! and invariants (`script.rs`, which the target runs).

use std::{fs, path::Path};

use super::{script, Exchange, HttpEvent, Side};

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

/// method, target, path, first status, final status
type Golden = (&'static str, &'static str, &'static str, u16, u16);

/// What a recorded seed holds, read off its bytes by hand (see `xxd`): per exchange, the
/// method, the request target as sent, the path reported (no query), the first status line's
/// code (a 1xx counts with its final response) and the final status.
const SEEDS: &[(&str, &[Golden])] = &[
    (
        "down-1-index.html",
        &[("GET", "/index.html", "/index.html", 200, 200)],
    ),
    (
        "down-2-data.json",
        &[
            ("GET", "/data.json", "/data.json", 200, 200),
            ("GET", "/nope", "/nope", 404, 404),
        ],
    ),
    (
        "down-3-data.json",
        &[("HEAD", "/data.json", "/data.json", 200, 200)],
    ),
    (
        "down-4-api_orders",
        &[("POST", "/api/orders?src=web", "/api/orders", 201, 201)],
    ),
    (
        "down-5-api_chunked",
        &[("GET", "/api/chunked", "/api/chunked", 200, 200)],
    ),
    (
        "down-6-api_blob",
        &[("PUT", "/api/blob", "/api/blob", 100, 201)],
    ),
    (
        "down-7-index.html",
        &[
            ("GET", "/index.html", "/index.html", 200, 200),
            ("GET", "/api/pipelined", "/api/pipelined", 201, 201),
            ("GET", "/data.json", "/data.json", 200, 200),
        ],
    ),
    (
        "upstream-1-api_orders",
        &[("POST", "/api/orders?src=web", "/api/orders", 201, 201)],
    ),
    (
        "upstream-2-api_chunked",
        &[("GET", "/api/chunked", "/api/chunked", 200, 200)],
    ),
    (
        "upstream-3-api_blob",
        &[("PUT", "/api/blob", "/api/blob", 201, 201)],
    ),
    (
        "upstream-4-api_pipelined",
        &[("GET", "/api/pipelined", "/api/pipelined", 201, 201)],
    ),
];

/// method, path, status, request bytes, response bytes
type Outcome<'a> = (&'a str, &'a str, u16, u64, u64);

/// Offsets where each of `needles` starts in `hay`, each searched after the one before.
fn starts_in_order(hay: &[u8], needles: &[String], what: &str) -> Vec<usize> {
    let mut from = 0;
    needles
        .iter()
        .map(|n| {
            let at = from
                + hay[from..]
                    .windows(n.len())
                    .position(|w| w == n.as_bytes())
                    .unwrap_or_else(|| panic!("{what}: {n:?} not found after byte {from}"));
            from = at + 1;
            at
        })
        .collect()
}

/// Sizes of the pieces `starts` cut `total` bytes into (the first piece starting at 0).
fn pieces(starts: &[usize], total: usize, what: &str) -> Vec<u64> {
    assert_eq!(
        starts.first(),
        Some(&0),
        "{what}: bytes before the first message"
    );
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| (starts.get(k + 1).copied().unwrap_or(total) - s) as u64)
        .collect()
}

/// The complete (`-full`) and split (`-split`) recordings, fully captured, come out exactly:
/// the method, path and status of every exchange, its request and response bytes as fed
/// (cut where the next start line begins), and no anomaly. Expectations come from the seed's
/// name and its bytes as the script format decodes them, not from the parser.
#[test]
fn complete_seeds_are_exact() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/http_conn");
    let mut n = 0;
    for entry in fs::read_dir(&dir).expect("http/fuzz/corpus/http_conn") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(base) = name
            .strip_suffix("-full")
            .or_else(|| name.strip_suffix("-split"))
        else {
            continue;
        };
        let &(_, golden) = SEEDS
            .iter()
            .find(|(b, _)| *b == base)
            .unwrap_or_else(|| panic!("{name}: not in SEEDS"));
        // the name's last part is the first request's path, `_` for `/`
        let named = format!("/{}", base.splitn(3, '-').nth(2).unwrap().replace('_', "/"));
        assert_eq!(golden[0].2, named, "{name}");

        let input = fs::read(&path).unwrap();
        let s = script::decode(&input);
        let mut fed = [Vec::new(), Vec::new()];
        for step in &s.steps {
            let (d, seg) = match step {
                script::Step::Request(seg) => (0, seg),
                script::Step::Response(seg) => (1, seg),
                script::Step::Close(_) => continue,
            };
            assert_eq!(
                seg.len,
                (seg.head.len() + seg.tail.len()) as u64,
                "{name}: a complete seed has no gap"
            );
            fed[d].extend_from_slice(seg.head);
            fed[d].extend_from_slice(seg.tail);
        }
        let req_lines: Vec<String> = golden
            .iter()
            .map(|(m, t, ..)| format!("{m} {t} HTTP/1.1\r\n"))
            .collect();
        let resp_lines: Vec<String> = golden
            .iter()
            .map(|&(.., first, _)| format!("HTTP/1.1 {first} "))
            .collect();
        let req_bytes = pieces(
            &starts_in_order(&fed[0], &req_lines, &name),
            fed[0].len(),
            &name,
        );
        let resp_bytes = pieces(
            &starts_in_order(&fed[1], &resp_lines, &name),
            fed[1].len(),
            &name,
        );

        let events = script::replay(&input);
        let anomalies: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, HttpEvent::Anomaly(_)))
            .collect();
        assert_eq!(anomalies, Vec::<&HttpEvent>::new(), "{name}");
        let got: Vec<Outcome> = events
            .iter()
            .filter_map(|e| match e {
                HttpEvent::Exchange(x) => Some(x),
                HttpEvent::Anomaly(_) => None,
            })
            .map(|x: &Exchange| {
                (
                    x.method.as_str(),
                    x.path.as_str(),
                    x.status,
                    x.request_bytes,
                    x.response_bytes,
                )
            })
            .collect();
        let want: Vec<Outcome> = golden
            .iter()
            .zip(req_bytes.iter().zip(&resp_bytes))
            .map(|(&(m, _, p, _, status), (&q, &r))| (m, p, status, q, r))
            .collect();
        assert_eq!(got, want, "{name}");
        n += 1;
    }
    assert_eq!(
        n,
        2 * SEEDS.len(),
        "a -full and a -split seed per recording"
    );
}

/// The GenAI seeds (written by fuzz/genai_seeds.py) give their calls' usage, also the ones
/// with gaps: the usage lay outside them.
#[test]
fn genai_seeds_give_their_usage() {
    use crate::genai::GenAiUsage;
    let usage = |input, output, total, cached_input| GenAiUsage {
        input,
        output,
        total,
        cached_input,
    };
    let seeds = [
        ("genai-1-chat_sse-whole", usage(9, 2, 11, 0), true),
        (
            "genai-2-messages_sse-kernel",
            usage(2_193, 15, 2_208, 2_048),
            true,
        ),
        ("genai-3-ollama_ndjson-pieces", usage(26, 282, 308, 0), true),
        ("genai-4-embeddings-kernel", usage(8, 0, 8, 0), false),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/http_conn");
    for (name, want, streaming) in seeds {
        let events = script::replay(&fs::read(dir.join(name)).unwrap());
        let calls: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                HttpEvent::Exchange(x) => x.genai.as_deref(),
                HttpEvent::Anomaly(_) => None,
            })
            .collect();
        assert_eq!(calls.len(), 1, "{name}: {events:#?}");
        let g = calls[0];
        assert_eq!(g.usage, Ok(want), "{name}");
        assert_eq!(g.streaming, streaming, "{name}");
        assert_eq!(g.first_token_ns.is_some(), streaming, "{name}");
        assert!(
            g.request_model.is_some() && g.response_model.is_some(),
            "{name}"
        );
    }
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
