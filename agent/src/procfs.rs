//! A read-only view of /proc: the gateway's process tree, the processes
//! running a program by name (`--discover`), and the TCP sockets it listens
//! on. `kernel_targets.rs` seeds the kernel's target maps from it at start and
//! reconciles them with it (missed exits, listen sockets added by a reload);
//! the kernel keeps them current on fork, exec and exit in between.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::sock_diag::Listener;

/// A view of a /proc tree (a different root in tests is possible, but the real
/// /proc is what tests use).
#[derive(Clone, Debug)]
pub struct Proc {
    root: PathBuf,
}

impl Default for Proc {
    fn default() -> Self {
        Proc {
            root: PathBuf::from("/proc"),
        }
    }
}

impl Proc {
    /// A /proc-like tree at `root` (tests).
    #[cfg(test)]
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Proc { root: root.into() }
    }

    /// Live processes (not zombies) whose command name, as in
    /// /proc/PID/comm, is exactly one of `names`, sorted.
    pub fn with_comm(&self, names: &[String]) -> Vec<u32> {
        let mut out = Vec::new();
        if names.is_empty() {
            return out;
        }
        for (pid, stat) in self.stats() {
            if let Some((comm, state)) = comm_state_from_stat(&stat) {
                if !matches!(state, 'Z' | 'X' | 'x') && names.iter().any(|n| n == comm) {
                    out.push(pid);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// True when `pid` is a live process (thread-group leader), not a zombie.
    pub fn is_process(&self, pid: u32) -> bool {
        match fs::read_to_string(self.root.join(pid.to_string()).join("status")) {
            Ok(status) => field(&status, "Tgid:") == Some(pid) && !status.contains("State:\tZ"),
            Err(_) => false,
        }
    }

    /// True when any task (process or thread) with this id exists.
    pub fn task_exists(&self, tid: u32) -> bool {
        self.root.join(tid.to_string()).exists()
    }

    /// Parent pid of every live process.
    pub fn parents(&self) -> HashMap<u32, u32> {
        let mut parents = HashMap::new();
        for (pid, stat) in self.stats() {
            if let Some(ppid) = ppid_from_stat(&stat) {
                parents.insert(pid, ppid);
            }
        }
        parents
    }

    /// Every process's pid and /proc/PID/stat text (processes that vanish
    /// while we look are skipped).
    fn stats(&self) -> impl Iterator<Item = (u32, String)> + '_ {
        fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
                Some((pid, stat))
            })
    }

    /// `roots` and every live descendant of them.
    pub fn with_descendants(&self, roots: &[u32]) -> BTreeSet<u32> {
        let parents = self.parents();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&pid, &ppid) in &parents {
            children.entry(ppid).or_default().push(pid);
        }
        let mut out = BTreeSet::new();
        let mut stack: Vec<u32> = roots.to_vec();
        while let Some(pid) = stack.pop() {
            if out.insert(pid) {
                stack.extend(children.get(&pid).into_iter().flatten());
            }
        }
        out
    }

    /// `pid`'s network namespace (the `net:[inode]` link), `None` when
    /// unreadable.
    /// `/proc/PID` of process `pid`.
    pub fn pid_dir(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    /// The text of `/proc/PID/maps`.
    pub fn maps(&self, pid: u32) -> Option<String> {
        fs::read_to_string(self.pid_dir(pid).join("maps")).ok()
    }

    /// The path of the process's executable, as its own mappings name it.
    pub fn exe(&self, pid: u32) -> Option<String> {
        fs::read_link(self.pid_dir(pid).join("exe")).ok().map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        })
    }

    /// The inode of `pid`'s network namespace: what the kernel's
    /// `net->ns.inum` holds, so the programs' keys and ours agree.
    pub fn net_inode(&self, pid: u32) -> Option<u32> {
        let meta = fs::metadata(self.root.join(pid.to_string()).join("ns/net")).ok()?;
        u32::try_from(meta.ino()).ok()
    }

    pub fn net_namespace(&self, pid: u32) -> Option<PathBuf> {
        fs::read_link(self.root.join(pid.to_string()).join("ns/net")).ok()
    }

    /// TCP sockets in LISTEN state held open by `pid`, from its own network
    /// namespace's view (/proc/PID/net/tcp{,6}, or the kernel's socket
    /// diagnostics when that namespace is the agent's).
    pub fn listening_sockets(&self, pid: u32) -> Vec<SocketAddr> {
        let dir = self.root.join(pid.to_string());
        let inodes = socket_inodes(&dir.join("fd"));
        if inodes.is_empty() {
            return Vec::new();
        }
        self.listeners(&dir)
            .into_iter()
            .filter(|l| inodes.contains(&l.inode))
            .map(|l| l.addr)
            .collect()
    }

    /// Connections waiting in the accept queues of the LISTEN sockets of
    /// `pid`'s network namespace: one (local port, queue length) per
    /// listener (SO_REUSEPORT gives each its own queue). A namespace that
    /// cannot be read gives nothing.
    pub fn accept_queues(&self, pid: u32) -> Vec<(u16, u32)> {
        let dir = self.root.join(pid.to_string());
        self.listeners(&dir)
            .iter()
            .map(|l| (l.addr.port(), l.queued))
            .collect()
    }

    /// Every LISTEN socket of the network namespace of the process at
    /// `dir`. In the agent's own namespace (the usual case: the host's, or
    /// the gateway's pod with the agent as a sidecar) from the kernel's
    /// socket diagnostics, far more cheaply (sock_diag.rs: /proc walks the
    /// whole established hash); elsewhere, or when they fail, from
    /// /proc/PID/net/tcp{,6}.
    fn listeners(&self, dir: &Path) -> Vec<Listener> {
        if self.shares_net_ns(dir) {
            if let Ok(all) = crate::sock_diag::listeners() {
                return all;
            }
        }
        ["net/tcp", "net/tcp6"]
            .iter()
            .filter_map(|table| fs::read_to_string(dir.join(table)).ok())
            .flat_map(|text| parse_listeners(&text))
            .collect()
    }

    /// Whether the process at `dir` is in the agent's network namespace.
    fn shares_net_ns(&self, dir: &Path) -> bool {
        let ns = |p: PathBuf| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        match (ns(dir.join("ns/net")), ns(self.root.join("self/ns/net"))) {
            (Some(theirs), Some(ours)) => theirs == ours,
            _ => false,
        }
    }
}

