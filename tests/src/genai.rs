//! GenAI traffic for tests/tests/genai.rs (issue 13): a mock provider
//! (`genai_mock.py` beside this file: OpenAI, Anthropic and Ollama APIs,
//! deterministic usage, injected delays, optional gzip), the official
//! `openai` and `anthropic` SDKs and curl as clients (`genai_client.py`),
//! nginx in front of the mock with `proxy_buffering` on and off (its
//! configurations in genai_nginx.rs), and
//! LiteLLM's proxy (a real AI gateway) in front of it. The mock's record of
//! every call it answered is the oracle the agent's numbers are checked
//! against. `cargo xtask setup` installs aiohttp, openai, anthropic and
//! litellm[proxy].

pub use crate::genai_nginx::{litellm_front_conf, nginx_conf, read_log, LogLine, DEEP_PREFIX, LOG};
use crate::request_log::Json;
use crate::util::{self, TempDir};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MOCK_PY: &str = include_str!("genai_mock.py");
const CLIENT_PY: &str = include_str!("genai_client.py");

/// In every completion the mock writes (privacy checks grep for it).
pub const COMPLETION_MARKER: &str = "GSMOCKCOMPLETION7f3a";
/// The mock's providers, one port each; the nginx scene routes each API to
/// the port of the provider whose API shape it is.
pub const PROVIDERS: [&str; 3] = ["openai", "anthropic", "ollama"];
/// LiteLLM's master key (it refuses to start without a strong one).
pub const LITELLM_KEY: &str = "sk-gatescope-5f0c2e9a7b3d4e61a8c9f0b1d2e3f4a5";
/// LiteLLM imports a few hundred modules: 20 s warm, over a minute on a
/// cold page cache of a loaded 2-core machine.
pub const LITELLM_READY_TIMEOUT: Duration = Duration::from_mins(3);

/// The interpreter `python3` resolves to (not pyenv's shim, a shell
/// script), so that a spawned child's pid is the Python process itself.
pub fn python() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .context("running python3 (cargo xtask setup installs it)")?;
    ensure!(out.status.success(), "python3 -c failed: {}", out.status);
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Token usage as the mock sent it, normalised as the OTel conventions
/// count it (input includes cached input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
}

/// One call the mock answered (a line of its record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockCall {
    pub path: String,
    /// `openai_chat`, `openai_completions`, `openai_embeddings`,
    /// `openai_responses`, `anthropic`, `ollama_chat`, `ollama_generate`,
    /// `ollama_embed`.
    pub api: String,
    /// The provider name of the port that answered.
    pub provider: String,
    pub server_port: u16,
    pub peer_port: u16,
    pub model: String,
    pub response_model: String,
    pub stream: bool,
    /// `None`: the response carried no usage (an OpenAI stream without
    /// `include_usage`).
    pub usage: Option<Usage>,
    pub gzip: bool,
    pub delay_ms: u64,
}

impl MockCall {
    /// `gen_ai.operation.name` of its API.
    pub fn operation(&self) -> &'static str {
        match self.api.as_str() {
            "openai_completions" | "ollama_generate" => "text_completion",
            "openai_embeddings" | "ollama_embed" => "embeddings",
            _ => "chat",
        }
    }

    /// Whether the API produces output tokens (embeddings do not).
    pub fn generates(&self) -> bool {
        self.operation() != "embeddings"
    }

    /// The usage the agent can read from the bytes: none when gzipped.
    pub fn readable_usage(&self) -> Option<Usage> {
        if self.gzip {
            None
        } else {
            self.usage
        }
    }

    /// `gatescope_genai_usage_unavailable_total`'s reason for this call.
    pub fn unavailable(&self) -> Option<&'static str> {
        if self.gzip {
            Some("compressed")
        } else if self.usage.is_none() {
            Some("absent")
        } else {
            None
        }
    }

    fn parse(line: &str) -> Result<Self> {
        let o = Json::parse(line)?;
        let s = |k: &str| match o.get(k) {
            Some(Json::Str(v)) => Ok(v.clone()),
            v => bail!("{k:?}: {v:?}"),
        };
        let n = |o: &Json, k: &str| match o.get(k) {
            Some(Json::Num(v)) => Ok(*v as u64),
            v => bail!("{k:?}: {v:?}"),
        };
        let b = |k: &str| matches!(o.get(k), Some(Json::Bool(true)));
        let usage = match o.get("usage") {
            Some(u @ Json::Obj(_)) => Some(Usage {
                input: n(u, "input")?,
                output: n(u, "output")?,
                cached_input: n(u, "cached_input")?,
            }),
            _ => None,
        };
        Ok(Self {
            path: s("path")?,
            api: s("api")?,
            provider: s("provider")?,
            server_port: u16::try_from(n(&o, "server_port")?)?,
            peer_port: u16::try_from(n(&o, "peer_port")?)?,
            model: s("model")?,
            response_model: s("response_model")?,
            stream: b("stream"),
            usage,
            gzip: b("gzip"),
            delay_ms: n(&o, "delay_ms")?,
        })
    }
}

