//! GenAI calls through `HttpConn`, as a gateway's upstream connection carries
//! them: every API's formats whole, split across transfers, chunked, cut by
//! gaps, compressed, failed, and larger than the buffers.

use super::{fixtures::*, GenAiApi, GenAiCall, GenAiUsage, GenAiVendor, UsageUnavailable};
use crate::{testkit::*, Exchange, HttpConn, Side};

/// Request written at ts 1000; response writes at 2000, 3000, ...
fn run(side: Side, req: Cap, resp: Vec<Cap>) -> Exchange {
    let mut t = Conn::new(side);
    t.req(req);
    for c in resp {
        t.resp(c);
    }
    t.close(1_000_000);
    let x = t.exchanges();
    assert_eq!(x.len(), 1, "{x:#?}");
    x.into_iter().next().unwrap()
}

fn upstream(path: &str, req_body: &str, resp: &[Vec<u8>]) -> Exchange {
    let writes = resp
        .iter()
        .enumerate()
        .map(|(i, w)| full(2_000 + 1_000 * i as u64, w))
        .collect();
    run(
        Side::Client,
        full(1_000, &post(path, "api.example.com", req_body.as_bytes())),
        writes,
    )
}

fn with_body(head: Vec<u8>, body: &str) -> Vec<u8> {
    cat(&[&head, body.as_bytes()])
}

fn json_resp(body: &str) -> Vec<u8> {
    with_body(
        head(200, "application/json", Some(body.len()), OPENAI_HEADERS),
        body,
    )
}

#[expect(clippy::unnecessary_wraps, reason = "compared with GenAiCall::usage")]
fn ok(
    input: u64,
    output: u64,
    total: u64,
    cached_input: u64,
) -> Result<GenAiUsage, UsageUnavailable> {
    Ok(GenAiUsage {
        input,
        output,
        total,
        cached_input,
    })
}

fn genai(x: &Exchange) -> &GenAiCall {
    x.genai.as_deref().expect("a GenAI call")
}

fn call(
    api: GenAiApi,
    models: (Option<&str>, Option<&str>),
    streaming: bool,
    usage: Result<GenAiUsage, UsageUnavailable>,
    first_token_ns: Option<u64>,
) -> GenAiCall {
    GenAiCall {
        api,
        candidate: false,
        // the fixtures' OpenAI answers carry OpenAI's headers
        vendor: matches!(
            api,
            GenAiApi::OpenAiChat
                | GenAiApi::OpenAiCompletions
                | GenAiApi::OpenAiEmbeddings
                | GenAiApi::OpenAiResponses
        )
        .then_some(GenAiVendor::OpenAi),
        request_model: models.0.map(Into::into),
        response_model: models.1.map(Into::into),
        streaming,
        usage,
        first_token_ns,
    }
}

const CHAT: &str = "/v1/chat/completions";
const MINI: (Option<&str>, Option<&str>) = (Some("gpt-4o-mini"), Some("gpt-4o-mini-2024-07-18"));

#[test]
fn openai_chat_whole_and_split() {
    let resp = json_resp(CHAT_RESP);
    let want = call(GenAiApi::OpenAiChat, MINI, false, ok(19, 10, 29, 0), None);
    let x = upstream(CHAT, CHAT_REQ, std::slice::from_ref(&resp));
    assert_eq!((x.status, genai(&x)), (200, &want));
    // the response in 7-byte transfers, the request in 3-byte ones
    let q = post(CHAT, "api.example.com", CHAT_REQ.as_bytes());
    let x = run(
        Side::Client,
        full(1_000, &q),
        resp.chunks(7).map(|c| full(2_000, c)).collect(),
    );
    assert_eq!(genai(&x), &want);
    let mut t = Conn::new(Side::Client);
    for c in q.chunks(3) {
        t.req(full(1_000, c));
    }
    t.resp(full(2_000, &resp));
    assert_eq!(genai(&t.exchanges()[0]), &want);
    // downstream legs are read too (the agent chooses which to count)
    let x = run(Side::Server, full(1_000, &q), vec![full(2_000, &resp)]);
    assert_eq!(genai(&x), &want);
}

