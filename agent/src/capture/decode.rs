//! Turns raw ring-buffer records into typed observations. Pure, so every kind
//! of record can be tested without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gatescope_common::{
    DataHeader, Event, Tuple, AF_INET, AF_INET6, DATA_TAIL_MAX, DIR_EGRESS, DIR_INGRESS,
    KIND_ACCEPT, KIND_CONN_FOUND, KIND_CONN_OPEN, KIND_DATA, KIND_EXEC, KIND_EXIT, KIND_FORK,
    KIND_LISTEN, KIND_STATE, KIND_TCP, ROLE_DOWNSTREAM, ROLE_UPSTREAM, TCP_EVENT_RESET_RECEIVED,
    TCP_EVENT_RESET_SENT, TCP_EVENT_RETRANSMIT,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A client's connection to the gateway (passive open).
    Downstream,
    /// The gateway's connection to an upstream (active open).
    Upstream,
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

/// A connection's two ends, seen from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    },
    /// A connection open before gatescope started, seen for the first time
    /// when the gateway moved bytes on it.
    ConnFound {
        sk: u64,
        role: Role,
        endpoints: Endpoints,
        ts_ns: u64,
    },
    State {
        sk: u64,
        old: u32,
        new: u32,
        endpoints: Endpoints,
        ts_ns: u64,
        /// At TCP_CLOSE: buffers still queued for the gateway to read (data
        /// that arrived before a reset), 0 otherwise or when unknown.
        queued: u32,
    },
    /// `len` bytes moved by the gateway; `len == 0` is a read that returned
    /// end-of-file. `head`/`tail` are the transfer's first and last bytes as
    /// far as they were captured (borrowed from the ring buffer).
    Data {
        sk: u64,
        dir: Direction,
        len: u64,
        tgid: u32,
        ts_ns: u64,
        head: &'a [u8],
        tail: &'a [u8],
    },
    Accept {
        tgid: u32,
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
        ts_ns: u64,
    },
}

impl Observation<'_> {
    /// Index in [`KINDS`] of this observation's `kind` label of
    /// `gatescope_events_received_total` (counted per record, so no strings).
    pub fn kind_index(&self) -> usize {
        match self {
            Observation::ConnOpen { .. } => 0,
            Observation::ConnFound { .. } => 1,
            Observation::State { .. } => 2,
            Observation::Data { .. } => 3,
            Observation::Accept { .. } => 4,
            Observation::Tcp { .. } | Observation::TcpClosed { .. } => 5,
            Observation::Fork { .. } => 6,
            Observation::Exit { .. } => 7,
            Observation::Exec { .. } => 8,
            Observation::Listen { .. } => 9,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event")]
    Short(usize),
    #[error("unknown event kind {0}")]
    Kind(u32),
    #[error("unknown role or direction {0} for kind {1}")]
    Role(u32, u32),
    #[error("data record lengths are inconsistent")]
    Lengths,
}

pub const KINDS: [&str; 10] = [
    "conn_open",
    "conn_found",
    "state",
    "data",
    "accept",
    "tcp",
    "fork",
    "exit",
    "exec",
    "listen",
];

pub fn decode(raw: &[u8]) -> Result<Observation<'_>, DecodeError> {
    if raw.len() >= 4 && u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]) == KIND_DATA {
        return decode_data(raw);
    }
    if raw.len() < size_of::<Event>() {
        return Err(DecodeError::Short(raw.len()));
    }
    // SAFETY: length checked; Event is plain integers, valid for any bytes.
    let e: Event = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let role = || match e.role {
        ROLE_DOWNSTREAM => Ok(Role::Downstream),
        ROLE_UPSTREAM => Ok(Role::Upstream),
        other => Err(DecodeError::Role(other, e.kind)),
    };
    Ok(match e.kind {
        KIND_CONN_OPEN => Observation::ConnOpen {
            sk: e.sk,
            role: role()?,
            endpoints: endpoints(&e.tuple),
            ts_ns: e.ts_ns,
            handshake: (e.role == ROLE_DOWNSTREAM && e.value > 0).then_some(Handshake {
                ifindex: e.tid,
                ns: e.value as u64,
            }),
        },
        KIND_CONN_FOUND => Observation::ConnFound {
            sk: e.sk,
            role: role()?,
            endpoints: endpoints(&e.tuple),
            ts_ns: e.ts_ns,
        },
        KIND_STATE => Observation::State {
            sk: e.sk,
            old: e.old_state,
            new: e.new_state,
            endpoints: endpoints(&e.tuple),
            ts_ns: e.ts_ns,
            queued: u32::try_from(e.value).unwrap_or(0),
        },
        KIND_ACCEPT => Observation::Accept { tgid: e.tgid },
        KIND_TCP => {
            let event = match e.value {
                TCP_EVENT_RETRANSMIT => TcpEvent::Retransmit,
                TCP_EVENT_RESET_SENT => TcpEvent::ResetSent,
                TCP_EVENT_RESET_RECEIVED => TcpEvent::ResetReceived,
                _ => return Err(DecodeError::Kind(e.kind)),
            };
            if e.sk == 0 {
                Observation::TcpClosed {
                    role: role()?,
                    endpoints: endpoints(&e.tuple),
                    event,
                }
            } else {
                Observation::Tcp { sk: e.sk, event }
            }
        }
        KIND_FORK => Observation::Fork {
            parent: e.tgid,
            child: e.value as u32,
        },
        KIND_EXIT => Observation::Exit { tgid: e.tgid },
        KIND_EXEC => Observation::Exec { tgid: e.tgid },
        KIND_LISTEN => Observation::Listen {
            addr: endpoints(&e.tuple).local,
            ts_ns: e.ts_ns,
        },
        other => return Err(DecodeError::Kind(other)),
    })
}