/// The mock provider (killed on drop).
pub struct Mock {
    child: Child,
    dir: TempDir,
    ports: BTreeMap<String, u16>,
}

impl Mock {
    /// Starts the mock with one port per name of `providers`.
    pub fn start(providers: &[&str]) -> Result<Self> {
        let dir = TempDir::new("genai-mock")?;
        let script = dir.path().join("genai_mock.py");
        std::fs::write(&script, MOCK_PY)?;
        let mut child = Command::new(python()?)
            .arg(&script)
            .arg(dir.path().join("record.jsonl"))
            .args(providers)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .context("spawning the GenAI mock (cargo xtask setup installs aiohttp)")?;
        let stdout = child.stdout.take().context("mock stdout")?;
        // Read on a thread, so that a mock that hangs cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let mut mock = Self {
            child,
            dir,
            ports: BTreeMap::new(),
        };
        let Ok(Ok(line)) = rx.recv_timeout(Duration::from_secs(30)) else {
            bail!("the GenAI mock did not start\n{}", mock.diagnostics());
        };
        let Some(ports) = line.trim().strip_prefix("PORTS ") else {
            bail!("the mock said {line:?}\n{}", mock.diagnostics());
        };
        for p in ports.split(' ') {
            let (name, port) = p.split_once('=').with_context(|| format!("{line:?}"))?;
            mock.ports.insert(name.to_owned(), port.parse()?);
        }
        Ok(mock)
    }

    /// The port answering as `provider`.
    pub fn port(&self, provider: &str) -> u16 {
        self.ports[provider]
    }

    pub fn ports(&self) -> &BTreeMap<String, u16> {
        &self.ports
    }

    /// Every call it finished so far.
    pub fn record(&self) -> Result<Vec<MockCall>> {
        let text =
            std::fs::read_to_string(self.dir.path().join("record.jsonl")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
        complete
            .lines()
            .map(|l| MockCall::parse(l).with_context(|| format!("mock record line {l:?}")))
            .collect()
    }

    /// The record once it holds `n` calls (more is an error).
    pub fn wait_record(&self, n: usize, timeout: Duration) -> Result<Vec<MockCall>> {
        let r = util::poll(timeout, "the mock's record", || {
            let r = self.record()?;
            Ok((r.len() >= n).then_some(r))
        })
        .with_context(|| self.diagnostics())?;
        ensure!(
            r.len() == n,
            "the mock answered {} calls, want {n}",
            r.len()
        );
        Ok(r)
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "--- GenAI mock stderr ---\n{}",
            util::tail(
                &std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
                30
            )
        )
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call (or `repeat` identical ones) of a client plan.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// As [`MockCall::api`]: which SDK method (or Ollama path) to call.
    pub kind: &'static str,
    /// Without `/v1` or `/api`.
    pub base_url: String,
    pub model: String,
    pub prompt: String,
    pub max_tokens: u64,
    pub stream: bool,
    pub include_usage: bool,
    /// Request headers for the mock (`x-mock-delay-ms`, `x-mock-gzip`,
    /// `x-mock-tiny`).
    pub headers: Vec<(&'static str, String)>,
    pub repeat: u32,
    pub api_key: Option<String>,
}

impl CallSpec {
    #[must_use]
    pub fn new(kind: &'static str, base_url: &str, model: &str) -> Self {
        Self {
            kind,
            base_url: base_url.to_owned(),
            model: model.to_owned(),
            prompt: "Say something about gateways.".to_owned(),
            max_tokens: 12,
            stream: false,
            include_usage: false,
            headers: Vec::new(),
            repeat: 1,
            api_key: None,
        }
    }

    #[must_use]
    pub fn stream(mut self, include_usage: bool) -> Self {
        self.stream = true;
        self.include_usage = include_usage;
        self
    }

    /// A non-stream call (Ollama's default is a stream).
    #[must_use]
    pub fn no_stream(mut self) -> Self {
        self.stream = false;
        self
    }

    #[must_use]
    pub fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.to_owned()));
        self
    }

    #[must_use]
    pub fn prompt(mut self, p: &str) -> Self {
        p.clone_into(&mut self.prompt);
        self
    }

    #[must_use]
    pub fn max_tokens(mut self, n: u64) -> Self {
        self.max_tokens = n;
        self
    }

    #[must_use]
    pub fn repeat(mut self, n: u32) -> Self {
        self.repeat = n;
        self
    }

    #[must_use]
    pub fn api_key(mut self, k: &str) -> Self {
        self.api_key = Some(k.to_owned());
        self
    }

    fn to_json(&self) -> String {
        let mut h = String::new();
        for (i, (k, v)) in self.headers.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(h, "{sep}{}:{}", json_str(k), json_str(v));
        }
        let key = self
            .api_key
            .as_deref()
            .map_or(String::new(), |k| format!(",\"api_key\":{}", json_str(k)));
        format!(
            "{{\"kind\":{},\"base_url\":{},\"model\":{},\"prompt\":{},\"max_tokens\":{},\"stream\":{},\"include_usage\":{},\"headers\":{{{h}}},\"repeat\":{}{key}}}",
            json_str(self.kind),
            json_str(&self.base_url),
            json_str(&self.model),
            json_str(&self.prompt),
            self.max_tokens,
            self.stream,
            self.include_usage,
            self.repeat
        )
    }
}

