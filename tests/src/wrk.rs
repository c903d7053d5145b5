//! The `wrk` load generator (Debian's `wrk` package): spawn it, wait for it, and
//! read its summary.

use crate::util::TempDir;
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A running `wrk -t<threads> -c<connections> -d<secs>s <url>`.
pub struct Wrk {
    child: Child,
    dir: TempDir,
    secs: u64,
}

impl Wrk {
    pub fn spawn(url: &str, threads: u32, connections: u32, secs: u64) -> Result<Self> {
        let dir = TempDir::new("wrk")?;
        let child = Command::new("wrk")
            .arg(format!("-t{threads}"))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{secs}s"))
            .arg(url)
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
}
