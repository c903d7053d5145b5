//! Errors that stop the agent before it runs, each saying what to do.

use std::{io, net::SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no process with PID {0}; pass the PID of the gateway's main (master) process")]
    NoSuchPid(u32),

    #[error(
        "missing capabilities {missing}: gatescope needs root, or CAP_BPF and CAP_PERFMON \
         (CAP_SYS_ADMIN on kernels before 5.8) to load and attach eBPF programs"
    )]
    MissingCapabilities { missing: String },

    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed: {0}; \
         mount it with `mount -t tracefs nodev /sys/kernel/tracing` (needs CAP_SYS_ADMIN)"
    )]
    Tracefs(String),

    #[error(
        "tracepoint {0} is not available on this kernel ({1}); gatescope needs Linux 6.3 or newer"
    )]
    MissingTracepoint(String, String),

    #[error(
        "tracepoint {event}: field `{field}` is {found} on this kernel, the programs expect \
         offset {offset} size {size}; this kernel's layout is not supported yet"
    )]
    TracepointLayout {
        event: String,
        field: String,
        found: String,
        offset: usize,
        size: usize,
    },

    #[error(
        "cannot serve metrics on {addr}: address already in use; choose another with --listen"
    )]
    AddrInUse { addr: SocketAddr },

    #[error("cannot serve metrics on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },

    #[error("--ring-buffer-bytes {0} must be a power of two and at least 4096")]
    RingBufferSize(u32),

    #[error("--max-sockets {0} must be between 1 and {max}", max = crate::capture::MAX_SOCKETS_LIMIT)]
    MaxSockets(u32),

    #[error("--capture-bytes {0} is larger than the maximum, 4096")]
    CaptureBytes(u32),

    #[error("loading the eBPF programs failed: {0}")]
    Load(String),

    #[error("attaching {program} to {category}:{name} failed: {reason}")]
    Attach {
        program: String,
        category: String,
        name: String,
        reason: String,
    },
}
