//! Facts about the host that need no eBPF: capabilities, tracefs, libc.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{findings::Tracefs, hooks::errno};
use crate::preflight::{self, TRACEFS};

pub fn libc_path(maps: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            name.starts_with("libc.so")
                || (name.starts_with("libc-") && Path::new(name).extension() == Some("so".as_ref()))
        })
        .map(PathBuf::from)
}

/// The effective capability set from /proc/self/status.
pub fn effective_caps(proc_status: &str) -> u64 {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Mounted already, or mounted now (as the agent does), or why not.
pub(super) fn ensure_tracefs() -> Tracefs {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if tracefs_mounted(&mounts) || Path::new(TRACEFS).join("events").is_dir() {
        return Tracefs::Mounted;
    }
    match preflight::mount_tracefs() {
        Ok(()) => Tracefs::MountedNow,
        Err(e) => Tracefs::Unavailable(format!("mounting it failed: {}", errno(&e))),
    }
}

/// Whether /proc/self/mounts lists tracefs at /sys/kernel/tracing.
pub fn tracefs_mounted(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, at, fstype) = (f.next(), f.next(), f.next());
        at == Some(TRACEFS) && fstype == Some("tracefs")
    })
}