/// Azure OpenAI's path: a GenAI call where the peer is a named provider,
/// else a candidate that carries what its answer's headers say (the agent
/// confirms it by them, or by its Host).
#[test]
fn a_named_providers_path_without_v1_is_read() {
    const AZURE: &str = "/openai/deployments/gpt-4o-mini/chat/completions";
    let q = post(AZURE, "api.example.com", CHAT_REQ.as_bytes());
    let resp = json_resp(CHAT_RESP);
    let x = run(Side::Client, full(1_000, &q), vec![full(2_000, &resp)]);
    let want = call(GenAiApi::OpenAiChat, MINI, false, ok(19, 10, 29, 0), None);
    assert_eq!(
        genai(&x),
        &GenAiCall {
            candidate: true,
            ..want.clone()
        }
    );
    // an answer without a vendor's headers: a candidate nothing confirms
    let plain = with_body(
        head(200, "application/json", Some(CHAT_RESP.len()), ""),
        CHAT_RESP,
    );
    let x = run(Side::Client, full(1_000, &q), vec![full(2_000, &plain)]);
    assert_eq!(
        genai(&x),
        &GenAiCall {
            candidate: true,
            vendor: None,
            ..want
        }
    );
    // on the gateway's own side no candidate is read
    let x = run(Side::Server, full(1_000, &q), vec![full(2_000, &resp)]);
    assert!(x.genai.is_none(), "{x:?}");
    // not a generation path at all: no scan
    let q2 = post("/rooms/7/members", "api.example.com", CHAT_REQ.as_bytes());
    let x = run(Side::Client, full(1_000, &q2), vec![full(2_000, &resp)]);
    assert!(x.genai.is_none(), "{x:?}");
    let mut t = Conn::new(Side::Client);
    t.c.set_genai_provider();
    t.req(full(1_000, &q)).resp(full(2_000, &resp));
    assert_eq!(
        genai(&t.exchanges()[0]),
        &call(GenAiApi::OpenAiChat, MINI, false, ok(19, 10, 29, 0), None)
    );
}

#[test]
fn openai_chat_stream_with_and_without_usage() {
    let h = head(
        200,
        "text/event-stream; charset=utf-8",
        None,
        OPENAI_HEADERS,
    );
    let x = upstream(
        CHAT,
        CHAT_REQ_STREAM,
        &chunked(h.clone(), &chat_stream(true)),
    );
    // event 0 (with the head) has an empty content: the first token is event 1's
    let want = call(
        GenAiApi::OpenAiChat,
        MINI,
        true,
        ok(9, 2, 11, 0),
        Some(3_000),
    );
    assert_eq!(genai(&x), &want);
    let x = upstream(
        CHAT,
        CHAT_REQ_STREAM_NO_USAGE,
        &chunked(h, &chat_stream(false)),
    );
    let want = call(
        GenAiApi::OpenAiChat,
        MINI,
        true,
        Err(UsageUnavailable::Absent),
        Some(3_000),
    );
    assert_eq!(genai(&x), &want);
}

#[test]
fn stream_events_split_across_transfers() {
    let h = head(200, "text/event-stream", None, OPENAI_HEADERS);
    let wire = chunked(h, &chat_stream(true)).concat();
    // where the first content event ends on the wire
    let hello = wire.windows(7).position(|w| w == b"\"Hello\"").unwrap();
    let end = hello + wire[hello..].windows(2).position(|w| w == b"\n\n").unwrap() + 1;
    for size in [1, 2, 5, 13, 64, 333] {
        let caps = wire
            .chunks(size)
            .enumerate()
            .map(|(i, c)| full(2_000 + i as u64, c))
            .collect();
        let q = post(CHAT, "h", CHAT_REQ_STREAM.as_bytes());
        let x = run(Side::Client, full(1_000, &q), caps);
        let want = call(
            GenAiApi::OpenAiChat,
            MINI,
            true,
            ok(9, 2, 11, 0),
            Some(2_000 + (end / size) as u64),
        );
        assert_eq!(genai(&x), &want, "{size}-byte transfers");
    }
    // several events in one transfer
    let x = upstream(CHAT, CHAT_REQ_STREAM, &[wire]);
    assert_eq!(genai(&x).first_token_ns, Some(2_000));
    assert_eq!(genai(&x).usage, ok(9, 2, 11, 0));
}

