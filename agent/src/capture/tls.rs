//! Where the OpenSSL uprobes (ebpf/src/tls.rs) go: every libssl a target
//! process maps, and an executable that carries OpenSSL itself (static
//! builds export `SSL_write` among their own dynamic symbols).
//!
//! Libraries are found from `/proc/PID/maps`, not the loader cache: Kong
//! ships its own OpenSSL under its prefix (RPATH), and a container's
//! libraries are seen through `/proc/PID/root`. A library replaced on disk
//! since it was mapped (an upgrade) is opened through `/proc/PID/map_files`.
//! Each file is attached once, by device and inode, for all processes: the
//! programs keep to targets themselves, so workers forked by a reload are
//! covered without attaching again.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use aya::{
    programs::{
        uprobe::{UProbeLink, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use tracing::{debug, info, warn};

use super::{Capture, Link};
use crate::procfs::Proc;

/// Attaches the OpenSSL probes to what the target processes map, as they
/// come (run once a second by the pipeline).
pub struct TlsProbes {
    capture: Arc<Mutex<Capture>>,
    proc: Proc,
    attached: Attached,
    /// Processes logged as mapping no OpenSSL, once each.
    told: HashSet<u32>,
}

impl TlsProbes {
    pub fn new(capture: Arc<Mutex<Capture>>, proc: Proc) -> Self {
        TlsProbes {
            capture,
            proc,
            attached: Attached::default(),
            told: HashSet::new(),
        }
    }

    /// Looks at the target processes `live` that are due (new ones, and all
    /// of them now and then) and attaches to the OpenSSL files they map
    /// that were not tried before. Returns the capture's
    /// `programs_attached` after it.
    pub fn scan(&mut self, live: &[u32]) -> Option<usize> {
        self.scan_due(live);
        self.capture.lock().ok().map(|c| c.programs_attached)
    }

    fn scan_due(&mut self, live: &[u32]) {
        for pid in self.attached.due(live) {
            let Some(maps) = self.proc.maps(pid) else {
                continue;
            };
            let exe = self.proc.exe(pid);
            let files = candidates(&maps, exe.as_deref(), &self.proc.pid_dir(pid));
            let has_libssl = files.iter().any(|m| Some(&m.path) != exe.as_ref());
            for m in &files {
                if !self.attached.first_time(m) {
                    continue;
                }
                let is_exe = Some(&m.path) == exe.as_ref();
                let result = match self.capture.lock() {
                    Ok(mut capture) => capture.attach_tls(&m.open),
                    Err(_) => return,
                };
                self.attached.attached(m, result.is_ok());
                match result {
                    Ok(n) => info!(
                        pid,
                        file = %m.path,
                        probes = n,
                        "TLS: plaintext taken at OpenSSL's SSL_read/SSL_write"
                    ),
                    // An executable without OpenSSL of its own: the usual case.
                    Err(e) if is_exe => debug!(pid, file = %m.path, "no OpenSSL inside: {e}"),
                    Err(e) => warn!(
                        pid,
                        file = %m.path,
                        "TLS: cannot attach to this OpenSSL ({e}); its TLS traffic is counted as bytes only"
                    ),
                }
            }
            let covered = self.attached.covers(pid, &files);
            if !covered && self.told.insert(pid) {
                let why = if has_libssl {
                    "the probes did not attach to the libssl it maps"
                } else {
                    "it maps no libssl, and its executable exports no SSL_read"
                };
                info!(
                    pid,
                    "TLS: no plaintext from this target ({why}); its TLS traffic is counted as \
                     bytes only (gatescope_*_tls_unparsed_bytes_total)"
                );
            }
        }
        self.told.retain(|pid| live.contains(pid));
    }

    /// Target processes looked at whose OpenSSL has no probes (none mapped,
    /// or the probes did not attach): their TLS is not decrypted. A process
    /// not looked at yet (at most a second old) is not among them.
    pub fn blind(&self) -> Vec<u32> {
        self.attached.blind()
    }
}

/// The OpenSSL entry probes (ebpf/src/tls.rs) and the functions they go on;
/// [`TLS_RETURN`] goes on the return of each. Those marked optional may be
/// missing (`_ex` arrived in OpenSSL 1.1.1).
const TLS_ENTRIES: &[(&str, &str, bool)] = &[
    ("ssl_read", "SSL_read", true),
    ("ssl_write", "SSL_write", true),
    ("ssl_read_ex", "SSL_read_ex", false),
    ("ssl_write_ex", "SSL_write_ex", false),
    ("ssl_do_handshake", "SSL_do_handshake", false),
];
const TLS_RETURN: &str = "ssl_ret";

/// Loads the OpenSSL probes; whether they loaded (said in a warning if not:
/// TLS traffic is then counted as bytes only).
pub(crate) fn load(ebpf: &mut Ebpf) -> bool {
    let mut load = |name: &str| -> anyhow::Result<()> {
        let prog: &mut UProbe = ebpf
            .program_mut(name)
            .context("program missing from the object")?
            .try_into()?;
        prog.load()?;
        Ok(())
    };
    for name in TLS_ENTRIES
        .iter()
        .map(|(p, ..)| *p)
        .chain(std::iter::once(TLS_RETURN))
    {
        if let Err(e) = load(name) {
            warn!("TLS capture off: the OpenSSL probe {name} does not load ({e:#}); TLS traffic is counted as bytes only");
            return false;
        }
    }
    true
}

impl Capture {
    /// Attaches the OpenSSL probes to the file at `path` (a libssl, or an
    /// executable with OpenSSL inside); how many attachments were made. An
    /// error if the file has no `SSL_read`/`SSL_write` (nothing is left
    /// attached then).
    pub fn attach_tls(&mut self, path: &Path) -> anyhow::Result<usize> {
        anyhow::ensure!(self.tls, "TLS capture is off");
        let (links, linked) = attach_file(&mut self.ebpf, path)?;
        let n = links.len();
        self.links.extend(links.into_iter().map(Link::UProbe));
        // `programs_attached` counts programs, not attachments.
        for name in linked {
            if self.tls_linked.insert(name) {
                self.programs_attached += 1;
            }
        }
        Ok(n)
    }
}

/// Attaches the loaded OpenSSL probes (see [`load`]) to the file at `path`:
/// the attachments (dropping one detaches it) and the programs attached. An
/// error if the file has no `SSL_read`/`SSL_write`; nothing stays attached
/// then. `gatescope check` uses it too, dropping the links at once.
pub(crate) fn attach_file(
    ebpf: &mut Ebpf,
    path: &Path,
) -> anyhow::Result<(Vec<UProbeLink>, Vec<&'static str>)> {
    let mut new = Vec::new();
    let mut linked = Vec::new();
    for &(program, function, required) in TLS_ENTRIES {
        for (prog_name, ret) in [(program, false), (TLS_RETURN, true)] {
            let prog: &mut UProbe = ebpf
                .program_mut(prog_name)
                .context("program missing from the object")?
                .try_into()?;
            match prog
                .attach(function, path, UProbeScope::AllProcesses)
                .and_then(|id| prog.take_link(id))
            {
                Ok(link) => {
                    new.push(link);
                    linked.push(prog_name);
                }
                Err(e) if required => {
                    // Drops what this file got so far, detaching it.
                    drop(new);
                    return Err(
                        anyhow::Error::from(e).context(format!("{function} (return: {ret})"))
                    );
                }
                Err(e) => {
                    debug!(function, "not attached: {e}");
                    break;
                }
            }
        }
    }
    Ok((new, linked))
}

/// A file mapped executable by a process that may hold OpenSSL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The path as the process sees it.
    pub path: String,
    /// Where the agent opens it (through the process's root, or its
    /// `map_files` entry when the file was replaced since).
    pub open: PathBuf,
    pub dev: String,
    pub inode: u64,
}

/// The executable mappings of `/proc/PID/maps` text (`maps`) worth probing
/// for OpenSSL: libssl itself and the program's executable (which may carry
/// OpenSSL statically), each once. `proc_pid` is the process's `/proc/PID`.
pub fn candidates(maps: &str, exe: Option<&str>, proc_pid: &Path) -> Vec<Mapped> {
    let mut out: Vec<Mapped> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(_offset), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let rest: Vec<&str> = fields.collect();
        if !perms.contains('x') || rest.is_empty() {
            continue;
        }
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        let deleted = rest.last() == Some(&"(deleted)");
        let path = if deleted {
            rest[..rest.len() - 1].join(" ")
        } else {
            rest.join(" ")
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        let wanted = name.starts_with("libssl.so") || exe.is_some_and(|e| e == path);
        if inode == 0 || !path.starts_with('/') || !wanted {
            continue;
        }
        if out.iter().any(|m| m.dev == dev && m.inode == inode) {
            continue;
        }
        let open = if deleted {
            proc_pid.join("map_files").join(range)
        } else {
            proc_pid.join("root").join(path.trim_start_matches('/'))
        };
        out.push(Mapped {
            path,
            open,
            dev: dev.to_owned(),
            inode,
        });
    }
    out
}

/// What was attached where, so that each file is attached once.
#[derive(Debug, Default)]
pub struct Attached {
    /// (device, inode) of files tried, and whether the probes attached.
    tried: HashMap<(String, u64), bool>,
    /// Processes looked at, and whether a file they map has the probes.
    covered: HashMap<u32, bool>,
    /// Processes looked at; a process maps a new libssl rarely, so each is
    /// looked at when first seen and again every [`RESCAN_ROUNDS`] rounds.
    seen: HashSet<u32>,
    round: u64,
}

/// See [`Attached::seen`].
const RESCAN_ROUNDS: u64 = 30;

impl Attached {
    /// The processes of `live` to look at this round.
    pub fn due(&mut self, live: &[u32]) -> Vec<u32> {
        self.round += 1;
        let rescan = self.round.is_multiple_of(RESCAN_ROUNDS);
        self.seen.retain(|pid| live.contains(pid));
        self.covered.retain(|pid, _| live.contains(pid));
        live.iter()
            .copied()
            .filter(|pid| self.seen.insert(*pid) || rescan)
            .collect()
    }

    /// Whether `m` is a file not tried before (and marks it tried, not
    /// attached until [`Attached::attached`] says so).
    pub fn first_time(&mut self, m: &Mapped) -> bool {
        let key = (m.dev.clone(), m.inode);
        if self.tried.contains_key(&key) {
            return false;
        }
        self.tried.insert(key, false);
        true
    }

    /// What came of attaching to `m`.
    pub fn attached(&mut self, m: &Mapped, ok: bool) {
        self.tried.insert((m.dev.clone(), m.inode), ok);
    }

    /// Whether one of `files`, which process `pid` maps, has the probes;
    /// remembered for [`Attached::blind`].
    pub fn covers(&mut self, pid: u32, files: &[Mapped]) -> bool {
        let ok = files.iter().any(|m| {
            self.tried
                .get(&(m.dev.clone(), m.inode))
                .copied()
                .unwrap_or(false)
        });
        self.covered.insert(pid, ok);
        ok
    }

    /// The processes looked at that no probed file covers, in order.
    pub fn blind(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .covered
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(pid, _)| *pid)
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d4c0a00000-55d4c0a2a000 r--p 00000000 fd:01 1234 /usr/sbin/nginx
55d4c0a2a000-55d4c0b00000 r-xp 0002a000 fd:01 1234 /usr/sbin/nginx
7f1000000000-7f1000020000 r--p 00000000 fd:01 777 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1000020000-7f1000080000 r-xp 00020000 fd:01 777 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f2000020000-7f2000080000 r-xp 00020000 fd:01 888 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f3000020000-7f3000080000 r-xp 00020000 fd:01 999 /usr/local/kong/lib/libssl.so.1.1 (deleted)
7f4000000000-7f4000001000 r-xp 00000000 00:00 0 [vdso]
";

    #[test]
    fn libssl_and_the_executable_once_each() {
        let got = candidates(MAPS, Some("/usr/sbin/nginx"), Path::new("/proc/42"));
        let paths: Vec<(&str, &Path)> = got
            .iter()
            .map(|m| (m.path.as_str(), m.open.as_path()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("/usr/sbin/nginx", Path::new("/proc/42/root/usr/sbin/nginx")),
                (
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                    Path::new("/proc/42/root/usr/lib/x86_64-linux-gnu/libssl.so.3")
                ),
                (
                    "/usr/local/kong/lib/libssl.so.1.1",
                    Path::new("/proc/42/map_files/7f3000020000-7f3000080000")
                ),
            ]
        );
        assert_eq!(got[1].inode, 777);
    }

    #[test]
    fn each_file_is_tried_once_and_processes_when_new() {
        let mut a = Attached::default();
        let m = candidates(MAPS, None, Path::new("/proc/42"));
        assert!(a.first_time(&m[0]));
        assert!(!a.first_time(&m[0]));
        assert_eq!(a.due(&[1, 2]), vec![1, 2]);
        assert_eq!(a.due(&[1, 2, 3]), vec![3]);
        let mut later = Vec::new();
        for _ in 0..RESCAN_ROUNDS {
            later = a.due(&[1, 2, 3]);
            if !later.is_empty() {
                break;
            }
        }
        assert_eq!(
            later,
            vec![1, 2, 3],
            "rescanned every {RESCAN_ROUNDS} rounds"
        );
        // 1 maps the file that attached, 2 only the one that did not, 3
        // nothing: 2 and 3 are blind until they go.
        a.attached(&m[0], true);
        assert!(a.first_time(&m[1]));
        assert!(a.covers(1, &m[..2]));
        assert!(!a.covers(2, &m[1..2]));
        assert!(!a.covers(3, &[]));
        assert_eq!(a.blind(), vec![2, 3]);
        a.due(&[1, 3]);
        assert_eq!(a.blind(), vec![3]);
    }
}
