//! Turns raw ring-buffer records into typed observations. Pure, so every kind
//! of record can be tested without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gatescope_common::{
    self as common, ConnFound, ConnOpen, DataPiece, Exec, Exit, Fork, Header, Kind, Listen,
    Payload, Record, State, Tcp, TcpState, Tuple, AF_INET, AF_INET6, DATA_TAIL_MAX,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A client's connection to the gateway (passive open).
    Downstream,
    /// The gateway's connection to an upstream (active open).
    Upstream,
}

impl TryFrom<common::Role> for Role {
    type Error = DecodeError;

    fn try_from(raw: common::Role) -> Result<Self, DecodeError> {
        match raw {
            common::Role::DOWNSTREAM => Ok(Role::Downstream),
            common::Role::UPSTREAM => Ok(Role::Upstream),
            other => Err(DecodeError::Role(other)),
        }
    }
}

/// Trouble on a TCP connection, from the `tcp:*` tracepoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpEvent {
    Retransmit,
    ResetSent,
    ResetReceived,
}

impl TcpEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            TcpEvent::Retransmit => "retransmit",
            TcpEvent::ResetSent => "reset_sent",
            TcpEvent::ResetReceived => "reset_received",
        }
    }
}

impl TryFrom<common::TcpEvent> for TcpEvent {
    type Error = DecodeError;