#[test]
fn stream_gaps() {
    let h = head(200, "text/event-stream", None, OPENAI_HEADERS);
    let writes = chunked(h, &chat_stream(true));
    let q = post(CHAT, "h", CHAT_REQ_STREAM.as_bytes());
    let n = writes.len();
    // the usage event's transfer captured sparsely: the event is cut
    let caps = |q: &[u8], writes: &[Vec<u8>]| -> Exchange {
        let caps = writes
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == n - 2 {
                    cap(2_000 + i as u64, w, 40, 20)
                } else {
                    full(2_000 + i as u64, w)
                }
            })
            .collect();
        run(Side::Client, full(1_000, q), caps)
    };
    let x = caps(&q, &writes);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Truncated));
    assert_eq!(genai(&x).first_token_ns, Some(2_001));
    // without include_usage a cut event is no reason to think usage was lost
    let q = post(CHAT, "h", CHAT_REQ_STREAM_NO_USAGE.as_bytes());
    let h = head(200, "text/event-stream", None, OPENAI_HEADERS);
    let writes = chunked(h, &chat_stream(false));
    let x = caps(&q, &writes);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Absent));
    // a gap in an earlier event: the usage still counts
    let h = head(200, "text/event-stream", None, OPENAI_HEADERS);
    let writes = chunked(h, &chat_stream(true));
    let q = post(CHAT, "h", CHAT_REQ_STREAM.as_bytes());
    let mut c: Vec<Cap> = writes
        .iter()
        .enumerate()
        .map(|(i, w)| full(2_000 + i as u64, w))
        .collect();
    c[2] = cap(2_002, &writes[2], 30, 30);
    let x = run(Side::Client, full(1_000, &q), c);
    assert_eq!(genai(&x).usage, ok(9, 2, 11, 0));
}

#[test]
fn openai_completions_and_embeddings() {
    let x = upstream(
        "/v1/completions",
        COMPLETIONS_REQ,
        &[json_resp(COMPLETIONS_RESP)],
    );
    let m = (
        Some("gpt-3.5-turbo-instruct"),
        Some("gpt-3.5-turbo-instruct"),
    );
    let want = call(GenAiApi::OpenAiCompletions, m, false, ok(5, 7, 12, 0), None);
    assert_eq!(genai(&x), &want);
    let h = head(200, "text/event-stream", None, OPENAI_HEADERS);
    let req = r#"{"model":"gpt-3.5-turbo-instruct","prompt":"x","stream":true,"stream_options":{"include_usage":true}}"#;
    let x = upstream("/v1/completions", req, &chunked(h, &completions_stream()));
    let want = call(
        GenAiApi::OpenAiCompletions,
        m,
        true,
        ok(5, 2, 7, 0),
        Some(2_000),
    );
    assert_eq!(genai(&x), &want);

    // embeddings: more than the window, model and usage after the vector
    let body = embeddings_resp();
    assert!(body.len() > super::buf::WINDOW * 2);
    let m = (
        Some("text-embedding-3-small"),
        Some("text-embedding-3-small"),
    );
    let want = call(GenAiApi::OpenAiEmbeddings, m, false, ok(8, 0, 8, 0), None);
    let x = upstream("/v1/embeddings", EMBED_REQ, &[json_resp(&body)]);
    assert_eq!(genai(&x), &want);
    // a gap in the vector (a read larger than the capture), the end whole:
    // model and usage from the last bytes
    let resp = json_resp(&body);
    let cut = resp.len() - 3_000;
    let q = post("/v1/embeddings", "h", EMBED_REQ.as_bytes());
    let x = run(
        Side::Client,
        full(1_000, &q),
        vec![
            cap(2_000, &resp[..cut], 4_096, 64),
            full(3_000, &resp[cut..]),
        ],
    );
    assert_eq!(genai(&x), &want);
    // the whole usage in the kernel's 64-byte tail (it is that short)
    let x = run(
        Side::Client,
        full(1_000, &q),
        vec![cap(2_000, &resp, 4_096, 64)],
    );
    assert_eq!(genai(&x).usage, ok(8, 0, 8, 0));
    // the usage itself in the gap: truncated, never guessed
    let x = run(
        Side::Client,
        full(1_000, &q),
        vec![cap(2_000, &resp, 4_096, 16)],
    );
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Truncated));
    assert_eq!(
        genai(&x).request_model.as_deref(),
        Some("text-embedding-3-small")
    );
}

