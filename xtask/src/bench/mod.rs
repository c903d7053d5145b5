//! `cargo xtask bench`: wrk against a real nginx reverse proxy on loopback, in rounds that
//! alternate between no agent (baseline) and gatescope attached to the proxy's master, then
//! the same through HAProxy. Measures throughput, latency, the proxy's and the agent's CPU,
//! peak RSS and lost events per round, the programs' cost per request from `bpf_stats` in a
//! stats round per pair, and the host tax (getppid(2) elsewhere on the host); prints the
//! summary against the targets of issue 10 and writes it to BENCHMARKS.md.
//!
//! One concern per file: `rounds` (one measured round), `summary` and `report` (the
//! Markdown), `bpf_stats`, `getppid` (the host tax), `haproxy`, `tracing`.

mod bpf_stats;
mod getppid;
mod h2load;
mod haproxy;
mod report;
mod rounds;
mod summary;
mod tls;
mod tracing;

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};

use gatescope_tests::{
    http,
    util::{free_port, TempDir},
    wrk,
};

use crate::{
    procfs,
    stack::{self, Template},
    util::{self, Guard},
};

pub(crate) use bpf_stats::ProgCost;
pub(crate) use getppid::HostTax;
pub(crate) use rounds::Spec;

const PROXY_CONF: Template = Template {
    path: "deploy/bench/proxy.conf",
    text: include_str!("../../../deploy/bench/proxy.conf"),
};
const UPSTREAM_CONF: Template = Template {
    path: "deploy/bench/upstream.conf",
    text: include_str!("../../../deploy/bench/upstream.conf"),
};
/// What the upstream's body contains (checked through the proxy before measuring).
const UPSTREAM_MARK: &str = "gatescope-bench";
/// Unrecorded load before the first round (connections, caches, CPU frequency).
const WARM_UP_SECONDS: u32 = 3;
/// Pause before each round: the previous round's sockets and the agent's attach settle.
const QUIET: Duration = Duration::from_secs(1);
/// Seconds of load of a stats round (at most `--duration`): ns per run is an average over
/// hundreds of thousands of requests already, and the round's throughput is not used.
const STATS_SECONDS: u32 = 5;
/// How often other gatescope processes are looked for while wrk runs.
const FOREIGN_SAMPLE: Duration = Duration::from_millis(500);
/// More than this share of failed requests means the stack is broken, not slow.
const MAX_ERROR_SHARE: f64 = 0.01;
/// The paced pass: each connection waits this long before each request, ...
pub const PACE_DELAY_MS: u32 = 10;
/// ... with as many connections as short unrecorded runs say reach the rate: at most
/// `CALIBRATION_TRIES` runs, until one lands within `CALIBRATION_TOLERANCE` of it.
pub const CALIBRATION_SECONDS: u32 = 3;
const CALIBRATION_TRIES: usize = 3;
const CALIBRATION_TOLERANCE: f64 = 0.02;

pub struct BenchArgs {
    /// Pairs of rounds.
    pub rounds: u32,
    pub load: wrk::Load,
    /// Requests/s of the paced pair after the flat-out pairs; 0 for none.
    pub paced_rate: u32,
    /// Flat-out pairs through HAProxy after the nginx rounds; 0 for none.
    pub haproxy_pairs: u32,
    /// Flat-out pairs through the nginx proxy over TLS.
    pub tls_pairs: u32,
    /// Flat-out pairs through the nginx proxy over HTTP/2 and TLS (h2load).
    pub h2_pairs: u32,
    /// Write BENCHMARKS.md.
    pub write: bool,
    /// The agent was given with --agent rather than built from this tree.
    pub given_agent: bool,
    /// Extra arguments for the agent (`--agent-arg`).
    pub agent_args: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Mode {
    #[default]
    Baseline,
    Gatescope,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Gatescope => "gatescope",
        }
    }
}

/// The proxy a round loads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Gateway {
    Nginx,
    Haproxy,
    /// The same nginx proxy, over TLS.
    NginxTls,
    /// The same nginx proxy, over HTTP/2 and TLS (h2load).
    NginxH2,
}

impl Gateway {
    pub fn name(self) -> &'static str {
        match self {
            Gateway::Nginx => "nginx",
            Gateway::Haproxy => "haproxy",
            Gateway::NginxTls => "nginx-tls",
            Gateway::NginxH2 => "nginx-h2",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Gateway::Nginx => "nginx",
            Gateway::Haproxy => "HAProxy",
            Gateway::NginxTls => "nginx over TLS",
            Gateway::NginxH2 => "nginx over HTTP/2 (TLS)",
        }
    }
}

