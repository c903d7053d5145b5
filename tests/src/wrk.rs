//! The `wrk` load generator (Debian's `wrk` 4.1.0 package): its command line, a
//! running instance, and its summary and `--latency` report.

use crate::util::TempDir;
use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The load: `wrk -t<threads> -c<connections> -d<seconds>s --latency [-s pace.lua] <url>`.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub seconds: u32,
    /// Each connection waits this long before each request (wrk's Lua `delay()`): a closed
    /// loop with think time, which holds the rate near connections / (delay + latency).
    /// `None`: flat out.
    pub delay_ms: Option<u32>,
    /// Bytes of one more header line on every request (`X-Pad: ppp...`), for
    /// request heads larger than the capture; 0: none.
    pub header_bytes: u32,
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
        if self.header_bytes > 0 {
            cmd.arg("-H")
                .arg(format!("X-Pad: {}", "p".repeat(self.header_bytes as usize)));
        }
        cmd.arg(url);
        cmd
    }

    /// `wrk -t2 -c50 -d10s --latency`, in Markdown, with what the script does.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "`wrk -t{} -c{} -d{}s --latency",
            self.threads, self.connections, self.seconds
        );
        if self.header_bytes > 0 {
            let _ = write!(text, " -H 'X-Pad: <{} bytes>'", self.header_bytes);
        }
        match self.delay_ms {
            None => text + "`",
            Some(ms) => {
                format!("{text} -s pace.lua` (each connection waits {ms} ms before each request)")
            }
        }
    }
}

/// What wrk reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrkSummary {
    /// "N requests in ..." (completed responses).
    pub requests: u64,
    /// "Non-2xx or 3xx responses: N" (absent = 0).
    pub non_2xx: u64,
    /// "Socket errors: connect A, read B, write C, timeout D" (absent = 0).
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
}

impl WrkSummary {
    pub fn errors(&self) -> u64 {
        self.non_2xx + self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }
}

/// A running `wrk -t<threads> -c<connections> -d<secs>s --latency <url>`.
pub struct Wrk {
    child: Child,
    dir: TempDir,
    secs: u64,
}

impl Wrk {
    pub fn spawn(url: &str, threads: u32, connections: u32, secs: u64) -> Result<Self> {
        let dir = TempDir::new("wrk")?;
        let load = Load {
            threads,
            connections,
            seconds: u32::try_from(secs).context("wrk duration")?,
            delay_ms: None,
            header_bytes: 0,
        };
        let child = load
            .command(url, None)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout"))?)
            .stderr(File::create(dir.path().join("stderr"))?)
            .spawn()
            .context("spawning wrk (apt-get install wrk)")?;
        Ok(Self { child, dir, secs })
    }

    fn output(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// Wait for wrk to finish (its duration plus 15 s at most); it must exit 0.
    pub fn wait(mut self) -> Result<(WrkSummary, String)> {
        let deadline = Instant::now() + Duration::from_secs(self.secs + 15);
        let st = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("wrk did not finish in time:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = self.output();
        ensure!(st.success(), "wrk exited with {st}:\n{out}");
        let sum = parse(&out).with_context(|| format!("unparsable wrk output:\n{out}"))?;
        Ok((sum, out))
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
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

/// Reads wrk's `--latency` report; fails on anything missing, with the text in the message.
pub fn parse_report(text: &str) -> Result<Report> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let percentile = |p: &str| -> Option<f64> {
        let after = lines.iter().position(|l| *l == "Latency Distribution")?;
        lines[after..]
            .iter()
            .find_map(|l| parse_time(l.strip_prefix(p)?))
    };
    let elapsed = lines
        .iter()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| parse_time(l.split_whitespace().nth(3)?));
    let rate = lines
        .iter()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let summary = parse(text);
    let (Ok(summary), Some(elapsed), Some(rate), Some(p50), Some(p99)) =
        (summary, elapsed, rate, percentile("50%"), percentile("99%"))
    else {
        bail!("could not read wrk's report (requests, Requests/sec, 50% and 99% latency):\n{text}");
    };
    Ok(Report {
        requests: summary.requests,
        elapsed,
        requests_per_second: rate,
        p50,
        p99,
        errors: summary.errors(),
    })
}

/// Parse wrk's text summary.
pub fn parse(out: &str) -> Result<WrkSummary> {
    let mut s = WrkSummary::default();
    let mut saw_requests = false;
    for l in out.lines().map(str::trim) {
        if let Some((n, _)) = l.split_once(" requests in ") {
            s.requests = n.trim().parse().context("bad request count")?;
            saw_requests = true;
        } else if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            s.non_2xx = n.trim().parse().context("bad Non-2xx count")?;
        } else if let Some(rest) = l.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut f = part.split_whitespace();
                let (Some(k), Some(v)) = (f.next(), f.next()) else {
                    bail!("bad socket errors line {l:?}");
                };
                let v: u64 = v.parse().context("bad socket error count")?;
                match k {
                    "connect" => s.connect_errors = v,
                    "read" => s.read_errors = v,
                    "write" => s.write_errors = v,
                    "timeout" => s.timeouts = v,
                    _ => bail!("unknown socket error kind {k:?}"),
                }
            }
        }
    }
    ensure!(saw_requests, "no `N requests in` line");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summary() {
        let out = "Running 10s test @ http://127.0.0.1:8080/\n  2 threads and 50 connections\n\
                   Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                   Latency     1.00ms  0.50ms  10.00ms   90.00%\n\
                   123456 requests in 10.00s, 50.00MB read\n\
                   Socket errors: connect 0, read 3, write 0, timeout 2\n\
                   Non-2xx or 3xx responses: 7\n\
                   Requests/sec:  12345.60\nTransfer/sec:      5.00MB\n";
        let s = parse(out).unwrap();
        assert_eq!(
            s,
            WrkSummary {
                requests: 123456,
                non_2xx: 7,
                connect_errors: 0,
                read_errors: 3,
                write_errors: 0,
                timeouts: 2
            }
        );
        assert_eq!(s.errors(), 12);
        assert!(parse("nothing").is_err());
    }

    /// The command line as text.
    fn describe(cmd: &Command) -> String {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

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
        let r = parse_report(CLEAN).unwrap();
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
        let r = parse_report(&text).unwrap();
        assert_eq!(r.errors, 12);
        assert!((r.p99 - 1.2).abs() < 1e-12);
        assert!((r.elapsed - 60.0).abs() < 1e-9);
        assert!(parse_report("wrk: connection refused").is_err());
    }

    #[test]
    fn builds_the_command() {
        let load = Load {
            threads: 2,
            connections: 50,
            seconds: 10,
            delay_ms: None,
            header_bytes: 0,
        };
        assert_eq!(
            describe(&load.command("http://127.0.0.1:1/", None)),
            "wrk -t2 -c50 -d10s --latency http://127.0.0.1:1/"
        );
        assert!(load.script().is_none());
        let paced = Load {
            delay_ms: Some(10),
            ..load
        };
        assert_eq!(
            describe(&paced.command("http://h/", Some(Path::new("/d/p.lua")))),
            "wrk -t2 -c50 -d10s --latency -s /d/p.lua http://h/"
        );
        assert!(paced.script().unwrap().contains("return 10"));
    }
}
