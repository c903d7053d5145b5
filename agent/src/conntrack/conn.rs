//! One tracked connection: what the table knows of it, and where it is in
//! its life.

use std::time::Instant;

use gatescope_common::ListenKey;

use super::{
    facts::{ConnInfo, Fact, Finished, Peer},
    handshake::Handshake,
    protocol::Protocol,
};
use crate::capture::decode::{Endpoints, Role};

pub(super) struct Conn {
    pub(super) role: Role,
    pub(super) endpoints: Endpoints,
    /// Its network namespace (inode; 0 unknown): with the local port, which
    /// listener a client connection came in on (two pods both listen on 80).
    pub(super) netns: u32,
    pub(super) handled: bool,
    /// The gateway has done something with it: accepted, as stub_status
    /// counts (see [`super::ConnTable::touched`]).
    pub(super) accepted: bool,
    /// The gateway process that last moved bytes on it (a worker).
    pub(super) tgid: u32,
    /// Time of its open record, as the kernel's socket map also keeps it.
    pub(super) opened_ns: u64,
    pub(super) lifecycle: Lifecycle,
    pub(super) protocol: Protocol,
    pub(super) handshake: Handshake,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Tracked until the kernel closes it; `active` as stub_status counts it
    /// (see the module's documentation).
    Open { active: bool },
    /// Closed by the kernel (a reset) with bytes still queued for the gateway
    /// to read: its parser goes on with them.
    Late {
        /// Its close, then its last read: when its parsing ends.
        last_ns: u64,
        /// When the agent last fed it, for [`super::ConnTable::end_idle_late`].
        touched: Instant,
    },
    /// Closed: bytes read from it still count, but are not parsed.
    Closed,
}

impl Conn {
    pub(super) fn info(&self) -> ConnInfo {
        ConnInfo {
            role: self.role,
            endpoints: self.endpoints,
            netns: self.netns,
            tgid: self.tgid,
            tls: self.protocol.is_tls(),
        }
    }

    /// The peer of a connection to an upstream.
    pub(super) fn peer(&self) -> Peer {
        Peer {
            netns: self.netns,
            addr: self.endpoints.remote,
        }
    }

    /// The listener of a client connection.
    pub(super) fn listener(&self) -> ListenKey {
        ListenKey::new(self.netns, self.endpoints.local.port())
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Open { .. })
    }
}

/// See [`super::ConnTable::touched`].
pub(super) fn touch(conn: &mut Conn, out: &mut Finished) {
    if conn.role == Role::Downstream && !conn.accepted {
        conn.accepted = true;
        out.facts.push(Fact::Accepted);
    }
}
