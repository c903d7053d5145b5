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
    self, nginx_conf, record_by_model, run_clients, CallSpec, LiteLlm, Mock, MockCall,
    COMPLETION_MARKER, LITELLM_KEY, PROVIDERS,
};
use gatescope_tests::nginx::Nginx;
use gatescope_tests::request_log::Json;
use gatescope_tests::util::{self, free_port, TempDir};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// In every prompt (privacy checks grep for it).
const PROMPT_MARKER: &str = "GSPROMPTMARKER9c1d";
/// The injected delay before the first content event of the TTFT streams:
/// in TTFT's bucket le=0.5, not in le=0.25.
const TTFT_DELAY_MS: &str = "300";
const TTFT_MODEL: &str = "gpt-4o-mini";
const SETTLE: Duration = Duration::from_secs(20);
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

const TOKENS: &str = "gen_ai_client_token_usage";
const DURATION: &str = "gen_ai_client_operation_duration_seconds";
const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
const COST: &str = "gatescope_genai_cost_total";
const UNAVAILABLE: &str = "gatescope_genai_usage_unavailable_total";

/// Prices per 1e6 tokens of the `--config` of the cost tests:
/// (provider, model, input, output).
const PRICES: [(&str, &str, f64, f64); 3] = [
    ("openai", "gpt-4o", 2.5, 10.0),
    ("anthropic", "claude-sonnet-4", 3.0, 15.0),
    ("openai", "gpt-3.5-turbo-instruct", 1.5, 2.0),
];

/// The mock and nginx in front of it.
struct Scene {
    mock: Mock,
    nginx: Nginx,
}

impl Scene {
    fn start() -> Result<Self> {
        let mock = Mock::start(&PROVIDERS)?;
        let port = free_port()?;
        let nginx = Nginx::start_conf(|d| nginx_conf(d, port, mock.ports()), 1, port)?;
        Ok(Self { mock, nginx })
    }

    /// The base URL of `provider`'s API through nginx, buffered or not.
    fn base(&self, buffering: bool, provider: &str) -> String {
        let prefix = if buffering { "buf" } else { "nobuf" };
        format!(
            "http://127.0.0.1:{}/{prefix}/{provider}",
            self.nginx.listen_port()
        )
    }

    /// `--config` with the mock's ports as providers and [`PRICES`].
    fn config(&self, dir: &Path) -> Result<String> {
        let mut text = String::new();
        for p in PROVIDERS {
            let _ = write!(
                text,
                "[[genai.provider]]\nname = \"{p}\"\nupstream = [\"127.0.0.1:{}\"]\n",
                self.mock.port(p)
            );
            for (_, model, i, o) in PRICES.iter().filter(|x| x.0 == p) {
                let _ = write!(
                    text,
                    "  [genai.provider.models.\"{model}\"]\n  input_per_million = {i}\n  output_per_million = {o}\n"
                );
            }
        }
        let path = dir.join("genai.toml");
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    }

