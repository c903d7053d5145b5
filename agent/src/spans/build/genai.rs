//! What a GenAI call adds to its CLIENT span, per the OTel GenAI semantic
//! conventions: `gen_ai.operation.name`, `gen_ai.provider.name`,
//! `gen_ai.request.model`, `gen_ai.response.model` and the usage's
//! `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens` when known.
//!
//! The request model is the one metrics label with ([`GenAiCall::model`]:
//! the request's, else the response's, as Kong does), so a span and its
//! series agree. The span keeps its HTTP attributes; its name becomes
//! `{operation} {model}` (semconv's GenAI span name) when a model is known.
//! No prompt or completion text is ever an attribute.

use opentelemetry::KeyValue;

use crate::http::genai::GenAiCall;

/// The `gen_ai.*` attributes of `call`, whose provider is `provider`.
pub(super) fn attributes(call: &GenAiCall, provider: &str, attrs: &mut Vec<KeyValue>) {
    attrs.push(KeyValue::new("gen_ai.operation.name", call.api.operation()));
    attrs.push(KeyValue::new("gen_ai.provider.name", provider.to_owned()));
    if let Some(model) = call.model() {
        attrs.push(KeyValue::new("gen_ai.request.model", model.to_owned()));
    }
    if let Some(model) = &call.response_model {
        attrs.push(KeyValue::new("gen_ai.response.model", model.clone()));
    }
    if let Ok(usage) = call.usage {
        attrs.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            i64::try_from(usage.input).unwrap_or(i64::MAX),
        ));
        if call.api.generates() {
            attrs.push(KeyValue::new(
                "gen_ai.usage.output_tokens",
                i64::try_from(usage.output).unwrap_or(i64::MAX),
            ));
        }
    }
}

/// `{gen_ai.operation.name} {gen_ai.request.model}`, when a model is known.
pub(super) fn name(call: &GenAiCall) -> Option<String> {
    call.model()
        .map(|model| format!("{} {model}", call.api.operation()))
}
