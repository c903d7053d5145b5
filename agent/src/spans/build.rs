//! Labelled records to spans (pure: no I/O; the clock and ids are given).
//!
//! One SERVER span per client request, one CLIENT span per upstream attempt
//! (a child of the SERVER span), and a root CLIENT span per upstream call
//! that correlation could not tie to a request. Names and attributes follow
//! the stable OTel HTTP semantic conventions; no header value beyond trace
//! context, no body and no query string is exported.
//!
//! Trace context, per request:
//! - The caller's `traceparent`, when valid and its sender believed
//!   (`--trust-traceparent`), is the SERVER span's remote parent.
//! - What the gateway sent upstream decides each CLIENT span's parent:
//!   - The caller's header forwarded unchanged (nginx's default), or none:
//!     the CLIENT span is a child of our SERVER span. The upstream's own span
//!     (if it traces) names the caller's span as parent, so it becomes a
//!     sibling of our SERVER span, not a child of our CLIENT span: gatescope
//!     injects nothing, so it cannot tell the upstream about its spans.
//!   - A different valid header (the gateway's own tracer wrote it: Kong's
//!     OTel plugin, nginx's otel module, `proxy_set_header traceparent`):
//!     the CLIENT span joins that header's trace with the header's span id
//!     as its parent (a remote parent: it lives in the gateway's process),
//!     as OBI does since its PR #2981. Taking the header's span id as our
//!     own id would duplicate a span the gateway's tracer exports; leaving
//!     the parent empty would add one root per request to that trace. The
//!     upstream's span then is our CLIENT span's sibling under the gateway's
//!     span. Without a believed caller, the SERVER span takes that header's
//!     trace id too, so the request's spans stay in one trace.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState},
    InstrumentationScope, KeyValue,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};

use super::{
    cap::TraceCap,
    clock::WallClock,
    context::{parse_traceparent, parse_tracestate, Parent, Trust},
    sampler::Sampler,
};
use crate::{
    capture::decode::Role,
    correlate::Attempt,
    http::Exchange,
    label::{Labelled, Providers},
};

/// What became of a request's (or an unlinked call's) spans.
#[derive(Debug)]
pub enum Outcome {
    Spans(Vec<SpanData>),
    /// Not sampled: not a loss, not counted as dropped.
    SampledOut,
    /// The incoming trace is over its cap: this many spans dropped.
    Capped(usize),
    /// The export queue is full: this many spans dropped unbuilt (building
    /// spans nobody can send would only cost the pipeline CPU).
    QueueFull(usize),
    /// Not a client request (upstream records come as attempts).
    Skipped,
}

pub struct Builder {
    trust: Trust,
    sampler: Sampler,
    cap: TraceCap,
    pub clock: WallClock,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    /// Names the provider of GenAI calls (label/genai.rs).
    genai: Arc<Providers>,
}

/// Methods the semantic conventions know; others are `_OTHER`.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn method(m: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|k| **k == m)
        .copied()
        .unwrap_or("_OTHER")
}