    /// Runs `calls`, then checks the witnesses against each other: the
    /// clients' account equals the mock's record (calls, usage per model),
    /// and nginx logged each call once, to the mock. The record's new calls.
    fn run(&self, calls: &[CallSpec]) -> Result<Vec<MockCall>> {
        let before = self.mock.record()?.len();
        let log_before = genai::read_log(self.nginx.dir_path())?.len();
        let client = run_clients(calls)?;
        let want: u64 = calls.iter().map(|c| u64::from(c.repeat)).sum();
        ensure!(
            client.calls == want,
            "clients made {} calls, want {want}",
            client.calls
        );
        let record = self
            .mock
            .wait_record(before + want as usize, RECORD_TIMEOUT)?;
        let record = record[before..].to_vec();
        let generating = record.iter().filter(|c| c.generates()).count() as u64;
        ensure!(
            client.marker_seen == generating,
            "the clients saw the completion marker in {} calls, want {generating}",
            client.marker_seen
        );
        ensure!(
            client.models == record_by_model(&record),
            "the clients' account differs from the mock's record:\nclients {:#?}\nrecord {:#?}",
            client.models,
            record_by_model(&record)
        );
        let log = util::poll(RECORD_TIMEOUT, "nginx's log", || {
            let l = genai::read_log(self.nginx.dir_path())?;
            Ok((l.len() >= log_before + record.len()).then_some(l))
        })?;
        let log = &log[log_before..];
        ensure!(
            log.len() == record.len(),
            "nginx logged {} calls, want {}",
            log.len(),
            record.len()
        );
        let mut by_port: BTreeMap<String, i64> = BTreeMap::new();
        for l in log {
            ensure!(
                l.status == 200 && l.upstream_status == "200",
                "nginx log line {l:?}"
            );
            *by_port.entry(l.upstream_addr.clone()).or_default() += 1;
        }
        for c in &record {
            *by_port
                .entry(format!("127.0.0.1:{}", c.server_port))
                .or_default() -= 1;
        }
        ensure!(
            by_port.values().all(|n| *n == 0),
            "nginx's upstream addresses differ from the mock's ports: {by_port:?}"
        );
        Ok(record)
    }
}

/// A prompt with the marker, `n` words long.
fn prompt(n: usize) -> String {
    format!("{PROMPT_MARKER} {}", "why is the sky blue ".repeat(n))
}

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

