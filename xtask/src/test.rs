//! `cargo xtask test`: unit tests, then the integration tests against the release agent.

use std::path::Path;

use anyhow::{bail, Result};

use crate::util::{cargo, run};

pub fn test(agent: &Path) -> Result<()> {
    let steps = [
        (
            "unit tests",
            // gatescope-tests holds only the integration tests, run below with the agent.
            run(cargo().args([
                "test",
                "--workspace",
                "--exclude",
                "gatescope-ebpf",
                "--exclude",
                "gatescope-tests",
            ])),
        ),
        (
            "integration tests",
            run(cargo()
                .args([
                    "test",
                    "--release",
                    "-p",
                    "gatescope-tests",
                    "--",
                    "--test-threads=1",
                ])
                .env("GATESCOPE_BIN", agent)),
        ),
    ];
    let failed: Vec<String> = steps
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e:#}")))
        .collect();
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    println!("xtask: all tests passed");
    Ok(())
}
