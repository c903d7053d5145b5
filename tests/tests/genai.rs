//! GenAI traffic (issue 13): the official `openai` and `anthropic` SDKs and
//! curl call a mock provider (`gatescope_tests::genai`: OpenAI chat,
//! completions, embeddings and Responses, Anthropic messages, Ollama chat,
//! generate and embed; JSON and streams; deterministic usage, injected
//! delays, optional gzip) through real gateways: nginx with
//! `proxy_buffering` on and off, and LiteLLM's proxy.
//!
//! Exact against independent witnesses: the mock's record of every call it
//! answered (model asked and answered, stream, the usage it sent, gzip,
//! delay) is the oracle; it must equal the clients' own counts, and nginx's
//! log must hold one line per call, to the mock's port. The agent's GenAI
//! metrics must then equal the record: token sums and counts per provider,
//! model and type, calls, usage unavailable (gzip: compressed; streams
//! without include_usage: absent), cost from configured prices, TTFT in the
//! bucket of the injected delay, Kong's families in Kong mode. Prompts and
//! completions carry markers that must appear in neither the request log
//! nor the metrics page.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{Agent, Expect};
use gatescope_tests::genai::{
    litellm_front_conf, run_clients, CallSpec, LiteLlm, Mock, LITELLM_KEY, PROVIDERS,
};
use gatescope_tests::genai_scene::*;
use gatescope_tests::nginx::Nginx;
use gatescope_tests::util::free_port;
use gatescope_tests::util::TempDir;
use std::collections::BTreeMap;
use std::time::Instant;

/// Every kind of call through `base(buffering, provider)`; token counts vary
/// with the prompt length and max_tokens.
fn full_plan(s: &Scene, buffering: bool) -> Vec<CallSpec> {
    let (oa, an, ol) = (
        s.base(buffering, "openai"),
        s.base(buffering, "anthropic"),
        s.base(buffering, "ollama"),
    );
    let k = if buffering { 1 } else { 2 };
    vec![
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .prompt(&prompt(3 * k))
            .max_tokens(20)
            .repeat(2),
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .prompt(&prompt(5 * k))
            .max_tokens(33)
            .stream(true)
            .repeat(2),
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .prompt(&prompt(7))
            .max_tokens(9)
            .stream(false),
        CallSpec::new("openai_completions", &oa, "gpt-3.5-turbo-instruct")
            .prompt(&prompt(4 * k))
            .max_tokens(17),
        CallSpec::new("openai_completions", &oa, "gpt-3.5-turbo-instruct")
            .prompt(&prompt(6))
            .max_tokens(5)
            .stream(true),
        CallSpec::new("openai_embeddings", &oa, "text-embedding-3-small").prompt(&prompt(11 * k)),
        CallSpec::new("openai_responses", &oa, "gpt-4.1")
            .prompt(&prompt(2 * k))
            .max_tokens(14),
        CallSpec::new("openai_responses", &oa, "gpt-4.1")
            .prompt(&prompt(3))
            .max_tokens(19)
            .stream(true),
        CallSpec::new("anthropic", &an, "claude-sonnet-4")
            .prompt(&prompt(9 * k))
            .max_tokens(40),
        CallSpec::new("anthropic", &an, "claude-sonnet-4")
            .prompt(&prompt(13))
            .max_tokens(27)
            .stream(true),
        CallSpec::new("ollama_chat", &ol, "llama3")
            .prompt(&prompt(5 * k))
            .max_tokens(21)
            .stream(true),
        CallSpec::new("ollama_generate", &ol, "llama3")
            .prompt(&prompt(8))
            .max_tokens(11)
            .stream(true),
        CallSpec::new("ollama_generate", &ol, "llama3")
            .prompt(&prompt(k))
            .max_tokens(6)
            .no_stream(),
        CallSpec::new("ollama_embed", &ol, "nomic-embed-text").prompt(&prompt(10)),
        CallSpec::new("openai_chat", &oa, TTFT_MODEL)
            .prompt(&prompt(2))
            .max_tokens(8)
            .stream(true)
            .header("x-mock-delay-ms", TTFT_DELAY_MS),
    ]
}

