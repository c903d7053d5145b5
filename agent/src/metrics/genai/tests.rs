use std::path::Path;

use super::*;
use crate::{
    config::Config,
    http::{
        genai::{GenAiApi, GenAiUsage, UsageUnavailable},
        TraceHeaders,
    },
    metrics::{families::KONG, families::NATIVE, render},
};

const MS: u64 = 1_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A call sent at 1 s (its last request byte at 1.001 s) and answered
/// until 1 s + `last_ms`.
fn exchange(status: u16, last_ms: u64, call: GenAiCall) -> Exchange {
    Exchange {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        host: Some("api.openai.com".into()),
        status,
        request_bytes: 300,
        response_bytes: 900,
        request_first_ns: 1000 * MS,
        request_last_ns: 1001 * MS,
        response_first_ns: (1000 + last_ms / 2) * MS,
        response_last_ns: (1000 + last_ms) * MS,
        closed_ns: 0,
        upgraded: false,
        version: 1,
        trace: TraceHeaders::default(),
        grpc: None,
        genai: Some(Box::new(call)),
    }
}

fn call(model: Option<&str>, usage: Result<GenAiUsage, UsageUnavailable>) -> GenAiCall {
    GenAiCall {
        api: GenAiApi::OpenAiChat,
        candidate: false,
        vendor: None,
        request_model: model.map(str::to_owned),
        response_model: model.map(|m| format!("{m}-0125")),
        streaming: false,
        usage,
        first_token_ns: None,
    }
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "GenAiCall::usage's type, given as is"
)]
fn usage(input: u64, output: u64) -> Result<GenAiUsage, UsageUnavailable> {
    Ok(GenAiUsage {
        input,
        output,
        total: input + output,
        cached_input: 0,
    })
}

/// Kong's spec (02-access_spec.lua): an OpenAI provider priced at 10 per
/// million tokens both ways.
const KONG_SPEC_CONFIG: &str = r#"
[[genai.provider]]
name = "openai"
upstream = "127.0.0.1:9000"
  [genai.provider.models."gpt-3.5-turbo"]
  input_per_million = 10.0
  output_per_million = 10.0
"#;

fn metrics(schema: &'static GenAi, config: &str, max_models: usize) -> (Registry, GenAiMetrics) {
    let config = Config::parse(config, Path::new("t.toml")).unwrap();
    let registry = Registry::new();
    let m = GenAiMetrics::new(
        &registry,
        schema,
        Arc::new(Providers::from_config(Some(&config))),
        max_models,
    );
    (registry, m)
}

