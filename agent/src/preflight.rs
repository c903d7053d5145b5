//! What the host must provide before anything is loaded: capabilities, tracefs
//! (mounted by us when missing, as other observers do) and tracepoint layouts
//! that match what the kernel programs were built for.

use std::{ffi::CString, fs, path::Path};

use gatescope_common::tp;
use tracing::{info, warn};

use crate::error::StartError;

pub const TRACEFS: &str = "/sys/kernel/tracing";
const BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Runs every check, in the order a user would want to fix them.
pub fn check_host() -> Result<(), StartError> {
    check_capabilities(&fs::read_to_string("/proc/self/status").unwrap_or_default())?;
    if !Path::new(BTF).exists() {
        // Not needed by today's programs (tracepoint records only); later
        // offset lookups will need it, so say so now.
        warn!("no BTF at {BTF}: fine for now, but struct-offset features will be unavailable");
    }
    ensure_tracefs()?;
    verify_tracepoints(Path::new(TRACEFS))
}

/// CAP_BPF + CAP_PERFMON (Linux >= 5.8), or CAP_SYS_ADMIN which implies both.
pub fn check_capabilities(proc_status: &str) -> Result<(), StartError> {
    let effective = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StartError::MissingCapabilities {
            missing: missing.join(" and "),
        })
    }
}

fn ensure_tracefs() -> Result<(), StartError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    info!("tracefs is not mounted; mounting it at {TRACEFS}");
    mount_tracefs().map_err(StartError::Tracefs)
}

/// Mounts tracefs at [`TRACEFS`] (needs CAP_SYS_ADMIN), as other observers
/// do when a host has not; shared by the agent and `gatescope check`.
pub fn mount_tracefs() -> std::io::Result<()> {
    let target = CString::new(TRACEFS).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    let source = CString::new("nodev").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !Path::new(TRACEFS).join("events").is_dir() {
        return Err(std::io::Error::other(
            "mounted, but it has no events/ directory",
        ));
    }
    Ok(())
}

/// Compares every field offset the programs read with the kernel's format.
pub fn verify_tracepoints(tracefs: &Path) -> Result<(), StartError> {
    for (category, event, field, offset, size) in tp::expected() {
        let name = format!("{category}:{event}");
        let path = tracefs
            .join("events")
            .join(category)
            .join(event)
            .join("format");
        let format = fs::read_to_string(&path).map_err(|error| StartError::MissingTracepoint {
            name: name.clone(),
            error,
        })?;
        match field_layout(&format, field) {
            Some((o, s)) if o == offset && s == size => {}
            found => {
                return Err(StartError::TracepointLayout {
                    event: name,
                    field: field.into(),
                    found: match found {
                        Some((o, s)) => format!("at offset {o} size {s}"),
                        None => "absent".into(),
                    },
                    offset,
                    size,
                });
            }
        }
    }
    Ok(())
}

/// Offset and size of `field` in a tracefs `format` file. Lines look like
/// `field:__u16 sport;<TAB>offset:24;<TAB>size:2;<TAB>signed:0;`.
pub fn field_layout(format: &str, field: &str) -> Option<(usize, usize)> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let mut offset = None;
        let mut size = None;
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        Some((offset?, size?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: inet_sock_set_state\nID: 1\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
        \tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n";

    #[test]
    fn parses_field_layouts() {
        assert_eq!(field_layout(FORMAT, "skaddr"), Some((8, 8)));
        assert_eq!(field_layout(FORMAT, "saddr_v6"), Some((40, 16)));
        assert_eq!(field_layout(FORMAT, "saddr"), None);
    }

    #[test]
    fn expected_layouts_cover_every_event_the_programs_read() {
        let all: Vec<_> = tp::expected().collect();
        assert_eq!(all.len(), 31);
        assert_eq!(all[0], ("sock", "inet_sock_set_state", "skaddr", 8, 8));
        // A shared layout is checked for each of its events.
        assert!(all.contains(&("sock", "sock_recv_length", "flags", 24, 4)));
        assert!(all.contains(&("tcp", "tcp_send_reset", "skaddr", 16, 8)));
        assert!(all.contains(&("tcp", "tcp_send_reset", "daddr", 60, 28)));
        assert!(!all.iter().any(|&(category, ..)| category == "syscalls"));
        assert_eq!(tp::raw_syscalls::PTR, 24);
        assert_eq!(tp::raw_syscalls::COUNT, 32);
    }

    #[test]
    fn capabilities_need_bpf_and_perfmon_or_sys_admin() {
        let status = |caps: u64| format!("Name:\tx\nCapEff:\t{caps:016x}\n");
        assert!(check_capabilities(&status(1 << CAP_SYS_ADMIN)).is_ok());
        assert!(check_capabilities(&status((1 << CAP_BPF) | (1 << CAP_PERFMON))).is_ok());
        let err = check_capabilities(&status(1 << CAP_BPF))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CAP_PERFMON") && !err.contains("CAP_BPF and CAP_PERFMON:"),
            "{err}"
        );
        let err = check_capabilities(&status(0)).unwrap_err().to_string();
        assert!(
            err.starts_with("missing capabilities CAP_BPF and CAP_PERFMON"),
            "{err}"
        );
    }
}