#[test]
fn genai_through_nginx_is_exact() -> Result<()> {
    let s = Scene::start()?;
    let dir = TempDir::new("genai-reqlog")?;
    let req_log = dir.path().join("requests.jsonl");
    let agent = Agent::start(
        &[s.nginx.master_pid()],
        &["--request-log", &req_log.display().to_string()],
    )?;
    let mut plan = full_plan(&s, true);
    plan.extend(full_plan(&s, false));
    // One gzip call: its usage is hidden from the capture.
    plan.push(
        CallSpec::new("openai_chat", &s.base(true, "openai"), "gpt-4o")
            .prompt(&prompt(4))
            .max_tokens(10)
            .header("x-mock-gzip", "1"),
    );
    let record = s.run(&plan)?;
    ensure!(
        record.iter().filter(|c| c.gzip).count() == 1,
        "the gzip call was not gzipped"
    );
    agent.wait_all(&native_expectations(&record), SETTLE)?;
    check_request_log(&req_log, &record)?;
    check_privacy(&agent, &req_log)
}

/// API paths under a prefix of the gateway's own (`/openai/v1/chat/completions`
/// upstream), with long non-streamed answers whose head and body the gateway
/// reads apart: the usage at the end of the body is read only if the capture
/// was widened at the request's write (ebpf/src/genai_mark.rs,
/// `starts_genai_request`), which must find the API path behind the prefix.
#[test]
fn genai_under_a_path_prefix_is_exact() -> Result<()> {
    let s = Scene::start()?;
    let dir = TempDir::new("genai-reqlog")?;
    let req_log = dir.path().join("requests.jsonl");
    let agent = Agent::start(
        &[s.nginx.master_pid()],
        &["--request-log", &req_log.display().to_string()],
    )?;
    let base = |p: &str| format!("http://127.0.0.1:{}/pfx/{p}", s.nginx.listen_port());
    let (oa, an, ol) = (base("openai"), base("anthropic"), base("ollama"));

    let plan = vec![
        long(CallSpec::new("openai_chat", &oa, "gpt-4o").max_tokens(50)).repeat(2),
        long(CallSpec::new("openai_completions", &oa, "gpt-3.5-turbo-instruct").max_tokens(40)),
        long(CallSpec::new("openai_responses", &oa, "gpt-4.1").max_tokens(30)),
        long(CallSpec::new("anthropic", &an, "claude-sonnet-4").max_tokens(45)),
        long(CallSpec::new("ollama_generate", &ol, "llama3").max_tokens(25)).no_stream(),
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .max_tokens(12)
            .stream(true),
    ];
    let record = s.run(&plan)?;
    ensure!(
        record.iter().all(|c| c.path.starts_with("/openai/")
            || c.path.starts_with("/anthropic/")
            || c.path.starts_with("/ollama/")),
        "the mock was not called under a prefix: {:?}",
        record.iter().map(|c| &c.path).collect::<Vec<_>>()
    );
    agent.wait_all(&native_expectations(&record), SETTLE)?;
    check_request_log(&req_log, &record)?;
    all_usage_read(&agent)
}

