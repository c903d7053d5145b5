//! `cargo xtask <setup|build|test|demo|bench|fuzz>` (alias in .cargo/config.toml).

mod bench;
mod compile;
mod demo;
mod demo_stack;
mod demo_summary;
mod fuzz;
mod procfs;
mod setup;
mod stack;
mod test;
mod traffic;
mod util;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use gatescope_tests::wrk;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "gatescope's developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (nightly rust-src, Debian packages, bpf-linker, tracefs)
    Setup,
    /// setup, then build the release agent (target/release/gatescope)
    Build,
    /// setup, build, unit tests, then the integration tests against the release agent
    Test,
    /// setup, build, then run nginx + gatescope with some traffic and summarise the metrics;
    /// fails if one differs from what the demo counted
    Demo {
        /// Leave nginx and gatescope running until Ctrl-C
        #[arg(long)]
        keep_running: bool,
        /// Metric names to serve (passed to gatescope as --metrics-compat)
        #[arg(long, value_enum, default_value_t = Compat::None)]
        compat: Compat,
        /// Also run a real Prometheus scraping gatescope with deploy/prometheus's alert rules;
        /// print the alerts' states and some of the Grafana dashboard's queries
        #[arg(long)]
        stack: bool,
    },
    /// setup, build, then wrk against an nginx proxy (and HAProxy) with and without gatescope
    /// attached, alternating, plus bpf_stats and the host tax; prints the overhead against
    /// the targets and writes BENCHMARKS.md
    Bench {
        /// Pairs of rounds (one baseline, one with gatescope, the order alternating)
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds of load per round
        #[arg(long, default_value_t = 10)]
        duration: u32,
        /// wrk connections
        #[arg(long, default_value_t = 50)]
        connections: u32,
        /// wrk threads
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// Bytes of one more header line on every request, for request heads larger than
        /// the capture (0: none)
        #[arg(long, default_value_t = 0)]
        header_bytes: u32,
        /// Requests/s of one more pair, paced, after the flat-out pairs (0: none)
        #[arg(long, default_value_t = 20_000)]
        paced_rate: u32,
        /// Flat-out pairs through HAProxy 2.6 (deploy/bench/haproxy.cfg) after the nginx
        /// rounds, each with its bpf_stats round (0: none)
        #[arg(long, default_value_t = 1)]
        haproxy_pairs: u32,
        /// Flat-out pairs through the nginx proxy over TLS (wrk over https; gatescope's
        /// OpenSSL uprobes), each with its bpf_stats round (0: none)
        #[arg(long, default_value_t = 1)]
        tls_pairs: u32,
        /// Flat-out pairs through the nginx proxy over HTTP/2 and TLS (h2load; gatescope's
        /// OpenSSL uprobes and HTTP/2 capture), each with its bpf_stats round (0: none)
        #[arg(long, default_value_t = 1)]
        h2_pairs: u32,
        /// Print the results only; leave BENCHMARKS.md alone
        #[arg(long)]
        no_write: bool,
        /// Measure this gatescope binary instead of building target/release/gatescope
        #[arg(long, value_name = "PATH")]
        agent: Option<std::path::PathBuf>,
        /// An extra argument for the agent, e.g. `--agent-arg=--wire=false` (repeatable)
        #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
        agent_args: Vec<String>,
    },
    /// Run a cargo-fuzz target of http/fuzz (nightly) for a bounded time, installing
    /// cargo-fuzz if missing; prints any crashing input and how to make it a regression test
    Fuzz {
        /// Seconds to fuzz (libFuzzer's -max_total_time)
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Fuzz target (http/fuzz/fuzz_targets)
        #[arg(long, default_value = "http_conn")]
        target: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    None,
    Kong,
}

fn main() -> ExitCode {
    util::ensure_cargo_bin_on_path();
    let result = match Cli::parse().task {
        Task::Setup => setup::setup(),
        Task::Build => setup::setup().and_then(|()| compile::build().map(drop)),
        Task::Test => setup_and_build().and_then(|agent| test::test(&agent)),
        Task::Demo {
            keep_running,
            compat,
            stack,
        } => setup_and_build().and_then(|agent| {
            demo::demo(
                &agent,
                &demo::DemoArgs {
                    keep_running,
                    compat,
                    stack,
                },
            )
        }),
        Task::Bench {
            rounds,
            duration,
            connections,
            threads,
            header_bytes,
            paced_rate,
            haproxy_pairs,
            tls_pairs,
            h2_pairs,
            no_write,
            agent,
            agent_args,
        } => {
            let given = agent.is_some();
            let agent = match agent {
                Some(path) => setup::setup().map(|()| path),
                None => setup_and_build(),
            };
            agent.and_then(|agent| {
                bench::bench(
                    &agent,
                    &bench::BenchArgs {
                        given_agent: given,
                        rounds,
                        load: wrk::Load {
                            threads,
                            connections,
                            seconds: duration,
                            delay_ms: None,
                            header_bytes,
                        },
                        paced_rate,
                        haproxy_pairs,
                        tls_pairs,
                        h2_pairs,
                        write: !no_write,
                        agent_args,
                    },
                )
            })
        }
        Task::Fuzz { seconds, target } => fuzz::fuzz(&fuzz::FuzzArgs { target, seconds }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn setup_and_build() -> Result<std::path::PathBuf> {
    setup::setup()?;
    compile::build()
}
