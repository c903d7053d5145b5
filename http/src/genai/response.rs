//! A GenAI response's head (media type, content coding) and its body when it
//! is one JSON object (not a stream): the top-level `model`, `usage` and
//! Ollama's counts, read as the body passes; after a gap, looked for in the
//! last bytes.

use serde_json::Value;

use super::{
    buf::Window,
    events::{self, Found},
    json::{find_member, Member, TopLevel},
    usage, GenAiApi,
};

/// A response's media type, as far as GenAI bodies go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Media {
    /// No `Content-Type`, or one not listed here.
    #[default]
    Other,
    Json,
    /// `text/event-stream`
    EventStream,
    /// `application/x-ndjson`
    Ndjson,
}

impl Media {
    /// From a `Content-Type` value.
    pub(crate) fn of(value: &[u8]) -> Self {
        let essence = value
            .split(|&c| c == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let is = |t: &[u8]| essence.eq_ignore_ascii_case(t);
        if is(b"text/event-stream") {
            Self::EventStream
        } else if is(b"application/x-ndjson") || is(b"application/ndjson") {
            Self::Ndjson
        } else if is(b"application/json") {
            Self::Json
        } else {
            Self::Other
        }
    }
}

/// Whether a `Content-Encoding` value hides the body (anything but identity).
pub(crate) fn encoded(value: &[u8]) -> bool {
    value
        .split(|&c| c == b',')
        .any(|c| !c.trim_ascii().is_empty() && !c.trim_ascii().eq_ignore_ascii_case(b"identity"))
}

const WANTED: &[&[u8]] = &[
    b"model",
    b"usage",
    b"prompt_eval_count",
    b"eval_count",
    b"done",
];
/// Longest top-level value copied: a usage object is well under 1 KiB.
const CAP: usize = 4 * 1024;

/// A non-streaming JSON body.
#[derive(Debug)]
pub(crate) struct JsonBody {
    json: TopLevel,
    /// The known bytes since the last gap (only once there was one).
    window: Option<Window>,
}

impl JsonBody {
    pub(crate) fn new() -> Self {
        Self {
            json: TopLevel::new(WANTED, CAP),
            window: None,
        }
    }

    pub(crate) fn known(&mut self, api: GenAiApi, b: &[u8], found: &mut Found) {
        if let Some(w) = &mut self.window {
            w.push(b);
            return;
        }
        self.json.feed(b, &mut |k, raw| {
            let Some(raw) = raw else {
                if k == 1 {
                    // a usage object over 4 KiB is none of the APIs'
                    found.set_usage(Err(super::UsageUnavailable::Unparseable));
                }
                return;
            };
            let num = || serde_json::from_slice::<Value>(raw).ok()?.as_u64();
            match k {
                0 => found.set_model(usage::model_raw(raw)),
                1 => {
                    if let Some(u) = usage::from_raw(api, raw) {
                        found.set_usage(u);
                    }
                }
                2 => found.prompt_eval = num(),
                3 => found.eval = num(),
                _ => found.ollama_done |= raw == b"true",
            }
        });
    }

    pub(crate) fn gap(&mut self) {
        self.json.gap();
        self.window.get_or_insert_with(Window::default).clear();
    }

    /// The body ended: after a gap, what the last bytes hold.
    pub(crate) fn end(&mut self, api: GenAiApi, found: &mut Found) {
        let Some(w) = self.window.take() else {
            return;
        };
        let w = w.bytes();
        if found.model.is_none() {
            if let Some(Member::Value(raw)) = find_member(w, b"model") {
                found.set_model(usage::model_raw(raw));
            }
        }
        match api {
            GenAiApi::OllamaChat | GenAiApi::OllamaGenerate | GenAiApi::OllamaEmbed => {
                events::window_counts(w, found);
            }
            _ if found.usage.is_some() => {}
            _ => {
                if let Some(Member::Value(raw)) = find_member(w, b"usage") {
                    if let Some(u) = usage::from_raw(api, raw) {
                        found.set_usage(u);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.json.heap_bytes() + self.window.as_ref().map_or(0, Window::heap_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_values() {
        assert_eq!(
            Media::of(b"text/event-stream; charset=utf-8"),
            Media::EventStream
        );
        assert_eq!(Media::of(b"Application/JSON"), Media::Json);
        assert_eq!(Media::of(b"application/x-ndjson"), Media::Ndjson);
        assert_eq!(Media::of(b"text/html"), Media::Other);
        assert!(encoded(b"gzip"));
        assert!(encoded(b"identity, br"));
        assert!(!encoded(b"identity"));
        assert!(!encoded(b""));
    }
}
