//! `cargo xtask bench`: wrk against a real nginx reverse proxy on loopback, in rounds that
//! alternate between no agent (baseline) and gatescope attached to the proxy's master.
//! Measures throughput, latency, the agent's CPU, peak RSS and lost events per round, then
//! prints the summary against the targets of issue 3 and writes it to BENCHMARKS.md.

use std::fmt::Write as _;
use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use gatescope_tests::{
    http,
    prom::{self, Sample, Scrape},
    util::{free_port, TempDir},
    wrk,
};

use crate::{
    bench_summary, bench_tracing, procfs,
    stack::{self, Template},
    util::{self, Guard},
};

const PROXY_CONF: Template = Template {
    path: "deploy/bench/proxy.conf",
    text: include_str!("../../deploy/bench/proxy.conf"),
};
const UPSTREAM_CONF: Template = Template {
    path: "deploy/bench/upstream.conf",
    text: include_str!("../../deploy/bench/upstream.conf"),
};
/// What the upstream's body contains (checked through the proxy before measuring).
const UPSTREAM_MARK: &str = "gatescope-bench";
/// Unrecorded load before the first round (connections, caches, CPU frequency).
const WARM_UP_SECONDS: u32 = 3;
/// Pause before each round: the previous round's sockets and the agent's attach settle.
const QUIET: Duration = Duration::from_secs(1);
/// getppid(2) calls per timing: the syscall entry hook's cost (below).
const GETPPID_CALLS: u32 = 5_000_000;
/// Timings per agent mode, the modes alternating.
const GETPPID_REPEATS: usize = 3;
/// The agent modes getppid(2) is timed under: none, the syscall entry hook on
/// the raw tracepoint `sys_enter`, and on the `raw_syscalls:sys_enter` trace
/// event (README, `syscalls.rs`). `--wire=false`: the packet filter runs on
/// packets, not system calls, and is measured by the rounds.
const GETPPID_MODES: [(&str, Option<&[&str]>); 3] = [
    ("no agent", None),
    ("raw tracepoint", Some(&["--wire=false"])),
    (
        "trace event",
        Some(&["--wire=false", "--raw-tracepoints=false"]),
    ),
];
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
    /// Write BENCHMARKS.md.
    pub write: bool,
    /// The agent was given with --agent rather than built from this tree.
    pub given_agent: bool,
    /// Extra arguments for the agent (`--agent-arg`).
    pub agent_args: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
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
}

