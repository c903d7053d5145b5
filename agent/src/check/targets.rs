//! `gatescope check --pid PID` / `--discover NAME`: for each target process
//! (with its descendants, as the agent follows them), where its OpenSSL is,
//! whether `SSL_read`/`SSL_write` were found and whether the TLS probes
//! attach. Each file is attached once and detached at once.

use std::{collections::HashMap, fmt::Write as _, fs};

use aya::{Ebpf, EbpfLoader};
use gatescope_common::{EVENTS_DEFAULT_BYTES, MAP_EVENTS, MAP_SCRATCH};

use crate::{
    capture::{
        tls::{attach_file, candidates, load},
        OBJECT,
    },
    procfs::Proc,
};

/// One target process as the TLS capture would see it.
#[derive(Debug, PartialEq, Eq)]
pub struct TargetTls {
    pub pid: u32,
    pub comm: String,
    /// The files worth probing it maps (libssl, its executable), each with
    /// the probes attached or why not.
    pub files: Vec<FileTls>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct FileTls {
    pub path: String,
    /// The process's executable (OpenSSL built in, if it exports `SSL_read`).
    pub exe: bool,
    /// How many probes attach, or why none.
    pub probes: Result<usize, String>,
}

impl TargetTls {
    /// Whether its TLS plaintext would be read.
    fn covered(&self) -> bool {
        self.files.iter().any(|f| f.probes.is_ok())
    }
}

/// The processes `pids` and those named `names`, with their descendants,
/// each looked at; `Err` when the probes cannot be tried at all.
pub fn probe_targets(pids: &[u32], names: &[String]) -> Result<Vec<TargetTls>, String> {
    let proc = Proc::default();
    let mut roots = pids.to_vec();
    roots.extend(proc.with_comm(names));
    let all = proc.with_descendants(&roots);
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_EVENTS, EVENTS_DEFAULT_BYTES)
        .map_max_entries(MAP_SCRATCH, crate::capture::possible_cpus())
        .load(OBJECT)
        .map_err(|e| format!("the object did not load: {e}"))?;
    if !load(&mut ebpf) {
        return Err("the OpenSSL probes do not load (see the uprobe row)".into());
    }
    // By device and inode: each file tried once, as the agent does.
    let mut tried: HashMap<(String, u64), Result<usize, String>> = HashMap::new();
    let mut out = Vec::new();
    for pid in all {
        let Some(maps) = proc.maps(pid) else {
            continue;
        };
        let comm = fs::read_to_string(proc.pid_dir(pid).join("comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default();
        let exe = proc.exe(pid);
        let mut files = Vec::new();
        for m in candidates(&maps, exe.as_deref(), &proc.pid_dir(pid)) {
            let r = tried
                .entry((m.dev.clone(), m.inode))
                .or_insert_with(|| try_attach(&mut ebpf, &m.open))
                .clone();
            let exe = exe.as_deref() == Some(m.path.as_str());
            files.push(FileTls {
                path: m.path,
                exe,
                probes: r,
            });
        }
        out.push(TargetTls { pid, comm, files });
    }
    Ok(out)
}

/// How many probes attach to the file at `path`; they are detached when
/// this returns.
fn try_attach(ebpf: &mut Ebpf, path: &std::path::Path) -> Result<usize, String> {
    attach_file(ebpf, path)
        .map(|(links, _)| links.len())
        .map_err(|e| format!("{e:#}"))
}

/// The section `gatescope check` prints for the targets.
pub fn render(targets: &Result<Vec<TargetTls>, String>) -> String {
    let mut out = String::from("\nTLS per target process (--pid/--discover, with descendants)\n");
    let targets = match targets {
        Ok(t) if t.is_empty() => {
            out.push_str("  no such process\n");
            return out;
        }
        Ok(t) => t,
        Err(why) => {
            let _ = writeln!(out, "  not tried: {why}");
            return out;
        }
    };
    for t in targets {
        let verdict = if t.covered() {
            "TLS plaintext read at OpenSSL"
        } else {
            "TLS counted as bytes only (gatescope_*_tls_unparsed_bytes_total)"
        };
        let _ = writeln!(out, "  pid {} ({}): {verdict}", t.pid, t.comm);
        if t.files.iter().all(|f| f.exe) {
            let _ = writeln!(out, "    no libssl mapped");
        }
        for f in &t.files {
            let path = &f.path;
            let _ = match (&f.probes, f.exe) {
                (Ok(n), _) => writeln!(
                    out,
                    "    {path}: SSL_read/SSL_write found, {n} probes attach"
                ),
                // The usual case: OpenSSL is in a library.
                (Err(_), true) => writeln!(out, "    {path}: no OpenSSL built in"),
                (Err(why), false) => writeln!(out, "    {path}: no probes ({why})"),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_says_where_its_openssl_is_and_what_attached() {
        let t = Ok(vec![
            TargetTls {
                pid: 10,
                comm: "nginx".into(),
                files: vec![
                    FileTls {
                        path: "/usr/sbin/nginx".into(),
                        exe: true,
                        probes: Err("SSL_read (return: false): no such symbol".into()),
                    },
                    FileTls {
                        path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                        exe: false,
                        probes: Ok(10),
                    },
                ],
            },
            TargetTls {
                pid: 11,
                comm: "caddy".into(),
                files: vec![FileTls {
                    path: "/usr/bin/caddy".into(),
                    exe: true,
                    probes: Err("no SSL_read".into()),
                }],
            },
        ]);
        let text = render(&t);
        assert!(
            text.contains("pid 10 (nginx): TLS plaintext read at OpenSSL"),
            "{text}"
        );
        assert!(text.contains(
            "/usr/lib/x86_64-linux-gnu/libssl.so.3: SSL_read/SSL_write found, 10 probes attach"
        ));
        assert!(text.contains("/usr/sbin/nginx: no OpenSSL built in"));
        assert!(text.contains("pid 11 (caddy): TLS counted as bytes only"));
        assert!(text.contains("    no libssl mapped"));
        assert!(render(&Ok(vec![])).contains("no such process"));
    }
}
