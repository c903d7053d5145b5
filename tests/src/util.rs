//! Small helpers shared by the harness: temp dirs, free ports, polling, signals.

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A directory removed (recursively) on drop, unless `GATESCOPE_KEEP_TMP` is set.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "gatescope-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("GATESCOPE_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Poll `f` every 20 ms until it returns `Some`, or fail after `timeout` with `what`.
pub fn poll<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `sig` to `pid`; an already gone process is not an error.
pub fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("kill({pid}, {sig})"));
        }
    }
    Ok(())
}

/// Parsed fields of /proc/<pid>/stat that the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<ProcStat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let pid = s[..open].trim().parse().ok()?;
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
    })
}

/// Live (not zombie, not dead) processes whose parent is `ppid`, sorted.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(st) = proc_stat(pid) {
            if st.ppid == ppid && is_live_state(st.state) {
                out.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}

/// True while `pid` exists and is neither a zombie nor dead.
pub fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| is_live_state(s.state))
}

fn is_live_state(state: char) -> bool {
    !matches!(state, 'Z' | 'X' | 'x')
}

/// True if something listens on 127.0.0.1:`port` (TCP, from /proc/net/tcp).
pub fn is_listening_v4_loopback(port: u16) -> bool {
    let Ok(tcp) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = format!("0100007F:{port:04X}");
    tcp.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let _sl = f.next();
        let local = f.next();
        let _rem = f.next();
        let st = f.next();
        local == Some(want.as_str()) && st == Some("0A")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = "1234 (nginx: worker (x) ) S 1200 1234 1234 0 -1 4194560 0 0";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.pid, 1234);
        assert_eq!(st.comm, "nginx: worker (x) ");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1200);
    }
}
