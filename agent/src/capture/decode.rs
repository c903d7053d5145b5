//! Turns raw ring-buffer records into typed observations. Pure, so every kind
//! of record can be tested without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gatescope_common::{
    Event, Tuple, AF_INET, AF_INET6, DIR_EGRESS, DIR_INGRESS, KIND_ACCEPT, KIND_BYTES,
    KIND_CONN_OPEN, KIND_EXIT, KIND_FORK, KIND_STATE, ROLE_DOWNSTREAM, ROLE_UPSTREAM,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A client's connection to the gateway (passive open).
    Downstream,
    /// The gateway's connection to an upstream (active open).
    Upstream,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    ConnOpen {
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
    },
    /// `len == 0` is a read that returned end-of-file.
    Bytes {
        sk: u64,
        dir: Direction,
        len: u64,
        tgid: u32,
    },
    Accept {
        tgid: u32,
    },
    Fork {
        parent: u32,
        child: u32,
    },
    Exit {
        tgid: u32,
    },
}

impl Observation {
    /// The `kind` label of `gatescope_events_received_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Observation::ConnOpen { .. } => "conn_open",
            Observation::State { .. } => "state",
            Observation::Bytes { .. } => "bytes",
            Observation::Accept { .. } => "accept",
            Observation::Fork { .. } => "fork",
            Observation::Exit { .. } => "exit",
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
}

pub const KINDS: [&str; 6] = ["conn_open", "state", "bytes", "accept", "fork", "exit"];

pub fn decode(raw: &[u8]) -> Result<Observation, DecodeError> {
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
        },
        KIND_STATE => Observation::State {
            sk: e.sk,
            old: e.old_state,
            new: e.new_state,
            endpoints: endpoints(&e.tuple),
            ts_ns: e.ts_ns,
        },
        KIND_BYTES => Observation::Bytes {
            sk: e.sk,
            dir: match e.role {
                DIR_INGRESS => Direction::Ingress,
                DIR_EGRESS => Direction::Egress,
                other => return Err(DecodeError::Role(other, e.kind)),
            },
            len: e.value.max(0) as u64,
            tgid: e.tgid,
        },
        KIND_ACCEPT => Observation::Accept { tgid: e.tgid },
        KIND_FORK => Observation::Fork {
            parent: e.tgid,
            child: e.value as u32,
        },
        KIND_EXIT => Observation::Exit { tgid: e.tgid },
        other => return Err(DecodeError::Kind(other)),
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
            kind: KIND_BYTES,
            role: 7,
            ..Event::default()
        };
        assert_eq!(decode(&raw(&e)), Err(DecodeError::Role(7, KIND_BYTES)));
    }

    #[test]
    fn decodes_bytes_fork_exit_accept() {
        let e = Event {
            kind: KIND_BYTES,
            role: DIR_EGRESS,
            sk: 5,
            value: 1500,
            tgid: 9,
            ..Event::default()
        };
        assert_eq!(
            decode(&raw(&e)).unwrap(),
            Observation::Bytes {
                sk: 5,
                dir: Direction::Egress,
                len: 1500,
                tgid: 9
            }
        );
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
}
