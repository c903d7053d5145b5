//! What the connection table reports: facts for the metrics, finished HTTP
//! events with their connection for correlation, gauges and phase counts.

use std::{collections::HashMap, net::SocketAddr};

use gatescope_common::ListenKey;

use crate::{
    capture::decode::{Direction, Endpoints, Role, TcpEvent},
    http::{HttpEvent, Phase},
};

/// An upstream peer as the gateway in network namespace `netns` (inode; 0
/// unknown) reaches it: two pods' `127.0.0.1:9000` are two peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub netns: u32,
    pub addr: SocketAddr,
}

/// What the export stage counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// accept() returned a connection in a target.
    Accepted,
    /// The gateway read from a downstream connection for the first time.
    Handled,
    DownstreamBytes {
        listener: ListenKey,
        dir: Direction,
        len: u64,
    },
    UpstreamOpened {
        peer: Peer,
    },
    UpstreamBytes {
        peer: Peer,
        dir: Direction,
        len: u64,
    },
    /// Bytes on a target socket whose open was not seen (open before start,
    /// or not TCP-tracked), so they are still accounted for.
    UntrackedBytes {
        dir: Direction,
        len: u64,
    },
    /// A retransmission or reset on a client connection (by listener).
    DownstreamTcp {
        listener: ListenKey,
        event: TcpEvent,
    },
    /// A retransmission or reset on a connection to an upstream peer.
    UpstreamTcp {
        peer: Peer,
        event: TcpEvent,
    },
    /// The table was full and a connection could not be tracked.
    TableFull,
    /// What a client connection's TLS handshake came to (by listener).
    DownstreamTls {
        listener: ListenKey,
        result: TlsResult,
        version: TlsVersion,
    },
    /// What a TLS handshake with an upstream peer came to.
    UpstreamTls {
        peer: Peer,
        result: TlsResult,
        version: TlsVersion,
    },
    /// TLS bytes on a client connection whose plaintext cannot be seen
    /// (its process has no OpenSSL with probes); also in
    /// [`Fact::DownstreamBytes`].
    DownstreamTlsUnparsed {
        listener: ListenKey,
        dir: Direction,
        len: u64,
    },
    /// The same on a connection to an upstream peer.
    UpstreamTlsUnparsed {
        peer: Peer,
        dir: Direction,
        len: u64,
    },
}

/// What a TLS handshake came to, as the connection's bytes show it: no
/// OpenSSL call says why a handshake failed, so this reads the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsResult {
    /// Plaintext flowed (OpenSSL returned data).
    Ok,
    /// A TLS alert record in the clear came before any plaintext (no shared
    /// protocol version or cipher, an unknown name, a refused certificate
    /// in TLS 1.2).
    Failed,
    /// The connection closed before any plaintext without an alert in the
    /// clear: TLS 1.3 encrypts its alerts (a refused certificate), and a
    /// client may complete the handshake and leave.
    Closed,
}

impl TlsResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsResult::Ok => "ok",
            TlsResult::Failed => "failed",
            TlsResult::Closed => "closed",
        }
    }
}

/// The protocol version the server chose in its ServerHello, named as
/// nginx's `$ssl_protocol` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    /// No ServerHello seen whole enough (a handshake that failed before it,
    /// or a capture too short for its extensions).
    Unknown,
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Unknown => "unknown",
            TlsVersion::Tls10 => "TLSv1",
            TlsVersion::Tls11 => "TLSv1.1",
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

/// The handshake fact of a connection of `role` at `endpoints`.
pub(super) fn tls_fact(
    role: Role,
    (endpoints, netns): (&Endpoints, u32),
    result: TlsResult,
    version: TlsVersion,
) -> Fact {
    match role {
        Role::Downstream => Fact::DownstreamTls {
            listener: ListenKey::new(netns, endpoints.local.port()),
            result,
            version,
        },
        Role::Upstream => Fact::UpstreamTls {
            peer: Peer {
                netns,
                addr: endpoints.remote,
            },
            result,
            version,
        },
    }
}

/// The unparsed-TLS fact of `len` bytes in `dir` on a connection of `role`
/// at `endpoints`.
pub(super) fn unparsed_fact(
    role: Role,
    (endpoints, netns): (&Endpoints, u32),
    dir: Direction,
    len: u64,
) -> Fact {
    match role {
        Role::Downstream => Fact::DownstreamTlsUnparsed {
            listener: ListenKey::new(netns, endpoints.local.port()),
            dir,
            len,
        },
        Role::Upstream => Fact::UpstreamTlsUnparsed {
            peer: Peer {
                netns,
                addr: endpoints.remote,
            },
            dir,
            len,
        },
    }
}

/// A TCP event, per listener for client connections and per peer upstream.
/// `netns` 0: unknown (a reset on a socket no longer tracked).
pub(super) fn tcp_fact(role: Role, (endpoints, netns): (&Endpoints, u32), event: TcpEvent) -> Fact {
    match role {
        Role::Downstream => Fact::DownstreamTcp {
            listener: ListenKey::new(netns, endpoints.local.port()),
            event,
        },
        Role::Upstream => Fact::UpstreamTcp {
            peer: Peer {
                netns,
                addr: endpoints.remote,
            },
            event,
        },
    }
}

/// What later stages need to know about a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub role: Role,
    pub endpoints: Endpoints,
    /// Its network namespace (inode; 0 unknown).
    pub netns: u32,
    /// The gateway process that last moved bytes on it (a worker).
    pub tgid: u32,
    /// TLS: its requests are in the plaintext OpenSSL moved, not in the
    /// socket's transfers.
    pub tls: bool,
}

/// What applying observations finished, for the stages after the table. The
/// table only appends; the caller drains both when it likes.
#[derive(Debug, Default)]
pub struct Finished {
    pub facts: Vec<Fact>,
    /// Ended HTTP exchanges and anomalies, in order, each with its connection.
    pub http: Vec<(ConnInfo, HttpEvent)>,
    /// Data records on sockets the table does not know whose kernel entry
    /// may be released (`(sk, ts_ns)`, see `lost_opens.rs`).
    pub lost_opens: Vec<(u64, u64)>,
}

/// Gauges derived from the table, maintained incrementally so they always
/// agree with its content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub downstream_active: u64,
    pub upstream_open: HashMap<Peer, u64>,
    pub tracked_downstream: u64,
    pub tracked_upstream: u64,
}

/// stub_status's reading / writing / waiting downstream connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

impl PhaseCounts {
    /// Adds (or takes away) one connection in `phase`.
    pub(super) fn adjust(&mut self, phase: Phase, add: bool) {
        let slot = match phase {
            Phase::Reading => &mut self.reading,
            Phase::Writing => &mut self.writing,
            Phase::Waiting => &mut self.waiting,
            Phase::Opaque => return,
        };
        adjust(slot, add);
    }
}

pub(super) fn adjust(value: &mut u64, up: bool) {
    if up {
        *value += 1;
    } else {
        *value = value.saturating_sub(1);
    }
}
