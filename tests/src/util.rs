//! Small helpers shared by the harness: temp dirs, free ports, polling, signals.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A directory removed (recursively) on drop, unless `GATESCOPE_KEEP_TMP` is set or
/// [`TempDir::keep`] was called.
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "gatescope-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the directory in place (its logs explain a failure).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep && std::env::var_os("GATESCOPE_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A TCP port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> Result<u16> {
    // Any address: free for a listener on 0.0.0.0 too.
    let l = TcpListener::bind("0.0.0.0:0").context("binding 0.0.0.0:0")?;
    Ok(l.local_addr()?.port())
}

/// The last `n` lines of `text` (for failure messages).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
    is_listening_v4("127.0.0.1", port)
}

/// True if something listens on IPv4 `host`:`port` (TCP, from /proc/net/tcp).
pub fn is_listening_v4(host: &str, port: u16) -> bool {
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| is_listening(std::net::IpAddr::V4(ip), port))
}

/// True if something listens on `ip`:`port` (TCP, from /proc/net/tcp or
/// /proc/net/tcp6).
pub fn is_listening(ip: std::net::IpAddr, port: u16) -> bool {
    is_listening_seen_by("self", ip, port)
}

/// [`is_listening`] in the network namespace of process `pid` ("self": the
/// test's own), from /proc/PID/net: a gateway in another namespace listens
/// where the test's /proc/net does not show it.
pub fn is_listening_seen_by(pid: &str, ip: std::net::IpAddr, port: u16) -> bool {
    // /proc shows an address as native-endian u32 words in hex.
    let (file, addr) = match ip {
        std::net::IpAddr::V4(ip) => (
            "net/tcp",
            format!("{:08X}", u32::from_ne_bytes(ip.octets())),
        ),
        std::net::IpAddr::V6(ip) => (
            "net/tcp6",
            ip.octets().chunks(4).fold(String::new(), |mut out, w| {
                let word = u32::from_ne_bytes(w.try_into().expect("4 bytes"));
                let _ = write!(out, "{word:08X}");
                out
            }),
        ),
    };
    let Ok(tcp) = std::fs::read_to_string(format!("/proc/{pid}/{file}")) else {
        return false;
    };
    let want = format!("{addr}:{port:04X}");
    tcp.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let _sl = f.next();
        let local = f.next();
        let _rem = f.next();
        let st = f.next();
        local == Some(want.as_str()) && st == Some("0A")
    })
}

/// Make this process a child subreaper (or stop being one): orphaned
/// descendants (a daemonized nginx, an upgraded nginx master) are re-parented
/// to it instead of to init, and [`reap`] can collect them.
pub fn set_child_subreaper(on: bool) -> Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_CHILD_SUBREAPER,
            libc::c_ulong::from(on),
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_CHILD_SUBREAPER)");
    }
    Ok(())
}

/// Collect `pid` if it is an exited child of this process (no-op otherwise).
pub fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid writes only into `status`.
    unsafe { libc::waitpid(pid as libc::pid_t, &raw mut status, libc::WNOHANG) };
}

/// Raise this process's RLIMIT_NOFILE (soft and hard) to `n`; where raising the
/// hard limit is not permitted (no CAP_SYS_RESOURCE, e.g. in a container), raise
/// the soft limit to the hard one. Returns the soft limit now in force.
pub fn raise_nofile(n: u64) -> Result<u64> {
    let set = |cur: u64, max: u64| {
        let lim = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        (unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } == 0)
            .then_some(())
            .ok_or_else(std::io::Error::last_os_error)
    };
    match set(n, n) {
        Ok(()) => Ok(n),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes only into `lim`.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
                return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
            }
            let hard: u64 = lim.rlim_max;
            set(hard, hard).with_context(|| format!("setrlimit(RLIMIT_NOFILE, {hard})"))?;
            Ok(hard)
        }
        Err(e) => Err(e).with_context(|| format!("setrlimit(RLIMIT_NOFILE, {n})")),
    }
}

/// The hard RLIMIT_NOFILE of this process (inherited by the processes it starts).
pub fn nofile_hard_limit() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    Ok(lim.rlim_max)
}

/// A TCP connection to `dst` from `src` (port chosen by the kernel): bind before
/// connect, so several loopback source addresses multiply the ephemeral ports.
pub fn connect_from(
    src: std::net::Ipv4Addr,
    dst: std::net::SocketAddrV4,
) -> Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let sin = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a fd we own; the fd is handed to TcpStream
    // (which closes it) or closed here on error.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket()");
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let a = sin(std::net::SocketAddrV4::new(src, 0));
        if libc::bind(fd, (&raw const a).cast::<libc::sockaddr>(), len) != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("bind({src}:0)"));
        }
        let d = sin(dst);
        if libc::connect(fd, (&raw const d).cast::<libc::sockaddr>(), len) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("connect({src} -> {dst})"));
        }
        Ok(stream)
    }
}

/// VmRSS of `pid` in KiB, from /proc/<pid>/status.
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A KiB field of /proc/<pid>/status (`VmRSS`, `RssAnon`, `RssFile`, ...).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    st.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Inodes of the sockets `pid` holds open (from /proc/<pid>/fd).
pub fn socket_inodes(pid: u32) -> std::collections::BTreeSet<u64> {
    let mut out = std::collections::BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in rd.flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            if let Some(i) = t
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
            {
                out.insert(i);
            }
        }
    }
    out
}

/// The inode of the IPv4 TCP socket with local address `local` and peer `remote`
/// (from /proc/net/tcp).
pub fn tcp_inode(local: std::net::SocketAddrV4, remote: std::net::SocketAddrV4) -> Option<u64> {
    let hex = |a: std::net::SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )
    };
    let (l, r) = (hex(local), hex(remote));
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    tcp.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == l && f[2] == r)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// Close with a reset: SO_LINGER on with a zero timeout, so close() sends a
/// RST instead of a FIN.
pub fn set_linger_zero(fd: std::os::fd::RawFd) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a socket descriptor and a linger struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    Ok(())
}

/// What a non-blocking peek at a connection sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Open, nothing to read.
    Open,
    /// The peer closed its side (EOF), or the connection failed.
    Closed,
    /// This many bytes are waiting.
    Data(usize),
}

/// Peeks at `s` without blocking or consuming anything.
pub fn peek(s: &std::net::TcpStream) -> Result<Peek> {
    s.set_nonblocking(true)?;
    let mut b = [0u8; 1];
    let r = s.peek(&mut b);
    s.set_nonblocking(false)?;
    Ok(match r {
        Ok(0) => Peek::Closed,
        Ok(n) => Peek::Data(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Peek::Open,
        Err(_) => Peek::Closed,
    })
}

/// `ss`'s count of TCP sockets by state with local port `port`, for failure
/// messages.
pub fn sockets_on_port(port: u16) -> String {
    let out = std::process::Command::new("ss")
        .args(["-Htan", &format!("( sport = :{port} )")])
        .output();
    match out {
        Ok(out) => {
            let mut by_state = std::collections::BTreeMap::<String, usize>::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(state) = line.split_whitespace().next() {
                    *by_state.entry(state.to_owned()).or_default() += 1;
                }
            }
            format!("{by_state:?}")
        }
        Err(e) => format!("ss: {e}"),
    }
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
