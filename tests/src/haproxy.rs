//! A real HAProxy (Debian's 2.6) as a reverse proxy in front of one upstream,
//! in a single process (`-db`) or master-worker (`-W -db`: the master binds
//! the listeners, forks the worker and closes its own copies).
//!
//! The oracle is HAProxy's own access log, one line per HTTP transaction,
//! sent when the transaction ends to a unix datagram socket the test reads
//! (`log <path> format raw`: no file shared by the master, the worker and
//! its threads). Lines were once lost under load: HAProxy drops a line it
//! cannot send at once, and the socket queued only `net.unix.max_dgram_qlen`
//! (10) datagrams; the socket is now made with a deep queue (see
//! `LogReceiver::bind`).

use crate::nginx::RenamedBinary;
use crate::util::{self, TempDir};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";

/// Requests under this path get `403` from HAProxy itself (`http-request
/// return`), without an upstream attempt.
pub const DENY_PREFIX: &str = "/deny";

/// How HAProxy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `haproxy -db -f conf`: one process holds listeners and connections.
    Single,
    /// `haproxy -W -db -f conf`: master and one worker.
    MasterWorker,
    /// As [`Mode::Single`], with `option splice-request` and
    /// `option splice-response`: bodies move socket -> pipe -> socket with
    /// splice(2), past the `sock_recv_length` tracepoint.
    Splice,
}

/// One line of the access log: `%ST %HM %HU %U %B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub status: u16,
    pub method: String,
    pub uri: String,
    /// Request bytes read from the client (`%U`).
    pub bytes_in: u64,
    /// Response bytes sent to the client (`%B`).
    pub bytes_out: u64,
}

/// A copy of HAProxy's binary under a name unique to the test, so that
/// `--discover` finds this test's processes only (the process's comm is the
/// file name). Removed on drop.
pub fn renamed_binary() -> Result<RenamedBinary> {
    RenamedBinary::of(Path::new(HAPROXY_BIN), "hap")
}

pub struct Haproxy {
    child: Child,
    mode: Mode,
    dir: TempDir,
    listen_port: u16,
    log: LogReceiver,
}

