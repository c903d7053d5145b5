//! The GenAI call families (issue 13): the OTel GenAI semantic conventions'
//! client metrics in native mode, Kong's AI families in Kong mode, and the
//! families both schemas share.

use super::{counter, histogram, Family};

/// The GenAI families whose names differ per schema.
#[derive(Debug)]
pub enum GenAi {
    Native(NativeGenAi),
    Kong(KongGenAi),
}

/// The OTel GenAI semantic conventions' client metrics, in Prometheus
/// names, and the cost.
#[derive(Debug)]
pub struct NativeGenAi {
    /// [`GENAI_LABELS`] + `gen_ai_token_type`.
    pub token_usage: Family,
    /// [`GENAI_LABELS`], seconds.
    pub duration: Family,
    /// `[gen_ai_provider_name, gen_ai_request_model]`, fractional.
    pub cost: Family,
}

/// Kong's AI families (exporter.lua, `ai_metrics = true`).
#[derive(Debug)]
pub struct KongGenAi {
    /// [`KONG_AI_LABELS`], every call.
    pub requests: Family,
    /// [`KONG_AI_LABELS`], fractional, only when > 0.
    pub cost: Family,
    /// [`KONG_AI_LABELS`] with `token_type` before `workspace`.
    pub tokens: Family,
    /// [`KONG_AI_LABELS`], milliseconds.
    pub latency: Family,
}

/// The labels of the OTel GenAI families, in this order.
pub const GENAI_LABELS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
];
/// Kong's AI labels, in exporter.lua's order.
pub const KONG_AI_LABELS: &[&str] = &[
    "ai_provider",
    "ai_model",
    "cache_status",
    "vector_db",
    "embeddings_provider",
    "embeddings_model",
    "workspace",
];

/// OTel's advice for `gen_ai.client.token.usage` (powers of 4).
const GENAI_TOKEN_BUCKETS: &[f64] = &[
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];
/// OTel's advice for `gen_ai.client.operation.duration` (s).
const GENAI_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// OTel's advice for `gen_ai.server.time_to_first_token` (s).
const GENAI_TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// OTel's advice for `gen_ai.server.time_per_output_token` (s).
const GENAI_TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// Kong's `AI_LLM_PROVIDER_LATENCY_BUCKETS` (ms).
const KONG_AI_LATENCY_BUCKETS: &[f64] = &[
    250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 4500.0, 5000.0, 10000.0,
    30000.0, 60000.0,
];

// Both schemas: Kong's plugin has no equivalent of these.
pub const GENAI_TTFT: Family = histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Streamed GenAI calls: from the request's last byte written upstream to the read that carried the first event with content (OTel gen_ai.server.time_to_first_token)",
    GENAI_LABELS,
    GENAI_TTFT_BUCKETS,
);
pub const GENAI_TPOT: Family = histogram(
    "gen_ai_server_time_per_output_token_seconds",
    "Streamed GenAI calls with usage and more than one output token: (response's last byte - first token) / (output tokens - 1) (OTel gen_ai.server.time_per_output_token)",
    GENAI_LABELS,
    GENAI_TPOT_BUCKETS,
);
pub const GENAI_ERRORS: Family = counter(
    "gatescope_genai_errors_total",
    "GenAI calls that failed, by error_type: the upstream's HTTP status (400 and above), or no_response (the connection closed or the gateway gave up before a response head)",
    &[
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "error_type",
    ],
);
pub const GENAI_USAGE_UNAVAILABLE: Family = counter(
    "gatescope_genai_usage_unavailable_total",
    "GenAI calls whose token usage could not be read, by reason: compressed (a gzip or br body), truncated (the bytes holding it were not captured), absent (none sent: a stream without stream_options.include_usage, an error), unparseable; never estimated",
    &["gen_ai_provider_name", "reason"],
);
pub const GENAI_MODELS_OVERFLOW: Family = counter(
    "gatescope_genai_models_overflow_total",
    "GenAI calls labelled model \"other\" because their provider already had --max-genai-models-per-provider model names",
    &["gen_ai_provider_name"],
);

/// The native schema's GenAI families.
pub const NATIVE: GenAi = GenAi::Native(NativeGenAi {
    token_usage: histogram(
        "gen_ai_client_token_usage",
        "Tokens used per GenAI call the gateway made, as the provider reported them (input includes cached input), by token type (OTel gen_ai.client.token.usage); calls whose usage could not be read are in gatescope_genai_usage_unavailable_total instead",
        &[
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "gen_ai_token_type",
        ],
        GENAI_TOKEN_BUCKETS,
    ),
    duration: histogram(
        "gen_ai_client_operation_duration_seconds",
        "GenAI calls the gateway made, from the request's first byte written upstream to the response's last byte read (OTel gen_ai.client.operation.duration)",
        GENAI_LABELS,
        GENAI_DURATION_BUCKETS,
    ),
    cost: counter(
        "gatescope_genai_cost_total",
        "Cost of GenAI calls at the prices of the --config file's [[genai.provider]] models: (input tokens x input_per_million + output tokens x output_per_million) / 1e6; only models with a price",
        &["gen_ai_provider_name", "gen_ai_request_model"],
    ),
});

/// Kong mode's GenAI families.
pub const KONG: GenAi = GenAi::Kong(KongGenAi {
    requests: counter(
        "kong_ai_llm_requests_total",
        "AI requests total per ai_provider in Kong",
        KONG_AI_LABELS,
    ),
    cost: counter(
        "kong_ai_llm_cost_total",
        "AI requests cost per ai_provider/cache in Kong",
        KONG_AI_LABELS,
    ),
    // Kong's help text, copied from its cost family, kept as it is.
    tokens: counter(
        "kong_ai_llm_tokens_total",
        "AI requests cost per ai_provider/cache in Kong",
        &[
            "ai_provider",
            "ai_model",
            "cache_status",
            "vector_db",
            "embeddings_provider",
            "embeddings_model",
            "token_type",
            "workspace",
        ],
    ),
    latency: histogram(
        "kong_ai_llm_provider_latency_ms",
        "LLM response Latency for each AI plugins per ai_provider in Kong",
        KONG_AI_LABELS,
        KONG_AI_LATENCY_BUCKETS,
    ),
});