#[test]
fn openai_responses_api() {
    let m = (Some("gpt-4.1"), Some("gpt-4.1-2025-04-14"));
    let x = upstream("/v1/responses", RESPONSES_REQ, &[json_resp(RESPONSES_RESP)]);
    let want = call(
        GenAiApi::OpenAiResponses,
        m,
        false,
        ok(36, 87, 123, 0),
        None,
    );
    assert_eq!(genai(&x), &want);
    let req = r#"{"model":"gpt-4.1","input":"Say hi","stream":true}"#;
    let h = head(
        200,
        "text/event-stream; charset=utf-8",
        None,
        OPENAI_HEADERS,
    );
    let x = upstream(
        "/v1/responses",
        req,
        &chunked(h.clone(), &responses_stream("Hi")),
    );
    // events 0-2 carry no text; the delta is event 3
    let want = call(
        GenAiApi::OpenAiResponses,
        m,
        true,
        ok(37, 11, 48, 0),
        Some(5_000),
    );
    assert_eq!(genai(&x), &want);
    // response.completed repeats a 100 KB answer: past the event bound, its
    // usage is read from its end
    let long = "lorem ipsum ".repeat(9_000);
    let x = upstream("/v1/responses", req, &chunked(h, &responses_stream(&long)));
    assert_eq!(genai(&x), &want);
}

#[test]
fn anthropic_messages() {
    let m = (
        Some("claude-sonnet-4-5"),
        Some("claude-sonnet-4-5-20250929"),
    );
    let h = head(
        200,
        "application/json",
        Some(ANTHROPIC_RESP.len()),
        "request-id: req_011CV\r\n",
    );
    let x = upstream(
        "/v1/messages",
        ANTHROPIC_REQ,
        &[with_body(h, ANTHROPIC_RESP)],
    );
    // input = input + cache read + cache creation
    let want = call(
        GenAiApi::AnthropicMessages,
        m,
        false,
        ok(2_257, 393, 2_650, 2_048),
        None,
    );
    assert_eq!(genai(&x), &want);
    let req = ANTHROPIC_REQ.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let h = head(
        200,
        "text/event-stream; charset=utf-8",
        None,
        "request-id: req_011CW\r\n",
    );
    let writes = chunked(h, &anthropic_stream());
    let x = upstream("/v1/messages", &req, &writes);
    let want = call(
        GenAiApi::AnthropicMessages,
        m,
        true,
        ok(2_193, 15, 2_208, 2_048),
        Some(5_000),
    );
    assert_eq!(genai(&x), &want);
    // the connection closes after the deltas: no message_delta, truncated
    let q = post("/v1/messages", "h", req.as_bytes());
    let caps = writes[..5]
        .iter()
        .enumerate()
        .map(|(i, w)| full(2_000 + 1_000 * i as u64, w))
        .collect();
    let x = run(Side::Client, full(1_000, &q), caps);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Truncated));
    assert_eq!(genai(&x).first_token_ns, Some(5_000));
}

