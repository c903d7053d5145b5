//! One measured round: the agent started or not, wrk run (paced rounds calibrated first),
//! the CPU of every process and the agent's counters over wrk's window, and for a stats
//! round the agent's programs' `bpf_stats` over the same window.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use gatescope_tests::{
    prom::{self, Sample, Scrape},
    util::free_port,
    wrk,
};

use super::{
    bpf_stats, AgentRound, Gateway, Mode, Round, Stack, CALIBRATION_SECONDS, CALIBRATION_TOLERANCE,
    CALIBRATION_TRIES, FOREIGN_SAMPLE, MAX_ERROR_SHARE, PACE_DELAY_MS, QUIET,
};
use crate::{
    procfs, stack,
    util::{self, Guard},
};

/// What a round runs.
#[derive(Clone, Copy, Default)]
pub(crate) struct Spec {
    pub mode: Mode,
    /// Paced at this many requests/s rather than flat out.
    pub paced_rate: Option<u32>,
    /// The agent exports spans to this OTLP/HTTP endpoint (the tracing rounds).
    pub otlp: Option<SocketAddr>,
    /// A stats round: `kernel.bpf_stats_enabled` on during wrk's window, the agent's
    /// programs read before and after it; `seconds` of load instead of `--duration`.
    pub bpf_stats: Option<u32>,
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

impl Stack {
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
    pub(super) fn run_wrk(
        &mut self,
        load: wrk::Load,
        log: &Path,
        ours: Option<u32>,
    ) -> Result<(wrk::Report, f64, usize)> {
        let h2 = self.gateway == Gateway::NginxH2;
        let scheme = if h2 || self.gateway == Gateway::NginxTls {
            "https"
        } else {
            "http"
        };
        let h2_log = log.with_extension("h2load.tsv");
        let url = format!("{scheme}://{}/", self.proxy_addr);
        let script = match load.script() {
            None => None,
            Some(text) => {
                let path = self.dir.join("pace.lua");
                fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                Some(path)
            }
        };
        let started = Instant::now();
        let mut cmd = if h2 {
            super::h2load::command(&load, &url, &h2_log)
        } else {
            load.command(&url, script.as_deref())
        };
        if let Some(libs) = &self.wrk_libs {
            cmd.env("LD_LIBRARY_PATH", libs);
        }
        let mut wrk = Guard::spawn("wrk", &mut cmd, log)?;
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
        let report = if h2 {
            super::h2load::report(&text, &h2_log)?
        } else {
            wrk::parse_report(&text)?
        };
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
    pub(crate) fn round(&mut self, number: usize, pair: usize, spec: Spec) -> Result<Round> {
        util::check_interrupted()?;
        self.check_running()?;
        let Spec {
            mode,
            paced_rate,
            otlp,
            bpf_stats: stats_seconds,
        } = spec;
        let paced = paced_rate.is_some();
        let name = format!(
            "round-{number}-{}-{}{}{}{}",
            self.gateway.name(),
            mode.name(),
            if paced { "-paced" } else { "" },
            if otlp.is_some() { "-tracing" } else { "" },
            if stats_seconds.is_some() {
                "-stats"
            } else {
                ""
            }
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
        let load = match (paced_rate, stats_seconds) {
            (Some(rate), _) => self.calibrate(rate, &name, agent_pid)?,
            (None, Some(seconds)) => wrk::Load {
                seconds,
                ..self.load
            },
            (None, None) => self.load,
        };
        // Counters at the start of the window (after any calibration traffic has landed).
        let counted = match &agent {
            None => Vec::new(),
            Some((_, _, metrics)) => scrape_samples(*metrics)?,
        };
        // Stats on for wrk's window only (and off again on any error, by the guard's drop):
        // the accounting itself costs the proxy about 80 ns per program run (KERNEL.md).
        let stats = match (stats_seconds, agent_pid) {
            (Some(_), Some(pid)) => Some((bpf_stats::Enabled::on()?, pid)),
            _ => None,
        };
        let progs_before = stats
            .as_ref()
            .map(|(_, pid)| bpf_stats::read(*pid))
            .transpose()?;
        let before = self.snapshot(agent_pid)?;
        let (report, wall, foreign_agents) =
            self.run_wrk(load, &self.dir.join(format!("{name}.wrk.txt")), agent_pid)?;
        let after = self.snapshot(agent_pid)?;
        let programs = match (stats, progs_before) {
            (Some((enabled, pid)), Some(start)) => {
                let end = bpf_stats::read(pid)?;
                enabled.restore()?;
                Some(bpf_stats::costs(&start, &end)?)
            }
            _ => None,
        };

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
            gateway: self.gateway,
            paced,
            tracing: otlp.is_some(),
            programs,
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
