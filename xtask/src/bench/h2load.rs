//! h2load (nghttp2-client) as the HTTP/2 pairs' load generator: its command
//! and its report in wrk's terms, latencies from its per-request log (h2load
//! prints no percentiles).

use std::{fs, path::Path, process::Command};

use anyhow::{ensure, Context as _, Result};
use gatescope_tests::wrk;

/// Connections, and streams in flight on each: 50 requests in flight, as
/// wrk's 50 connections have.
const CONNECTIONS: u32 = 10;
const STREAMS: u32 = 5;

/// `h2load` for `load`'s threads and duration against `url`, writing each
/// request's latency to `log_file`.
pub(super) fn command(load: &wrk::Load, url: &str, log_file: &Path) -> Command {
    let mut cmd = Command::new("h2load");
    cmd.args(["-c", &CONNECTIONS.to_string(), "-m", &STREAMS.to_string()])
        .args(["-t", &load.threads.to_string()])
        .args(["-D", &load.seconds.to_string()])
        .arg(format!("--log-file={}", log_file.display()))
        .arg(url);
    cmd
}

/// h2load's summary (`text`) and per-request log as a wrk report: requests
/// done, the window, requests/s, p50 and p99 (seconds), and errors (failed,
/// errored, timed out, or answered other than 2xx/3xx).
pub(super) fn report(text: &str, log_file: &Path) -> Result<wrk::Report> {
    let words = |prefix: &str| -> Result<Vec<&str>> {
        Ok(text
            .lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no `{prefix}` line in h2load's output:\n{text}"))?
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect())
    };
    let before = |w: &[&str], name: &str| -> Result<u64> {
        let i = w
            .iter()
            .position(|x| *x == name)
            .with_context(|| format!("no `{name}` in {w:?}"))?;
        Ok(w.get(i.wrapping_sub(1)).context("no count")?.parse()?)
    };
    let finished = words("finished in")?;
    let elapsed: f64 = finished
        .get(2)
        .and_then(|t| t.strip_suffix('s'))
        .context("no duration")?
        .parse()?;
    let rps: f64 = finished.get(3).context("no req/s")?.parse()?;
    let requests = words("requests:")?;
    let codes = words("status codes:")?;
    let done = before(&requests, "done")?;
    let errors = before(&requests, "failed")?
        + before(&requests, "errored")?
        + before(&requests, "timeout")?
        + before(&codes, "4xx")?
        + before(&codes, "5xx")?;
    let log =
        fs::read_to_string(log_file).with_context(|| format!("reading {}", log_file.display()))?;
    let mut micros: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    ensure!(
        !micros.is_empty(),
        "h2load logged no request in {}",
        log_file.display()
    );
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize] as f64 / 1e6;
    Ok(wrk::Report {
        requests: done,
        elapsed,
        requests_per_second: rps,
        p50: at(0.50),
        p99: at(0.99),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn a_report_in_wrk_terms() {
        let text = "\
finished in 10.00s, 12345.60 req/s, 1.20MB/s
requests: 123456 total, 123466 started, 123456 done, 123450 succeeded, 6 failed, 0 errored, 0 timeout
status codes: 123450 2xx, 0 3xx, 0 4xx, 6 5xx
";
        let dir = std::env::temp_dir().join(format!("h2load-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log.tsv");
        let mut lines = String::new();
        for i in 1..=100 {
            let _ = writeln!(lines, "1\t200\t{}", i * 1000);
        }
        fs::write(&log, lines).unwrap();
        let r = report(text, &log).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!((r.requests, r.errors), (123_456, 12));
        assert!((r.elapsed - 10.0).abs() < 1e-9 && (r.requests_per_second - 12_345.6).abs() < 1e-9);
        assert!(
            (r.p50 - 0.050).abs() < 0.0011 && (r.p99 - 0.099).abs() < 0.0011,
            "{r:?}"
        );
    }
}
