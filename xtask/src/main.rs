//! `cargo xtask <setup|build|test|demo|bench>` (alias in .cargo/config.toml).

mod compile;
mod demo;
mod http;
mod metrics;
mod report;
mod setup;
mod test;
mod traffic;
mod upstream;
mod util;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

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
    /// setup, build, then run nginx + gatescope with some traffic and summarise the metrics
    Demo {
        /// Leave nginx and gatescope running until Ctrl-C
        #[arg(long)]
        keep_running: bool,
        /// Metric names to serve (passed to gatescope as --metrics-compat)
        #[arg(long, value_enum, default_value_t = Compat::None)]
        compat: Compat,
    },
    /// Load benchmark (not yet: arrives with HTTP parsing, issue 3)
    Bench,
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
        } => setup_and_build().and_then(|agent| {
            demo::demo(
                &agent,
                &demo::DemoArgs {
                    keep_running,
                    compat,
                },
            )
        }),
        Task::Bench => {
            eprintln!(
                "xtask: the benchmark arrives with HTTP parsing (issue 3); nothing to run yet"
            );
            return ExitCode::from(2);
        }
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
