//! Who is reporting: node id (Kong's `node_id`), version, kernel release.

use std::fs;

/// /etc/machine-id written as a UUID (Kong's node ids are UUIDs), else the
/// host name.
pub fn default_node_id() -> String {
    if let Ok(id) = fs::read_to_string("/etc/machine-id") {
        let id = id.trim();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return format!(
                "{}-{}-{}-{}-{}",
                &id[..8],
                &id[8..12],
                &id[12..16],
                &id[16..20],
                &id[20..]
            );
        }
    }
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".into(), |h| h.trim().to_owned())
}

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |r| r.trim().to_owned())
}
