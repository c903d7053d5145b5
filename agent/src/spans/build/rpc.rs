//! What a gRPC call adds to its span, per the OTel gRPC semantic conventions
//! (the `rpc.*` attributes of semconv 1.2x, which most backends read:
//! `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`).
//!
//! The span keeps its HTTP attributes (it is an HTTP/2 stream too). Its
//! name becomes `package.Service/Method` (the RPC span name) when both parts
//! are known. Its status: a CLIENT span is an error for any code but OK; a
//! SERVER span only for the codes that say the server failed (UNKNOWN,
//! DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), the
//! others being the caller's mistakes, as 4xx are for HTTP.

use opentelemetry::{trace::SpanKind, KeyValue};

use crate::http::GrpcCall;

/// Codes a server reports its own failure with (semconv's gRPC span status).
const SERVER_ERRORS: [u16; 6] = [2, 4, 12, 13, 14, 15];

/// The `rpc.*` attributes; `rpc.grpc.status_code` only when one was seen.
pub(super) fn attributes(call: &GrpcCall, attrs: &mut Vec<KeyValue>) {
    attrs.push(KeyValue::new("rpc.system", "grpc"));
    if !call.service.is_empty() {
        attrs.push(KeyValue::new("rpc.service", call.service.clone()));
    }
    if !call.method.is_empty() {
        attrs.push(KeyValue::new("rpc.method", call.method.clone()));
    }
    if let Some(code) = call.status {
        attrs.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    }
}

/// `package.Service/Method`, when both are known.
pub(super) fn name(call: &GrpcCall) -> Option<String> {
    (!call.service.is_empty() && !call.method.is_empty())
        .then(|| format!("{}/{}", call.service, call.method))
}

/// The code as `error.type` when it makes the span an error.
pub(super) fn error(call: &GrpcCall, kind: &SpanKind) -> Option<String> {
    let code = call.status?;
    let failed = match kind {
        SpanKind::Server => SERVER_ERRORS.contains(&code),
        _ => code != 0,
    };
    failed.then(|| code.to_string())
}