/// The labels of a call's series (`gen_ai_*` names).
fn labels(c: &MockCall) -> [(&'static str, String); 4] {
    [
        ("gen_ai_operation_name", c.operation().to_owned()),
        ("gen_ai_provider_name", c.provider.clone()),
        ("gen_ai_request_model", c.model.clone()),
        // A compressed body is not read: its model is unknown, not guessed.
        (
            "gen_ai_response_model",
            if c.gzip {
                "unknown".to_owned()
            } else {
                c.response_model.clone()
            },
        ),
    ]
}

fn expect(name: &str, labels: &[(&str, String)], value: f64) -> Expect {
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Expect::new(name, &l, value)
}

/// Adds `v` to the entry `k` of a map of sums.
fn add<K: Ord>(m: &mut BTreeMap<K, (f64, f64)>, k: K, v: f64) {
    let e = m.entry(k).or_default();
    e.0 += v;
    e.1 += 1.0;
}

/// The native metrics the record implies: token sums and counts per series
/// and type, calls, usage unavailable per reason, and TTFT buckets of the
/// delayed streams.
fn native_expectations(record: &[MockCall]) -> Vec<Expect> {
    let mut tokens = BTreeMap::new();
    let mut calls = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    let mut ttft = BTreeMap::new();
    for c in record {
        let l = labels(c);
        add(&mut calls, l.clone(), 0.0);
        if let Some(u) = c.readable_usage() {
            add(&mut tokens, (l.clone(), "input"), u.input as f64);
            if c.generates() {
                add(&mut tokens, (l.clone(), "output"), u.output as f64);
            }
        }
        if let Some(r) = c.unavailable() {
            add(&mut unavailable, (c.provider.clone(), r), 1.0);
        }
        if c.stream && c.model == TTFT_MODEL {
            add(&mut ttft, l, 1.0);
        }
    }
    let mut out = Vec::new();
    for ((l, ty), (sum, n)) in tokens {
        let mut l = l.to_vec();
        l.push(("gen_ai_token_type", ty.to_owned()));
        out.push(expect(&format!("{TOKENS}_sum"), &l, sum));
        out.push(expect(&format!("{TOKENS}_count"), &l, n));
    }
    for (l, (_, n)) in calls {
        out.push(expect(&format!("{DURATION}_count"), &l, n));
    }
    for ((p, r), (n, _)) in unavailable {
        out.push(expect(
            UNAVAILABLE,
            &[("gen_ai_provider_name", p), ("reason", r.to_owned())],
            n,
        ));
    }
    for (l, (n, _)) in ttft {
        for (le, v) in [("0.25", 0.0), ("0.5", n)] {
            let mut l = l.to_vec();
            l.push(("le", le.to_owned()));
            out.push(expect(&format!("{TTFT}_bucket"), &l, v));
        }
    }
    out
}

/// Cost per (provider, request model) from [`PRICES`], as Kong computes it.
fn costs(record: &[MockCall]) -> BTreeMap<(String, String), f64> {
    let mut m = BTreeMap::new();
    for c in record {
        let (Some(u), Some((_, _, i, o))) = (
            c.readable_usage(),
            PRICES.iter().find(|p| p.0 == c.provider && p.1 == c.model),
        ) else {
            continue;
        };
        *m.entry((c.provider.clone(), c.model.clone())).or_default() +=
            (u.input as f64 * i + u.output as f64 * o) / 1e6;
    }
    m
}

/// A sample's name, labels and value.
type Want = (String, Vec<(&'static str, String)>, f64);

/// Polls until every (name, labels) sample is within 1e-9 (relative) of its
/// value: sums of prices are floating point.
fn wait_close(agent: &Agent, want: &[Want]) -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let s = agent.scrape()?;
        let mut bad = Vec::new();
        for (name, l, v) in want {
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let got = s.get_or_zero(name, &l)?;
            if (got - v).abs() > 1e-9 * v.abs().max(1.0) {
                bad.push(format!("{name}{l:?} = {got}, want {v}"));
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "after {SETTLE:?}:\n  {}\n--- scrape ---\n{}\n--- agent stderr ---\n{}",
            bad.join("\n  "),
            s.text,
            util::tail(&agent.stderr(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No prompt or completion text in the request log or the metrics page.
fn check_privacy(agent: &Agent, req_log: &Path) -> Result<()> {
    let log = std::fs::read_to_string(req_log).unwrap_or_default();
    let page = agent.scrape_text()?;
    for (what, text) in [("the request log", &log), ("the metrics page", &page)] {
        for marker in [PROMPT_MARKER, COMPLETION_MARKER] {
            ensure!(!text.contains(marker), "{what} holds {marker:?}");
        }
    }
    Ok(())
}

/// The request log's upstream GenAI lines: one per call, with the record's
/// models and readable token counts.
fn check_request_log(req_log: &Path, record: &[MockCall]) -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = std::fs::read_to_string(req_log).unwrap_or_default();
        let mut got: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        for line in complete.lines() {
            let o = Json::parse(line).with_context(|| format!("request log line {line:?}"))?;
            if o.get("role") != Some(&Json::Str("upstream".into())) {
                continue;
            }
            // Every upstream call of this scene is a GenAI call.
            let g = o.get("genai").unwrap_or(&Json::Null);
            let s = |k: &str| match g.get(k) {
                Some(Json::Str(v)) => v.clone(),
                _ => String::new(),
            };
            let n = |k: &str| match g.get(k) {
                Some(Json::Num(v)) => *v as u64,
                _ => 0,
            };
            let e = got
                .entry((s("request_model"), s("response_model")))
                .or_default();
            *e = (e.0 + 1, e.1 + n("input_tokens"), e.2 + n("output_tokens"));
        }
        let mut want: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
        for c in record {
            let u = c.readable_usage();
            let e = want
                .entry((
                    c.model.clone(),
                    if c.gzip {
                        String::new()
                    } else {
                        c.response_model.clone()
                    },
                ))
                .or_default();
            *e = (
                e.0 + 1,
                e.1 + u.map_or(0, |u| u.input),
                e.2 + u.map_or(0, |u| u.output),
            );
        }
        if got == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "request log genai lines per (request, response model) as (calls, input, output):\n got {got:?}\nwant {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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

/// A long answer (600 filler words) whose head and body the mock sends 30 ms
/// apart, so that the gateway reads them separately: its usage, at the end,
/// is read only if the capture was wide.
fn long(c: CallSpec) -> CallSpec {
    c.header("x-mock-pad-words", "600")
        .header("x-mock-split-ms", "30")
}

/// API paths under a prefix of the gateway's own (`/openai/v1/chat/completions`
/// upstream), with long non-streamed answers whose head and body the gateway
/// reads apart: the usage at the end of the body is read only if the capture
/// was widened at the request's write (ebpf/src/payload.rs,
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

/// No call's usage went unread (the calls' own expectations are exact; this
/// says no other call was counted as unreadable).
fn all_usage_read(agent: &Agent) -> Result<()> {
    let scrape = agent.scrape()?;
    let unavailable: f64 = scrape.matching(UNAVAILABLE, &[]).map(|x| x.value).sum();
    ensure!(
        unavailable == 0.0,
        "usage unavailable for {unavailable} calls:\n{}",
        scrape.text
    );
    Ok(())
}

/// Azure OpenAI's paths (`/openai/deployments/NAME/chat/completions`, no
/// `/v1`) are GenAI calls where the upstream is a `[[genai.provider]]`'s, and
/// plain HTTP calls elsewhere (`…/messages` or `…/completions` is also an
/// ordinary API's path). Connections to a named provider are captured wide
/// from their open (`MAP_GENAI_PEERS`), so the long answers read in two
/// pieces and the streams have their usage read too, though the kernel's
/// path marker (`/v1/`, `/api/`) does not see these paths.
#[test]
fn genai_named_provider_paths_without_v1() -> Result<()> {
    let s = Scene::start()?;
    let dir = TempDir::new("genai-config")?;
    let config = s.config(dir.path())?;
    let base = |p: &str| format!("http://127.0.0.1:{}/azure/{p}", s.nginx.listen_port());
    let (oa, an) = (base("openai"), base("anthropic"));
    let plan = vec![
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .max_tokens(20)
            .repeat(2),
        CallSpec::new("openai_completions", &oa, "gpt-3.5-turbo-instruct").max_tokens(10),
        CallSpec::new("openai_embeddings", &oa, "text-embedding-3-small"),
        CallSpec::new("anthropic", &an, "claude-sonnet-4").max_tokens(30),
        long(CallSpec::new("openai_chat", &oa, "gpt-4o").max_tokens(50)),
        long(CallSpec::new("anthropic", &an, "claude-sonnet-4").max_tokens(45)),
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .max_tokens(12)
            .stream(true),
        CallSpec::new("anthropic", &an, "claude-sonnet-4")
            .max_tokens(14)
            .stream(true),
    ];
    let azure = |record: &[MockCall]| {
        ensure!(
            record
                .iter()
                .all(|c| c.path.starts_with("/openai/deployments/mock/")),
            "not Azure's paths: {:?}",
            record.iter().map(|c| &c.path).collect::<Vec<_>>()
        );
        Ok(())
    };

    // No provider named: nine upstream HTTP calls, no GenAI call.
    let mut plain = Agent::start(&[s.nginx.master_pid()], &[])?;
    let record = s.run(&plan)?;
    azure(&record)?;
    let sum = |scrape: &gatescope_tests::prom::Scrape, name: &str| -> f64 {
        scrape.matching(name, &[]).map(|x| x.value).sum()
    };
    let scrape = util::poll(SETTLE, "nine upstream calls", || {
        let scrape = plain.scrape()?;
        Ok((sum(&scrape, "gatescope_http_upstream_requests_total") == 9.0).then_some(scrape))
    })?;
    ensure!(
        sum(&scrape, &format!("{DURATION}_count")) == 0.0,
        "GenAI calls without a named provider:\n{}",
        scrape.text
    );
    plain.stop_ok()?;

    // The mock's ports named as providers: every call, exactly.
    let named = Agent::start(&[s.nginx.master_pid()], &["--config", &config])?;
    let record = s.run(&plan)?;
    azure(&record)?;
    named.wait_all(&native_expectations(&record), SETTLE)?;
    all_usage_read(&named)
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
    check_privacy(&agent, &req_log)
}
