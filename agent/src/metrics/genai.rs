//! The GenAI families (issue 13) and how an upstream GenAI call moves them.
//!
//! A GenAI call is an upstream exchange (the gateway is the HTTP client)
//! that carries [`GenAiCall`] (http/src/genai). Native names are the OTel
//! GenAI semantic conventions' client metrics in Prometheus form; Kong mode
//! writes Kong's AI families as its exporter.lua does (every call counted in
//! `kong_ai_llm_requests_total`; tokens per type and cost only when > 0;
//! `cache_status`, `vector_db` and `embeddings_*` empty, as Kong writes them
//! for a call without its semantic cache; `workspace` Kong's default
//! workspace's name). Time to first token, time per output token, errors,
//! unavailable usage and model overflow have no Kong equivalent and keep
//! these names in both modes.
//!
//! Tokens and cost only from usage the provider reported; a call whose
//! usage could not be read counts in `gatescope_genai_usage_unavailable_total`
//! by reason, never as an estimate. Series are looked up by label values per
//! call: GenAI calls last hundreds of milliseconds at least, so the
//! registry's hashing is no cost worth caching handles for.

use std::{net::SocketAddr, sync::Arc};

use prometheus::{CounterVec, HistogramVec, IntCounterVec, Registry};

use super::families::{self, GenAi};
use crate::{
    http::{genai::GenAiCall, Exchange},
    label::{genai::Provider, ModelCap, Providers},
};

/// Kong's `workspace` for a gateway without workspaces: Kong's default
/// workspace is named `default` (its spec's golden lines carry it).
const KONG_WORKSPACE: &str = "default";

enum Schema {
    Native {
        token_usage: HistogramVec,
        duration: HistogramVec,
        cost: CounterVec,
    },
    Kong {
        requests: IntCounterVec,
        cost: CounterVec,
        tokens: IntCounterVec,
        latency: HistogramVec,
    },
}

pub struct GenAiMetrics {
    providers: Arc<Providers>,
    models: ModelCap,
    schema: Schema,
    ttft: HistogramVec,
    tpot: HistogramVec,
    errors: IntCounterVec,
    unavailable: IntCounterVec,
    overflow: IntCounterVec,
}

/// `last - first` in seconds, when both are known and in order.
fn seconds(first_ns: u64, last_ns: u64) -> Option<f64> {
    (first_ns != 0 && last_ns != 0 && last_ns >= first_ns)
        .then(|| (last_ns - first_ns) as f64 / 1e9)
}

impl GenAiMetrics {
    pub fn new(
        registry: &Registry,
        schema: &'static GenAi,
        providers: Arc<Providers>,
        max_models_per_provider: usize,
    ) -> Self {
        let schema = match schema {
            GenAi::Native(f) => Schema::Native {
                token_usage: f.token_usage.histogram(registry),
                duration: f.duration.histogram(registry),
                cost: f.cost.float_counter(registry),
            },
            GenAi::Kong(f) => Schema::Kong {
                requests: f.requests.counter(registry),
                cost: f.cost.float_counter(registry),
                tokens: f.tokens.counter(registry),
                latency: f.latency.histogram(registry),
            },
        };
        GenAiMetrics {
            providers,
            models: ModelCap::new(max_models_per_provider),
            schema,
            ttft: families::GENAI_TTFT.histogram(registry),
            tpot: families::GENAI_TPOT.histogram(registry),
            errors: families::GENAI_ERRORS.counter(registry),
            unavailable: families::GENAI_USAGE_UNAVAILABLE.counter(registry),
            overflow: families::GENAI_MODELS_OVERFLOW.counter(registry),
        }
    }

    /// The gateway's GenAI call `call` (of exchange `ex`) to upstream `peer`.
    pub fn call(&mut self, ex: &Exchange, call: &GenAiCall, peer: SocketAddr) {
        let provider = self
            .providers
            .provider(peer, ex.host.as_deref(), call.default_provider());
        let name = provider.name;
        let request = self.models.label(name, call.model());
        let response = self.models.label(name, call.response_model.as_deref());
        if request.overflow || response.overflow {
            self.overflow.with_label_values(&[name]).inc();
        }
        let operation = call.api.operation();
        let labels = [operation, name, &request.name, &response.name];
        let usage = match call.usage {
            Ok(u) => Some(u),
            Err(reason) => {
                self.unavailable
                    .with_label_values(&[name, reason.reason()])
                    .inc();
                None
            }
        };
        let price = provider.price(call.model());
        let cost = usage
            .zip(price)
            .map(|(u, p)| Provider::cost(p, u.input, u.output));
        let duration = seconds(ex.request_first_ns, ex.end_ns());

        match &self.schema {
            Schema::Native {
                token_usage,
                duration: family,
                cost: cost_family,
            } => {
                if let Some(u) = usage {
                    let mut with_type = labels.to_vec();
                    with_type.push("input");
                    token_usage
                        .with_label_values(&with_type)
                        .observe(u.input as f64);
                    if call.api.generates() {
                        with_type[4] = "output";
                        token_usage
                            .with_label_values(&with_type)
                            .observe(u.output as f64);
                    }
                }
                if let Some(d) = duration {
                    family.with_label_values(&labels).observe(d);
                }
                if let Some(c) = cost {
                    cost_family
                        .with_label_values(&[name, &request.name])
                        .inc_by(c);
                }
            }
            Schema::Kong {
                requests,
                cost: cost_family,
                tokens,
                latency,
            } => {
                // Kong's ai_model is the request's model, "" when absent.
                let model: &str = if call.model().is_some() {
                    &request.name
                } else {
                    ""
                };
                let kong = [name, model, "", "", "", "", KONG_WORKSPACE];
                requests.with_label_values(&kong).inc();
                if let Some(c) = cost.filter(|c| *c > 0.0) {
                    cost_family.with_label_values(&kong).inc_by(c);
                }
                if let Some(d) = duration {
                    latency.with_label_values(&kong).observe(d * 1e3);
                }
                if let Some(u) = usage {
                    for (kind, n) in [
                        ("prompt_tokens", u.input),
                        ("completion_tokens", u.output),
                        ("total_tokens", u.total),
                    ] {
                        if n > 0 {
                            tokens
                                .with_label_values(&[
                                    name,
                                    model,
                                    "",
                                    "",
                                    "",
                                    "",
                                    kind,
                                    KONG_WORKSPACE,
                                ])
                                .inc_by(n);
                        }
                    }
                }
            }
        }

        if ex.status == 0 || ex.status >= 400 {
            let error = if ex.status == 0 {
                "no_response".to_owned()
            } else {
                ex.status.to_string()
            };
            self.errors
                .with_label_values(&[operation, name, &request.name, &error])
                .inc();
        }
        if !call.streaming {
            return;
        }
        let Some(first_token) = call.first_token_ns else {
            return;
        };
        if let Some(ttft) = seconds(ex.request_last_ns, first_token) {
            self.ttft.with_label_values(&labels).observe(ttft);
        }
        let output = usage.map_or(0, |u| u.output);
        if output > 1 {
            if let Some(span) = seconds(first_token, ex.response_last_ns) {
                self.tpot
                    .with_label_values(&labels)
                    .observe(span / (output - 1) as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests;