#[test]
fn ollama_chat_generate_embed() {
    let m = (Some("llama3.2"), Some("llama3.2"));
    // no "stream": Ollama streams by default
    let h = head(200, "application/x-ndjson", None, "");
    let x = upstream(
        "/api/chat",
        OLLAMA_CHAT_REQ,
        &chunked(h.clone(), &ollama_chat_stream()),
    );
    let want = call(
        GenAiApi::OllamaChat,
        m,
        true,
        ok(26, 282, 308, 0),
        Some(2_000),
    );
    assert_eq!(genai(&x), &want);
    let req = OLLAMA_CHAT_REQ.replace("}]}", "}],\"stream\":false}");
    let h2 = head(
        200,
        "application/json; charset=utf-8",
        Some(OLLAMA_CHAT_RESP.len()),
        "",
    );
    let x = upstream("/api/chat", &req, &[with_body(h2, OLLAMA_CHAT_RESP)]);
    let want = call(GenAiApi::OllamaChat, m, false, ok(26, 298, 324, 0), None);
    assert_eq!(genai(&x), &want);
    // generate: the final line's context is longer than an event may be
    let mut lines: Vec<String> = ["The", " sky"]
        .iter()
        .map(|t| format!("{{\"model\":\"llama3.2\",\"created_at\":\"2026-05-05T09:14:04Z\",\"response\":\"{t}\",\"done\":false}}\n"))
        .collect();
    lines.push(ollama_generate_done(20_000));
    assert!(lines[2].len() > super::buf::MAX_EVENT);
    let req = r#"{"model":"llama3.2","prompt":"Why is the sky blue?"}"#;
    let x = upstream("/api/generate", req, &chunked(h, &lines));
    let want = call(
        GenAiApi::OllamaGenerate,
        m,
        true,
        ok(26, 259, 285, 0),
        Some(2_000),
    );
    assert_eq!(genai(&x), &want);
    let h = head(
        200,
        "application/json; charset=utf-8",
        Some(OLLAMA_EMBED_RESP.len()),
        "",
    );
    let req = r#"{"model":"all-minilm","input":"Why is the sky blue?"}"#;
    let x = upstream("/api/embed", req, &[with_body(h, OLLAMA_EMBED_RESP)]);
    let m = (Some("all-minilm"), Some("all-minilm"));
    let want = call(GenAiApi::OllamaEmbed, m, false, ok(8, 0, 8, 0), None);
    assert_eq!(genai(&x), &want);
}

#[test]
fn compressed_failed_and_unparseable() {
    let gz = [
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0xae, 0x05, 0x00,
    ];
    let mut resp = head(
        200,
        "application/json",
        Some(gz.len()),
        "Content-Encoding: gzip\r\n",
    );
    resp.extend_from_slice(&gz);
    let x = upstream(CHAT, CHAT_REQ, &[resp]);
    let want = GenAiCall {
        vendor: None,
        ..call(
            GenAiApi::OpenAiChat,
            (Some("gpt-4o-mini"), None),
            false,
            Err(UsageUnavailable::Compressed),
            None,
        )
    };
    assert_eq!(genai(&x), &want);

    let h = head(
        429,
        "application/json; charset=utf-8",
        Some(OPENAI_ERROR.len()),
        "",
    );
    let x = upstream(CHAT, CHAT_REQ_STREAM, &[with_body(h, OPENAI_ERROR)]);
    let want = GenAiCall {
        vendor: None,
        ..call(
            GenAiApi::OpenAiChat,
            (Some("gpt-4o-mini"), None),
            true,
            Err(UsageUnavailable::Absent),
            None,
        )
    };
    assert_eq!((x.status, genai(&x)), (429, &want));

    let bad = CHAT_RESP.replace("\"prompt_tokens\": 19", "\"prompt_tokens\": \"19\"");
    let x = upstream(CHAT, CHAT_REQ, &[json_resp(&bad)]);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Unparseable));
    // no usage at all in a whole body
    let x = upstream(CHAT, CHAT_REQ, &[json_resp(r#"{"id":"x","model":"m"}"#)]);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Absent));
    assert_eq!(genai(&x).model(), Some("gpt-4o-mini"));
    // the response cut short by the close
    let resp = json_resp(CHAT_RESP);
    let x = upstream(CHAT, CHAT_REQ, &[resp[..resp.len() - 300].to_vec()]);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Truncated));
    // no response
    let q = post(CHAT, "h", CHAT_REQ.as_bytes());
    let x = run(Side::Client, full(1_000, &q), vec![]);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Truncated));
}

