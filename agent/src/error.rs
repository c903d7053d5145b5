//! Errors that stop the agent before it runs, each saying what to do.
//!
//! aya's and std's errors are kept as they are: as the `#[source]` when they end the
//! message (the binary prints the whole chain, anyhow's `{:#}`), as a field written in
//! place when the advice follows them.

use std::{io, net::SocketAddr};

use aya::{maps::MapError, programs::ProgramError, EbpfError};

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
    Tracefs(io::Error),

    #[error(
        "tracepoint {name} is not available on this kernel ({error}); gatescope needs Linux 6.3 \
         or newer"
    )]
    MissingTracepoint { name: String, error: io::Error },

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

    #[error("loading the eBPF programs failed")]
    Load(#[source] EbpfError),

    #[error("loading the eBPF programs failed: map {0} missing from the object")]
    MapMissing(String),

    #[error("loading the eBPF programs failed: map {name}")]
    Map {
        name: String,
        #[source]
        source: MapError,
    },

    #[error("attaching {program} to {category}:{name} failed: program missing from the object")]
    ProgramMissing {
        program: String,
        category: String,
        name: String,
    },

    #[error("attaching {program} to {category}:{name} failed")]
    Attach {
        program: String,
        category: String,
        name: String,
        /// Boxed: aya's error is large and this one is rare.
        #[source]
        source: Box<ProgramError>,
    },
}