/// How the run was made, for the report.
pub struct RunInfo {
    pub command: String,
    pub date: String,
    pub machine: procfs::Machine,
    pub nginx: String,
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

pub(crate) struct Stack {
    dir: PathBuf,
    agent: PathBuf,
    agent_args: Vec<String>,
    load: wrk::Load,
    proxy: Guard,
    proxy_addr: SocketAddr,
    upstream: Guard,
}

fn run(agent: &Path, args: &BenchArgs, dir: &Path) -> Result<()> {
    let load_before = procfs::loadavg();
    // Others may rebuild target/release/gatescope while we run: every round uses this copy.
    let snapshot = dir.join("gatescope");
    fs::copy(agent, &snapshot)
        .with_context(|| format!("copying {} to {}", agent.display(), snapshot.display()))?;
    let info = RunInfo {
        command: command_line(),
        date: util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .map_or_else(|| "unknown".to_string(), |d| d.trim().to_string()),
        machine: procfs::machine(),
        nginx: util::banner(Command::new("nginx").arg("-v"))
            .map_or_else(|| "unknown".into(), |v| v.replace("nginx version: ", "")),
        wrk: util::banner(Command::new("wrk").arg("--version"))
            .map_or_else(|| "unknown".into(), |v| first_words(&v, 2)),
        agent: if args.agent_args.is_empty() {
            describe_agent(agent, &snapshot, args.given_agent)
        } else {
            format!(
                "{}, run with `{}`",
                describe_agent(agent, &snapshot, args.given_agent),
                args.agent_args.join(" ")
            )
        },
        load: args.load,
        paced_rate: args.paced_rate,
        load_before,
        load_after: None,
    };
    println!(
        "bench: {} CPUs ({}), Linux {}, {}, {}; load average {}",
        info.machine.cpus,
        info.machine.model,
        info.machine.kernel,
        info.nginx,
        info.wrk,
        bench_summary::loadavg_text(load_before)
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
    let (proxy, took) = stack::start_nginx(
        "proxy nginx",
        &PROXY_CONF,
        &dir.join("proxy"),
        proxy_addr,
        &[("upstream_port", upstream_addr.port().to_string())],
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
        upstream,
    };
    let warm = wrk::Load {
        seconds: WARM_UP_SECONDS.min(args.load.seconds),
        ..args.load
    };
    let (report, ..) = stack.run_wrk(warm, &dir.join("warm-up.wrk.txt"), None)?;
    println!(
        "bench: warm-up {} s: {:.0} requests/s (not recorded)",
        warm.seconds, report.requests_per_second
    );

    let mut rounds = Vec::new();
    for pair in 1..=args.rounds as usize {
        // Baseline first in odd pairs, gatescope first in even ones: drift cancels.
        let order = if pair % 2 == 1 {
            [Mode::Baseline, Mode::Gatescope]
        } else {
            [Mode::Gatescope, Mode::Baseline]
        };
        for mode in order {
            let round = stack.round(rounds.len() + 1, pair, mode, None, None)?;
            println!("{}", bench_summary::round_line(&round));
            rounds.push(round);
        }
    }
    if args.paced_rate > 0 {
        let pair = args.rounds as usize + 1;
        for mode in [Mode::Baseline, Mode::Gatescope] {
            let round = stack.round(rounds.len() + 1, pair, mode, Some(args.paced_rate), None)?;
            println!("{}", bench_summary::round_line(&round));
            rounds.push(round);
        }
    }
    let tracing = if args.paced_rate > 0 {
        bench_tracing::rounds(
            &mut stack,
            rounds.len() + 1,
            args.rounds as usize + 2,
            args.paced_rate,
        )?
    } else {
        Vec::new()
    };
    let getppid = stack.getppid_costs()?;
    let proxy_status = stack.proxy.stop(stack::STOP_GRACE)?;
    let upstream_status = stack.upstream.stop(stack::STOP_GRACE)?;
    println!("bench: stopped the proxy ({proxy_status}) and the upstream ({upstream_status})");

    let info = RunInfo {
        load_after: procfs::loadavg(),
        ..info
    };
    let mut text = bench_summary::render(&info, &rounds);
    text.push_str(&bench_tracing::section(&tracing));
    text.push_str(&getppid_section(&getppid));
    println!("\n{text}");
    if args.write {
        let path = util::workspace_root().join("BENCHMARKS.md");
        bench_summary::write(&path, &text)?;
        println!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// CPU seconds of everything measured, at one instant.
struct Snapshot {
    at: Instant,
    machine: f64,
    proxy: f64,
    upstream: f64,
    reaped: f64,
    me: f64,
    agent: Option<f64>,
}

/// ns per getppid(2) call in this process, `GETPPID_CALLS` calls.
fn getppid_ns() -> f64 {
    let t = Instant::now();
    for _ in 0..GETPPID_CALLS {
        // SAFETY: getppid has no preconditions and cannot fail; glibc does
        // not cache it, so each call is a system call.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    t.elapsed().as_secs_f64() * 1e9 / f64::from(GETPPID_CALLS)
}

/// The getppid(2) section of the summary: each mode's timings.
fn getppid_section(costs: &[Vec<f64>]) -> String {
    let mut s = format!(
        "\n### Syscall entry hook\n\n\
         getppid(2) timed in xtask's own process ({} million calls per timing, the modes \
         alternating, {GETPPID_REPEATS} timings each; the agent attached to the proxy with \
         `--wire=false`): the hook runs on every system call of the host.\n\n\
         | agent | ns per call | added, median |\n| --- | --- | --- |\n",
        GETPPID_CALLS / 1_000_000
    );
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let none = median(&costs[0]);
    for (i, ((name, _), v)) in GETPPID_MODES.iter().zip(costs).enumerate() {
        let list: Vec<String> = v.iter().map(|ns| format!("{ns:.0}")).collect();
        let added = if i == 0 {
            "—".to_string()
        } else {
            format!("{:+.0} ns", median(v) - none)
        };
        let _ = writeln!(s, "| {name} | {} | {added} |", list.join(", "));
    }
    s
}

impl Stack {
    /// getppid(2) under each of `GETPPID_MODES`, alternating.
    fn getppid_costs(&self) -> Result<Vec<Vec<f64>>> {
        let mut costs = vec![Vec::new(); GETPPID_MODES.len()];
        for repeat in 1..=GETPPID_REPEATS {
            for (i, (name, args)) in GETPPID_MODES.iter().enumerate() {
                util::check_interrupted()?;
                let mut agent = match args {
                    None => None,
                    Some(args) => {
                        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
                        let (guard, _) = stack::start_gatescope(
                            &self.agent,
                            self.proxy.pid(),
                            metrics,
                            args,
                            &self.dir.join(format!("getppid-{repeat}-{i}.gatescope.log")),
                        )?;
                        Some(guard)
                    }
                };
                thread::sleep(QUIET);
                let ns = getppid_ns();
                if let Some(guard) = agent.as_mut() {
                    stack::stop_gatescope(guard)?;
                }
                println!("bench: getppid(2), {name}: {ns:.0} ns per call");
                costs[i].push(ns);
            }
        }
        Ok(costs)
    }

    fn snapshot(&self, agent: Option<u32>) -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            machine: procfs::machine_busy_seconds()?,
            proxy: procfs::family_cpu_seconds(self.proxy.pid())?,
            upstream: procfs::family_cpu_seconds(self.upstream.pid())?,
            reaped: procfs::reaped_children_cpu_seconds(),
            me: procfs::cpu_seconds(std::process::id())?,
            agent: agent.map(procfs::cpu_seconds).transpose()?,
        })
    }

    fn check_running(&mut self) -> Result<()> {
        for proc in [&mut self.proxy, &mut self.upstream] {
            if let Some(status) = proc.exited()? {
                return Err(proc.died(status));
            }
        }
        Ok(())
    }

    /// Runs wrk to completion (Ctrl-C stops it); its report, how long it ran, and the most
    /// gatescope processes other than `ours` seen meanwhile.
    fn run_wrk(
        &mut self,
        load: wrk::Load,
        log: &Path,
        ours: Option<u32>,
    ) -> Result<(wrk::Report, f64, usize)> {
        let url = format!("http://{}/", self.proxy_addr);
        let script = match load.script() {
            None => None,
            Some(text) => {
                let path = self.dir.join("pace.lua");
                fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                Some(path)
            }
        };
        let started = Instant::now();
        let mut wrk = Guard::spawn("wrk", &mut load.command(&url, script.as_deref()), log)?;
        let limit = Duration::from_secs(u64::from(load.seconds) + 30);
        let mut foreign = 0;
        let mut looked = None::<Instant>;
        let status = loop {
            if looked.is_none_or(|t| t.elapsed() >= FOREIGN_SAMPLE) {
                let others = procfs::processes_named("gatescope")
                    .into_iter()
                    .filter(|&pid| Some(pid) != ours)
                    .count();
                foreign = foreign.max(others);
                looked = Some(Instant::now());
            }
            if let Some(status) = wrk.exited()? {
                break status;
            }
            util::check_interrupted()?;
            if started.elapsed() > limit {
                bail!("wrk still running after {limit:?}; see {}", log.display());
            }
            thread::sleep(Duration::from_millis(20));
        };
        let wall = started.elapsed().as_secs_f64();
        // Reap it (and mark the guard stopped).
        wrk.stop(Duration::ZERO)?;
        let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
        ensure!(status.success(), "wrk failed ({status}):\n{text}");
        let report = wrk::parse_report(&text)?;
        let share = report.errors as f64 / report.requests.max(1) as f64;
        ensure!(
            share <= MAX_ERROR_SHARE,
            "{} of {} requests failed (socket errors or non-2xx); see {} and {}",
            report.errors,
            report.requests,
            log.display(),
            self.proxy.log.display()
        );
        self.check_running()?;
        Ok((report, wall, foreign))
    }

    /// The paced load: `PACE_DELAY_MS` per request and as many connections as short
    /// unrecorded runs in the round's own conditions (agent attached or not) say reach `rate`.
    fn calibrate(&mut self, rate: u32, name: &str, ours: Option<u32>) -> Result<wrk::Load> {
        let rate = f64::from(rate);
        let nominal = (rate * f64::from(PACE_DELAY_MS) / 1000.0).ceil() as u32;
        let mut trial = wrk::Load {
            connections: (nominal + nominal / 10).max(self.load.threads),
            seconds: CALIBRATION_SECONDS,
            delay_ms: Some(PACE_DELAY_MS),
            ..self.load
        };
        let mut tried = Vec::new();
        let mut last: Option<(u32, f64)> = None;
        for attempt in 1..=CALIBRATION_TRIES {
            let log = self
                .dir
                .join(format!("{name}.calibration-{attempt}.wrk.txt"));
            let reached = self.run_wrk(trial, &log, ours)?.0.requests_per_second;
            tried.push(format!("{} connections: {reached:.0}", trial.connections));
            if let Some((connections, before)) = last {
                if trial.connections > connections && reached <= before {
                    // More connections, no more requests: the machine is saturated, and more
                    // connections would only add latency.
                    tried.push("saturated".into());
                    trial.connections = connections;
                    break;
                }
            }
            if (reached / rate - 1.0).abs() <= CALIBRATION_TOLERANCE {
                break;
            }
            last = Some((trial.connections, reached));
            // The rate is about proportional to the connections until the machine saturates;
            // grow by half at most per step.
            let scaled = f64::from(trial.connections) * rate / reached.max(1.0);
            let most = (trial.connections * 3 / 2)
                .min(4 * nominal)
                .max(self.load.threads);
            trial.connections = (scaled.ceil() as u32).clamp(self.load.threads, most);
        }
        println!(
            "bench: calibration for {rate:.0} requests/s (not recorded): {}; using {} connections",
            tried.join(", "),
            trial.connections
        );
        Ok(wrk::Load {
            seconds: self.load.seconds,
            ..trial
        })
    }

    /// One measured round: flat out, or paced at `paced_rate` requests/s;
    /// with `otlp`, the agent exports spans to that OTLP/HTTP endpoint.
    pub(crate) fn round(
        &mut self,
        number: usize,
        pair: usize,
        mode: Mode,
        paced_rate: Option<u32>,
        otlp: Option<SocketAddr>,
    ) -> Result<Round> {
        util::check_interrupted()?;
        self.check_running()?;
        let paced = paced_rate.is_some();
        let name = format!(
            "round-{number}-{}{}{}",
            mode.name(),
            if paced { "-paced" } else { "" },
            if otlp.is_some() { "-tracing" } else { "" }
        );
        let load1 = procfs::loadavg().map_or(f64::NAN, |l| l[0]);
        let mut agent = match mode {
            Mode::Baseline => None,
            Mode::Gatescope => {
                let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
                let mut extra: Vec<String> = self.agent_args.clone();
                extra.extend(otlp.map(|a| format!("--otlp-endpoint=http://{a}/v1/traces")));
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                let (guard, attach) = stack::start_gatescope(
                    &self.agent,
                    self.proxy.pid(),
                    metrics,
                    &extra,
                    &self.dir.join(format!("{name}.gatescope.log")),
                )?;
                Some((guard, attach, metrics))
            }
        };
        thread::sleep(QUIET);
        let agent_pid = agent.as_ref().map(|(g, _, _)| g.pid());
        let load = match paced_rate {
            None => self.load,
            Some(rate) => self.calibrate(rate, &name, agent_pid)?,
        };
        // Counters at the start of the window (after any calibration traffic has landed).
        let counted = match &agent {
            None => Vec::new(),
            Some((_, _, metrics)) => scrape_samples(*metrics)?,
        };
        let before = self.snapshot(agent_pid)?;
        let (report, wall, foreign_agents) =
            self.run_wrk(load, &self.dir.join(format!("{name}.wrk.txt")), agent_pid)?;
        let after = self.snapshot(agent_pid)?;

        let agent_round = match agent.as_mut() {
            None => None,
            Some((guard, attach, metrics)) => {
                if let Some(status) = guard.exited()? {
                    return Err(guard.died(status));
                }
                let samples = scrape_samples(*metrics)?;
                let pid = guard.pid();
                let cpu_total = procfs::cpu_seconds(pid)? - before.agent.unwrap_or(0.0);
                let peak_rss = procfs::peak_rss_bytes(pid)?;
                stack::stop_gatescope(guard)?;
                Some(agent_numbers(
                    &counted, &samples, *attach, &before, &after, cpu_total, peak_rss,
                ))
            }
        };
        let ours = (after.proxy - before.proxy)
            + (after.upstream - before.upstream)
            + (after.reaped - before.reaped)
            + (after.me - before.me)
            + after.agent.unwrap_or(0.0)
            - before.agent.unwrap_or(0.0);
        let window = (after.at - before.at).as_secs_f64();
        Ok(Round {
            number,
            pair,
            mode,
            paced,
            tracing: otlp.is_some(),
            load,
            wall,
            proxy_cpu: after.proxy - before.proxy,
            upstream_cpu: after.upstream - before.upstream,
            wrk_cpu: after.reaped - before.reaped,
            other_cores: ((after.machine - before.machine - ours) / window).max(0.0),
            load1,
            foreign_agents,
            wrk: report,
            agent: agent_round,
        })
    }
}

const RECEIVED: &str = "gatescope_events_received_total";
const SPANS_EXPORTED: &str = "gatescope_spans_exported_total";
const SPANS_DROPPED: &str = "gatescope_spans_dropped_total";
const LOST: &str = "gatescope_events_lost_total";

/// The samples of a settled scrape of `/metrics` at `addr`.
fn scrape_samples(addr: SocketAddr) -> Result<Vec<Sample>> {
    let text = stack::settled_scrape(addr)?;
    Ok(Scrape::parse(&text)
        .with_context(|| format!("reading gatescope's metrics:\n{text}"))?
        .samples)
}

/// The agent's numbers for the window between the scrapes `start` and `end`.
fn agent_numbers(
    start: &[Sample],
    end: &[Sample],
    attach: Duration,
    before: &Snapshot,
    after: &Snapshot,
    cpu_total: f64,
    peak_rss: u64,
) -> AgentRound {
    let delta = |name: &str, labels: &[(&str, &str)]| {
        prom::sum(end, name, labels).map(|v| v - prom::sum(start, name, labels).unwrap_or(0.0))
    };
    let lost_reasons = prom::label_values(end, LOST, "reason")
        .into_iter()
        .filter_map(|reason| {
            let lost = delta(LOST, &[("reason", &reason)])?;
            (lost > 0.0).then(|| format!("{reason}={lost}"))
        })
        .collect();
    AgentRound {
        attach,
        cpu_load: after.agent.unwrap_or(0.0) - before.agent.unwrap_or(0.0),
        cpu_total,
        peak_rss,
        events_received: delta(RECEIVED, &[]),
        events_lost: delta(LOST, &[]),
        lost_reasons,
        version: end
            .iter()
            .find(|s| s.name == "gatescope_build_info")
            .and_then(|s| s.label("version"))
            .map(str::to_string),
        spans_exported: delta(SPANS_EXPORTED, &[]),
        spans_dropped: delta(SPANS_DROPPED, &[]),
    }
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