fn feed(m: &mut GenAiMetrics, ex: &Exchange) {
    m.call(ex, ex.genai.as_deref().unwrap(), addr("127.0.0.1:9000"));
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// Kong's own golden lines for one, then two good calls (25 prompt and 12
/// completion tokens each), label order aside: Kong writes labels in its
/// declared order, the Rust client sorts them by name (both are the same
/// series to Prometheus).
#[test]
fn kong_mode_matches_kongs_spec() {
    let (registry, mut m) = metrics(&KONG.genai, KONG_SPEC_CONFIG, 100);
    let good = exchange(200, 400, call(Some("gpt-3.5-turbo"), usage(25, 12)));
    feed(&mut m, &good);
    let labels = "ai_model=\"gpt-3.5-turbo\",ai_provider=\"openai\",cache_status=\"\",embeddings_model=\"\",embeddings_provider=\"\",vector_db=\"\",workspace=\"default\"";
    let tokens = |kind: &str, n: u64| {
        format!("kong_ai_llm_tokens_total{{ai_model=\"gpt-3.5-turbo\",ai_provider=\"openai\",cache_status=\"\",embeddings_model=\"\",embeddings_provider=\"\",token_type=\"{kind}\",vector_db=\"\",workspace=\"default\"}} {n}")
    };
    let text = render(&registry);
    assert_lines(
        &text,
        &[
            &format!("kong_ai_llm_requests_total{{{labels}}} 1"),
            &format!("kong_ai_llm_cost_total{{{labels}}} 0.00037"),
            &format!("kong_ai_llm_provider_latency_ms_bucket{{{labels},le=\"250\"}} 0"),
            &format!("kong_ai_llm_provider_latency_ms_bucket{{{labels},le=\"500\"}} 1"),
            &format!("kong_ai_llm_provider_latency_ms_bucket{{{labels},le=\"+Inf\"}} 1"),
            &format!("kong_ai_llm_provider_latency_ms_sum{{{labels}}} 400"),
            &tokens("completion_tokens", 12),
            &tokens("prompt_tokens", 25),
            &tokens("total_tokens", 37),
            "# HELP kong_ai_llm_tokens_total AI requests cost per ai_provider/cache in Kong",
            "# TYPE kong_ai_llm_cost_total counter",
            "# TYPE kong_ai_llm_provider_latency_ms histogram",
        ],
    );
    // Kong's buckets, in order.
    let les: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("kong_ai_llm_provider_latency_ms_bucket"))
        .map(|l| l.split("le=\"").nth(1).unwrap().split('"').next().unwrap())
        .collect();
    assert_eq!(
        les,
        [
            "250", "500", "1000", "1500", "2000", "2500", "3000", "3500", "4000", "4500", "5000",
            "10000", "30000", "60000", "+Inf"
        ]
    );
    assert!(!text.contains("gen_ai_client_token_usage"), "{text}");
    assert!(!text.contains("gatescope_genai_cost_total"), "{text}");

    feed(&mut m, &good);
    let text = render(&registry);
    assert_lines(
        &text,
        &[
            &format!("kong_ai_llm_requests_total{{{labels}}} 2"),
            &format!("kong_ai_llm_cost_total{{{labels}}} 0.00074"),
            &format!("kong_ai_llm_provider_latency_ms_bucket{{{labels},le=\"+Inf\"}} 2"),
            &tokens("completion_tokens", 24),
            &tokens("prompt_tokens", 50),
            &tokens("total_tokens", 74),
        ],
    );
}

#[test]
fn kong_mode_writes_only_what_kong_writes() {
    let (registry, mut m) = metrics(&KONG.genai, KONG_SPEC_CONFIG, 100);
    // No model anywhere, no usage, an unpriced provider: a request and a
    // latency, no tokens, no cost.
    let mut anthropic = call(None, Err(UsageUnavailable::Absent));
    anthropic.api = GenAiApi::AnthropicMessages;
    let mut ex = exchange(200, 100, anthropic);
    ex.host = None;
    m.call(&ex, ex.genai.as_deref().unwrap(), addr("10.0.0.1:443"));
    // Zero completion tokens (an embedding) at a price of 0: no zero series.
    let (registry2, mut free) = metrics(
        &KONG.genai,
        "[[genai.provider]]\nname = \"openai\"\nupstream = \"127.0.0.1:9000\"\n[genai.provider.models.\"e\"]\n",
        100,
    );
    let mut embed = call(Some("e"), usage(8, 0));
    embed.api = GenAiApi::OpenAiEmbeddings;
    feed(&mut free, &exchange(200, 50, embed));
    let text = render(&registry);
    assert_lines(
        &text,
        &[
            "kong_ai_llm_requests_total{ai_model=\"\",ai_provider=\"anthropic\",cache_status=\"\",embeddings_model=\"\",embeddings_provider=\"\",vector_db=\"\",workspace=\"default\"} 1",
            "gatescope_genai_usage_unavailable_total{gen_ai_provider_name=\"anthropic\",reason=\"absent\"} 1",
        ],
    );
    assert!(!text.contains("kong_ai_llm_tokens_total{"), "{text}");
    assert!(!text.contains("kong_ai_llm_cost_total{"), "{text}");
    let text = render(&registry2);
    assert!(text.contains("token_type=\"prompt_tokens\""), "{text}");
    assert!(!text.contains("completion_tokens"), "{text}");
    assert!(!text.contains("kong_ai_llm_cost_total{"), "{text}");
}

