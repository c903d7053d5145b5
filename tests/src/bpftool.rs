//! Loaded BPF programs and maps, from `bpftool prog show` and `bpftool map show`.

use anyhow::{ensure, Context, Result};
use std::collections::BTreeSet;
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prog {
    pub id: u32,
    pub kind: String,
    pub name: String,
    /// (comm, pid) of the processes holding the program, if bpftool can tell.
    pub pids: Vec<(String, u32)>,
}

/// All programs currently loaded.
pub fn progs() -> Result<Vec<Prog>> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .context("running bpftool (apt-get install bpftool)")?;
    ensure!(
        out.status.success(),
        "bpftool prog show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// A loaded BPF map, as `bpftool map show` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Map {
    pub id: u32,
    pub kind: String,
    pub name: String,
    pub key_bytes: u64,
    pub value_bytes: u64,
    pub max_entries: u64,
    /// The kernel's own account of the map's memory (`bpf_map_memory_usage`
    /// since Linux 6.4), which is what a memory cgroup is charged.
    pub memlock: u64,
    /// (comm, pid) of the processes holding the map, if bpftool can tell.
    pub pids: Vec<(String, u32)>,
}

/// All maps currently loaded.
pub fn maps() -> Result<Vec<Map>> {
    let out = Command::new("bpftool")
        .args(["map", "show"])
        .output()
        .context("running bpftool (apt-get install bpftool)")?;
    ensure!(
        out.status.success(),
        "bpftool map show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(parse_maps(&String::from_utf8_lossy(&out.stdout)))
}

/// `(comm, pid)` pairs of a `pids gatescope(4242), other(7)` line's tail.
fn parse_pids(p: &str) -> Vec<(String, u32)> {
    let mut pids = Vec::new();
    for item in p.split(',') {
        let item = item.trim();
        if let Some((comm, pid)) = item.strip_suffix(')').and_then(|i| i.rsplit_once('(')) {
            if let Ok(pid) = pid.parse() {
                pids.push((comm.to_string(), pid));
            }
        }
    }
    pids
}

/// `12B` -> 12.
fn bytes(w: Option<&str>) -> u64 {
    w.and_then(|w| w.strip_suffix('B'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default()
}

fn parse_maps(text: &str) -> Vec<Map> {
    let mut maps: Vec<Map> = Vec::new();
    for line in text.lines() {
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            let Some((id, rest)) = line.split_once(':') else {
                continue;
            };
            let Ok(id) = id.parse() else { continue };
            let mut f = rest.split_whitespace();
            let kind = f.next().unwrap_or_default().to_string();
            let mut name = String::new();
            while let Some(w) = f.next() {
                if w == "name" {
                    name = f.next().unwrap_or_default().to_string();
                }
            }
            maps.push(Map {
                id,
                kind,
                name,
                ..Map::default()
            });
        } else if let Some(m) = maps.last_mut() {
            if let Some(p) = line.trim_start().strip_prefix("pids ") {
                m.pids = parse_pids(p);
                continue;
            }
            let mut f = line.split_whitespace();
            while let Some(w) = f.next() {
                match w {
                    "key" => m.key_bytes = bytes(f.next()),
                    "value" => m.value_bytes = bytes(f.next()),
                    "max_entries" => {
                        m.max_entries = f.next().and_then(|n| n.parse().ok()).unwrap_or_default();
                    }
                    "memlock" => m.memlock = bytes(f.next()),
                    _ => {}
                }
            }
        }
    }
    maps
}

/// Ids of the BPF programs `pid` holds through a program or link fd (from
/// /proc/<pid>/fdinfo, whose `prog_id:` line names the program).
pub fn prog_ids_held_by(pid: u32) -> Result<BTreeSet<u32>> {
    ids_held_by(pid, "prog_id:")
}

/// Ids of the BPF maps `pid` holds through a map fd (from /proc/<pid>/fdinfo,
/// whose `map_id:` line names the map).
pub fn map_ids_held_by(pid: u32) -> Result<BTreeSet<u32>> {
    ids_held_by(pid, "map_id:")
}

fn ids_held_by(pid: u32, key: &str) -> Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        for l in text.lines() {
            if let Some(id) = l.strip_prefix(key) {
                if let Ok(id) = id.trim().parse() {
                    ids.insert(id);
                }
            }
        }
    }
    Ok(ids)
}

