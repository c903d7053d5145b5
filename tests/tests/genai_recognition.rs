//! GenAI calls recognised beyond the API paths the kernel marks (issue 13):
//! Azure OpenAI's paths (`/openai/deployments/NAME/chat/completions`, no
//! `/v1`) through nginx to the mock provider, recognised by a named
//! provider's upstream, by its `hosts`, or by the vendor headers of the
//! answer; and a plain API whose paths look the same, never counted.

use anyhow::{ensure, Result};
use gatescope_tests::agent::Agent;
use gatescope_tests::genai::{CallSpec, MockCall};
use gatescope_tests::genai_scene::*;
use gatescope_tests::util::{self, TempDir};

/// Azure OpenAI's paths (`/openai/deployments/NAME/chat/completions`, no
/// `/v1`) are GenAI calls where the upstream is a `[[genai.provider]]`'s, and
/// plain HTTP calls elsewhere when nothing else confirms them (`…/messages`
/// or `…/completions` is also an ordinary API's path). The long answers are
/// read in two pieces, so their usage is read only if the capture was wide:
/// the kernel's marker sees these paths' ends, and for the paths too deep
/// for it (`/deep/`, over 220 bytes) a named provider's connections are
/// captured wide from their open (`MAP_GENAI_PEERS`).
#[test]
fn genai_named_provider_paths_without_v1() -> Result<()> {
    let s = Scene::start()?;
    let dir = TempDir::new("genai-config")?;
    let config = s.config(dir.path())?;
    let base = |r: &str, p: &str| format!("http://127.0.0.1:{}/{r}/{p}", s.nginx.listen_port());
    let (oa, an) = (base("azure", "openai"), base("azure", "anthropic"));
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
        long(CallSpec::new("openai_chat", &base("deep", "openai"), "gpt-4o").max_tokens(40)),
        long(
            CallSpec::new("anthropic", &base("deep", "anthropic"), "claude-sonnet-4")
                .max_tokens(35),
        ),
    ];
    let azure = |record: &[MockCall]| {
        ensure!(
            record
                .iter()
                .all(|c| c.path.contains("/openai/deployments/mock/")),
            "not Azure's paths: {:?}",
            record.iter().map(|c| &c.path).collect::<Vec<_>>()
        );
        Ok(())
    };

    // No provider named: eleven upstream HTTP calls, no GenAI call.
    let mut plain = Agent::start(&[s.nginx.master_pid()], &[])?;
    let record = s.run(&plan)?;
    azure(&record)?;
    let sum = |scrape: &gatescope_tests::prom::Scrape, name: &str| -> f64 {
        scrape.matching(name, &[]).map(|x| x.value).sum()
    };
    let scrape = util::poll(SETTLE, "eleven upstream calls", || {
        let scrape = plain.scrape()?;
        Ok((sum(&scrape, "gatescope_http_upstream_requests_total") == 11.0).then_some(scrape))
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

/// Azure's paths, each API once, streamed and not, with long answers read in
/// two pieces (usage read only if the kernel's marker widened the capture).
fn plan(s: &Scene, vendor_headers: bool) -> Vec<CallSpec> {
    let base = |p: &str| format!("http://127.0.0.1:{}/azure/{p}", s.nginx.listen_port());
    let (oa, an) = (base("openai"), base("anthropic"));
    [
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .max_tokens(6)
            .repeat(2),
        CallSpec::new("openai_chat", &oa, "gpt-4o")
            .max_tokens(25)
            .stream(true),
        CallSpec::new("openai_completions", &oa, "gpt-3.5-turbo-instruct").max_tokens(4),
        CallSpec::new("openai_embeddings", &oa, "text-embedding-3-small"),
        CallSpec::new("anthropic", &an, "claude-sonnet-4").max_tokens(7),
        CallSpec::new("anthropic", &an, "claude-sonnet-4")
            .max_tokens(23)
            .stream(true),
        long(CallSpec::new("openai_chat", &oa, "gpt-4o").max_tokens(30)),
        long(CallSpec::new("anthropic", &an, "claude-sonnet-4").max_tokens(31)),
    ]
    .into_iter()
    .map(|c| {
        if vendor_headers {
            c.header("x-mock-vendor-headers", "1")
        } else {
            c
        }
    })
    .collect()
}

/// Without a named upstream, Azure's paths are GenAI calls when the answer
/// carries its vendor's headers (OpenAI's `openai-*`, Anthropic's
/// `anthropic-*`), which then name the provider; or when a
/// `[[genai.provider]]`'s `hosts` match the request's Host (nginx sends its
/// upstream block's name, `openai` or `anthropic`), which names it.
#[test]
fn genai_recognised_by_vendor_headers_and_by_hosts() -> Result<()> {
    let s = Scene::start()?;

    // The vendor's headers: every call, named by them.
    let agent = Agent::start(&[s.nginx.master_pid()], &[])?;
    let record = s.run(&plan(&s, true))?;
    ensure!(record.len() == 9, "{} calls, want 9", record.len());
    agent.wait_all(&native_expectations(&record), SETTLE)?;
    all_usage_read(&agent)?;
    // the same calls answered without them: plain HTTP calls
    let before = upstream_calls(&agent)?;
    s.run(&plan(&s, false))?;
    util::poll(SETTLE, "nine more upstream calls", || {
        Ok((upstream_calls(&agent)? == before + 9.0).then_some(()))
    })?;
    agent.wait_all(&native_expectations(&record), SETTLE)?;
    let calls: f64 = agent
        .scrape()?
        .matching(&format!("{DURATION}_count"), &[])
        .map(|x| x.value)
        .sum();
    ensure!(calls == 9.0, "{calls} GenAI calls, want the first 9 only");
    drop(agent);

    // Named by `hosts` only (no `upstream`), without the vendor's headers.
    let dir = TempDir::new("genai-hosts")?;
    let config = dir.path().join("genai.toml");
    std::fs::write(
        &config,
        "[[genai.provider]]\nname = \"azure-openai\"\nhosts = [\"openai\"]\n\
         [[genai.provider]]\nname = \"azure-anthropic\"\nhosts = [\"anthropic\"]\n",
    )?;
    let agent = Agent::start(
        &[s.nginx.master_pid()],
        &["--config", &config.display().to_string()],
    )?;
    let mut record: Vec<MockCall> = s.run(&plan(&s, false))?;
    for c in &mut record {
        c.provider = format!("azure-{}", c.provider);
    }
    agent.wait_all(&native_expectations(&record), SETTLE)?;
    all_usage_read(&agent)
}

fn upstream_calls(agent: &Agent) -> Result<f64> {
    Ok(agent
        .scrape()?
        .matching("gatescope_http_upstream_requests_total", &[])
        .map(|x| x.value)
        .sum())
}
