//! What the events of a stream say: the model, the first content, the
//! usage, the end. One SSE event's data or one NDJSON line at a time, each a
//! JSON object parsed with serde_json (only while it can still tell
//! something: once the model and the first content are known, only events
//! that may carry usage are parsed).

use serde_json::Value;

use super::{
    buf::EventBuf,
    json::{find_member, Member},
    usage::{self, int, text, AnthropicParts},
    GenAiApi, GenAiUsage, UsageUnavailable,
};

/// What a response said so far.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub model: Option<String>,
    /// A complete usage, or `Unparseable`.
    pub usage: Option<Result<GenAiUsage, UsageUnavailable>>,
    pub first_token_ns: Option<u64>,
    pub anthropic: AnthropicParts,
    /// Ollama's counts and its `done` (a final object was seen).
    pub prompt_eval: Option<u64>,
    pub eval: Option<u64>,
    pub ollama_done: bool,
    /// The stream said it ended (`[DONE]`, `message_stop`,
    /// `response.completed`, `"done":true`).
    pub finished: bool,
}

impl Found {
    /// Keeps a usage; a good one replaces an unparseable one, never the
    /// reverse (the last good one wins: Anthropic's output is cumulative).
    pub(crate) fn set_usage(&mut self, u: Result<GenAiUsage, UsageUnavailable>) {
        if u.is_ok() || self.usage.is_none() {
            self.usage = Some(u);
        }
    }

    pub(crate) fn set_model(&mut self, m: Option<String>) {
        if self.model.is_none() {
            self.model = m;
        }
    }

    /// The usage found, all APIs' pieces combined.
    pub(crate) fn usage(&self, api: GenAiApi) -> Option<Result<GenAiUsage, UsageUnavailable>> {
        let parts = match api {
            GenAiApi::AnthropicMessages => self.anthropic.usage(),
            GenAiApi::OllamaChat | GenAiApi::OllamaGenerate | GenAiApi::OllamaEmbed
                if self.ollama_done || self.prompt_eval.is_some() || self.eval.is_some() =>
            {
                Some(Ok(usage::ollama(self.prompt_eval, self.eval)))
            }
            _ => None,
        };
        match (parts, self.usage) {
            (Some(Ok(u)), _) | (_, Some(Ok(u))) => Some(Ok(u)),
            (parts, whole) => whole.or(parts),
        }
    }