/// Ids of the BPF programs `pid` has attached through a BPF link (fds whose
/// /proc/<pid>/fdinfo has a `link_id:` line, with the `prog_id:` it links), and the ids
/// of those it holds through a program fd (`prog_type:`, no `link_id:`).
pub fn prog_ids_linked_and_loaded(pid: u32) -> Result<(BTreeSet<u32>, BTreeSet<u32>)> {
    let dir = format!("/proc/{pid}/fdinfo");
    let (mut linked, mut loaded) = (BTreeSet::new(), BTreeSet::new());
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let Some(id) = field("prog_id:").and_then(|v| v.parse().ok()) else {
            continue;
        };
        if field("link_id:").is_some() {
            linked.insert(id);
        } else if field("prog_type:").is_some() {
            loaded.insert(id);
        }
    }
    Ok((linked, loaded))
}

fn parse(text: &str) -> Vec<Prog> {
    let mut progs: Vec<Prog> = Vec::new();
    for line in text.lines() {
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            let Some((id, rest)) = line.split_once(':') else {
                continue;
            };
            let Ok(id) = id.parse() else { continue };
            let mut f = rest.split_whitespace();
            let kind = f.next().unwrap_or_default().to_string();
            let mut name = String::new();
            while let Some(w) = f.next() {
                if w == "name" {
                    name = f.next().unwrap_or_default().to_string();
                }
            }
            progs.push(Prog {
                id,
                kind,
                name,
                pids: Vec::new(),
            });
        } else if let Some(p) = line.trim_start().strip_prefix("pids ") {
            if let Some(last) = progs.last_mut() {
                last.pids = parse_pids(p);
            }
        }
    }
    progs
}

/// The kernel's support of each eBPF program type, from `bpftool feature probe kernel`
/// (which loads a minimal program of each type): name (`kprobe`, `tracing`, …) to
/// available.
pub fn program_types() -> Result<std::collections::BTreeMap<String, bool>> {
    let out = Command::new("bpftool")
        .args(["feature", "probe", "kernel"])
        .output()
        .context("running bpftool (apt-get install bpftool)")?;
    ensure!(
        out.status.success(),
        "bpftool feature probe kernel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let types: std::collections::BTreeMap<String, bool> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("eBPF program_type "))
        .filter_map(|l| {
            if let Some(t) = l.strip_suffix(" is available") {
                Some((t.to_string(), true))
            } else {
                l.strip_suffix(" is NOT available")
                    .map(|t| (t.to_string(), false))
            }
        })
        .collect();
    ensure!(
        !types.is_empty(),
        "no `eBPF program_type` lines in bpftool feature probe kernel:\n{text}"
    );
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_output() {
        let t = "\
12: tracepoint  name sys_enter_acc  tag 0123456789abcdef  gpl
\tloaded_at 2025-01-01T00:00:00+0000  uid 0
\txlated 256B  jited 160B  memlock 4096B  map_ids 3,4
\tpids gatescope(4242), other(7)
13: raw_tracepoint  name fork  tag 0123456789abcdef  gpl
\tloaded_at 2025-01-01T00:00:00+0000  uid 0
";
        let p = parse(t);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].id, 12);
        assert_eq!(p[0].kind, "tracepoint");
        assert_eq!(p[0].name, "sys_enter_acc");
        assert_eq!(
            p[0].pids,
            vec![("gatescope".into(), 4242), ("other".into(), 7)]
        );
        assert_eq!(p[1].kind, "raw_tracepoint");
        assert!(p[1].pids.is_empty());
    }

    #[test]
    fn parses_map_output() {
        let t = "\
7: hash  name SOCKS  flags 0x0
\tkey 8B  value 16B  max_entries 262144  memlock 23076960B
\tbtf_id 42
\tpids gatescope(4242)
8: ringbuf  name EVENTS  flags 0x0
\tkey 0B  value 0B  max_entries 4194304  memlock 4210968B
";
        let m = parse_maps(t);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            Map {
                id: 7,
                kind: "hash".into(),
                name: "SOCKS".into(),
                key_bytes: 8,
                value_bytes: 16,
                max_entries: 262_144,
                memlock: 23_076_960,
                pids: vec![("gatescope".into(), 4242)],
            }
        );
        assert_eq!(
            (m[1].kind.as_str(), m[1].max_entries),
            ("ringbuf", 4_194_304)
        );
        assert!(m[1].pids.is_empty());
    }
}
