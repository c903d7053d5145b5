//! The GenAI tests' scene and expectations (tests/tests/genai*.rs): the mock
//! provider behind nginx, the witnesses checked against each other, and the
//! metrics, cost and request-log lines a mock record implies.

use crate::agent::{Agent, Expect};
use crate::genai::{
    self, nginx_conf, record_by_model, run_clients, CallSpec, Mock, MockCall, COMPLETION_MARKER,
    PROVIDERS,
};
use crate::nginx::Nginx;
use crate::request_log::Json;
use crate::util::{self, free_port};
use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// In every prompt (privacy checks grep for it).
pub const PROMPT_MARKER: &str = "GSPROMPTMARKER9c1d";
/// The injected delay before the first content event of the TTFT streams:
/// in TTFT's bucket le=0.5, not in le=0.25.
pub const TTFT_DELAY_MS: &str = "300";
pub const TTFT_MODEL: &str = "gpt-4o-mini";
pub const SETTLE: Duration = Duration::from_secs(20);
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

pub const TOKENS: &str = "gen_ai_client_token_usage";
pub const DURATION: &str = "gen_ai_client_operation_duration_seconds";
pub const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
pub const COST: &str = "gatescope_genai_cost_total";
pub const UNAVAILABLE: &str = "gatescope_genai_usage_unavailable_total";

/// Prices per 1e6 tokens of the `--config` of the cost tests:
/// (provider, model, input, output).
pub const PRICES: [(&str, &str, f64, f64); 3] = [
    ("openai", "gpt-4o", 2.5, 10.0),
    ("anthropic", "claude-sonnet-4", 3.0, 15.0),
    ("openai", "gpt-3.5-turbo-instruct", 1.5, 2.0),
];

/// The mock and nginx in front of it.
pub struct Scene {
    pub mock: Mock,
    pub nginx: Nginx,
}

impl Scene {
    pub fn start() -> Result<Self> {
        let mock = Mock::start(&PROVIDERS)?;
        let port = free_port()?;
        let nginx = Nginx::start_conf(|d| nginx_conf(d, port, mock.ports()), 1, port)?;
        Ok(Self { mock, nginx })
    }

    /// The base URL of `provider`'s API through nginx, buffered or not.
    pub fn base(&self, buffering: bool, provider: &str) -> String {
        let prefix = if buffering { "buf" } else { "nobuf" };
        format!(
            "http://127.0.0.1:{}/{prefix}/{provider}",
            self.nginx.listen_port()
        )
    }

    /// `--config` with the mock's ports as providers and [`PRICES`].
    pub fn config(&self, dir: &Path) -> Result<String> {
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
    pub fn run(&self, calls: &[CallSpec]) -> Result<Vec<MockCall>> {
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
pub fn prompt(n: usize) -> String {
    format!("{PROMPT_MARKER} {}", "why is the sky blue ".repeat(n))
}

/// The labels of a call's series (`gen_ai_*` names).
pub fn labels(c: &MockCall) -> [(&'static str, String); 4] {
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

pub fn expect(name: &str, labels: &[(&str, String)], value: f64) -> Expect {
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Expect::new(name, &l, value)
}

/// Adds `v` to the entry `k` of a map of sums.
pub fn add<K: Ord>(m: &mut BTreeMap<K, (f64, f64)>, k: K, v: f64) {
    let e = m.entry(k).or_default();
    e.0 += v;
    e.1 += 1.0;
}

/// The native metrics the record implies: token sums and counts per series
/// and type, calls, usage unavailable per reason, and TTFT buckets of the
/// delayed streams.
pub fn native_expectations(record: &[MockCall]) -> Vec<Expect> {
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
pub fn costs(record: &[MockCall]) -> BTreeMap<(String, String), f64> {
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
pub type Want = (String, Vec<(&'static str, String)>, f64);

/// Polls until every (name, labels) sample is within 1e-9 (relative) of its
/// value: sums of prices are floating point.
pub fn wait_close(agent: &Agent, want: &[Want]) -> Result<()> {
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
pub fn check_privacy(agent: &Agent, req_log: &Path) -> Result<()> {
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
pub fn check_request_log(req_log: &Path, record: &[MockCall]) -> Result<()> {
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

/// A long answer (600 filler words) whose head and body the mock sends 30 ms
/// apart, so that the gateway reads them separately: its usage, at the end,
/// is read only if the capture was wide.
pub fn long(c: CallSpec) -> CallSpec {
    c.header("x-mock-pad-words", "600")
        .header("x-mock-split-ms", "30")
}

/// No call's usage went unread (the calls' own expectations are exact; this
/// says no other call was counted as unreadable).
pub fn all_usage_read(agent: &Agent) -> Result<()> {
    let scrape = agent.scrape()?;
    let unavailable: f64 = scrape.matching(UNAVAILABLE, &[]).map(|x| x.value).sum();
    ensure!(
        unavailable == 0.0,
        "usage unavailable for {unavailable} calls:\n{}",
        scrape.text
    );
    Ok(())
}