    fn try_from(raw: common::TcpEvent) -> Result<Self, DecodeError> {
        match raw {
            common::TcpEvent::RETRANSMIT => Ok(TcpEvent::Retransmit),
            common::TcpEvent::RESET_SENT => Ok(TcpEvent::ResetSent),
            common::TcpEvent::RESET_RECEIVED => Ok(TcpEvent::ResetReceived),
            other => Err(DecodeError::TcpEvent(other)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by the gateway.
    Ingress,
    /// Sent by the gateway.
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl TryFrom<common::Direction> for Direction {
    type Error = DecodeError;

    fn try_from(raw: common::Direction) -> Result<Self, DecodeError> {
        match raw {
            common::Direction::INGRESS => Ok(Direction::Ingress),
            common::Direction::EGRESS => Ok(Direction::Egress),
            other => Err(DecodeError::Direction(other)),
        }
    }
}

/// A connection's two ends, seen from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// A client's TCP handshake as the wire view timed it: from its first SYN,
/// seen on interface `ifindex`, to the final ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub ifindex: u32,
    pub ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation<'a> {
    ConnOpen {
        sk: u64,
        role: Role,
        endpoints: Endpoints,
        ts_ns: u64,
        /// Client connections whose first SYN the wire view saw.
        handshake: Option<Handshake>,
        /// The thread that called connect() (an active open's CLOSE ->
        /// SYN_SENT runs in the syscall); 0 for a passive open (softirq).
        tid: u32,
        /// The socket's network namespace (inode); 0 when unknown.
        netns: u32,
    },
    /// A connection open before gatescope started, seen for the first time
    /// when the gateway moved bytes on it.
    ConnFound {
        sk: u64,
        role: Role,
        endpoints: Endpoints,
        ts_ns: u64,
        netns: u32,
    },
    State {
        sk: u64,
        old: TcpState,
        new: TcpState,
        endpoints: Endpoints,
        ts_ns: u64,
        /// At TCP_CLOSE: buffers still queued for the gateway to read (data
        /// that arrived before a reset), 0 otherwise or when unknown.
        queued: u32,
        /// A gateway process made the transition itself (its close() or
        /// shutdown()), so it had accepted the connection.
        by_target: bool,
    },
    /// `len` bytes moved by the gateway; `len == 0` is a read that returned
    /// end-of-file. `head`/`tail` are the transfer's first and last bytes as
    /// far as they were captured (borrowed from the ring buffer).
    Data {
        sk: u64,
        dir: Direction,
        len: u64,
        tgid: u32,
        /// The thread that moved the bytes: records of one thread arrive in
        /// the order it made its syscalls (one ring buffer), which is what
        /// correlation reads a worker's event loop from.
        tid: u32,
        ts_ns: u64,
        head: &'a [u8],
        tail: &'a [u8],
    },
    /// Plaintext OpenSSL moved for a TLS socket (`SSL_read`/`SSL_write` and
    /// their `_ex`, at their return): what [`Observation::Data`] is for a
    /// clear-text socket, whose own records then carry the ciphertext.
    Plaintext {
        sk: u64,
        dir: Direction,
        len: u64,
        tgid: u32,
        tid: u32,
        ts_ns: u64,
        head: &'a [u8],
        tail: &'a [u8],
    },
    /// Bytes of the next [`Observation::Data`] of thread `tid` past its
    /// head, from `offset` (an HTTP/2 socket's transfer beyond 32 KiB or the
    /// 4th iovec); joined to it before anything else sees it (join.rs).
    Piece {
        sk: u64,
        dir: Direction,
        tid: u32,
        ts_ns: u64,
        offset: u64,
        bytes: &'a [u8],
    },
    /// A read by the gateway that failed (a reset seen by `recv()`): no
    /// bytes, but I/O its thread did (see correlate/order.rs).
    ReadFailed {
        sk: u64,
        tgid: u32,
        tid: u32,
        ts_ns: u64,
        errno: u32,
    },
    Tcp {
        sk: u64,
        event: TcpEvent,
    },
    /// A reset the gateway sent on a connection it had just closed (so no
    /// longer tracked), named by its addresses.
    TcpClosed {
        role: Role,
        endpoints: Endpoints,
        event: TcpEvent,
    },
    Fork {
        parent: u32,
        child: u32,
    },
    Exit {
        tgid: u32,
    },
    /// A process exec'd a `--discover` program and became a target.
    Exec {
        tgid: u32,
    },
    /// A target began listening on `addr`.
    Listen {
        addr: SocketAddr,
        netns: u32,
        /// The target that called listen().
        tgid: u32,
        ts_ns: u64,
    },
}

impl Observation<'_> {
    /// The kind of record this observation came from.
    pub fn kind(&self) -> Kind {
        match self {
            Observation::ConnOpen { .. } => Kind::CONN_OPEN,
            Observation::ConnFound { .. } => Kind::CONN_FOUND,
            Observation::State { .. } => Kind::STATE,
            Observation::Data { .. } | Observation::ReadFailed { .. } => Kind::DATA,
            Observation::Plaintext { .. } => Kind::TLS_DATA,
            Observation::Piece { .. } => Kind::DATA_PIECE,
            Observation::Tcp { .. } | Observation::TcpClosed { .. } => Kind::TCP,
            Observation::Fork { .. } => Kind::FORK,
            Observation::Exit { .. } => Kind::EXIT,
            Observation::Exec { .. } => Kind::EXEC,
            Observation::Listen { .. } => Kind::LISTEN,
        }
    }

    /// Index in [`KINDS`] of this observation's `kind` label of
    /// `gatescope_events_received_total` (counted per record, so no strings).
    pub fn kind_index(&self) -> usize {
        self.kind()
            .index()
            .expect("every Kind constant is in Kind::ALL (one table)")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its kind's layout")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(Kind),
    #[error("unknown role {0}")]
    Role(common::Role),
    #[error("unknown direction {0}")]
    Direction(common::Direction),
    #[error("unknown TCP event {0}")]
    TcpEvent(common::TcpEvent),
    #[error("data record lengths are inconsistent")]
    Lengths,
}

/// The `kind` labels of `gatescope_events_received_total`, indexed by
/// [`Observation::kind_index`]: the kind table's own labels.
pub const KINDS: [&str; Kind::NAMES.len()] = Kind::NAMES;

pub fn decode(raw: &[u8]) -> Result<Observation<'_>, DecodeError> {
    let header = header(raw)?;
    let ts_ns = header.ts_ns;
    Ok(match header.kind {
        Kind::CONN_OPEN => {
            let Record {
                header,
                data:
                    ConnOpen {
                        sk,
                        role,
                        ifindex,
                        handshake_ns,
                        tuple,
                        netns,
                        _pad: _,
                    },
            } = record::<ConnOpen>(raw)?;
            let role = Role::try_from(role)?;
            Observation::ConnOpen {
                sk,
                role,
                endpoints: endpoints(&tuple),
                ts_ns,
                handshake: (role == Role::Downstream && handshake_ns > 0).then_some(Handshake {
                    ifindex,
                    ns: handshake_ns,
                }),
                tid: header.tid,
                netns,
            }
        }
        Kind::CONN_FOUND => {
            let ConnFound {
                sk,
                role,
                tuple,
                netns,
            } = record::<ConnFound>(raw)?.data;
            Observation::ConnFound {
                sk,
                role: role.try_into()?,
                endpoints: endpoints(&tuple),
                ts_ns,
                netns,
            }
        }
        Kind::STATE => {
            let State {
                sk,
                old,
                new,
                queued,
                by_target,
                tuple,
            } = record::<State>(raw)?.data;
            Observation::State {
                sk,
                old,
                new,
                endpoints: endpoints(&tuple),
                ts_ns,
                queued,
                by_target: by_target != 0,
            }
        }
        Kind::DATA => return decode_data(raw),
        Kind::DATA_PIECE => return decode_piece(raw),
        Kind::TLS_DATA => {
            return match decode_data(raw)? {
                Observation::Data {
                    sk,
                    dir,
                    len,
                    tgid,
                    tid,
                    ts_ns,
                    head,
                    tail,
                } => Ok(Observation::Plaintext {
                    sk,
                    dir,
                    len,
                    tgid,
                    tid,
                    ts_ns,
                    head,
                    tail,
                }),
                _ => Err(DecodeError::Lengths),
            };
        }
        Kind::TCP => {
            let Tcp {
                sk,
                event,
                role,
                tuple,
            } = record::<Tcp>(raw)?.data;
            let event = event.try_into()?;
            if sk == 0 {
                Observation::TcpClosed {
                    role: role.try_into()?,
                    endpoints: endpoints(&tuple),
                    event,
                }
            } else {
                Observation::Tcp { sk, event }
            }
        }
        Kind::FORK => {
            let Record {
                header,
                data: Fork { child, .. },
            } = record::<Fork>(raw)?;
            Observation::Fork {
                parent: header.tgid,
                child,
            }
        }
        Kind::EXIT => Observation::Exit {
            tgid: record::<Exit>(raw)?.header.tgid,
        },
        Kind::EXEC => Observation::Exec {
            tgid: record::<Exec>(raw)?.header.tgid,
        },
        Kind::LISTEN => {
            let Record {
                header,
                data: Listen { tuple, netns, .. },
            } = record::<Listen>(raw)?;
            Observation::Listen {
                addr: endpoints(&tuple).local,
                netns,
                tgid: header.tgid,
                ts_ns,
            }
        }
        other => return Err(DecodeError::Kind(other)),
    })
}

fn header(raw: &[u8]) -> Result<Header, DecodeError> {
    if raw.len() < size_of::<Header>() {
        return Err(DecodeError::Short(raw.len()));
    }
    // SAFETY: length checked; Header is #[repr(C)] plain integers, valid for
    // any bytes.
    Ok(unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) })
}

