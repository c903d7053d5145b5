//! The real gatescope binary: start, scrape, poll for values, stop.

use crate::http;
use crate::prom::{selector, Scrape};
use crate::util::{self, TempDir};
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time for the asynchronous event pipeline to reach an expected value.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before the re-scrape that checks a value did not overshoot.
pub const OVERSHOOT_PAUSE: Duration = Duration::from_millis(300);

/// `$GATESCOPE_BIN`, else `<workspace>/target/release/gatescope` (honouring
/// `CARGO_TARGET_DIR`). Missing binary is an error, never a skip.
pub fn gatescope_bin() -> Result<PathBuf> {
    let (p, from) = if let Some(p) = std::env::var_os("GATESCOPE_BIN") {
        (PathBuf::from(p), "GATESCOPE_BIN")
    } else {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("tests/ has a parent")
                    .join("target")
            },
            PathBuf::from,
        );
        (target.join("release/gatescope"), "default path")
    };
    ensure!(
        p.is_file(),
        "gatescope binary not found at {} ({from}); build it with \
         `cargo build --release -p gatescope` or set GATESCOPE_BIN",
        p.display()
    );
    Ok(p)
}

/// The agent's arguments: `--pid P...` for each of `pids`, `--listen <listen>`, `extra`
/// (also how `cargo xtask demo` and `bench` start it).
pub fn args(pids: &[u32], listen: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for p in pids {
        args.push("--pid".into());
        args.push(p.to_string());
    }
    args.push("--listen".into());
    args.push(listen.to_string());
    args.extend(extra.iter().map(ToString::to_string));
    args
}

/// A running agent.
pub struct Agent {
    child: Child,
    addr: String,
    dir: TempDir,
}

