//! Running wrk (Debian's 4.1.0, installed by setup) and reading its `--latency` report.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

/// The load: `wrk -t<threads> -c<connections> -d<seconds>s --latency [-s pace.lua] <url>`.
#[derive(Clone, Copy)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub seconds: u32,
    /// Each connection waits this long before each request (wrk's Lua `delay()`): a closed
    /// loop with think time, which holds the rate near connections / (delay + latency).
    /// `None`: flat out.
    pub delay_ms: Option<u32>,
}

impl Load {
    /// The Lua script for `delay_ms`, to be written where `command` is told it is.
    pub fn script(&self) -> Option<String> {
        self.delay_ms.map(|ms| {
            format!("-- written by cargo xtask bench\nfunction delay()\n    return {ms}\nend\n")
        })
    }

    pub fn command(&self, url: &str, script: Option<&Path>) -> Command {
        let mut cmd = Command::new("wrk");
        cmd.arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.seconds))
            .arg("--latency");
        if let Some(script) = script {
            cmd.arg("-s").arg(script);
        }
        cmd.arg(url);
        cmd
    }

    /// `wrk -t2 -c50 -d10s --latency`, in Markdown, with what the script does.
    pub fn describe(&self) -> String {
        let text = format!(
            "`wrk -t{} -c{} -d{}s --latency",
            self.threads, self.connections, self.seconds
        );
        match self.delay_ms {
            None => text + "`",
            Some(ms) => {
                format!("{text} -s pace.lua` (each connection waits {ms} ms before each request)")
            }
        }
    }
}

/// What one wrk run reports. Times in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub requests: u64,
    pub elapsed: f64,
    pub requests_per_second: f64,
    pub p50: f64,
    pub p99: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
}

/// A wrk duration or latency: `247.00us`, `1.29ms`, `10.00s`, `1.50m`, `2.00h`.
fn parse_time(text: &str) -> Option<f64> {
    let text = text.trim().trim_end_matches(',');
    let (number, scale) = [
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ]
    .iter()
    .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, *scale)))?;
    Some(number.parse::<f64>().ok()? * scale)
}

/// Reads wrk's report; fails on anything missing, with the text in the message.
pub fn parse(text: &str) -> Result<Report> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let find = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix));
    let percentile = |p: &str| -> Option<f64> {
        let after = lines.iter().position(|l| *l == "Latency Distribution")?;
        lines[after..]
            .iter()
            .find_map(|l| parse_time(l.strip_prefix(p)?))
    };
    let totals = lines
        .iter()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| {
            let mut f = l.split_whitespace();
            let requests = f.next()?.parse::<u64>().ok()?;
            let elapsed = parse_time(f.nth(2)?)?;
            Some((requests, elapsed))
        });
    let rate = find("Requests/sec:").and_then(|v| v.trim().parse::<f64>().ok());
    let (Some((requests, elapsed)), Some(rate), Some(p50), Some(p99)) =
        (totals, rate, percentile("50%"), percentile("99%"))
    else {
        bail!("could not read wrk's report (requests, Requests/sec, 50% and 99% latency):\n{text}");
    };
    let socket_errors: u64 = find("Socket errors:").map_or(0, |v| {
        v.split(',')
            .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    });
    let non_2xx = find("Non-2xx or 3xx responses:")
        .map(|v| v.trim().parse::<u64>())
        .transpose()
        .context("reading wrk's Non-2xx count")?
        .unwrap_or(0);
    Ok(Report {
        requests,
        elapsed,
        requests_per_second: rate,
        p50,
        p99,
        errors: socket_errors + non_2xx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "Running 3s test @ http://127.0.0.1:38771/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   685.58us    1.13ms   9.54ms   88.21%
    Req/Sec    67.96k     8.23k   98.84k    71.67%
  Latency Distribution
     50%  200.00us
     75%  699.00us
     90%    2.08ms
     99%    5.35ms
  405721 requests in 3.00s, 93.63MB read
Requests/sec: 135148.21
Transfer/sec:     31.19MB
";

    #[test]
    fn reads_a_clean_report() {
        let r = parse(CLEAN).unwrap();
        assert_eq!(r.requests, 405721);
        assert!((r.elapsed - 3.0).abs() < 1e-9);
        assert!((r.requests_per_second - 135148.21).abs() < 1e-6);
        assert!((r.p50 - 200e-6).abs() < 1e-12);
        assert!((r.p99 - 5.35e-3).abs() < 1e-12);
        assert_eq!(r.errors, 0);
    }

    #[test]
    fn counts_errors_and_reads_long_times() {
        let text = CLEAN
            .replace("99%    5.35ms", "99%    1.20s")
            .replace("in 3.00s,", "in 1.00m,")
            .replace(
                "Requests/sec:",
                "  Socket errors: connect 1, read 2, write 0, timeout 4\n  Non-2xx or 3xx responses: 5\nRequests/sec:",
            );
        let r = parse(&text).unwrap();
        assert_eq!(r.errors, 12);
        assert!((r.p99 - 1.2).abs() < 1e-12);
        assert!((r.elapsed - 60.0).abs() < 1e-9);
        assert!(parse("wrk: connection refused").is_err());
    }

    #[test]
    fn builds_the_command() {
        let load = Load {
            threads: 2,
            connections: 50,
            seconds: 10,
            delay_ms: None,
        };
        assert_eq!(
            crate::util::describe(&load.command("http://127.0.0.1:1/", None)),
            "wrk -t2 -c50 -d10s --latency http://127.0.0.1:1/"
        );
        assert!(load.script().is_none());
        let paced = Load {
            delay_ms: Some(10),
            ..load
        };
        assert_eq!(
            crate::util::describe(&paced.command("http://h/", Some(Path::new("/d/p.lua")))),
            "wrk -t2 -c50 -d10s --latency -s /d/p.lua http://h/"
        );
        assert!(paced.script().unwrap().contains("return 10"));
    }
}