#[test]
fn native_tokens_duration_and_cost() {
    let (registry, mut m) = metrics(&NATIVE.genai, KONG_SPEC_CONFIG, 100);
    feed(
        &mut m,
        &exchange(200, 400, call(Some("gpt-3.5-turbo"), usage(25, 12))),
    );
    feed(
        &mut m,
        &exchange(200, 700, call(Some("gpt-3.5-turbo"), usage(1000, 5000))),
    );
    let labels = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-3.5-turbo\",gen_ai_response_model=\"gpt-3.5-turbo-0125\"";
    let text = render(&registry);
    assert_lines(
        &text,
        &[
            &format!("gen_ai_client_token_usage_bucket{{{labels},gen_ai_token_type=\"input\",le=\"16\"}} 0"),
            &format!("gen_ai_client_token_usage_bucket{{{labels},gen_ai_token_type=\"input\",le=\"64\"}} 1"),
            &format!("gen_ai_client_token_usage_bucket{{{labels},gen_ai_token_type=\"input\",le=\"1024\"}} 2"),
            &format!("gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"input\"}} 1025"),
            &format!("gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"output\"}} 5012"),
            &format!("gen_ai_client_token_usage_count{{{labels},gen_ai_token_type=\"output\"}} 2"),
            &format!("gen_ai_client_token_usage_bucket{{{labels},gen_ai_token_type=\"output\",le=\"67108864\"}} 2"),
            &format!("gen_ai_client_operation_duration_seconds_bucket{{{labels},le=\"0.32\"}} 0"),
            &format!("gen_ai_client_operation_duration_seconds_bucket{{{labels},le=\"0.64\"}} 1"),
            &format!("gen_ai_client_operation_duration_seconds_bucket{{{labels},le=\"1.28\"}} 2"),
            &format!("gen_ai_client_operation_duration_seconds_sum{{{labels}}} 1.1"),
            // (25 + 12 + 1000 + 5000) * 10 / 1e6
            "gatescope_genai_cost_total{gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-3.5-turbo\"} 0.06037",
            "# TYPE gen_ai_client_token_usage histogram",
            "# TYPE gatescope_genai_cost_total counter",
        ],
    );
    assert!(!text.contains("kong_"), "{text}");
    // Not streamed: no time to first token.
    assert!(
        !text.contains("gen_ai_server_time_to_first_token_seconds_count"),
        "{text}"
    );
}

#[test]
fn streams_time_to_first_token_and_per_output_token() {
    let (registry, mut m) = metrics(&NATIVE.genai, "", 100);
    let mut streamed = call(Some("llama3"), usage(10, 101));
    streamed.api = GenAiApi::OllamaChat;
    streamed.streaming = true;
    // The request's last byte at 1001 ms, the first token at 1031 ms (30
    // ms), the last byte at 2031 ms: 1 s for 100 more tokens (10 ms each).
    streamed.first_token_ns = Some(1031 * MS);
    let mut ex = exchange(200, 1031, streamed.clone());
    ex.path = "/api/chat".into();
    feed(&mut m, &ex);
    // A stream without usage: time to first token, not per output token.
    streamed.usage = Err(UsageUnavailable::Absent);
    feed(&mut m, &exchange(200, 1031, streamed.clone()));
    // A stream with a single output token: no time per output token.
    streamed.usage = usage(10, 1);
    feed(&mut m, &exchange(200, 1031, streamed));
    let labels = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"ollama\",gen_ai_request_model=\"llama3\",gen_ai_response_model=\"llama3-0125\"";
    let text = render(&registry);
    assert_lines(
        &text,
        &[
            &format!("gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le=\"0.02\"}} 0"),
            &format!("gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le=\"0.04\"}} 3"),
            &format!("gen_ai_server_time_to_first_token_seconds_count{{{labels}}} 3"),
            &format!("gen_ai_server_time_per_output_token_seconds_bucket{{{labels},le=\"0.01\"}} 1"),
            &format!("gen_ai_server_time_per_output_token_seconds_count{{{labels}}} 1"),
            &format!("gen_ai_server_time_per_output_token_seconds_sum{{{labels}}} 0.01"),
            "gatescope_genai_usage_unavailable_total{gen_ai_provider_name=\"ollama\",reason=\"absent\"} 1",
        ],
    );
    // No prices configured: no cost series.
    assert!(!text.contains("gatescope_genai_cost_total{"), "{text}");
}