/// The agent's numbers for one round with gatescope attached.
pub struct AgentRound {
    /// From start to `/metrics` answering.
    pub attach: Duration,
    /// CPU seconds while wrk ran.
    pub cpu_load: f64,
    /// CPU seconds from wrk's start until the metrics settled after it (includes draining).
    pub cpu_total: f64,
    /// VmHWM just before stopping.
    pub peak_rss: u64,
    pub events_received: Option<f64>,
    pub events_lost: Option<f64>,
    /// `reason=value` for every non-zero `gatescope_events_lost_total` series.
    pub lost_reasons: Vec<String>,
    pub version: Option<String>,
    /// `gatescope_spans_exported_total` and `gatescope_spans_dropped_total`
    /// over the window (absent when tracing is off).
    pub spans_exported: Option<f64>,
    pub spans_dropped: Option<f64>,
}

pub struct Round {
    /// 1-based, in the order run.
    pub number: usize,
    pub pair: usize,
    pub mode: Mode,
    pub gateway: Gateway,
    /// Paced (near `--paced-rate`) rather than flat out.
    pub paced: bool,
    /// The agent exported spans (`--otlp-endpoint`, the tracing rounds).
    pub tracing: bool,
    /// The load wrk was given (for paced rounds, the calibrated connections).
    pub load: wrk::Load,
    pub wrk: wrk::Report,
    /// Seconds wrk ran, on our clock.
    pub wall: f64,
    /// CPU seconds of the proxy's master and workers while wrk ran.
    pub proxy_cpu: f64,
    /// CPU seconds of the upstream nginx and of wrk while wrk ran.
    pub upstream_cpu: f64,
    pub wrk_cpu: f64,
    /// CPU cores used by everything that is not part of the benchmark while wrk ran.
    pub other_cores: f64,
    /// 1-minute load average just before the round.
    pub load1: f64,
    /// Most gatescope processes other than ours seen while wrk ran (others' tests: their
    /// programs run in every process's system calls, baseline rounds included).
    pub foreign_agents: usize,
    pub agent: Option<AgentRound>,
    /// A stats round's programs (`bpf_stats` over wrk's window).
    pub programs: Option<Vec<ProgCost>>,
}

/// How the run was made, for the report.
pub struct RunInfo {
    pub command: String,
    pub date: String,
    pub machine: procfs::Machine,
    pub nginx: String,
    /// `HAProxy 2.6...` when HAProxy pairs ran.
    pub haproxy: Option<String>,
    pub wrk: String,
    pub agent: String,
    pub load: wrk::Load,
    pub paced_rate: u32,
    pub load_before: Option<[f64; 3]>,
    pub load_after: Option<[f64; 3]>,
}

pub fn bench(agent: &Path, args: &BenchArgs) -> Result<()> {
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.load.seconds >= 1, "--duration must be at least 1");
    ensure!(
        args.load.connections >= args.load.threads && args.load.threads >= 1,
        "wrk needs at least one thread and at least as many connections as threads"
    );
    util::catch_signals();
    let mut dir = TempDir::new("bench")?;
    let result = run(agent, args, dir.path());
    if result.is_err() {
        dir.keep();
        eprintln!(
            "xtask: benchmark files and logs kept in {}",
            dir.path().display()
        );
    }
    result
}

/// Everything a run measured.
#[derive(Default)]
pub(crate) struct Results {
    /// The measured pairs: nginx flat out, nginx paced, HAProxy flat out.
    pub rounds: Vec<Round>,
    /// The stats rounds, one after each flat-out pair.
    pub stats: Vec<Round>,
    /// The tracing rounds (paced, agent only).
    pub tracing: Vec<Round>,
    pub host_tax: Option<HostTax>,
}

impl Results {
    /// The number of the next round, counting every kind.
    fn next_number(&self) -> usize {
        self.rounds.len() + self.stats.len() + self.tracing.len() + 1
    }

    /// The pair after the last one run.
    fn next_pair(&self) -> usize {
        self.rounds
            .iter()
            .chain(&self.tracing)
            .map(|r| r.pair)
            .max()
            .unwrap_or(0)
            + 1
    }
}

