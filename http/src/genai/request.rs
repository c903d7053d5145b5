//! A GenAI request body (`application/json`): its top-level `model`,
//! `stream` and `stream_options.include_usage`, read as the body passes
//! (the prompt around them is skipped, never kept).

use serde_json::Value;

use super::{json::TopLevel, usage};

const WANTED: &[&[u8]] = &[b"model", b"stream", b"stream_options"];
/// Longest value copied: a model name, `true`, a small options object.
const CAP: usize = 512;

#[derive(Debug)]
pub(crate) struct Request {
    json: TopLevel,
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub include_usage: Option<bool>,
}

impl Request {
    pub(crate) fn new() -> Self {
        Self {
            json: TopLevel::new(WANTED, CAP),
            model: None,
            stream: None,
            include_usage: None,
        }
    }

    pub(crate) fn known(&mut self, b: &[u8]) {
        let Self {
            json,
            model,
            stream,
            include_usage,
        } = self;
        json.feed(b, &mut |k, raw| {
            let Some(raw) = raw else { return };
            match k {
                0 => *model = usage::model_raw(raw),
                1 => *stream = Some(raw == b"true"),
                _ => {
                    let v: Option<Value> = serde_json::from_slice(raw).ok();
                    *include_usage = Some(
                        v.and_then(|v| v.get("include_usage")?.as_bool())
                            .unwrap_or(false),
                    );
                }
            }
        });
    }

    pub(crate) fn gap(&mut self) {
        self.json.gap();
    }

    /// The body was read whole: a member not found is absent.
    pub(crate) fn complete(&self) -> bool {
        self.json.completed()
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.json.heap_bytes() + self.model.as_ref().map_or(0, String::capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_members() {
        let mut r = Request::new();
        r.known(br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi \"stream\": false"}],"#);
        r.known(br#""stream":true,"stream_options":{"include_usage":true}}"#);
        assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(
            (r.stream, r.include_usage, r.complete()),
            (Some(true), Some(true), true)
        );
        // the model past a gap (a long prompt first)
        let mut r = Request::new();
        r.known(br#"{"messages":[{"role":"user","content":"aaaa"#);
        r.gap();
        r.known(br#"aaa"}],"model":"llama3.2","stream":false}"#);
        assert_eq!(
            (r.model.as_deref(), r.stream, r.complete()),
            (None, None, false)
        );
    }
}