/// `s` as a JSON string.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the clients counted themselves, per `"<kind> <model>"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientModel {
    pub calls: u64,
    pub with_usage: u64,
    pub input: u64,
    pub output: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    pub calls: u64,
    /// Calls whose completion held [`COMPLETION_MARKER`].
    pub marker_seen: u64,
    pub models: BTreeMap<String, ClientModel>,
}

/// Runs the plan's calls in order, one at a time, and returns the clients'
/// own account.
pub fn run_clients(calls: &[CallSpec]) -> Result<ClientReport> {
    let dir = TempDir::new("genai-client")?;
    let script = dir.path().join("genai_client.py");
    std::fs::write(&script, CLIENT_PY)?;
    let plan = format!(
        "{{\"calls\":[{}]}}",
        calls
            .iter()
            .map(CallSpec::to_json)
            .collect::<Vec<_>>()
            .join(",")
    );
    let out = Command::new(python()?)
        .arg(&script)
        .arg(&plan)
        // The SDKs must not go through a proxy of the environment.
        .env("NO_PROXY", "*")
        .stdin(Stdio::null())
        .output()
        .context("running the GenAI clients (cargo xtask setup installs openai, anthropic)")?;
    ensure!(
        out.status.success(),
        "the GenAI clients failed ({}):\n{}",
        out.status,
        util::tail(&String::from_utf8_lossy(&out.stderr), 40)
    );
    let text = String::from_utf8(out.stdout)?;
    let o = Json::parse(text.trim()).with_context(|| format!("client output {text:?}"))?;
    let n = |o: &Json, k: &str| match o.get(k) {
        Some(Json::Num(v)) => Ok(*v as u64),
        v => bail!("{k:?} in {text:?}: {v:?}"),
    };
    let mut report = ClientReport {
        calls: n(&o, "calls")?,
        marker_seen: n(&o, "marker_seen")?,
        models: BTreeMap::new(),
    };
    if let Some(Json::Obj(m)) = o.get("models") {
        for (k, v) in m {
            report.models.insert(
                k.clone(),
                ClientModel {
                    calls: n(v, "calls")?,
                    with_usage: n(v, "with_usage")?,
                    input: n(v, "input")?,
                    output: n(v, "output")?,
                },
            );
        }
    }
    Ok(report)
}