pub(crate) struct Stack {
    dir: PathBuf,
    agent: PathBuf,
    agent_args: Vec<String>,
    load: wrk::Load,
    /// The proxy the rounds load (the nginx proxy, or HAProxy during its pairs).
    proxy: Guard,
    proxy_addr: SocketAddr,
    /// The nginx proxy's TLS listener (the TLS pairs).
    tls_addr: SocketAddr,
    /// Its HTTP/2 listener, over TLS (the HTTP/2 pairs).
    h2_addr: SocketAddr,
    gateway: Gateway,
    upstream: Guard,
    upstream_addr: SocketAddr,
    /// Where wrk loads its libssl from during the TLS pairs (a copy of its
    /// own, see tls.rs); `None`: the system's.
    wrk_libs: Option<PathBuf>,
}

impl Stack {
    /// Unrecorded load through the current proxy.
    fn warm_up(&mut self) -> Result<()> {
        let warm = wrk::Load {
            seconds: WARM_UP_SECONDS.min(self.load.seconds),
            ..self.load
        };
        let log = self
            .dir
            .join(format!("warm-up-{}.wrk.txt", self.gateway.name()));
        let (report, ..) = self.run_wrk(warm, &log, None)?;
        println!(
            "bench: warm-up through {} {} s: {:.0} requests/s (not recorded)",
            self.gateway.title(),
            warm.seconds,
            report.requests_per_second
        );
        Ok(())
    }

    /// One flat-out pair through the current proxy (baseline first in odd pairs, gatescope
    /// first in even ones: drift cancels), then its stats round.
    fn flat_pair(&mut self, results: &mut Results, pair: usize) -> Result<()> {
        let order = if pair % 2 == 1 {
            [Mode::Baseline, Mode::Gatescope]
        } else {
            [Mode::Gatescope, Mode::Baseline]
        };
        for mode in order {
            let spec = Spec {
                mode,
                ..Spec::default()
            };
            let round = self.round(results.next_number(), pair, spec)?;
            println!("{}", summary::round_line(&round));
            results.rounds.push(round);
        }
        let spec = Spec {
            mode: Mode::Gatescope,
            bpf_stats: Some(STATS_SECONDS.min(self.load.seconds)),
            ..Spec::default()
        };
        let round = self.round(results.next_number(), pair, spec)?;
        println!("{}", summary::round_line(&round));
        results.stats.push(round);
        Ok(())
    }
}