/// Answers of about 60 KB (10,000 filler words), usage at their end: nginx
/// reads them from the upstream in transfers past the 32 KiB head of a data
/// record (with `proxy_buffering on`, a readv into eight buffers, past the
/// head's 4th iovec), whose rest the kernel's piece records carry
/// (ebpf/src/pieces.rs). Without them the usage is lost (`truncated`).
#[test]
fn genai_answers_past_the_head_usage_is_read() -> Result<()> {
    let s = Scene::start()?;
    let agent = Agent::start(&[s.nginx.master_pid()], &[])?;
    let mut plan = Vec::new();
    for buffering in [true, false] {
        let (oa, an, ol) = (
            s.base(buffering, "openai"),
            s.base(buffering, "anthropic"),
            s.base(buffering, "ollama"),
        );
        plan.extend([
            CallSpec::new("openai_chat", &oa, "gpt-4o").max_tokens(50),
            CallSpec::new("anthropic", &an, "claude-sonnet-4").max_tokens(45),
            CallSpec::new("ollama_generate", &ol, "llama3")
                .max_tokens(25)
                .no_stream(),
        ]);
    }
    let plan: Vec<CallSpec> = plan
        .into_iter()
        .map(|c| c.header("x-mock-pad-words", "10000"))
        .collect();
    let record = s.run(&plan)?;
    agent.wait_all(&native_expectations(&record), SETTLE)?;
    all_usage_read(&agent)
}

/// Tiny bodies and no delay: the response can arrive right after the
/// request is written; usage must still be read, exactly.
#[test]
fn genai_fast_upstream_usage_is_read() -> Result<()> {
    let s = Scene::start()?;
    let agent = Agent::start(&[s.nginx.master_pid()], &[])?;
    let (oa, an, ol) = (
        s.base(true, "openai"),
        s.base(false, "anthropic"),
        s.base(true, "ollama"),
    );
    let plan: Vec<CallSpec> = [
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .max_tokens(3)
            .repeat(10),
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .max_tokens(2)
            .stream(true)
            .repeat(5),
        CallSpec::new("anthropic", &an, "claude-haiku")
            .max_tokens(4)
            .repeat(5),
        CallSpec::new("ollama_generate", &ol, "llama3")
            .max_tokens(2)
            .no_stream()
            .repeat(5),
    ]
    .into_iter()
    .map(|c| c.header("x-mock-tiny", "1"))
    .collect();
    let record = s.run(&plan)?;
    agent.wait_all(&native_expectations(&record), SETTLE)?;
    Ok(())
}

/// Cost from configured prices, natively; then Kong's families in Kong mode.
#[test]
fn genai_cost_and_kong_compat() -> Result<()> {
    let s = Scene::start()?;
    let dir = TempDir::new("genai-config")?;
    let config = s.config(dir.path())?;
    let plan = |buffering| -> Vec<CallSpec> {
        let (oa, an) = (s.base(buffering, "openai"), s.base(buffering, "anthropic"));
        vec![
            CallSpec::new("openai_chat", &oa, "gpt-4o")
                .prompt(&prompt(40))
                .max_tokens(300)
                .repeat(2),
            CallSpec::new("openai_chat", &oa, "gpt-4o")
                .prompt(&prompt(9))
                .max_tokens(77)
                .stream(true),
            CallSpec::new("openai_chat", &oa, "gpt-4o")
                .prompt(&prompt(2))
                .stream(false),
            CallSpec::new("openai_completions", &oa, "gpt-3.5-turbo-instruct")
                .prompt(&prompt(5))
                .max_tokens(50),
            CallSpec::new("anthropic", &an, "claude-sonnet-4")
                .prompt(&prompt(30))
                .max_tokens(120),
            CallSpec::new("anthropic", &an, "claude-sonnet-4")
                .prompt(&prompt(6))
                .max_tokens(64)
                .stream(true),
            CallSpec::new("openai_embeddings", &oa, "text-embedding-3-small").prompt(&prompt(8)),
        ]
    };

    let mut native = Agent::start(&[s.nginx.master_pid()], &["--config", &config])?;
    let record = s.run(&plan(true))?;
    native.wait_all(&native_expectations(&record), SETTLE)?;
    let want: Vec<_> = costs(&record)
        .into_iter()
        .map(|((p, m), v)| {
            (
                COST.to_owned(),
                vec![("gen_ai_provider_name", p), ("gen_ai_request_model", m)],
                v,
            )
        })
        .collect();
    ensure!(want.len() == 3, "prices for {} models, want 3", want.len());
    wait_close(&native, &want)?;
    native.stop_ok()?;

    let kong = Agent::start(
        &[s.nginx.master_pid()],
        &["--config", &config, "--metrics-compat", "kong"],
    )?;
    let record = s.run(&plan(false))?;
    let mut want = Vec::new();
    let mut per_model: BTreeMap<(String, String), [f64; 4]> = BTreeMap::new();
    for c in &record {
        let e = per_model
            .entry((c.provider.clone(), c.model.clone()))
            .or_default();
        e[0] += 1.0;
        if let Some(u) = c.readable_usage() {
            e[1] += u.input as f64;
            e[2] += u.output as f64;
            e[3] += (u.input + u.output) as f64;
        }
    }
    for ((p, m), [n, input, output, total]) in per_model {
        let l = vec![("ai_provider", p.clone()), ("ai_model", m.clone())];
        want.push(("kong_ai_llm_requests_total".to_owned(), l.clone(), n));
        for (ty, v) in [
            ("prompt_tokens", input),
            ("completion_tokens", output),
            ("total_tokens", total),
        ] {
            let mut l = l.clone();
            l.push(("token_type", ty.to_owned()));
            want.push(("kong_ai_llm_tokens_total".to_owned(), l, v));
        }
    }
    for ((p, m), v) in costs(&record) {
        want.push((
            "kong_ai_llm_cost_total".to_owned(),
            vec![("ai_provider", p), ("ai_model", m)],
            v,
        ));
    }
    wait_close(&kong, &want)
}

