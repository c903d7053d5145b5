//! Bodies as the APIs send them (from their reference documentation and
//! recorded calls), for the tests: OpenAI chat, completions, embeddings and
//! Responses; Anthropic Messages; Ollama chat, generate and embed.

use crate::testkit::{chunk, LAST_CHUNK};

/// What nginx sends upstream for a proxied JSON POST.
pub(crate) fn post(path: &str, host: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\
         user-agent: OpenAI/Python 1.54.3\r\naccept: application/json\r\n\
         content-type: application/json\r\nauthorization: Bearer sk-test\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// A chunked response: the head with the first event, then one event per
/// write (one chunk each), the last chunk with the last event.
pub(crate) fn chunked(head: Vec<u8>, events: &[String]) -> Vec<Vec<u8>> {
    let mut writes: Vec<Vec<u8>> = events.iter().map(|e| chunk(e.as_bytes())).collect();
    writes[0].splice(0..0, head);
    writes.last_mut().unwrap().extend_from_slice(LAST_CHUNK);
    writes
}

/// A provider's response head; `len` None: chunked.
pub(crate) fn head(status: u16, ctype: &str, len: Option<usize>, extra: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        429 => "Too Many Requests",
        _ => "Unknown",
    };
    let framing = match len {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_owned(),
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nDate: Tue, 05 May 2026 09:14:03 GMT\r\n\
         Content-Type: {ctype}\r\n{framing}\r\nConnection: keep-alive\r\n{extra}\r\n"
    )
    .into_bytes()
}

pub(crate) const OPENAI_HEADERS: &str = "openai-organization: user-abc\r\n\
    openai-processing-ms: 344\r\nopenai-version: 2020-10-01\r\n\
    x-request-id: req_0c2b5c54f2bf4ba5b4c2a7a3f7c5e0d1\r\n";

pub(crate) const CHAT_REQ: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}]}"#;

pub(crate) const CHAT_REQ_STREAM: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say \"stream\": false"}],"stream":true,"stream_options":{"include_usage":true}}"#;

pub(crate) const CHAT_REQ_STREAM_NO_USAGE: &str =
    r#"{"messages":[{"role":"user","content":"Hello!"}],"model":"gpt-4o-mini","stream":true}"#;

/// OpenAI pretty-prints non-streaming responses.
pub(crate) const CHAT_RESP: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today? (\"usage\": {} is no usage)",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_06737a9306"
}
"#;

const CHUNK: &str = r#""id":"chatcmpl-AzQ5nJ0Yb9H8kQ","object":"chat.completion.chunk","created":1739194007,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c""#;