fn field(status: &str, name: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// The ppid is the 2nd field after the command, which is in parentheses and
/// may itself contain spaces or parentheses.
fn ppid_from_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The command (between the first `(` and the last `)`: it may itself hold
/// spaces and parentheses) and the state letter after it.
fn comm_state_from_stat(stat: &str) -> Option<(&str, char)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let state = stat[close + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()?;
    Some((comm, state))
}

fn socket_inodes(fd_dir: &Path) -> HashSet<u64> {
    let Ok(dir) = fs::read_dir(fd_dir) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Every LISTEN row (state 0A) of /proc/net/tcp or tcp6: address, inode,
/// and `rx_queue`, which for a listener is its accept queue's length
/// (`sk_ack_backlog`).
pub fn parse_listeners(table: &str) -> Vec<Listener> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                return None;
            }
            let (_, rx) = cols[4].split_once(':')?;
            Some(Listener {
                addr: parse_hex_addr(cols[1])?,
                inode: cols[9].parse().ok()?,
                queued: u32::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` -> 127.0.0.1:8080. The kernel prints each 32-bit word of
/// the address in host byte order (x86_64: little endian).
fn parse_hex_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..addr.len() / 8)
        .map(|i| {
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accept_queues_of_listeners_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:0000001A 00:00000000 00000000     0        0 12346 1 0 100 0 0 10 0\n\
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12347 1 0 100 0 0 10 0\n";
        let queues: Vec<(u16, u32)> = parse_listeners(table)
            .iter()
            .map(|l| (l.addr.port(), l.queued))
            .collect();
        assert_eq!(queues, vec![(8080, 3), (80, 0)]);
    }

    #[test]
    fn parses_proc_net_tcp_listeners() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0 100 0 0 10 0\n";
        let pairs = |t: &str| -> Vec<(SocketAddr, u64)> {
            parse_listeners(t)
                .iter()
                .map(|l| (l.addr, l.inode))
                .collect()
        };
        assert_eq!(pairs(v4), vec![("127.0.0.1:8080".parse().unwrap(), 12345)]);
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n\
   1: 00000000000000000000000001000000:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1 0 100 0 0 10 0\n";
        assert_eq!(
            pairs(v6),
            vec![
                ("[::]:80".parse().unwrap(), 777),
                ("[::1]:81".parse().unwrap(), 778)
            ]
        );
    }

    #[test]
    fn ppid_survives_odd_command_names() {
        assert_eq!(ppid_from_stat("42 (nginx: worker) S 41 42 42 0"), Some(41));
        assert_eq!(ppid_from_stat("42 (a) b) R 7 1"), Some(7));
    }

    #[test]
    fn comm_and_state_survive_odd_command_names() {
        assert_eq!(
            comm_state_from_stat("42 (nginx) S 41 42 42 0"),
            Some(("nginx", 'S'))
        );
        assert_eq!(
            comm_state_from_stat("42 (a) b (c) Z 7 1"),
            Some(("a) b (c", 'Z'))
        );
        assert_eq!(comm_state_from_stat("42 nginx S"), None);
    }

    /// A fake /proc: matching is exact (no prefixes), zombies and non-pid
    /// entries are skipped.
    #[test]
    fn finds_processes_by_comm_in_a_proc_tree() {
        let root = std::env::temp_dir().join(format!("gatescope-proc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (pid, stat) in [
            ("10", "10 (nginx) S 1 10 10 0"),
            ("11", "11 (nginx) S 10 10 10 0"),
            ("12", "12 (nginx) Z 10 10 10 0"),
            ("13", "13 (nginx-debug) S 1 13 13 0"),
            ("14", "14 (ngin) S 1 14 14 0"),
            ("15", "15 (envoy) R 1 15 15 0"),
            ("self", "10 (nginx) S 1 10 10 0"),
        ] {
            fs::create_dir_all(root.join(pid)).unwrap();
            fs::write(root.join(pid).join("stat"), stat).unwrap();
        }
        fs::create_dir_all(root.join("16")).unwrap(); // exited: no stat any more
        let proc = Proc::at(&root);
        assert_eq!(proc.with_comm(&["nginx".into()]), [10, 11]);
        assert_eq!(
            proc.with_comm(&["envoy".into(), "nginx-debug".into()]),
            [13, 15]
        );
        assert_eq!(proc.with_comm(&["gin".into()]), Vec::<u32>::new());
        assert_eq!(proc.with_comm(&[]), Vec::<u32>::new());
        fs::remove_dir_all(&root).unwrap();
    }

    /// A real process running a uniquely named copy of `sleep`: found by its
    /// comm while it lives, gone once it exited.
    #[test]
    fn finds_a_real_process_by_comm() {
        let dir = std::env::temp_dir().join(format!("gatescope-comm-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let name = format!("gsu{}", std::process::id());
        let bin = dir.join(&name);
        fs::copy("/bin/sleep", &bin).unwrap();
        // A child forked by a concurrent test may hold the copy's write
        // descriptor until it execs (ETXTBSY): retry briefly.
        let mut child = (0..50)
            .find_map(
                |_| match std::process::Command::new(&bin).arg("5").spawn() {
                    Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        None
                    }
                    other => Some(other.unwrap()),
                },
            )
            .expect("the copy stayed busy");
        let proc = Proc::default();
        assert_eq!(proc.with_comm(std::slice::from_ref(&name)), [child.id()]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(proc.with_comm(&[name]).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_own_listener_and_children_in_real_proc() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = std::process::id();
        let proc = Proc::default();
        assert!(proc
            .listening_sockets(me)
            .contains(&listener.local_addr().unwrap()));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = proc.with_descendants(&[me]);
        assert!(tree.contains(&me) && tree.contains(&child.id()), "{tree:?}");
        assert!(proc.is_process(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!proc.is_process(child.id()));
    }
}