/// The unix datagram socket HAProxy logs to, read by a thread of its own
/// (so HAProxy's non-blocking sends never find the queue full).
struct LogReceiver {
    path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl LogReceiver {
    fn bind(path: &Path) -> Result<Self> {
        // A unix datagram socket queues net.unix.max_dgram_qlen datagrams
        // (10 by default), read when the socket is created; HAProxy drops a
        // log line it cannot send at once. Under CI's load the reader thread
        // fell behind a burst and lines were lost (3 in ~30 runs locally,
        // and in CI): the queue is made deep for this socket only, and the
        // host's setting put back.
        const QLEN: &str = "/proc/sys/net/unix/max_dgram_qlen";
        let old = std::fs::read_to_string(QLEN).with_context(|| format!("reading {QLEN}"))?;
        std::fs::write(QLEN, "4096").with_context(|| format!("writing {QLEN} (run as root)"))?;
        let sock = UnixDatagram::bind(path);
        std::fs::write(QLEN, old.trim()).with_context(|| format!("restoring {QLEN}"))?;
        let sock = sock.with_context(|| format!("binding {}", path.display()))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (lines, stop) = (lines.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let line = String::from_utf8_lossy(&buf[..n]);
                        lines
                            .lock()
                            .unwrap()
                            .push(line.trim_end_matches('\n').to_owned());
                    }
                }
            })
        };
        Ok(Self {
            path: path.to_owned(),
            lines,
            stop,
            reader: Some(reader),
        })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for LogReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Haproxy {
    /// Listen on 127.0.0.1:`listen_port`, forward to 127.0.0.1:`upstream_port`
    /// (HTTP keep-alive both sides; idle upstream connections kept for 60 s
    /// so the upstream's open count holds still during a test); wait until it
    /// listens and, in master-worker mode, its worker runs.
    pub fn start(mode: Mode, listen_port: u16, upstream_port: u16) -> Result<Self> {
        Self::start_bin(Path::new(HAPROXY_BIN), mode, listen_port, upstream_port)
    }

    /// [`Haproxy::start`] from another copy of the binary ([`renamed_binary`]).
    pub fn start_bin(bin: &Path, mode: Mode, listen_port: u16, upstream_port: u16) -> Result<Self> {
        ensure!(
            bin.exists(),
            "{} not found (apt-get install haproxy)",
            bin.display()
        );
        let dir = TempDir::new("haproxy")?;
        let log = LogReceiver::bind(&dir.path().join("log.sock"))?;
        let conf = format!(
            r#"global
    log {{sock}} format raw local0 info
    nbthread 2

defaults
    mode http
    log global
    log-format "%ST %HM %HU %U %B"
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
{{splice}}
frontend fe
    bind 127.0.0.1:{listen_port}
    http-request return status 403 content-type text/plain string denied if {{ path_beg {DENY_PREFIX} }}
    default_backend be

backend be
    server up 127.0.0.1:{upstream_port} pool-purge-delay 60s
"#
        );
        let conf_path = dir.path().join("haproxy.cfg");
        let conf = conf
            .replace("{sock}", &log.path.display().to_string())
            .replace(
                "{splice}",
                if mode == Mode::Splice {
                    "    option splice-request\n    option splice-response\n"
                } else {
                    ""
                },
            );
        // The stats socket tells whether HAProxy made pipes (it splices
        // only through them): see [`Haproxy::pipes`].
        let conf = conf.replacen(
            "global\n",
            &format!(
                "global\n    stats socket {}\n",
                dir.path().join("stats.sock").display()
            ),
            1,
        );
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(bin);
        if mode == Mode::MasterWorker {
            cmd.arg("-W");
        }
        let child = cmd
            .arg("-db")
            .arg("-f")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log"))?)
            .stderr(File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .context("spawning haproxy")?;
        let mut hp = Haproxy {
            child,
            mode,
            dir,
            listen_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = hp.child.try_wait()? {
                bail!(
                    "haproxy exited during start-up ({st}):\n{}",
                    hp.diagnostics()
                );
            }
            let workers = hp.worker_pids().len();
            let want = usize::from(mode == Mode::MasterWorker);
            if util::is_listening_v4_loopback(listen_port) && workers == want {
                return Ok(hp);
            }
            if Instant::now() >= deadline {
                bail!(
                    "haproxy did not listen on 127.0.0.1:{listen_port} with {want} workers \
                     within 10 s (workers {workers}):\n{}",
                    hp.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pipes HAProxy has made for splicing (`PipesUsed` + `PipesFree` of
    /// `show info` on its stats socket): more than 0 once it spliced.
    pub fn pipes(&self) -> Result<u64> {
        use std::io::{Read as _, Write as _};
        let path = self.dir.path().join("stats.sock");
        let mut s = std::os::unix::net::UnixStream::connect(&path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        s.write_all(b"show info\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let field = |name: &str| -> Result<u64> {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .with_context(|| format!("no {name} in show info:\n{out}"))?
                .trim()
                .parse()
                .with_context(|| format!("{name} in show info"))
        };
        Ok(field("PipesUsed")? + field("PipesFree")?)
    }

    /// The process started (the master in master-worker mode).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Live children of [`Haproxy::pid`] (the worker in master-worker mode).
    pub fn worker_pids(&self) -> Vec<u32> {
        util::children_of(self.pid())
    }

    /// The process holding the listeners and the connections.
    pub fn serving_pid(&self) -> Result<u32> {
        match self.mode {
            Mode::Single | Mode::Splice => Ok(self.pid()),
            Mode::MasterWorker => match self.worker_pids()[..] {
                [w] => Ok(w),
                ref other => bail!("haproxy workers: {other:?}"),
            },
        }
    }

    /// Every HAProxy process (master and worker, or the single one).
    pub fn process_count(&self) -> usize {
        1 + self.worker_pids().len()
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// "127.0.0.1:<port>", as the agent labels the listener.
    pub fn listen_addr(&self) -> String {
        format!("127.0.0.1:{}", self.listen_port)
    }

    /// The access log's lines (HAProxy's own notices, if any, are not in
    /// its format and are skipped).
    pub fn access_log(&self) -> Result<Vec<LogLine>> {
        Ok(self
            .log
            .lines()
            .iter()
            .filter_map(|l| parse_log_line(l))
            .collect())
    }

    /// Wait until the access log holds at least `n` lines and return them.
    pub fn wait_access_log(&self, n: usize, timeout: Duration) -> Result<Vec<LogLine>> {
        util::poll(timeout, &format!("{n} haproxy log lines"), || {
            let l = self.access_log()?;
            Ok((l.len() >= n).then_some(l))
        })
        .with_context(|| {
            let mut seen: BTreeMap<String, u32> = BTreeMap::new();
            for l in self.access_log().unwrap_or_default() {
                *seen
                    .entry(format!("{} {} {}", l.status, l.method, l.uri))
                    .or_default() += 1;
            }
            format!(
                "{} lines logged: {seen:?}\n{}",
                seen.values().sum::<u32>(),
                self.diagnostics()
            )
        })
    }

    /// Stdout and stderr, for failure messages.
    pub fn diagnostics(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- haproxy stderr ---\n{}\n--- haproxy stdout (tail) ---\n{}\n--- haproxy log (tail) ---\n{}",
            util::tail(&read("stderr.log"), 40),
            util::tail(&read("stdout.log"), 40),
            util::tail(&self.log.lines().join("\n"), 40)
        )
    }

    /// SIGTERM (hard stop of every process), SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let workers = self.worker_pids();
        let _ = util::signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for w in workers {
            if util::is_alive(w) {
                let _ = util::signal(w, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `%ST %HM %HU %U %B`, or `None` for a line in another shape.
pub fn parse_log_line(line: &str) -> Option<LogLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [status, method, uri, bytes_in, bytes_out] = f[..] else {
        return None;
    };
    Some(LogLine {
        status: status.parse().ok()?,
        method: method.to_owned(),
        uri: uri.to_owned(),
        bytes_in: bytes_in.parse().ok()?,
        bytes_out: bytes_out.parse().ok()?,
    })
}

/// Requests per status, as the metrics' `code` label spells them.
pub fn counts_by_status(log: &[LogLine]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for l in log {
        *m.entry(l.status.to_string()).or_insert(0.0) += 1.0;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_log_format() {
        assert_eq!(
            parse_log_line("200 GET /size/10 78 123"),
            Some(LogLine {
                status: 200,
                method: "GET".into(),
                uri: "/size/10".into(),
                bytes_in: 78,
                bytes_out: 123,
            })
        );
        assert_eq!(
            parse_log_line("[NOTICE]   (1) : New worker (2) forked"),
            None
        );
        assert_eq!(parse_log_line("200 GET /x 1"), None);
    }
}
