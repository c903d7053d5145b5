//! One GenAI call being read: its request body, its response head and body,
//! each handed over as it passes ([`Piece`]s of payload), and the
//! [`GenAiCall`] they amount to.

use super::{
    events::{self, Found},
    ndjson::Ndjson,
    request::Request,
    response::{JsonBody, Media},
    sse::Sse,
    GenAiApi, GenAiCall, GenAiVendor, UsageUnavailable,
};

/// A piece of a message's payload (its body without transfer coding: no
/// chunk-size lines, no trailers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Known(&'a [u8]),
    /// Payload bytes that were not captured (or whose place in the payload
    /// is unknown).
    Gap(u64),
}

/// The scanners of one call.
#[derive(Debug)]
pub(crate) struct GenAiScan {
    api: GenAiApi,
    /// See [`GenAiCall::candidate`].
    candidate: bool,
    vendor: Option<GenAiVendor>,
    req: Request,
    /// `None` until the final response head.
    status: Option<u16>,
    body: Body,
    found: Found,
    /// Response payload went uncaptured, or the body was cut short.
    lost: bool,
    /// The time of the latest response payload.
    last_ts: u64,
}

#[derive(Debug)]
enum Body {
    /// No final response head yet.
    Waiting,
    /// `Content-Encoding` other than identity: not read.
    Compressed,
    /// No telling media type: decided on the first byte.
    Sniff,
    Json(JsonBody),
    Sse(Sse),
    Ndjson(Ndjson),
}

impl GenAiScan {
    pub(crate) fn new(api: GenAiApi) -> Self {
        Self::with(api, false)
    }

    /// A call recognised by a path shape ordinary APIs share: see
    /// [`GenAiCall::candidate`].
    pub(crate) fn candidate(api: GenAiApi) -> Self {
        Self::with(api, true)
    }

    fn with(api: GenAiApi, candidate: bool) -> Self {
        Self {
            api,
            candidate,
            vendor: None,
            req: Request::new(),
            status: None,
            body: Body::Waiting,
            found: Found::default(),
            lost: false,
            last_ts: 0,
        }
    }

    pub(crate) fn request(&mut self, piece: Piece<'_>) {
        match piece {
            Piece::Known(b) => self.req.known(b),
            Piece::Gap(_) => self.req.gap(),
        }
    }

    /// The final response head.
    pub(crate) fn response_head(
        &mut self,
        status: u16,
        media: Media,
        encoded: bool,
        vendor: Option<GenAiVendor>,
    ) {
        self.status = Some(status);
        self.vendor = vendor;
        self.body = if encoded {
            Body::Compressed
        } else {
            match media {
                Media::EventStream => Body::Sse(Sse::default()),
                Media::Ndjson => Body::Ndjson(Ndjson::default()),
                Media::Json => Body::Json(JsonBody::new()),
                Media::Other => Body::Sniff,
            }
        };
    }

    pub(crate) fn response(&mut self, piece: Piece<'_>, ts: u64) {
        self.last_ts = ts;
        if let (Body::Sniff, Piece::Known(b)) = (&self.body, piece) {
            let Some(&first) = b.iter().find(|c| !c.is_ascii_whitespace()) else {
                return;
            };
            // an SSE field (data, event, id, retry) or comment; else JSON,
            // which anything else (an HTML error page) fails as
            self.body = match first {
                b'd' | b'e' | b'i' | b'r' | b':' => Body::Sse(Sse::default()),
                b'{' if self.ollama_streams() => Body::Ndjson(Ndjson::default()),
                _ => Body::Json(JsonBody::new()),
            };
        }
        let api = self.api;
        let found = &mut self.found;
        match (&mut self.body, piece) {
            (Body::Sniff, Piece::Gap(_)) => {
                self.lost = true;
                let mut j = JsonBody::new();
                j.gap();
                self.body = Body::Json(j);
            }
            (Body::Json(j), Piece::Known(b)) => j.known(api, b, found),
            (Body::Sse(s), Piece::Known(b)) => {
                s.feed(b, &mut |e| events::event(api, e, ts, found));
            }
            (Body::Ndjson(n), Piece::Known(b)) => {
                n.feed(b, &mut |e| events::event(api, e, ts, found));
            }
            (Body::Json(j), Piece::Gap(_)) => {
                self.lost = true;
                j.gap();
            }
            (Body::Sse(s), Piece::Gap(_)) => {
                self.lost = true;
                s.gap();
            }
            (Body::Ndjson(n), Piece::Gap(_)) => {
                self.lost = true;
                n.gap();
            }
            (Body::Waiting | Body::Compressed | Body::Sniff, _) => {}
        }
    }