/// One expected sample value for [`Agent::wait_all`].
#[derive(Debug, Clone)]
pub struct Expect {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Expect {
    pub fn new(name: &str, labels: &[(&str, &str)], value: f64) -> Self {
        Self {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    fn label_refs(&self) -> Vec<(&str, &str)> {
        self.labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn selector(&self) -> String {
        selector(&self.name, &self.label_refs())
    }

    /// The current value (absent = 0).
    fn current(&self, s: &Scrape) -> Result<f64> {
        s.get_or_zero(&self.name, &self.label_refs())
    }
}

impl Agent {
    /// Start `gatescope --pid P... --listen 127.0.0.1:<free> <extra>` and wait until
    /// /metrics answers.
    pub fn start(pids: &[u32], extra: &[&str]) -> Result<Self> {
        let port = util::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let args = args(pids, &addr, extra);
        let dir = TempDir::new("agent")?;
        let bin = gatescope_bin()?;
        let child = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log"))?)
            .stderr(File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut a = Agent { child, addr, dir };
        a.wait_ready(&args)?;
        Ok(a)
    }

    fn wait_ready(&mut self, args: &[String]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "gatescope {} exited before serving /metrics ({st}); stderr:\n{}",
                    args.join(" "),
                    self.stderr()
                );
            }
            let last_err = match http_get(&self.addr, "/metrics") {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("HTTP {code}: {body}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "gatescope did not answer GET /metrics within {READY_TIMEOUT:?} \
                     (last: {last_err}); stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the agent: the extreme of an
    /// agent starved of CPU by the gateway's load.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        util::signal(
            self.pid(),
            if frozen { libc::SIGSTOP } else { libc::SIGCONT },
        )
    }

    /// Everything the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// GET /metrics as text (must be HTTP 200).
    pub fn scrape_text(&self) -> Result<String> {
        let (code, body) = http_get(&self.addr, "/metrics")
            .with_context(|| format!("scraping; agent stderr:\n{}", self.stderr()))?;
        ensure!(code == 200, "GET /metrics: HTTP {code}: {body}");
        Ok(body)
    }

    pub fn scrape(&self) -> Result<Scrape> {
        let t = self.scrape_text()?;
        Scrape::parse(&t).with_context(|| format!("unparsable scrape:\n{t}"))
    }

    /// Poll until the sample equals `expected` (absent = 0); fail with the last seen
    /// value and the full scrape on timeout. Then re-scrape after 300 ms to check the
    /// value did not move past `expected`.
    pub fn wait_for(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        expected: f64,
        timeout: Duration,
    ) -> Result<()> {
        self.wait_all(&[Expect::new(name, labels, expected)], timeout)
            .map(|_| ())
    }

    /// Poll until all expectations hold in the same scrape; then re-scrape after
    /// 300 ms and require that they all still hold (no overshoot).
    pub fn wait_all(&self, exp: &[Expect], timeout: Duration) -> Result<Scrape> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.scrape()?;
            let mut bad = Vec::new();
            for e in exp {
                let v = e.current(&s)?;
                if v != e.value {
                    bad.push(format!("{} = {v} (want {})", e.selector(), e.value));
                }
            }
            if bad.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                // What explains a miss comes first: CI keeps only the head
                // of a failure's output, and the full scrape is long.
                bail!(
                    "after {timeout:?}:\n  {}\n--- anomalies, losses and pending work in the last scrape ---\n{}\n--- agent stderr (tail) ---\n{}\n--- last scrape ---\n{}",
                    bad.join("\n  "),
                    telling_lines(&s.text),
                    util::tail(&self.stderr(), 30),
                    s.text,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(OVERSHOOT_PAUSE);
        let s = self.scrape()?;
        let mut bad = Vec::new();
        for e in exp {
            let v = e.current(&s)?;
            if v != e.value {
                bad.push(format!(
                    "{} = {v} (reached {}, then moved)",
                    e.selector(),
                    e.value
                ));
            }
        }
        ensure!(
            bad.is_empty(),
            "values moved after reaching the expectation:\n  {}\n--- scrape ---\n{}",
            bad.join("\n  "),
            s.text
        );
        Ok(s)
    }

    /// SIGTERM; the exit status, or an error if it did not exit within 2 s.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.child.try_wait()? {
            bail!(
                "gatescope had already exited ({st}); stderr:\n{}",
                self.stderr()
            );
        }
        util::signal(self.pid(), libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "gatescope did not exit within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Agent::stop`] and require exit status 0.
    pub fn stop_ok(&mut self) -> Result<()> {
        let st = self.stop()?;
        ensure!(
            st.success(),
            "gatescope exited with {st} after SIGTERM; stderr:\n{}",
            self.stderr()
        );
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run gatescope (or `wrapper... gatescope`) with `args` to completion; it must exit
/// within `timeout`. Returns (status, stderr).
pub fn run_to_exit(
    wrapper: &[&str],
    args: &[String],
    timeout: Duration,
) -> Result<(ExitStatus, String)> {
    run_bin_to_exit(&gatescope_bin()?, wrapper, args, timeout)
}

/// Like [`run_to_exit`] with an explicit binary path.
pub fn run_bin_to_exit(
    bin: &std::path::Path,
    wrapper: &[&str],
    args: &[String],
    timeout: Duration,
) -> Result<(ExitStatus, String)> {
    let dir = TempDir::new("agent-run")?;
    let err_path = dir.path().join("stderr.log");
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok((st, std::fs::read_to_string(&err_path).unwrap_or_default()));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "gatescope {} did not exit within {timeout:?}; stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP/1.1 GET (Connection: close); returns (status, body). Handles
/// Content-Length, chunked and read-to-EOF bodies.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("no address for {addr}"))?;
    let resp = http::get(sock, path).with_context(|| format!("GET http://{addr}{path}"))?;
    Ok((
        resp.status,
        String::from_utf8(resp.body).context("body not UTF-8")?,
    ))
}

/// The non-zero samples of a scrape that tell why a count is short: HTTP
/// anomalies, lost or dropped records, and connections still tracked.
fn telling_lines(scrape: &str) -> String {
    const TELLING: [&str; 5] = ["anomal", "lost", "dropped", "tracked", "unparsed"];
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && TELLING.iter().any(|t| l.contains(t)))
        .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
        .collect::<Vec<_>>()
        .join("\n")
}