/// LiteLLM's proxy in front of the mock (clear text upstream); the agent
/// attached to LiteLLM's process counts its upstream calls.
#[test]
fn genai_through_litellm_is_exact() -> Result<()> {
    let mock = Mock::start(&PROVIDERS)?;
    let models = format!(
        "  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: http://127.0.0.1:{}/v1\n      api_key: sk-mock\n\
         \x20 - model_name: claude-sonnet-4\n    litellm_params:\n      model: anthropic/claude-sonnet-4\n      api_base: http://127.0.0.1:{}\n      api_key: sk-ant-mock\n\
         \x20 - model_name: llama3\n    litellm_params:\n      model: ollama_chat/llama3\n      api_base: http://127.0.0.1:{}\n",
        mock.port("openai"),
        mock.port("anthropic"),
        mock.port("ollama")
    );
    let started = Instant::now();
    let litellm = LiteLlm::start(&models)?;
    eprintln!("LiteLLM ready in {:?}", started.elapsed());
    let dir = TempDir::new("genai-litellm")?;
    let req_log = dir.path().join("requests.jsonl");
    let agent = Agent::start(
        &[litellm.pid()],
        &["--request-log", &req_log.display().to_string()],
    )?;
    let b = litellm.base_url();
    let plan: Vec<CallSpec> = [
        CallSpec::new("openai_chat", &b, "gpt-4o")
            .prompt(&prompt(6))
            .max_tokens(25)
            .repeat(2),
        CallSpec::new("openai_chat", &b, "gpt-4o")
            .prompt(&prompt(3))
            .max_tokens(12)
            .stream(true),
        CallSpec::new("openai_chat", &b, "gpt-4o")
            .prompt(&prompt(4))
            .max_tokens(7)
            .stream(false),
        CallSpec::new("anthropic", &b, "claude-sonnet-4")
            .prompt(&prompt(10))
            .max_tokens(30),
        CallSpec::new("anthropic", &b, "claude-sonnet-4")
            .prompt(&prompt(5))
            .max_tokens(18)
            .stream(true),
        CallSpec::new("openai_chat", &b, "llama3")
            .prompt(&prompt(7))
            .max_tokens(15),
        CallSpec::new("openai_chat", &b, "llama3")
            .prompt(&prompt(2))
            .max_tokens(9)
            .stream(true),
    ]
    .into_iter()
    .map(|c| c.api_key(LITELLM_KEY))
    .collect();
    let client = run_clients(&plan)?;
    let n: u64 = plan.iter().map(|c| u64::from(c.repeat)).sum();
    ensure!(
        client.calls == n && client.marker_seen == n,
        "clients: {client:?}"
    );
    // LiteLLM makes one upstream call per client call (no retries: the mock
    // answers 200); its translations change the API, not the count.
    let record = mock
        .wait_record(n as usize, RECORD_TIMEOUT)
        .with_context(|| litellm.diagnostics())?;
    let (read, sent): (u64, u64) = (
        client.models.values().map(|m| m.input + m.output).sum(),
        record
            .iter()
            .filter_map(|c| c.usage)
            .map(|u| u.input + u.output)
            .sum(),
    );
    ensure!(
        read <= sent,
        "the clients read {read} tokens, the mock sent {sent}"
    );
    agent.wait_all(&native_expectations(&record), SETTLE)?;
    check_request_log(&req_log, &record)?;
    check_privacy(&agent, &req_log)?;
    drop(agent);
    litellm_behind_nginx(&litellm, &b)
}