    fn content(&mut self, ts: u64) {
        self.first_token_ns.get_or_insert(ts);
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// One complete event (SSE data or NDJSON line) at `ts`.
pub(crate) fn event(api: GenAiApi, data: &EventBuf, ts: u64, found: &mut Found) {
    let Some(whole) = data.whole() else {
        return oversized(api, data.last(), found);
    };
    let whole = whole.trim_ascii();
    if whole == b"[DONE]" {
        found.finished = true;
        return;
    }
    // Parsed while the model or the first content is unknown; after that
    // only the events that may end the stream or carry usage, told apart by
    // one search per API (most events of a stream are content deltas).
    let usage_like = contains(whole, b"usage");
    let wanted = found.first_token_ns.is_none()
        || found.model.is_none()
        || match api {
            // with include_usage every chunk has `"usage":null`
            GenAiApi::OpenAiChat | GenAiApi::OpenAiCompletions | GenAiApi::OpenAiEmbeddings => {
                usage_like && !contains(whole, b"\"usage\":null")
            }
            // the events that carry the response object (created,
            // completed, ...), not its deltas
            GenAiApi::OpenAiResponses => contains(whole, b"\"response\":"),
            // message_start, message_delta, message_stop
            GenAiApi::AnthropicMessages => contains(whole, b"\"message_"),
            GenAiApi::OllamaChat | GenAiApi::OllamaGenerate | GenAiApi::OllamaEmbed => {
                !contains(whole, b"\"done\":false")
            }
        };
    if !wanted {
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(whole) else {
        if usage_like {
            found.set_usage(Err(UsageUnavailable::Unparseable));
        }
        return;
    };
    match api {
        GenAiApi::OpenAiChat | GenAiApi::OpenAiCompletions | GenAiApi::OpenAiEmbeddings => {
            openai_chunk(api, &v, ts, found);
        }
        GenAiApi::OpenAiResponses => responses_event(&v, ts, found),
        GenAiApi::AnthropicMessages => anthropic_event(&v, ts, found),
        GenAiApi::OllamaChat | GenAiApi::OllamaGenerate | GenAiApi::OllamaEmbed => {
            ollama_object(&v, Some(ts), found);
        }
    }
}

/// An event too big to keep whole (a Responses API `response.completed`
/// repeats the whole output; an Ollama `done` line carries the context):
/// its usage is looked for in its last bytes.
fn oversized(api: GenAiApi, last: &[u8], found: &mut Found) {
    match api {
        GenAiApi::OllamaChat | GenAiApi::OllamaGenerate | GenAiApi::OllamaEmbed => {
            window_counts(last, found);
        }
        _ => {
            let Some(Member::Value(raw)) = find_member(last, b"usage") else {
                return;
            };
            if api != GenAiApi::AnthropicMessages {
                if let Some(u) = usage::from_raw(api, raw) {
                    found.set_usage(u);
                }
            } else if let Ok(v) = serde_json::from_slice::<Value>(raw) {
                found.anthropic.add(&v, true);
            } else {
                found.set_usage(Err(UsageUnavailable::Unparseable));
            }
        }
    }
}

/// Ollama's counts in bytes whose start is unknown.
pub(crate) fn window_counts(w: &[u8], found: &mut Found) {
    let num = |key: &[u8]| match find_member(w, key) {
        Some(Member::Value(raw)) => std::str::from_utf8(raw).ok()?.parse().ok(),
        _ => None,
    };
    if let Some(n) = num(b"prompt_eval_count") {
        found.prompt_eval = Some(n);
    }
    if let Some(n) = num(b"eval_count") {
        found.eval = Some(n);
    }
    if find_member(w, b"done") == Some(Member::Value(b"true")) {
        found.ollama_done = true;
        found.finished = true;
    }
}

/// An OpenAI chat (or completions) chunk.
fn openai_chunk(api: GenAiApi, v: &Value, ts: u64, found: &mut Found) {
    found.set_model(v.get("model").and_then(usage::model));
    if let Some(u) = v.get("usage").and_then(|u| usage::from_value(api, u)) {
        found.set_usage(u);
    }
    let content = v
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                text(c, &["delta", "content"]).is_some()
                    || text(c, &["delta", "refusal"]).is_some()
                    || text(c, &["delta", "reasoning_content"]).is_some()
                    || c.pointer("/delta/tool_calls")
                        .and_then(Value::as_array)
                        .is_some_and(|t| !t.is_empty())
                    || text(c, &["text"]).is_some()
            })
        });
    if content {
        found.content(ts);
    }
}

/// A Responses API event (`type` in its data).
fn responses_event(v: &Value, ts: u64, found: &mut Found) {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    if let Some(r) = v.get("response") {
        found.set_model(r.get("model").and_then(usage::model));
        if let Some(u) = r
            .get("usage")
            .and_then(|u| usage::from_value(GenAiApi::OpenAiResponses, u))
        {
            found.set_usage(u);
        }
    }
    match kind {
        "response.output_text.delta"
        | "response.refusal.delta"
        | "response.function_call_arguments.delta"
        | "response.reasoning_text.delta"
        | "response.reasoning_summary_text.delta"
            if text(v, &["delta"]).is_some() =>
        {
            found.content(ts);
        }
        "response.completed" | "response.incomplete" | "response.failed" => {
            found.finished = true;
        }
        _ => {}
    }
}

/// An Anthropic Messages event (`type` in its data, as in its `event:`).
fn anthropic_event(v: &Value, ts: u64, found: &mut Found) {
    match v.get("type").and_then(Value::as_str).unwrap_or("") {
        "message_start" => {
            if let Some(m) = v.get("message") {
                found.set_model(m.get("model").and_then(usage::model));
                if let Some(u) = m.get("usage") {
                    found.anthropic.add(u, false);
                }
            }
        }
        "content_block_delta" => found.content(ts),
        "message_delta" => {
            if let Some(u) = v.get("usage") {
                found.anthropic.add(u, true);
            }
        }
        "message_stop" => found.finished = true,
        _ => {}
    }
}

/// An Ollama object: a line of a stream (`ts`) or a whole response.
pub(crate) fn ollama_object(v: &Value, ts: Option<u64>, found: &mut Found) {
    found.set_model(v.get("model").and_then(usage::model));
    if let Some(ts) = ts {
        let content = text(v, &["message", "content"]).is_some()
            || text(v, &["response"]).is_some()
            || v.pointer("/message/tool_calls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
        if content {
            found.content(ts);
        }
    }
    if let Some(n) = int(v, &["prompt_eval_count"]) {
        found.prompt_eval = Some(n);
    }
    if let Some(n) = int(v, &["eval_count"]) {
        found.eval = Some(n);
    }
    if v.get("done").and_then(Value::as_bool) == Some(true) {
        found.ollama_done = true;
        found.finished = true;
    }
}