/// The SSE events of a chat stream saying "Hello!", each as one string (its
/// `data:` line and the empty line); with include_usage, every chunk has
/// `"usage":null` and one more, with no choices, has the usage.
pub(crate) fn chat_stream(include_usage: bool) -> Vec<String> {
    let usage = if include_usage {
        r#","usage":null"#
    } else {
        ""
    };
    let delta = |d: &str, finish: &str| {
        format!(
            "data: {{{CHUNK},\"choices\":[{{\"index\":0,\"delta\":{d},\"logprobs\":null,\
             \"finish_reason\":{finish}}}]{usage}}}\n\n"
        )
    };
    let mut v = vec![
        delta(
            r#"{"role":"assistant","content":"","refusal":null}"#,
            "null",
        ),
        delta(r#"{"content":"Hello"}"#, "null"),
        delta(r#"{"content":"!"}"#, "null"),
        delta("{}", r#""stop""#),
    ];
    if include_usage {
        v.push(format!(
            "data: {{{CHUNK},\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\
             \"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":\
             {{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":\
             {{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\
             \"rejected_prediction_tokens\":0}}}}}}\n\n"
        ));
    }
    v.push("data: [DONE]\n\n".to_owned());
    v
}

pub(crate) const COMPLETIONS_REQ: &str = r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7,"temperature":0}"#;

pub(crate) const COMPLETIONS_RESP: &str = r#"{"id":"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7","object":"text_completion","created":1589478378,"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb","choices":[{"text":"\n\nThis is indeed a test","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;

/// A completions stream (`choices[].text`), with include_usage.
pub(crate) fn completions_stream() -> Vec<String> {
    let c = r#""id":"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe","object":"text_completion","created":1690759702,"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb""#;
    vec![
        format!("data: {{{c},\"choices\":[{{\"text\":\"This\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"),
        format!("data: {{{c},\"choices\":[{{\"text\":\" is\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}}],\"usage\":null}}\n\n"),
        format!("data: {{{c},\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}}}\n\n"),
        "data: [DONE]\n\n".to_owned(),
    ]
}

pub(crate) const EMBED_REQ: &str = r#"{"input":"The food was delicious and the waiter...","model":"text-embedding-3-small","encoding_format":"float"}"#;

/// An embeddings response: 1536 floats (about 20 KB, more than the window),
/// the model and usage after them.
pub(crate) fn embeddings_resp() -> String {
    let floats: Vec<String> = (0..1536)
        .map(|i| format!("{:.10}", (f64::from(i) * 0.37).sin() / 10.0))
        .collect();
    format!(
        "{{\n  \"object\": \"list\",\n  \"data\": [\n    {{\n      \"object\": \"embedding\",\n      \
         \"index\": 0,\n      \"embedding\": [\n        {}\n      ]\n    }}\n  ],\n  \
         \"model\": \"text-embedding-3-small\",\n  \"usage\": {{\n    \"prompt_tokens\": 8,\n    \
         \"total_tokens\": 8\n  }}\n}}\n",
        floats.join(",\n        ")
    )
}

pub(crate) const RESPONSES_REQ: &str =
    r#"{"model":"gpt-4.1","input":"Tell me a three sentence bedtime story about a unicorn."}"#;

pub(crate) const RESPONSES_RESP: &str = r#"{"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool.","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null,"metadata":{}}"#;

/// A Responses API stream; `text` is repeated in `response.completed` (the
/// whole output), which makes that event as long as the answer.
pub(crate) fn responses_stream(text: &str) -> Vec<String> {
    let resp = |status: &str, output: &str, usage: &str| {
        format!(
            r#"{{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"{status}","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{output}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{{"effort":null,"summary":null}},"store":true,"temperature":1.0,"text":{{"format":{{"type":"text"}}}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{usage},"user":null,"metadata":{{}}}}"#
        )
    };
    let item = format!(
        r#"{{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{{"type":"output_text","text":"{text}","annotations":[]}}]}}"#
    );
    let ev = |name: &str, data: String| format!("event: {name}\ndata: {data}\n\n");
    vec![
        ev("response.created", format!(r#"{{"type":"response.created","sequence_number":0,"response":{}}}"#, resp("in_progress", "", "null"))),
        ev("response.in_progress", format!(r#"{{"type":"response.in_progress","sequence_number":1,"response":{}}}"#, resp("in_progress", "", "null"))),
        ev("response.output_item.added", r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"in_progress","role":"assistant","content":[]}}"#.to_owned()),
        ev("response.output_text.delta", r#"{"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"delta":"Hi"}"#.to_owned()),
        ev("response.output_text.done", r#"{"type":"response.output_text.done","sequence_number":4,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"text":"Hi"}"#.to_owned()),
        ev("response.completed", format!(r#"{{"type":"response.completed","sequence_number":5,"response":{}}}"#, resp("completed", &item, r#"{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}"#))),
    ]
}

pub(crate) const ANTHROPIC_REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"You are a pirate.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Hello, Claude"}]}"#;

pub(crate) const ANTHROPIC_RESP: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Ahoy!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":188,"cache_read_input_tokens":2048,"cache_creation":{"ephemeral_5m_input_tokens":188,"ephemeral_1h_input_tokens":0},"output_tokens":393,"service_tier":"standard"}}"#;

/// An Anthropic stream, as its documentation shows one (with a ping).
pub(crate) fn anthropic_stream() -> Vec<String> {
    [
        ("message_start", r#"{"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":120,"cache_read_input_tokens":2048,"output_tokens":1}}}"#),
        ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
        ("ping", r#"{"type": "ping"}"#),
        ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#),
        ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#),
        ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        ("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ]
    .iter()
    .map(|(e, d)| format!("event: {e}\ndata: {d}\n\n"))
    .collect()
}

pub(crate) const OLLAMA_CHAT_REQ: &str =
    r#"{"model":"llama3.2","messages":[{"role":"user","content":"why is the sky blue?"}]}"#;

/// Ollama's chat stream: one object per line, the last with the counts.
pub(crate) fn ollama_chat_stream() -> Vec<String> {
    let line = |t: &str, content: &str| {
        format!(
            "{{\"model\":\"llama3.2\",\"created_at\":\"2026-05-05T09:14:0{t}.385406455Z\",\
             \"message\":{{\"role\":\"assistant\",\"content\":\"{content}\"}},\"done\":false}}\n"
        )
    };
    vec![
        line("3", "The"),
        line("4", " sky"),
        "{\"model\":\"llama3.2\",\"created_at\":\"2026-05-05T09:14:05.499127Z\",\"message\":\
         {\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\
         \"total_duration\":4883583458,\"load_duration\":1334875,\"prompt_eval_count\":26,\
         \"prompt_eval_duration\":342546000,\"eval_count\":282,\"eval_duration\":4535599000}\n"
            .to_owned(),
    ]
}

pub(crate) const OLLAMA_CHAT_RESP: &str = r#"{"model":"llama3.2","created_at":"2026-05-05T09:14:05.499127Z","message":{"role":"assistant","content":"Hello! How are you today?"},"done_reason":"stop","done":true,"total_duration":5191566416,"load_duration":2154458,"prompt_eval_count":26,"prompt_eval_duration":383809000,"eval_count":298,"eval_duration":4799921000}"#;

/// The final line of an /api/generate stream: `context` (token ids) before
/// the counts, `n` of them.
pub(crate) fn ollama_generate_done(n: usize) -> String {
    let ids: Vec<String> = (0..n)
        .map(|i| (128_000 + i * 7 % 5_000).to_string())
        .collect();
    format!(
        "{{\"model\":\"llama3.2\",\"created_at\":\"2026-05-05T09:14:05Z\",\"response\":\"\",\
         \"done\":true,\"done_reason\":\"stop\",\"context\":[{}],\"total_duration\":10706818083,\
         \"load_duration\":6338219291,\"prompt_eval_count\":26,\"prompt_eval_duration\":130079000,\
         \"eval_count\":259,\"eval_duration\":4232710000}}\n",
        ids.join(",")
    )
}

pub(crate) const OLLAMA_EMBED_RESP: &str = r#"{"model":"all-minilm","embeddings":[[0.010071029,-0.0017594862,0.05007221,0.04692972,0.054916814,0.008599704,0.105441414,-0.025878139,0.12958129,0.031952348]],"total_duration":14143917,"load_duration":1019500,"prompt_eval_count":8}"#;

pub(crate) const OPENAI_ERROR: &str = r#"{
    "error": {
        "message": "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): Limit 3, Used 3, Requested 1.",
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}
"#;