/// `{method}`, or `HTTP` for an unknown method (semconv).
fn name_method(m: &'static str) -> &'static str {
    if m == "_OTHER" {
        "HTTP"
    } else {
        m
    }
}

impl Builder {
    pub fn new(trust: Trust, sampler: Sampler, cap: TraceCap, clock: WallClock) -> Self {
        Builder {
            trust,
            sampler,
            cap,
            clock,
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("gatescope")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            genai: Arc::default(),
        }
    }

    /// Names GenAI calls' providers from `providers` (none: by API shape).
    #[must_use]
    pub fn with_genai(mut self, providers: Arc<Providers>) -> Self {
        self.genai = providers;
        self
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one span's fields, each given once; a struct would only rename them"
    )]
    fn span(
        &self,
        context: SpanContext,
        parent: (SpanId, bool),
        kind: SpanKind,
        name: String,
        ex: &Exchange,
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: context,
            parent_span_id: parent.0,
            parent_span_is_remote: parent.1,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: self.clock.wall(ex.request_first_ns),
            end_time: self.clock.wall(ex.end_ns().max(ex.request_first_ns)),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// A client request's SERVER span and its attempts' CLIENT spans, at
    /// monotonic time `now` (for the trace cap's window); `queue_full`: the
    /// export queue has no room (sampling and the cap are decided first).
    pub fn request(&mut self, r: &Labelled, now: u64, queue_full: bool) -> Outcome {
        if r.role != Role::Downstream {
            return Outcome::Skipped;
        }
        let ex = &r.exchange;
        let incoming_raw = ex.trace.traceparent.as_deref().map(str::trim);
        let incoming = if self.trust.trusts(r.remote.ip()) {
            incoming_raw.and_then(parse_traceparent)
        } else {
            None
        };
        // Each attempt's header when the gateway wrote its own.
        let written: Vec<Option<Parent>> = r
            .attempts
            .iter()
            .map(|a| gateway_written(a, incoming_raw))
            .collect();
        let trace_id = incoming
            .map(|p| p.trace_id)
            .or_else(|| written.iter().rev().flatten().next().map(|p| p.trace_id))
            .unwrap_or_else(|| self.ids.new_trace_id());
        if !self.sampler.sample(trace_id, incoming) {
            return Outcome::SampledOut;
        }
        let spans = 1 + r.attempts.len();
        if incoming.is_some() && !self.cap.admit(trace_id, spans as u32, now) {
            return Outcome::Capped(spans);
        }
        if queue_full {
            return Outcome::QueueFull(spans);
        }
        let state = incoming.map_or_else(TraceState::default, |_| {
            parse_tracestate(ex.trace.tracestate.as_deref())
        });
        let server_id = self.ids.new_span_id();
        let server_ctx = SpanContext::new(trace_id, server_id, TraceFlags::SAMPLED, false, state);
        let parent = incoming.map_or((SpanId::INVALID, false), |p| (p.span_id, true));
        let m = method(&ex.method);
        let route = r.name.as_ref().filter(|n| n.configured).map(|n| &n.route);
        let name = match (ex.grpc.as_deref().and_then(rpc::name), route) {
            (Some(rpc), _) => rpc,
            (None, Some(route)) => format!("{} {route}", name_method(m)),
            (None, None) => name_method(m).to_owned(),
        };
        let mut attrs = common(ex, m, r.remote);
        attrs.push(KeyValue::new("client.address", r.remote.ip().to_string()));
        let (host, port) = server_address(ex.host.as_deref(), r.listener);
        if let Some(host) = host {
            attrs.push(KeyValue::new("server.address", host));
        }
        if let Some(port) = port {
            attrs.push(KeyValue::new("server.port", i64::from(port)));
        }
        if let Some(route) = route {
            attrs.push(KeyValue::new("http.route", route.to_string()));
        }
        let http_error = match ex.status {
            0 => Some("connection_closed".to_owned()),
            499 => Some("aborted".to_owned()),
            s if s >= 500 => Some(s.to_string()),
            _ => None,
        };
        let error = http_error.or_else(|| rpc_error(ex, &mut attrs, &SpanKind::Server));
        let status = if error.is_some() && ex.status != 499 {
            Status::error("")
        } else {
            Status::Unset
        };
        if let Some(e) = error {
            attrs.push(KeyValue::new("error.type", e));
        }
        let mut out = Vec::with_capacity(spans);
        out.push(self.span(
            server_ctx,
            parent,
            SpanKind::Server,
            name,
            ex,
            attrs,
            status,
        ));
        for (i, (a, written)) in r.attempts.iter().zip(written).enumerate() {
            let (trace, parent, state) = match written {
                Some(p) => (
                    p.trace_id,
                    (p.span_id, true),
                    parse_tracestate(a.exchange.trace.tracestate.as_deref()),
                ),
                None => (
                    trace_id,
                    (server_id, false),
                    out[0].span_context.trace_state().clone(),
                ),
            };
            let ctx = SpanContext::new(
                trace,
                self.ids.new_span_id(),
                TraceFlags::SAMPLED,
                false,
                state,
            );
            out.push(self.client(a, ctx, parent, i, Some(ex.status)));
        }
        Outcome::Spans(out)
    }

    /// An upstream call correlation left without a client request: a root
    /// CLIENT span, or, when it carries a believed `traceparent`, a child
    /// of that header's span (OBI PR #2981: no extra root per call).
    pub fn unlinked(&mut self, a: &Attempt, now: u64, queue_full: bool) -> Outcome {
        let header = if self.trust == Trust::All {
            a.exchange
                .trace
                .traceparent
                .as_deref()
                .and_then(parse_traceparent)
        } else {
            // Whose header it is (the caller's, forwarded?) is unknown.
            None
        };
        let trace_id = header.map_or_else(|| self.ids.new_trace_id(), |p| p.trace_id);
        if !self.sampler.sample(trace_id, header) {
            return Outcome::SampledOut;
        }
        if header.is_some() && !self.cap.admit(trace_id, 1, now) {
            return Outcome::Capped(1);
        }
        if queue_full {
            return Outcome::QueueFull(1);
        }
        let state = header.map_or_else(TraceState::default, |_| {
            parse_tracestate(a.exchange.trace.tracestate.as_deref())
        });
        let ctx = SpanContext::new(
            trace_id,
            self.ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            state,
        );
        let parent = header.map_or((SpanId::INVALID, false), |p| (p.span_id, true));
        Outcome::Spans(vec![self.client(a, ctx, parent, 0, None)])
    }

    /// The CLIENT span of attempt number `index` (0: the first try);
    /// `client_status` is the status the gateway gave its client.
    fn client(
        &self,
        a: &Attempt,
        ctx: SpanContext,
        parent: (SpanId, bool),
        index: usize,
        client_status: Option<u16>,
    ) -> SpanData {
        let ex = &a.exchange;
        let m = method(&ex.method);
        let mut attrs = common(ex, m, a.peer);
        attrs.push(KeyValue::new("server.address", a.peer.ip().to_string()));
        attrs.push(KeyValue::new("server.port", i64::from(a.peer.port())));
        if index > 0 {
            attrs.push(KeyValue::new("http.request.resend_count", index as i64));
        }
        let http_error = match ex.status {
            // No response: nginx answers its client 504 when it gave up
            // waiting (proxy_read_timeout); otherwise the upstream closed or
            // reset the connection first.
            0 if client_status == Some(504) => Some("timeout".to_owned()),
            0 => Some("reset".to_owned()),
            s if s >= 400 => Some(s.to_string()),
            _ => None,
        };
        let error = http_error.or_else(|| rpc_error(ex, &mut attrs, &SpanKind::Client));
        let status = if error.is_some() {
            Status::error("")
        } else {
            Status::Unset
        };
        if let Some(e) = error {
            attrs.push(KeyValue::new("error.type", e));
        }
        let genai_name = ex.genai.as_deref().and_then(|call| {
            let provider = self
                .genai
                .provider(a.peer, ex.host.as_deref(), call.default_provider());
            genai::attributes(call, provider.name, &mut attrs);
            genai::name(call)
        });
        let name = ex
            .grpc
            .as_deref()
            .and_then(rpc::name)
            .or(genai_name)
            .unwrap_or_else(|| name_method(m).to_owned());
        self.span(ctx, parent, SpanKind::Client, name, ex, attrs, status)
    }
}

/// The header of an attempt when the gateway wrote its own: valid, and not
/// the caller's forwarded unchanged.
fn gateway_written(a: &Attempt, incoming_raw: Option<&str>) -> Option<Parent> {
    let raw = a.exchange.trace.traceparent.as_deref()?.trim();
    if Some(raw) == incoming_raw {
        return None;
    }
    parse_traceparent(raw)
}

/// A gRPC call's `rpc.*` attributes added to `attrs`, and its code when
/// that makes a span of `kind` an error (see rpc.rs); `None` for HTTP.
fn rpc_error(ex: &Exchange, attrs: &mut Vec<KeyValue>, kind: &SpanKind) -> Option<String> {
    let call = ex.grpc.as_deref()?;
    rpc::attributes(call, attrs);
    rpc::error(call, kind)
}

/// Attributes both kinds share.
fn common(ex: &Exchange, m: &'static str, peer: SocketAddr) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("http.request.method", m),
        KeyValue::new("url.path", ex.path.clone()),
        // The capture sees plain-text HTTP only.
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("network.peer.address", peer.ip().to_string()),
        KeyValue::new("network.peer.port", i64::from(peer.port())),
        KeyValue::new("network.protocol.version", ex.protocol_version()),
    ];
    if ex.status != 0 {
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(ex.status),
        ));
    }
    attrs
}

/// `server.address` and `server.port` of a SERVER span: from the Host
/// header (its port, else the listening socket's); without Host, the
/// listening socket's address.
fn server_address(
    host: Option<&str>,
    listener: Option<SocketAddr>,
) -> (Option<String>, Option<u16>) {
    let lport = listener.map(|l| l.port());
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return (listener.map(|l| l.ip().to_string()), lport);
    };
    // `[v6]:port`, `[v6]`, `name:port`, `name`.
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (Some(addr.to_owned()), port.or(lport));
        }
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(p) => (Some(name.to_owned()), Some(p)),
            Err(_) => (Some(host.to_owned()), lport),
        },
        _ => (Some(host.to_owned()), lport),
    }
}

mod genai;
mod rpc;
#[cfg(test)]
mod tests;
