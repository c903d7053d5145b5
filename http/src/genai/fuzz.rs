//! Fuzz-style tests of the GenAI scanners through `HttpConn`, with the
//! crate's seeded generator (`crate::fuzz`).
//!
//! A keep-alive upstream connection carrying one call of each format, cut
//! into transfers at random and captured whole, sparsely at random, or as
//! the kernel does for GenAI sockets (32 KiB whole, then head and tail):
//! whole captures give the exact calls; sparse ones never a number, model or
//! first token that is not the call's own; random bytes under GenAI heads
//! never panic and stay bounded.

use super::{buf::MAX_EVENT, fixtures::*, GenAiCall};
use crate::{
    fuzz::{runs, seed, Rng, HEAP_BOUND},
    testkit::{cap, full, Cap},
    Exchange, HttpConn, HttpEvent, Side,
};

/// Requests and their responses' writes, in order.
fn conversation() -> Vec<(String, Vec<u8>, Vec<Vec<u8>>)> {
    let json = |body: &str| {
        let mut r = head(200, "application/json", Some(body.len()), OPENAI_HEADERS);
        r.extend_from_slice(body.as_bytes());
        vec![r]
    };
    let sse = || {
        head(
            200,
            "text/event-stream; charset=utf-8",
            None,
            OPENAI_HEADERS,
        )
    };
    let anthropic_req = ANTHROPIC_REQ.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let responses_req = r#"{"model":"gpt-4.1","input":"Say hi","stream":true}"#;
    let long = "a long answer ".repeat(4_000);
    let calls: Vec<(&str, &str, Vec<Vec<u8>>)> = vec![
        ("/a/v1/chat/completions", CHAT_REQ, json(CHAT_RESP)),
        (
            "/b/v1/chat/completions",
            CHAT_REQ_STREAM,
            chunked(sse(), &chat_stream(true)),
        ),
        (
            "/v1/messages",
            &anthropic_req,
            chunked(sse(), &anthropic_stream()),
        ),
        (
            "/api/chat",
            OLLAMA_CHAT_REQ,
            chunked(
                head(200, "application/x-ndjson", None, ""),
                &ollama_chat_stream(),
            ),
        ),
        ("/v1/embeddings", EMBED_REQ, json(&embeddings_resp())),
        (
            "/a/v1/responses",
            responses_req,
            chunked(sse(), &responses_stream("Hi")),
        ),
        (
            "/b/v1/responses",
            responses_req,
            chunked(sse(), &responses_stream(&long)),
        ),
    ];
    calls
        .into_iter()
        .map(|(path, body, writes)| {
            (
                path.to_owned(),
                post(path, "api.example.com", body.as_bytes()),
                writes,
            )
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Whole,
    Sparse,
    /// 32 KiB whole, then a head and a 64-byte tail.
    Kernel,
}

/// Feeds the conversation cut at random; returns the exchanges and the
/// largest heap seen.
fn run(rng: &mut Rng, mode: Mode, split: bool) -> (Vec<Exchange>, usize) {
    let mut conn = HttpConn::new(Side::Client);
    let mut out = Vec::new();
    let mut max_heap = 0;
    let mut ts = 1_000;
    let mut feed = |conn: &mut HttpConn, req: bool, data: &[u8], rng: &mut Rng| {
        let mut at = 0;
        while at < data.len() {
            let len = if !split {
                data.len()
            } else if rng.chance(40) {
                rng.range(1, 48) as usize
            } else {
                rng.range(49, 70_000) as usize
            };
            let piece = &data[at..(at + len).min(data.len())];
            ts += 1;
            let c: Cap = match mode {
                Mode::Whole => full(ts, piece),
                Mode::Sparse => cap(
                    ts,
                    piece,
                    rng.range(1, 64) as usize,
                    rng.range(0, 16) as usize,
                ),
                Mode::Kernel => cap(ts, piece, 32 * 1024, 64),
            };
            if req {
                conn.on_request_bytes(&c.seg(), &mut out);
            } else {
                conn.on_response_bytes(&c.seg(), &mut out);
            }
            max_heap = max_heap.max(conn.heap_bytes());
            at += piece.len();
        }
    };
    for (_, q, writes) in conversation() {
        feed(&mut conn, true, &q, rng);
        for w in writes {
            feed(&mut conn, false, &w, rng);
        }
    }
    conn.on_close(u64::MAX, &mut out);
    let x = out
        .into_iter()
        .filter_map(|e| match e {
            HttpEvent::Exchange(x) => Some(x),
            HttpEvent::Anomaly(_) => None,
        })
        .collect();
    (x, max_heap)
}

/// The calls as the unsplit, whole capture gives them, by path.
fn truth() -> Vec<(String, GenAiCall)> {
    let (x, _) = run(&mut Rng::new(1), Mode::Whole, false);
    assert_eq!(x.len(), conversation().len());
    x.into_iter()
        .map(|e| {
            let g = *e.genai.expect("every call is GenAI");
            assert!(g.usage.is_ok() && g.request_model.is_some(), "{g:#?}");
            (e.path, g)
        })
        .collect()
}

/// One pending GenAI call per request (its scanners), one response being read
/// (its event buffer, or a window).
const GENAI_BOUND: usize = HEAP_BOUND + MAX_EVENT + 64 * 1024;

#[test]
fn whole_captures_give_the_exact_calls() {
    let truth = truth();
    let mut rng = seed(0x5eed_a1001);
    for i in 0..runs(150) {
        let (x, heap) = run(&mut rng, Mode::Whole, true);
        assert!(heap <= GENAI_BOUND, "run {i}: {heap}");
        assert_eq!(x.len(), truth.len(), "run {i}");
        for (e, (path, want)) in x.iter().zip(&truth) {
            assert_eq!(&e.path, path);
            let g = e.genai.as_deref().unwrap();
            // the first token's transfer depends on the cuts
            let first = g.first_token_ns;
            assert_eq!(
                first.is_some(),
                want.first_token_ns.is_some(),
                "run {i}: {path}"
            );
            assert!(first.is_none_or(|t| (e.response_first_ns..=e.response_last_ns).contains(&t)));
            let g = GenAiCall {
                first_token_ns: want.first_token_ns,
                ..g.clone()
            };
            assert_eq!(&g, want, "run {i}: {path}");
        }
    }
}

#[test]
fn sparse_captures_never_invent() {
    let truth = truth();
    let mut rng = seed(0x5eed_a1002);
    // (usage read, usage not read) over all runs: both must occur
    let mut seen = [0usize; 2];
    for i in 0..runs(300) {
        let mode = if i % 2 == 0 {
            Mode::Sparse
        } else {
            Mode::Kernel
        };
        let (x, heap) = run(&mut rng, mode, true);
        assert!(heap <= GENAI_BOUND, "run {i}: {heap}");
        for e in &x {
            let Some(g) = e.genai.as_deref() else {
                continue;
            };
            let Some((_, want)) = truth.iter().find(|(p, _)| *p == e.path) else {
                continue;
            };
            seen[usize::from(g.usage.is_err())] += 1;
            if let Ok(u) = g.usage {
                assert_eq!(want.usage, Ok(u), "run {i} ({mode:?}): {}: {g:#?}", e.path);
            }
            for (got, want) in [
                (&g.request_model, &want.request_model),
                (&g.response_model, &want.response_model),
            ] {
                assert!(got.is_none() || got == want, "run {i}: {}: {g:#?}", e.path);
            }
            if let Some(t) = g.first_token_ns {
                assert!(want.first_token_ns.is_some(), "run {i}: {}", e.path);
                assert!(e.response_first_ns <= t && t <= e.response_last_ns.max(e.closed_ns));
            }
        }
    }
    eprintln!("usage read {}, not read {}", seen[0], seen[1]);
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
}

#[test]
fn random_bodies_under_genai_heads_never_panic() {
    let mut rng = seed(0x5eed_a1003);
    let resp_heads = [
        head(200, "text/event-stream", None, ""),
        head(200, "application/x-ndjson", None, ""),
        head(200, "application/json", Some(3_000), ""),
        head(200, "text/plain", None, ""),
    ];
    let alphabet = b"data: {}[]\",:\n\r\\0123456789abcdefusagemodel_countdonetrue ";
    for i in 0..runs(300) {
        let mut conn = HttpConn::new(Side::Client);
        let mut out = Vec::new();
        let paths = [
            "/v1/chat/completions",
            "/v1/messages",
            "/api/generate",
            "/v1/responses",
        ];
        let path = paths[rng.range(0, 3) as usize];
        for k in 0..rng.range(1, 40) {
            let len = rng.range(1, 40_000) as usize;
            let mut data: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.range(0, alphabet.len() as u64 - 1) as usize])
                .collect();
            let req = rng.chance(30);
            if rng.chance(25) {
                let h = if req {
                    format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n")
                        .into_bytes()
                } else {
                    resp_heads[rng.range(0, 3) as usize].clone()
                };
                data.splice(0..0, h);
            }
            let c = cap(
                k,
                &data,
                rng.range(1, 32_768) as usize,
                rng.range(0, 64) as usize,
            );
            if req {
                conn.on_request_bytes(&c.seg(), &mut out);
            } else {
                conn.on_response_bytes(&c.seg(), &mut out);
            }
            assert!(conn.heap_bytes() <= GENAI_BOUND, "run {i}");
        }
        conn.on_close(1_000_000, &mut out);
    }
}