/// A [`DataHeader`], the tail area, then the head (see gatescope_common).
fn decode_data(raw: &[u8]) -> Result<Observation<'_>, DecodeError> {
    const HEADER: usize = size_of::<DataHeader>();
    if raw.len() < HEADER + DATA_TAIL_MAX {
        return Err(DecodeError::Short(raw.len()));
    }
    // SAFETY: length checked; DataHeader is plain integers.
    let h: DataHeader = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let dir = match h.dir {
        DIR_INGRESS => Direction::Ingress,
        DIR_EGRESS => Direction::Egress,
        other => return Err(DecodeError::Role(other, h.kind)),
    };
    let tail_len = h.tail_len as usize;
    let head_len = h.head_len as usize;
    let body = &raw[HEADER..];
    if tail_len > DATA_TAIL_MAX
        || body.len() < DATA_TAIL_MAX + head_len
        || (head_len + tail_len) as u64 > h.len
    {
        return Err(DecodeError::Lengths);
    }
    Ok(Observation::Data {
        sk: h.sk,
        dir,
        len: h.len,
        tgid: h.tgid,
        ts_ns: h.ts_ns,
        head: &body[DATA_TAIL_MAX..DATA_TAIL_MAX + head_len],
        tail: &body[..tail_len],
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
pub(crate) fn raw(event: &Event) -> Vec<u8> {
    // SAFETY: Event is plain integers without padding.
    unsafe { std::slice::from_raw_parts((event as *const Event).cast::<u8>(), size_of::<Event>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_v4_connection_open() {
        let mut e = Event {
            kind: KIND_CONN_OPEN,
            role: ROLE_DOWNSTREAM,
            sk: 0xffff_8880_0000_1000,
            ts_ns: 42,
            ..Event::default()
        };
        e.tuple.family = AF_INET;
        e.tuple.lport = 8080;
        e.tuple.rport = 51000;
        e.tuple.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.tuple.raddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let Observation::ConnOpen {
            sk,
            role,
            endpoints,
            ts_ns,
            ..
        } = decode(&raw(&e)).unwrap()
        else {
            panic!("wrong kind");
        };
        assert_eq!(
            (sk, role, ts_ns),
            (0xffff_8880_0000_1000, Role::Downstream, 42)
        );
        assert_eq!(endpoints.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(endpoints.remote, "10.1.2.3:51000".parse().unwrap());
    }

    #[test]
    fn decodes_a_client_open_with_its_handshake() {
        let mut e = Event {
            kind: KIND_CONN_OPEN,
            role: ROLE_DOWNSTREAM,
            tid: 3,
            value: 50_000_000,
            sk: 9,
            ts_ns: 77,
            ..Event::default()
        };
        e.tuple.family = AF_INET;
        e.tuple.lport = 8080;
        e.tuple.rport = 40000;
        e.tuple.laddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.tuple.raddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let endpoints = Endpoints {
            local: "10.0.0.1:8080".parse().unwrap(),
            remote: "10.0.0.2:40000".parse().unwrap(),
        };
        assert_eq!(
            decode(&raw(&e)).unwrap(),
            Observation::ConnOpen {
                sk: 9,
                role: Role::Downstream,
                endpoints,
                ts_ns: 77,
                handshake: Some(Handshake {
                    ifindex: 3,
                    ns: 50_000_000
                }),
            }
        );
        // Not timed (its SYN was not seen): no handshake.
        e.value = 0;
        assert!(matches!(
            decode(&raw(&e)).unwrap(),
            Observation::ConnOpen {
                handshake: None,
                ..
            }
        ));
    }

    #[test]
    fn kind_index_names_the_kind() {
        let ep = endpoints(&Tuple::default());
        let named = [
            (
                Observation::ConnOpen {
                    sk: 1,
                    role: Role::Upstream,
                    endpoints: ep,
                    ts_ns: 0,
                    handshake: None,
                },
                "conn_open",
            ),
            (
                Observation::ConnFound {
                    sk: 1,
                    role: Role::Upstream,
                    endpoints: ep,
                    ts_ns: 0,
                },
                "conn_found",
            ),
            (
                Observation::State {
                    sk: 1,
                    old: 0,
                    new: 0,
                    endpoints: ep,
                    ts_ns: 0,
                    queued: 0,
                },
                "state",
            ),
            (
                Observation::Data {
                    sk: 1,
                    dir: Direction::Ingress,
                    len: 0,
                    tgid: 0,
                    ts_ns: 0,
                    head: b"",
                    tail: b"",
                },
                "data",
            ),
            (Observation::Accept { tgid: 1 }, "accept"),
            (
                Observation::Tcp {
                    sk: 1,
                    event: TcpEvent::Retransmit,
                },
                "tcp",
            ),
            (
                Observation::Fork {
                    parent: 1,
                    child: 2,
                },
                "fork",
            ),
            (Observation::Exit { tgid: 1 }, "exit"),
            (Observation::Exec { tgid: 1 }, "exec"),
            (
                Observation::Listen {
                    addr: ep.local,
                    ts_ns: 0,
                },
                "listen",
            ),
        ];
        for (obs, name) in named {
            assert_eq!(KINDS[obs.kind_index()], name);
        }
    }

    #[test]
    fn decodes_a_found_connection() {
        let mut e = Event {
            kind: KIND_CONN_FOUND,
            role: ROLE_UPSTREAM,
            sk: 9,
            ..Event::default()
        };
        e.tuple.family = AF_INET;
        e.tuple.lport = 40000;
        e.tuple.rport = 9000;
        e.tuple.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.tuple.raddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let Observation::ConnFound {
            sk,
            role,
            endpoints,
            ..
        } = decode(&raw(&e)).unwrap()
        else {
            panic!("wrong kind");
        };
        assert_eq!((sk, role), (9, Role::Upstream));
        assert_eq!(endpoints.remote, "127.0.0.2:9000".parse().unwrap());
    }

    #[test]
    fn shows_v4_mapped_v6_as_v4_and_keeps_real_v6() {
        let mut t = Tuple {
            family: AF_INET6,
            lport: 80,
            rport: 1,
            ..Tuple::default()
        };
        t.laddr = Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x7f00, 1]).octets();
        t.raddr = Ipv6Addr::LOCALHOST.octets();
        let ep = endpoints(&t);
        assert_eq!(ep.local, "127.0.0.1:80".parse().unwrap());
        assert_eq!(ep.remote, "[::1]:1".parse().unwrap());
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
        let e = Event {
            kind: 99,
            ..Event::default()
        };
        assert_eq!(decode(&raw(&e)), Err(DecodeError::Kind(99)));
        let e = Event {
            kind: KIND_CONN_OPEN,
            role: 7,
            ..Event::default()
        };
        assert_eq!(decode(&raw(&e)), Err(DecodeError::Role(7, KIND_CONN_OPEN)));
        // Data records: header alone, bad direction, head longer than sent.
        let header = DataHeader {
            kind: KIND_DATA,
            dir: DIR_EGRESS,
            len: 10,
            head_len: 4,
            ..DataHeader::default()
        };
        assert_eq!(
            decode(&data_record(&header, b"", b"abcd")[..40]),
            Err(DecodeError::Short(40))
        );
        let bad_dir = DataHeader { dir: 9, ..header };
        assert_eq!(
            decode(&data_record(&bad_dir, b"", b"abcd")),
            Err(DecodeError::Role(9, KIND_DATA))
        );
        let too_long = DataHeader { len: 3, ..header };
        assert_eq!(
            decode(&data_record(&too_long, b"", b"abcd")),
            Err(DecodeError::Lengths)
        );
    }

    fn data_record(header: &DataHeader, tail: &[u8], head: &[u8]) -> Vec<u8> {
        let header = DataHeader {
            head_len: head.len() as u32,
            tail_len: tail.len() as u32,
            ..*header
        };
        // SAFETY: plain integers without padding.
        let mut out = unsafe {
            std::slice::from_raw_parts(
                (&header as *const DataHeader).cast::<u8>(),
                size_of::<DataHeader>(),
            )
        }
        .to_vec();
        let mut area = [0u8; DATA_TAIL_MAX];
        area[..tail.len()].copy_from_slice(tail);
        out.extend_from_slice(&area);
        out.extend_from_slice(head);
        out
    }

    #[test]
    fn decodes_data_with_head_and_tail() {
        let header = DataHeader {
            kind: KIND_DATA,
            dir: DIR_INGRESS,
            tgid: 9,
            tid: 10,
            ts_ns: 77,
            sk: 5,
            len: 5000,
            ..DataHeader::default()
        };
        let raw = data_record(&header, b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            decode(&raw).unwrap(),
            Observation::Data {
                sk: 5,
                dir: Direction::Ingress,
                len: 5000,
                tgid: 9,
                ts_ns: 77,
                head: b"HTTP/1.1 200 OK\r\n",
                tail: b"0\r\n\r\n",
            }
        );
        // A read at end-of-file: no bytes at all.
        let eof = DataHeader { len: 0, ..header };
        let raw = data_record(&eof, b"", b"");
        let Observation::Data {
            len, head, tail, ..
        } = decode(&raw).unwrap()
        else {
            panic!("not data");
        };
        assert_eq!((len, head, tail), (0, &b""[..], &b""[..]));
    }

    #[test]
    fn decodes_fork_exit_accept() {
        let e = Event {
            kind: KIND_FORK,
            tgid: 10,
            value: 11,
            ..Event::default()
        };
        assert_eq!(
            decode(&raw(&e)).unwrap(),
            Observation::Fork {
                parent: 10,
                child: 11
            }
        );
        let e = Event {
            kind: KIND_EXIT,
            tgid: 11,
            ..Event::default()
        };
        assert_eq!(decode(&raw(&e)).unwrap(), Observation::Exit { tgid: 11 });
        let e = Event {
            kind: KIND_ACCEPT,
            tgid: 3,
            value: 7,
            ..Event::default()
        };
        assert_eq!(decode(&raw(&e)).unwrap(), Observation::Accept { tgid: 3 });
    }

    #[test]
    fn decodes_exec_and_listen() {
        let e = Event {
            kind: KIND_EXEC,
            tgid: 42,
            tid: 42,
            ..Event::default()
        };
        assert_eq!(decode(&raw(&e)).unwrap(), Observation::Exec { tgid: 42 });
        let mut e = Event {
            kind: KIND_LISTEN,
            tgid: 42,
            ts_ns: 7,
            old_state: gatescope_common::TCP_CLOSE,
            new_state: gatescope_common::TCP_LISTEN,
            ..Event::default()
        };
        e.tuple.family = AF_INET6;
        e.tuple.lport = 8443;
        assert_eq!(
            decode(&raw(&e)).unwrap(),
            Observation::Listen {
                addr: "[::]:8443".parse().unwrap(),
                ts_ns: 7
            }
        );
    }
}