    /// The response body was cut short (the connection closed before its
    /// end).
    pub(crate) fn cut(&mut self) {
        if self.status.is_some() {
            self.lost = true;
        }
    }

    /// An Ollama generating call that streams, as it does unless told
    /// `"stream": false`.
    fn ollama_streams(&self) -> bool {
        matches!(self.api, GenAiApi::OllamaChat | GenAiApi::OllamaGenerate)
            && self.req.stream != Some(false)
    }

    /// The request asked for a stream, or the API streams by default.
    fn asked_stream(&self) -> bool {
        self.req.stream == Some(true) || self.req.complete() && self.ollama_streams()
    }

    /// Whether the response should have carried a usage: every API's does,
    /// but an OpenAI chat or completions stream only with include_usage
    /// (taken as asked when the request was not read whole).
    fn usage_expected(&self) -> bool {
        let streamed = matches!(self.body, Body::Sse(_));
        let openai = matches!(self.api, GenAiApi::OpenAiChat | GenAiApi::OpenAiCompletions);
        !(streamed && openai) || self.req.include_usage == Some(true) || !self.req.complete()
    }

    /// What the call amounts to, once its exchange is complete.
    pub(crate) fn finish(mut self) -> GenAiCall {
        let (api, ts) = (self.api, self.last_ts);
        let found = &mut self.found;
        match &mut self.body {
            Body::Json(j) => j.end(api, found),
            // a stream that did not say it ended was cut (a close-delimited
            // one ends with the connection either way)
            Body::Sse(s) => {
                s.end();
                self.lost |= s.dropped > 0 || !found.finished;
            }
            Body::Ndjson(n) => {
                n.end(&mut |e| events::event(api, e, ts, found));
                self.lost |= n.dropped > 0 || !found.finished;
            }
            Body::Waiting | Body::Compressed | Body::Sniff => {}
        }
        let streamed = matches!(self.body, Body::Sse(_) | Body::Ndjson(_));
        let usage = match (&self.body, self.status) {
            (Body::Waiting, _) | (_, None) => Err(UsageUnavailable::Truncated),
            (Body::Compressed, _) => Err(UsageUnavailable::Compressed),
            (_, Some(status)) => match self.found.usage(api) {
                Some(u) => u,
                None if !(200..300).contains(&status) => Err(UsageUnavailable::Absent),
                None if self.lost && self.usage_expected() => Err(UsageUnavailable::Truncated),
                None => Err(UsageUnavailable::Absent),
            },
        };
        GenAiCall {
            api,
            candidate: self.candidate,
            vendor: self.vendor,
            streaming: streamed || self.asked_stream(),
            request_model: self.req.model.take(),
            response_model: self.found.model.take(),
            usage,
            first_token_ns: self.found.first_token_ns.filter(|_| streamed),
        }
    }

    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.req.heap_bytes()
            + self.found.model.as_ref().map_or(0, String::capacity)
            + match &self.body {
                Body::Json(j) => j.heap_bytes(),
                Body::Sse(s) => s.heap_bytes(),
                Body::Ndjson(n) => n.heap_bytes(),
                Body::Waiting | Body::Compressed | Body::Sniff => 0,
            }
    }
}
