//! Usage objects as each API writes them, normalised to [`GenAiUsage`].

use serde_json::Value;

use super::{GenAiApi, GenAiUsage, UsageUnavailable};

/// A non-negative integer at `path` in `v`.
pub(crate) fn int(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// A non-empty string at `path` in `v`.
pub(crate) fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Longest model name kept; a longer one is not a model name.
const MAX_MODEL: usize = 256;

/// A model name from a JSON value (`None` unless a non-empty string).
pub(crate) fn model(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|s| !s.is_empty() && s.len() <= MAX_MODEL)
        .map(str::to_owned)
}

/// A model name from the raw bytes of a JSON string.
pub(crate) fn model_raw(raw: &[u8]) -> Option<String> {
    if raw.len() > MAX_MODEL + 2 {
        return None;
    }
    model(&serde_json::from_slice(raw).ok()?)
}

/// A `usage` object of `api` (an OpenAI chat, completions or embeddings
/// one, a Responses API one or an Anthropic one). `None` for `null` (OpenAI
/// streams with include_usage send `"usage":null` on every chunk but the
/// last).
pub(crate) fn from_value(api: GenAiApi, v: &Value) -> Option<Result<GenAiUsage, UsageUnavailable>> {
    if v.is_null() {
        return None;
    }
    let bad = Err(UsageUnavailable::Unparseable);
    if !v.is_object() {
        return Some(bad);
    }
    let get = |k: &str| int(v, &[k]);
    let u = if api == GenAiApi::AnthropicMessages {
        let (Some(input), Some(output)) = (get("input_tokens"), get("output_tokens")) else {
            return Some(bad);
        };
        let read = get("cache_read_input_tokens").unwrap_or(0);
        let input = input + read + get("cache_creation_input_tokens").unwrap_or(0);
        GenAiUsage {
            input,
            output,
            total: input + output,
            cached_input: read,
        }
    } else {
        // OpenAI chat, completions and embeddings name them prompt and
        // completion tokens; the Responses API input and output tokens.
        // Either is taken on any OpenAI path, as compatible servers mix them.
        let (input, output, details) = if let Some(p) = get("prompt_tokens") {
            (p, get("completion_tokens"), "prompt_tokens_details")
        } else if let Some(i) = get("input_tokens") {
            (i, get("output_tokens"), "input_tokens_details")
        } else {
            return Some(bad);
        };
        if output.is_none() && api.generates() {
            return Some(bad);
        }
        let output = output.unwrap_or(0);
        GenAiUsage {
            input,
            output,
            total: get("total_tokens").unwrap_or(input + output),
            cached_input: int(v, &[details, "cached_tokens"]).unwrap_or(0),
        }
    };
    Some(Ok(u))
}

/// A usage object from its raw bytes.
pub(crate) fn from_raw(api: GenAiApi, raw: &[u8]) -> Option<Result<GenAiUsage, UsageUnavailable>> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(v) => from_value(api, &v),
        Err(_) => Some(Err(UsageUnavailable::Unparseable)),
    }
}

/// Ollama's counts: `prompt_eval_count` (left out when 0, as Go's
/// `omitempty` does) and `eval_count`.
pub(crate) fn ollama(prompt_eval: Option<u64>, eval: Option<u64>) -> GenAiUsage {
    let (input, output) = (prompt_eval.unwrap_or(0), eval.unwrap_or(0));
    GenAiUsage {
        input,
        output,
        total: input + output,
        cached_input: 0,
    }
}

/// An Anthropic stream's usage, from `message_start` (input and cache
/// tokens) and `message_delta` (cumulative output; newer API versions repeat
/// the input counts there).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AnthropicParts {
    /// input_tokens, cache_read_input_tokens, cache_creation_input_tokens
    input: Option<(u64, u64, u64)>,
    output: Option<u64>,
    /// A usage object in either event was not the JSON expected.
    bad: bool,
}

impl AnthropicParts {
    /// `usage` of `message_start.message` or of `message_delta`.
    pub(crate) fn add(&mut self, v: &Value, delta: bool) {
        if !v.is_object() {
            self.bad = true;
            return;
        }
        if let Some(i) = int(v, &["input_tokens"]) {
            let read = int(v, &["cache_read_input_tokens"]).unwrap_or(0);
            let created = int(v, &["cache_creation_input_tokens"]).unwrap_or(0);
            self.input = Some((i, read, created));
        }
        match int(v, &["output_tokens"]) {
            Some(o) if delta => self.output = Some(o),
            Some(_) => {}
            None if delta => self.bad = true,
            None => {}
        }
    }

    /// The usage when both halves were seen.
    pub(crate) fn usage(&self) -> Option<Result<GenAiUsage, UsageUnavailable>> {
        match (self.input, self.output) {
            (Some((i, read, created)), Some(output)) => {
                let input = i + read + created;
                Some(Ok(GenAiUsage {
                    input,
                    output,
                    total: input + output,
                    cached_input: read,
                }))
            }
            _ if self.bad => Some(Err(UsageUnavailable::Unparseable)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(api: GenAiApi, s: &str) -> Option<Result<GenAiUsage, UsageUnavailable>> {
        from_raw(api, s.as_bytes())
    }

    fn u(input: u64, output: u64, total: u64, cached_input: u64) -> GenAiUsage {
        GenAiUsage {
            input,
            output,
            total,
            cached_input,
        }
    }

    #[test]
    fn usage_shapes() {
        use GenAiApi::*;
        assert_eq!(
            raw(
                OpenAiChat,
                r#"{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
                "prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0}}"#
            ),
            Some(Ok(u(19, 10, 29, 3)))
        );
        assert_eq!(
            raw(OpenAiEmbeddings, r#"{"prompt_tokens":8,"total_tokens":8}"#),
            Some(Ok(u(8, 0, 8, 0)))
        );
        assert_eq!(
            raw(
                OpenAiResponses,
                r#"{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},
                "output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}"#
            ),
            Some(Ok(u(36, 87, 123, 0)))
        );
        assert_eq!(
            raw(
                AnthropicMessages,
                r#"{"input_tokens":2095,"cache_creation_input_tokens":100,
                "cache_read_input_tokens":1800,"output_tokens":503}"#
            ),
            Some(Ok(u(3995, 503, 4498, 1800)))
        );
        assert_eq!(raw(OpenAiChat, "null"), None);
        for bad in [
            "{\"prompt_tokens\":1",
            "[1]",
            r#"{"prompt_tokens":"1"}"#,
            r#"{"prompt_tokens":1}"#,
        ] {
            assert_eq!(
                raw(OpenAiChat, bad),
                Some(Err(UsageUnavailable::Unparseable)),
                "{bad}"
            );
        }
        assert_eq!(
            raw(AnthropicMessages, r#"{"output_tokens":5}"#),
            Some(Err(UsageUnavailable::Unparseable))
        );
        assert_eq!(ollama(None, Some(7)), u(0, 7, 7, 0));
    }
}