/// nginx in front of LiteLLM, passing OpenAI's chat path on without `/v1`
/// (`/chat/completions`, which LiteLLM also serves): the agent attached to
/// nginx recognises the calls by LiteLLM's own response headers
/// (`x-litellm-*`), the path being also an ordinary API's. Exact against the
/// clients' own counts (LiteLLM's answers are what they read); the provider
/// is named by the API's shape (`openai`): LiteLLM is a gateway, and passes
/// on no header of the mock's naming one.
fn litellm_behind_nginx(litellm: &LiteLlm, direct: &str) -> Result<()> {
    let port = free_port()?;
    let nginx = Nginx::start_conf(|d| litellm_front_conf(d, port, litellm.port()), 1, port)?;
    let agent = Agent::start(&[nginx.master_pid()], &[])?;
    let b = format!("http://127.0.0.1:{port}/llm");
    let plan: Vec<CallSpec> = [
        CallSpec::new("openai_chat", &b, "gpt-4o")
            .prompt(&prompt(5))
            .max_tokens(21)
            .repeat(2),
        CallSpec::new("openai_chat", &b, "gpt-4o")
            .prompt(&prompt(3))
            .max_tokens(8)
            .stream(true),
        CallSpec::new("openai_chat", &b, "claude-sonnet-4")
            .prompt(&prompt(9))
            .max_tokens(26),
        CallSpec::new("openai_chat", &b, "llama3")
            .prompt(&prompt(4))
            .max_tokens(11)
            .stream(true),
    ]
    .into_iter()
    .map(|c| c.api_key(LITELLM_KEY))
    .collect();
    let client = run_clients(&plan)?;
    ensure!(
        client.calls == 5,
        "clients: {client:?} (LiteLLM at {direct})"
    );
    let mut want = Vec::new();
    for (key, m) in &client.models {
        let model = key.rsplit(' ').next().unwrap_or_default();
        let base = [
            ("gen_ai_provider_name", "openai"),
            ("gen_ai_request_model", model),
        ];
        let calls = m.calls as f64;
        want.push(Expect::new(&format!("{DURATION}_count"), &base, calls));
        for (ty, v) in [("input", m.input), ("output", m.output)] {
            let l = [base[0], base[1], ("gen_ai_token_type", ty)];
            want.push(Expect::new(&format!("{TOKENS}_sum"), &l, v as f64));
            want.push(Expect::new(
                &format!("{TOKENS}_count"),
                &l,
                m.with_usage as f64,
            ));
        }
    }
    agent.wait_all(&want, SETTLE)?;
    // streams without usage, if LiteLLM sent none: counted as absent, no more
    let absent: u64 = client.models.values().map(|m| m.calls - m.with_usage).sum();
    let scrape = agent.scrape()?;
    let unavailable: f64 = scrape.matching(UNAVAILABLE, &[]).map(|x| x.value).sum();
    ensure!(
        unavailable == absent as f64,
        "usage unavailable for {unavailable} calls, want {absent} (streams LiteLLM sent without usage):\n{}",
        scrape.text
    );
    Ok(())
}