fn run(agent: &Path, args: &BenchArgs, dir: &Path) -> Result<()> {
    let load_before = procfs::loadavg();
    // Others may rebuild target/release/gatescope while we run: every round uses this copy.
    let snapshot = dir.join("gatescope");
    fs::copy(agent, &snapshot)
        .with_context(|| format!("copying {} to {}", agent.display(), snapshot.display()))?;
    let described = describe_agent(agent, &snapshot, args.given_agent);
    let info = RunInfo {
        command: command_line(),
        date: util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .map_or_else(|| "unknown".to_string(), |d| d.trim().to_string()),
        machine: procfs::machine(),
        nginx: util::banner(Command::new("nginx").arg("-v"))
            .map_or_else(|| "unknown".into(), |v| v.replace("nginx version: ", "")),
        haproxy: (args.haproxy_pairs > 0).then(haproxy::version),
        wrk: util::banner(Command::new("wrk").arg("--version"))
            .map_or_else(|| "unknown".into(), |v| first_words(&v, 2)),
        agent: if args.agent_args.is_empty() {
            described
        } else {
            format!("{described}, run with `{}`", args.agent_args.join(" "))
        },
        load: args.load,
        paced_rate: args.paced_rate,
        load_before,
        load_after: None,
    };
    println!(
        "bench: {} CPUs ({}), Linux {}, {}, {}{}; load average {}",
        info.machine.cpus,
        info.machine.model,
        info.machine.kernel,
        info.nginx,
        info.wrk,
        info.haproxy
            .as_ref()
            .map_or_else(String::new, |h| format!(", {h}")),
        summary::loadavg_text(load_before)
    );
    println!("bench: agent {}", info.agent);

    let upstream_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let (upstream, took) = stack::start_nginx(
        "upstream nginx",
        &UPSTREAM_CONF,
        &dir.join("upstream"),
        upstream_addr,
        &[],
    )?;
    println!(
        "bench: upstream nginx master pid {} answers on http://{upstream_addr}/ after {took:.1?}",
        upstream.pid()
    );
    let proxy_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let tls_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let h2_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    stack::self_signed(&dir.join("proxy"), "bench")?;
    let (proxy, took) = stack::start_nginx(
        "proxy nginx",
        &PROXY_CONF,
        &dir.join("proxy"),
        proxy_addr,
        &[
            ("upstream_port", upstream_addr.port().to_string()),
            ("tls_port", tls_addr.port().to_string()),
            ("h2_port", h2_addr.port().to_string()),
        ],
    )?;
    println!(
        "bench: proxy nginx master pid {} (workers {:?}) answers on http://{proxy_addr}/ after {took:.1?}",
        proxy.pid(),
        gatescope_tests::util::children_of(proxy.pid())
    );
    let resp = http::get(proxy_addr, "/").context("GET / through the proxy")?;
    ensure!(
        resp.status == 200 && String::from_utf8_lossy(&resp.body).contains(UPSTREAM_MARK),
        "GET / through the proxy answered {} {:?}, not the bench upstream's body",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );

    let mut stack = Stack {
        dir: dir.to_path_buf(),
        agent: snapshot,
        agent_args: args.agent_args.clone(),
        load: args.load,
        proxy,
        proxy_addr,
        tls_addr,
        h2_addr,
        gateway: Gateway::Nginx,
        upstream,
        upstream_addr,
        wrk_libs: None,
    };
    stack.warm_up()?;

    let mut results = Results::default();
    for pair in 1..=args.rounds as usize {
        stack.flat_pair(&mut results, pair)?;
    }
    if args.paced_rate > 0 {
        let pair = results.next_pair();
        for mode in [Mode::Baseline, Mode::Gatescope] {
            let spec = Spec {
                mode,
                paced_rate: Some(args.paced_rate),
                ..Spec::default()
            };
            let round = stack.round(results.next_number(), pair, spec)?;
            println!("{}", summary::round_line(&round));
            results.rounds.push(round);
        }
        results.tracing = tracing::rounds(
            &mut stack,
            results.next_number(),
            results.next_pair(),
            args.paced_rate,
        )?;
    }
    if args.haproxy_pairs > 0 {
        let first = results.next_pair();
        haproxy::rounds(&mut stack, &mut results, first, args.haproxy_pairs as usize)?;
    }
    if args.tls_pairs > 0 {
        let first = results.next_pair();
        tls::rounds(&mut stack, &mut results, first, args.tls_pairs as usize)?;
    }
    if args.h2_pairs > 0 {
        let first = results.next_pair();
        tls::h2_rounds(&mut stack, &mut results, first, args.h2_pairs as usize)?;
    }
    results.host_tax = Some(stack.host_tax()?);
    let proxy_status = stack.proxy.stop(stack::STOP_GRACE)?;
    let upstream_status = stack.upstream.stop(stack::STOP_GRACE)?;
    println!("bench: stopped the proxy ({proxy_status}) and the upstream ({upstream_status})");

    let info = RunInfo {
        load_after: procfs::loadavg(),
        ..info
    };
    let mut text = report::render(&info, &results);
    text.push_str(&bpf_stats::section(&results.stats));
    text.push_str(&tracing::section(&results.tracing));
    if let Some(tax) = &results.host_tax {
        text.push_str(&getppid::section(tax));
    }
    println!("\n{text}");
    if args.write {
        let path = util::workspace_root().join("BENCHMARKS.md");
        report::write(&path, &text)?;
        println!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// `cargo xtask bench --rounds 3 ...`, as it was typed (through the cargo alias).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

fn first_words(text: &str, n: usize) -> String {
    text.split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which agent was measured: the commit it was built from (with a note on uncommitted
/// changes) or the path it was given as, and a hash of the binary.
fn describe_agent(path: &Path, copy: &Path, given: bool) -> String {
    let sha = util::output(Command::new("sha256sum").arg(copy))
        .and_then(|s| s.split_whitespace().next().map(|h| h[..12].to_string()))
        .unwrap_or_else(|| "?".into());
    if given {
        return format!("{} (given with --agent; sha256 {sha}…)", path.display());
    }
    let root = util::workspace_root();
    let git = |args: &[&str]| util::output(Command::new("git").current_dir(&root).args(args));
    let commit = git(&["rev-parse", "--short", "HEAD"])
        .map_or_else(|| "unknown commit".into(), |c| c.trim().to_string());
    let dirty = git(&["status", "--porcelain", "--", "agent", "ebpf", "common"])
        .is_some_and(|s| !s.trim().is_empty());
    format!(
        "{} built from {commit}{} (sha256 {sha}…)",
        path.strip_prefix(&root).unwrap_or(path).display(),
        if dirty {
            " plus uncommitted changes in agent/, ebpf/ or common/"
        } else {
            ""
        }
    )
}