/// The mock's record summed as the clients count: per `"<api> <model>"`,
/// calls, calls with usage, input and output (gzip is transparent to them).
pub fn record_by_model(record: &[MockCall]) -> BTreeMap<String, ClientModel> {
    let mut m: BTreeMap<String, ClientModel> = BTreeMap::new();
    for c in record {
        let e = m.entry(format!("{} {}", c.api, c.model)).or_default();
        e.calls += 1;
        if let Some(u) = c.usage {
            e.with_usage += 1;
            e.input += u.input;
            e.output += u.output;
        }
    }
    m
}

/// LiteLLM's proxy (`litellm --config`), killed on drop.
pub struct LiteLlm {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl LiteLlm {
    /// LiteLLM on 127.0.0.1:<free port> with `model_list` (YAML, the list's
    /// items) and [`LITELLM_KEY`] as master key; waits until
    /// `/health/liveliness` answers 200.
    pub fn start(model_list: &str) -> Result<Self> {
        let dir = TempDir::new("litellm")?;
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n{model_list}litellm_settings:\n  telemetry: false\n\
                 general_settings:\n  master_key: {LITELLM_KEY}\n"
            ),
        )?;
        let port = util::free_port()?;
        let child = Command::new(python()?)
            .args([
                "-c",
                "import sys; from litellm.proxy.proxy_cli import run_server; sys.exit(run_server())",
            ])
            .arg("--config")
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            // No network at start: the bundled model-cost map, no telemetry.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_TELEMETRY", "False")
            .env("NO_PROXY", "*")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .context("spawning LiteLLM (cargo xtask setup installs litellm[proxy])")?;
        let mut l = Self { child, dir, port };
        let start = Instant::now();
        loop {
            if let Some(st) = l.child.try_wait()? {
                bail!("LiteLLM exited during start-up ({st})\n{}", l.diagnostics());
            }
            if let Ok((200, _)) =
                crate::agent::http_get(&format!("127.0.0.1:{port}"), "/health/liveliness")
            {
                return Ok(l);
            }
            ensure!(
                start.elapsed() < LITELLM_READY_TIMEOUT,
                "LiteLLM did not answer /health/liveliness within {LITELLM_READY_TIMEOUT:?}\n{}",
                l.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The Python process serving (the gateway the agent attaches to).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn diagnostics(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- LiteLLM stdout ---\n{}\n--- LiteLLM stderr ---\n{}",
            util::tail(&read("stdout.log"), 20),
            util::tail(&read("stderr.log"), 40)
        )
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_and_operations() {
        let c = MockCall::parse(r#"{"path": "/v1/embeddings", "api": "openai_embeddings", "provider": "openai", "server_port": 9000, "peer_port": 5000, "model": "e", "response_model": "e-1", "stream": false, "usage": {"input": 10, "output": 0, "cached_input": 0}, "gzip": true, "delay_ms": 0, "status": 200}"#).unwrap();
        assert_eq!((c.operation(), c.generates()), ("embeddings", false));
        assert_eq!(c.unavailable(), Some("compressed"));
        assert_eq!(c.readable_usage(), None);
        let c = MockCall::parse(r#"{"path": "/v1/chat/completions", "api": "openai_chat", "provider": "openai", "server_port": 9000, "peer_port": 5000, "model": "m", "response_model": "m-1", "stream": true, "usage": null, "gzip": false, "delay_ms": 300, "status": 200}"#).unwrap();
        assert_eq!(c.unavailable(), Some("absent"));
        assert_eq!(c.delay_ms, 300);
    }

    #[test]
    fn plans_are_json() {
        let s = CallSpec::new("openai_chat", "http://x", "m")
            .prompt("a \"q\"\n")
            .header("x-mock-gzip", "1")
            .stream(true)
            .to_json();
        let o = Json::parse(&s).unwrap();
        assert_eq!(o.get("prompt"), Some(&Json::Str("a \"q\"\n".into())));
        assert_eq!(o.get("include_usage"), Some(&Json::Bool(true)));
    }
}
