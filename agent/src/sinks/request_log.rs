//! The request log sink: one JSON line per finished exchange.
//!
//! `--request-log`: an access log written from the kernel's view. It
//! carries method, path without query string, status, byte counts and
//! timings (and a gRPC call's service, method and grpc-status; a GenAI
//! call's provider, models, token counts and time to first token); never
//! header values, query strings, bodies, prompts or completions. Each downstream
//! line lists the upstream calls linked to it (`attempts`); a call
//! correlation left unlinked gets a line of its own (`"role":"unlinked"`).

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
    sync::Arc,
};

use serde::Serialize;

use tracing::warn;

use super::Sink;
use crate::{
    capture::decode::Role,
    correlate::Attempt,
    http::{
        genai::{GenAiCall, UsageUnavailable},
        Exchange,
    },
    label::{Labelled, Providers},
};

#[derive(Serialize)]
struct Line<'a> {
    role: &'static str,
    /// The client (downstream) or the upstream peer (upstream).
    remote: String,
    /// The gateway's listening socket, downstream only.
    #[serde(skip_serializing_if = "Option::is_none")]
    listener: Option<String>,
    method: &'a str,
    path: &'a str,
    status: u16,
    request_bytes: u64,
    response_bytes: u64,
    /// First request byte to last response byte, in milliseconds.
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<Upstream>,
    /// Downstream: every upstream call linked to it, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptLine>>,
    /// A gRPC call's service, method and grpc-status (null when none seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc: Option<Grpc<'a>>,
    /// An upstream GenAI call's names and numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    genai: Option<GenAi<'a>>,
}

/// Models as the traffic named them (not capped: a log line is not a
/// series); token fields and `ttft_ms` null when unknown.
#[derive(Serialize)]
struct GenAi<'a> {
    operation: &'static str,
    provider: &'a str,
    request_model: Option<&'a str>,
    response_model: Option<&'a str>,
    streaming: bool,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    total_tokens: Option<u64>,
    cached_input_tokens: Option<u64>,
    /// Why usage is unknown (`gatescope_genai_usage_unavailable_total`'s
    /// reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_unavailable: Option<&'static str>,
    /// The request's last byte to the first content event (streams).
    ttft_ms: Option<f64>,
}

impl<'a> GenAi<'a> {
    fn of(call: &'a GenAiCall, ex: &Exchange, provider: &'a str) -> Self {
        let usage = call.usage.ok();
        GenAi {
            operation: call.api.operation(),
            provider,
            request_model: call.request_model.as_deref(),
            response_model: call.response_model.as_deref(),
            streaming: call.streaming,
            input_tokens: usage.map(|u| u.input),
            output_tokens: usage.map(|u| u.output),
            total_tokens: usage.map(|u| u.total),
            cached_input_tokens: usage.map(|u| u.cached_input),
            usage_unavailable: call.usage.err().map(UsageUnavailable::reason),
            ttft_ms: call
                .first_token_ns
                .filter(|&t| call.streaming && t >= ex.request_last_ns)
                .map(|t| ms(ex.request_last_ns, t)),
        }
    }
}

#[derive(Serialize)]
struct Grpc<'a> {
    service: &'a str,
    method: &'a str,
    status: Option<u16>,
}

/// One upstream call (attempt), as linked or left unlinked.
#[derive(Serialize)]
struct AttemptLine {
    /// The gateway's end of the upstream connection.
    local: String,
    peer: String,
    status: u16,
    /// `gatescope_trace_links_total`'s `result`.
    link: &'static str,
    /// First request byte sent (CLOCK_MONOTONIC, ns): with `local`, says
    /// which request on that connection it was.
    first_ns: u64,
}

impl AttemptLine {
    fn of(a: &Attempt) -> Self {
        AttemptLine {
            local: a.local.to_string(),
            peer: a.peer.to_string(),
            status: a.exchange.status,
            link: a.link.as_str(),
            first_ns: a.exchange.request_first_ns,
        }
    }
}

/// An upstream call correlation left unlinked.
#[derive(Serialize)]
struct UnlinkedLine<'a> {
    role: &'static str,
    method: &'a str,
    path: &'a str,
    #[serde(flatten)]
    attempt: AttemptLine,
}

#[derive(Serialize)]
struct Upstream {
    peer: String,
    status: u16,
    duration_ms: f64,
}

pub struct RequestLog {
    out: BufWriter<File>,
    /// Names the provider of upstream GenAI calls.
    genai: Arc<Providers>,
}

fn ms(first_ns: u64, last_ns: u64) -> f64 {
    last_ns.saturating_sub(first_ns) as f64 / 1e6
}

impl RequestLog {
    /// `genai`: the `[[genai.provider]]` sections (label/genai.rs).
    pub fn create(path: &Path, genai: Arc<Providers>) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RequestLog {
            out: BufWriter::new(file),
            genai,
        })
    }

    fn write(&mut self, r: &Labelled) -> io::Result<()> {
        let e = &r.exchange;
        let line = Line {
            role: match r.role {
                Role::Downstream => "downstream",
                Role::Upstream => "upstream",
            },
            remote: r.remote.to_string(),
            listener: r.listener.map(|l| l.to_string()),
            method: &e.method,
            path: &e.path,
            status: e.status,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            duration_ms: e.duration_ns() as f64 / 1e6,
            upstream: r.upstream.as_ref().map(|leg| Upstream {
                peer: leg.peer.to_string(),
                status: leg.status,
                duration_ms: ms(leg.first_ns, leg.last_ns),
            }),
            attempts: (r.role == Role::Downstream)
                .then(|| r.attempts.iter().map(AttemptLine::of).collect()),
            grpc: e.grpc.as_deref().map(|g| Grpc {
                service: &g.service,
                method: &g.method,
                status: g.status,
            }),
            genai: e
                .genai
                .as_deref()
                .filter(|_| r.role == Role::Upstream)
                .map(|call| {
                    let provider =
                        self.genai
                            .provider(r.remote, e.host.as_deref(), call.default_provider());
                    GenAi::of(call, e, provider.name)
                }),
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }
}

impl Sink for RequestLog {
    fn exchange(&mut self, record: &Labelled) {
        if let Err(e) = self.write(record) {
            warn!("request log: {e}");
        }
    }

    fn unlinked(&mut self, _tgid: u32, attempt: &Attempt) {
        let line = UnlinkedLine {
            role: "unlinked",
            method: &attempt.exchange.method,
            path: &attempt.exchange.path,
            attempt: AttemptLine::of(attempt),
        };
        let written = serde_json::to_writer(&mut self.out, &line)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = written {
            warn!("request log: {e}");
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            warn!("request log: {e}");
        }
    }
}
