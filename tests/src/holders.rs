//! Idle client connections by the ten thousand, held by child processes
//! (`src/bin/hold_conns.rs`): one process may hold only RLIMIT_NOFILE
//! descriptors, 20,000 on our machines, where the hard limit cannot be raised
//! (no CAP_SYS_RESOURCE).

use crate::util::TempDir;
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Source addresses per process: each needs a quarter of its connections'
/// ephemeral ports (28,232 per address with Linux's default range).
const SOURCES_PER_PROCESS: usize = 4;

/// Child processes holding idle connections; killed on drop.
pub struct Holders {
    children: Vec<Child>,
    dir: TempDir,
}

impl Holders {
    /// Opens `total` idle connections to `dst` from `ceil(total / per_process)`
    /// processes running `bin` (a test's `env!("CARGO_BIN_EXE_hold_conns")`).
    /// Process i connects from 127.0.1.(4i+1) to 127.0.1.(4i+4), addresses no
    /// other test uses, so TIME_WAIT left by another test does not eat their
    /// ports. Returns once every process has all its connections established.
    pub fn open(
        bin: &Path,
        dst: SocketAddrV4,
        total: usize,
        per_process: usize,
        timeout: Duration,
    ) -> Result<Self> {
        ensure!(per_process > 0, "per_process must be positive");
        let procs = total.div_ceil(per_process);
        ensure!(
            procs * SOURCES_PER_PROCESS < 255,
            "{procs} processes need more than 127.0.1.0/24"
        );
        let mut h = Holders {
            children: Vec::with_capacity(procs),
            dir: TempDir::new("holders")?,
        };
        let (tx, rx) = mpsc::channel();
        for i in 0..procs {
            let count = per_process.min(total - i * per_process);
            let srcs: Vec<String> = (0..SOURCES_PER_PROCESS)
                .map(|j| Ipv4Addr::new(127, 0, 1, (i * SOURCES_PER_PROCESS + j + 1) as u8))
                .map(|a| a.to_string())
                .collect();
            let mut child = Command::new(bin)
                .arg(dst.to_string())
                .arg(count.to_string())
                .arg(srcs.join(","))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(h.stderr_path(i))?)
                .spawn()
                .with_context(|| format!("spawning {}", bin.display()))?;
            let stdout = child.stdout.take().context("no stdout pipe")?;
            h.children.push(child);
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let r = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send((i, count, r.map(|_| line)));
            });
        }
        drop(tx);
        let deadline = Instant::now() + timeout;
        for _ in 0..procs {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((i, count, line)) = rx.recv_timeout(left) else {
                bail!("connections not all open after {timeout:?}");
            };
            let line = line.with_context(|| format!("reading holder {i}"))?;
            ensure!(
                line.trim() == format!("open {count}"),
                "holder {i} said {line:?}; stderr:\n{}",
                h.stderr(i)
            );
        }
        Ok(h)
    }

    fn stderr_path(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("holder-{i}.stderr"))
    }

    fn stderr(&self, i: usize) -> String {
        std::fs::read_to_string(self.stderr_path(i)).unwrap_or_default()
    }

    /// Closes every connection: each process sees its stdin close and exits;
    /// all must exit successfully within 30 s.
    pub fn close(mut self) -> Result<()> {
        for c in &mut self.children {
            drop(c.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..self.children.len() {
            let st = loop {
                if let Some(st) = self.children[i].try_wait()? {
                    break st;
                }
                ensure!(Instant::now() < deadline, "holder {i} did not exit");
                std::thread::sleep(Duration::from_millis(20));
            };
            ensure!(
                st.success(),
                "holder {i} exited with {st}; stderr:\n{}",
                self.stderr(i)
            );
        }
        Ok(())
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