#[test]
fn close_delimited_streams() {
    // no Content-Length, no chunking: the stream ends with the connection
    let h = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
    let mut resp = vec![h.as_bytes().to_vec()];
    resp.extend(anthropic_stream().into_iter().map(String::into_bytes));
    let req = ANTHROPIC_REQ.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let x = upstream("/v1/messages", &req, &resp);
    assert_eq!(genai(&x).usage, ok(2_193, 15, 2_208, 2_048));
    // the head alone at 2000, the first delta is the fourth event
    assert_eq!(genai(&x).first_token_ns, Some(6_000));
    // closed before message_delta and message_stop: cut, not absent
    let x = upstream("/v1/messages", &req, &resp[..6]);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Truncated));
    // an OpenAI stream without include_usage closed early: no usage to lose
    let mut resp = vec![h.as_bytes().to_vec()];
    resp.extend(
        chat_stream(false)
            .into_iter()
            .take(3)
            .map(String::into_bytes),
    );
    let x = upstream(CHAT, CHAT_REQ_STREAM_NO_USAGE, &resp);
    assert_eq!(genai(&x).usage, Err(UsageUnavailable::Absent));
    assert_eq!(genai(&x).first_token_ns, Some(4_000));
}

#[test]
fn model_past_a_gap_falls_back_to_the_response() {
    let prompt = "why is the sky blue? ".repeat(5_000);
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"model":"gpt-4o-mini","stream":false}}"#
    );
    let q = post(CHAT, "api.openai.com", body.as_bytes());
    // one write larger than the 32 KiB the kernel takes whole
    let x = run(
        Side::Client,
        cap(1_000, &q, 32 * 1024, 64),
        vec![full(2_000, &json_resp(CHAT_RESP))],
    );
    let g = genai(&x);
    assert_eq!(
        (g.request_model.as_deref(), g.model()),
        (None, Some("gpt-4o-mini-2024-07-18"))
    );
    assert_eq!(g.usage, ok(19, 10, 29, 0));
    assert_eq!(x.request_bytes, q.len() as u64);
}

#[test]
fn only_genai_posts_are_read() {
    let x = upstream("/v1/models", CHAT_REQ, &[json_resp(CHAT_RESP)]);
    assert_eq!(x.genai, None);
    let mut t = Conn::new(Side::Client);
    t.req(full(1_000, &curl_get(CHAT)))
        .resp(full(2_000, &json_resp(CHAT_RESP)));
    assert_eq!(t.exchanges()[0].genai, None);
    // a chunked request body is de-chunked for the scanner
    let mut q =
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for piece in CHAT_REQ.as_bytes().chunks(10) {
        q.extend_from_slice(&chunk(piece));
    }
    q.extend_from_slice(LAST_CHUNK);
    let x = run(
        Side::Client,
        full(1_000, &q),
        vec![full(2_000, &json_resp(CHAT_RESP))],
    );
    assert_eq!(genai(&x).request_model.as_deref(), Some("gpt-4o-mini"));
}

#[test]
fn memory_stays_bounded() {
    // one endless SSE event, then an endless NDJSON line, fed in 32 KiB
    // transfers: the heap stays under the event bound and a window
    for (ctype, start) in [
        ("text/event-stream", &b"data: {\"x\":\""[..]),
        ("application/x-ndjson", b"{\"x\":\""),
    ] {
        let mut c = HttpConn::new(Side::Client);
        let mut out = Vec::new();
        let q = post("/api/chat", "h", br#"{"model":"m"}"#);
        c.on_request_bytes(&full(1, &q).seg(), &mut out);
        let mut h = head(200, ctype, None, "");
        h.extend_from_slice(b"7fffffff\r\n");
        h.extend_from_slice(start);
        c.on_response_bytes(&full(2, &h).seg(), &mut out);
        let blob = vec![b'a'; 32 * 1024];
        let mut max = 0;
        for i in 0..200 {
            c.on_response_bytes(&full(3 + i, &blob).seg(), &mut out);
            max = max.max(c.heap_bytes());
        }
        assert!(max < super::buf::MAX_EVENT + 64 * 1024, "{ctype}: {max}");
    }
}
