//! `promtool check metrics` on a scrape.

use anyhow::{Context, Result};
use std::io::Write;
use std::process::{Command, Stdio};

/// Pipe `scrape` into `promtool check metrics`; returns (exit code, stderr+stdout).
pub fn check_metrics(scrape: &str) -> Result<(i32, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning promtool (apt-get install prometheus)")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(scrape.as_bytes())?;
    let out = child.wait_with_output()?;
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok((out.status.code().unwrap_or(-1), text))
}