#[test]
fn unavailable_usage_is_counted_never_invented() {
    let (registry, mut m) = metrics(&NATIVE.genai, KONG_SPEC_CONFIG, 100);
    for reason in [
        UsageUnavailable::Compressed,
        UsageUnavailable::Compressed,
        UsageUnavailable::Truncated,
        UsageUnavailable::Unparseable,
    ] {
        feed(
            &mut m,
            &exchange(200, 100, call(Some("gpt-3.5-turbo"), Err(reason))),
        );
    }
    let text = render(&registry);
    assert_lines(
        &text,
        &[
            "gatescope_genai_usage_unavailable_total{gen_ai_provider_name=\"openai\",reason=\"compressed\"} 2",
            "gatescope_genai_usage_unavailable_total{gen_ai_provider_name=\"openai\",reason=\"truncated\"} 1",
            "gatescope_genai_usage_unavailable_total{gen_ai_provider_name=\"openai\",reason=\"unparseable\"} 1",
        ],
    );
    // Counted as calls (duration), without tokens or cost.
    assert!(text.contains("gen_ai_client_operation_duration_seconds_count{"));
    assert!(!text.contains("gen_ai_client_token_usage_count{"), "{text}");
    assert!(!text.contains("gatescope_genai_cost_total{"), "{text}");
}

#[test]
fn errors_models_and_overflow() {
    let (registry, mut m) = metrics(&NATIVE.genai, "", 2);
    // An error without a model anywhere; a call with no response.
    feed(
        &mut m,
        &exchange(429, 10, call(None, Err(UsageUnavailable::Absent))),
    );
    let mut gone = exchange(0, 0, call(Some("a"), Err(UsageUnavailable::Truncated)));
    gone.response_last_ns = 0;
    gone.closed_ns = 1050 * MS;
    feed(&mut m, &gone);
    // "a" and "a-0125" fill the cap of 2: "b" and "b-0125" overflow.
    feed(&mut m, &exchange(200, 10, call(Some("b"), usage(1, 1))));
    let text = render(&registry);
    assert_lines(
        &text,
        &[
            "gatescope_genai_errors_total{error_type=\"429\",gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"unknown\"} 1",
            "gatescope_genai_errors_total{error_type=\"no_response\",gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"a\"} 1",
            "gatescope_genai_models_overflow_total{gen_ai_provider_name=\"openai\"} 1",
            "gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"other\",gen_ai_response_model=\"other\"} 1",
            "gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"unknown\",gen_ai_response_model=\"unknown\"} 1",
            // Until the gateway gave up (the connection closed at 50 ms).
            "gen_ai_client_operation_duration_seconds_sum{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"a\",gen_ai_response_model=\"a-0125\"} 0.05",
        ],
    );
}

/// As a sink: upstream records move the families; a client's request to
/// the gateway (downstream) is not a GenAI call of the gateway's, even with
/// the same path.
#[test]
fn only_upstream_records_are_calls() {
    use crate::{
        capture::decode::Role,
        label::{Labelled, Source},
        sinks::Sink,
    };
    let (registry, mut m) = metrics(&NATIVE.genai, KONG_SPEC_CONFIG, 100);
    let record = |role| Labelled {
        role,
        exchange: exchange(200, 100, call(Some("gpt-3.5-turbo"), usage(1, 2))),
        tgid: 1,
        remote: addr("127.0.0.1:9000"),
        listener: None,
        upstream: None,
        attempts: Vec::new(),
        name: None,
        source: Source::Service,
    };
    m.exchange(&record(Role::Downstream));
    assert!(!render(&registry).contains("gen_ai_client_operation_duration_seconds_count{"));
    m.exchange(&record(Role::Upstream));
    assert!(render(&registry).contains(
        "gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-3.5-turbo\",gen_ai_response_model=\"gpt-3.5-turbo-0125\"} 1"
    ));
}