/// The record of `T`'s kind at the start of `raw`.
fn record<T: Payload>(raw: &[u8]) -> Result<Record<T>, DecodeError> {
    if raw.len() < size_of::<Record<T>>() {
        return Err(DecodeError::Short(raw.len()));
    }
    // SAFETY: length checked; every payload is #[repr(C)] plain integers
    // (gatescope_common::records), valid for any bytes.
    Ok(unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) })
}

/// A `Record<Data>`, the tail area, then the head (see gatescope_common).
fn decode_data(raw: &[u8]) -> Result<Observation<'_>, DecodeError> {
    const HEADER: usize = size_of::<common::DataHeader>();
    if raw.len() < HEADER + DATA_TAIL_MAX {
        return Err(DecodeError::Short(raw.len()));
    }
    let Record { header, data } = record::<common::Data>(raw)?;
    let dir = data.dir.try_into()?;
    let tail_len = data.tail_len as usize;
    let head_len = data.head_len as usize;
    let body = &raw[HEADER..];
    if tail_len > DATA_TAIL_MAX
        || body.len() < DATA_TAIL_MAX + head_len
        || (head_len + tail_len) as u64 > data.len
    {
        return Err(DecodeError::Lengths);
    }
    if data.error != 0 {
        if data.len != 0 || head_len + tail_len != 0 {
            return Err(DecodeError::Lengths);
        }
        return Ok(Observation::ReadFailed {
            sk: data.sk,
            tgid: header.tgid,
            tid: header.tid,
            ts_ns: header.ts_ns,
            errno: data.error,
        });
    }
    Ok(Observation::Data {
        sk: data.sk,
        dir,
        len: data.len,
        tgid: header.tgid,
        tid: header.tid,
        ts_ns: header.ts_ns,
        head: &body[DATA_TAIL_MAX..DATA_TAIL_MAX + head_len],
        tail: &body[..tail_len],
    })
}

/// A `Record<DataPiece>`, then its bytes.
fn decode_piece(raw: &[u8]) -> Result<Observation<'_>, DecodeError> {
    const HEADER: usize = size_of::<Record<DataPiece>>();
    let Record { header, data } = record::<DataPiece>(raw)?;
    let n = data.piece_len as usize;
    let bytes = raw
        .get(HEADER..HEADER + n)
        .filter(|_| n > 0)
        .ok_or(DecodeError::Lengths)?;
    Ok(Observation::Piece {
        sk: data.sk,
        dir: data.dir.try_into()?,
        tid: header.tid,
        ts_ns: header.ts_ns,
        offset: data.offset,
        bytes,
    })
}

fn endpoints(t: &Tuple) -> Endpoints {
    Endpoints {
        local: SocketAddr::new(ip(t.family, &t.laddr), t.lport),
        remote: SocketAddr::new(ip(t.family, &t.raddr), t.rport),
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's IPv4 clients) are
/// shown as IPv4, as a user would write them.
fn ip(family: u16, addr: &[u8; 16]) -> IpAddr {
    match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests;
