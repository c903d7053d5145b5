//! Unit tests of decode: each record kind round-trips from its bytes, and bad records are typed errors.

use std::net::Ipv6Addr;

use gatescope_common::{Data, DataHeader};

use super::*;

/// The bytes the kernel would write for `record`.
fn raw<T: Payload>(record: &Record<T>) -> Vec<u8> {
    // SAFETY: records are #[repr(C)] plain integers without padding (sizes
    // asserted in gatescope_common).
    unsafe {
        std::slice::from_raw_parts(
            std::ptr::from_ref::<Record<T>>(record).cast::<u8>(),
            size_of::<Record<T>>(),
        )
    }
    .to_vec()
}

fn v4(lport: u16, laddr: [u8; 4], rport: u16, raddr: [u8; 4]) -> Tuple {
    let mut t = Tuple {
        family: AF_INET,
        lport,
        rport,
        ..Tuple::default()
    };
    t.laddr[..4].copy_from_slice(&laddr);
    t.raddr[..4].copy_from_slice(&raddr);
    t
}

#[test]
fn decodes_a_v4_connection_open() {
    let open = ConnOpen {
        sk: 0xffff_8880_0000_1000,
        role: common::Role::DOWNSTREAM,
        tuple: v4(8080, [127, 0, 0, 1], 51000, [10, 1, 2, 3]),
        ..ConnOpen::default()
    };
    let Observation::ConnOpen {
        netns: _,
        sk,
        role,
        endpoints,
        ts_ns,
        handshake,
        tid,
    } = decode(&raw(&Record::new(0, 0, 42, open))).unwrap()
    else {
        panic!("wrong kind");
    };
    assert_eq!(
        (sk, role, ts_ns, handshake, tid),
        (0xffff_8880_0000_1000, Role::Downstream, 42, None, 0)
    );
    assert_eq!(endpoints.local, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(endpoints.remote, "10.1.2.3:51000".parse().unwrap());
}

#[test]
fn decodes_a_client_open_with_its_handshake() {
    let mut open = ConnOpen {
        _pad: 0,
        netns: 0,
        sk: 9,
        role: common::Role::DOWNSTREAM,
        ifindex: 3,
        handshake_ns: 50_000_000,
        tuple: v4(8080, [10, 0, 0, 1], 40000, [10, 0, 0, 2]),
    };
    let endpoints = Endpoints {
        local: "10.0.0.1:8080".parse().unwrap(),
        remote: "10.0.0.2:40000".parse().unwrap(),
    };
    assert_eq!(
        decode(&raw(&Record::new(0, 0, 77, open))).unwrap(),
        Observation::ConnOpen {
            netns: 0,
            sk: 9,
            role: Role::Downstream,
            endpoints,
            ts_ns: 77,
            handshake: Some(Handshake {
                ifindex: 3,
                ns: 50_000_000
            }),
            tid: 0,
        }
    );
    // Not timed (its SYN was not seen): no handshake.
    open.handshake_ns = 0;
    assert!(matches!(
        decode(&raw(&Record::new(0, 0, 77, open))).unwrap(),
        Observation::ConnOpen {
            handshake: None,
            ..
        }
    ));
}

#[test]
fn an_active_open_names_the_connecting_thread() {
    let open = ConnOpen {
        sk: 3,
        role: common::Role::UPSTREAM,
        tuple: v4(40000, [127, 0, 0, 1], 9000, [127, 0, 0, 1]),
        ..ConnOpen::default()
    };
    let Observation::ConnOpen { role, tid, .. } =
        decode(&raw(&Record::new(7, 8, 1, open))).unwrap()
    else {
        panic!("wrong kind");
    };
    assert_eq!((role, tid), (Role::Upstream, 8));
}

#[test]
fn a_failed_read_is_its_own_observation() {
    let data = Data {
        dir: common::Direction::INGRESS,
        sk: 5,
        error: 104,
        ..Data::default()
    };
    assert_eq!(
        decode(&data_record(&data, b"", b"")).unwrap(),
        Observation::ReadFailed {
            sk: 5,
            tgid: 9,
            tid: 10,
            ts_ns: 77,
            errno: 104,
        }
    );
    // A failed read moved no bytes.
    let bad = Data { len: 3, ..data };
    assert_eq!(
        decode(&data_record(&bad, b"", b"abc")),
        Err(DecodeError::Lengths)
    );
}

#[test]
fn decodes_a_found_connection() {
    let found = ConnFound {
        sk: 9,
        role: common::Role::UPSTREAM,
        netns: 0,
        tuple: v4(40000, [127, 0, 0, 1], 9000, [127, 0, 0, 2]),
    };
    assert_eq!(
        decode(&raw(&Record::new(5, 0, 8, found))).unwrap(),
        Observation::ConnFound {
            netns: 0,
            sk: 9,
            role: Role::Upstream,
            endpoints: Endpoints {
                local: "127.0.0.1:40000".parse().unwrap(),
                remote: "127.0.0.2:9000".parse().unwrap(),
            },
            ts_ns: 8,
        }
    );
}

#[test]
fn decodes_a_state_change() {
    let state = State {
        sk: 4,
        old: TcpState::ESTABLISHED,
        new: TcpState::CLOSE,
        queued: 2,
        by_target: 1,
        tuple: v4(8080, [127, 0, 0, 1], 5000, [127, 0, 0, 3]),
    };
    assert_eq!(
        decode(&raw(&Record::new(5, 0, 9, state))).unwrap(),
        Observation::State {
            sk: 4,
            old: TcpState::ESTABLISHED,
            new: TcpState::CLOSE,
            endpoints: Endpoints {
                local: "127.0.0.1:8080".parse().unwrap(),
                remote: "127.0.0.3:5000".parse().unwrap(),
            },
            ts_ns: 9,
            queued: 2,
            by_target: true,
        }
    );
}

#[test]
fn decodes_fork_and_exit() {
    let fork = Fork { child: 11, _pad: 0 };
    assert_eq!(
        decode(&raw(&Record::new(10, 10, 1, fork))).unwrap(),
        Observation::Fork {
            parent: 10,
            child: 11
        }
    );
    assert_eq!(
        decode(&raw(&Record::new(11, 12, 1, Exit {}))).unwrap(),
        Observation::Exit { tgid: 11 }
    );
}

#[test]
fn decodes_exec_and_listen() {
    assert_eq!(
        decode(&raw(&Record::new(42, 42, 1, Exec {}))).unwrap(),
        Observation::Exec { tgid: 42 }
    );
    let listen = Listen {
        _pad: 0,
        netns: 4_026_532_301,
        tuple: Tuple {
            family: AF_INET6,
            lport: 8443,
            ..Tuple::default()
        },
    };
    assert_eq!(
        decode(&raw(&Record::new(42, 43, 7, listen))).unwrap(),
        Observation::Listen {
            netns: 4_026_532_301,
            tgid: 42,
            addr: "[::]:8443".parse().unwrap(),
            ts_ns: 7
        }
    );
}

#[test]
fn decodes_tcp_events_on_tracked_and_closed_sockets() {
    let tracked = Tcp {
        sk: 6,
        event: common::TcpEvent::RETRANSMIT,
        role: common::Role::UPSTREAM,
        tuple: Tuple::default(),
    };
    assert_eq!(
        decode(&raw(&Record::new(1, 0, 1, tracked))).unwrap(),
        Observation::Tcp {
            sk: 6,
            event: TcpEvent::Retransmit
        }
    );
    let closed = Tcp {
        sk: 0,
        event: common::TcpEvent::RESET_SENT,
        role: common::Role::DOWNSTREAM,
        tuple: v4(8080, [127, 0, 0, 1], 6000, [127, 0, 0, 4]),
    };
    assert_eq!(
        decode(&raw(&Record::new(1, 0, 1, closed))).unwrap(),
        Observation::TcpClosed {
            role: Role::Downstream,
            endpoints: Endpoints {
                local: "127.0.0.1:8080".parse().unwrap(),
                remote: "127.0.0.4:6000".parse().unwrap(),
            },
            event: TcpEvent::ResetSent,
        }
    );
    let received = Tcp {
        event: common::TcpEvent::RESET_RECEIVED,
        ..tracked
    };
    assert!(matches!(
        decode(&raw(&Record::new(1, 0, 1, received))).unwrap(),
        Observation::Tcp {
            event: TcpEvent::ResetReceived,
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
                netns: 0,
                sk: 1,
                role: Role::Upstream,
                endpoints: ep,
                ts_ns: 0,
                handshake: None,
                tid: 0,
            },
            "conn_open",
        ),
        (
            Observation::ConnFound {
                netns: 0,
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
                old: TcpState(0),
                new: TcpState(0),
                endpoints: ep,
                ts_ns: 0,
                queued: 0,
                by_target: false,
            },
            "state",
        ),
        (
            Observation::Data {
                sk: 1,
                dir: Direction::Ingress,
                len: 0,
                tgid: 0,
                tid: 0,
                ts_ns: 0,
                head: b"",
                tail: b"",
            },
            "data",
        ),
        (
            Observation::Tcp {
                sk: 1,
                event: TcpEvent::Retransmit,
            },
            "tcp",
        ),
        (
            Observation::TcpClosed {
                role: Role::Upstream,
                endpoints: ep,
                event: TcpEvent::ResetSent,
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
                netns: 0,
                tgid: 0,
                addr: ep.local,
                ts_ns: 0,
            },
            "listen",
        ),
    ];
    for (obs, name) in named {
        assert_eq!(KINDS[obs.kind_index()], name);
    }
    // The labels, in the order the agent has always exported them.
    assert_eq!(
        KINDS,
        [
            "conn_open",
            "conn_found",
            "state",
            "data",
            "tcp",
            "fork",
            "exit",
            "exec",
            "listen",
            "tls_data",
            "data_piece"
        ]
    );
}

#[test]
fn decodes_a_piece_and_refuses_one_with_bad_lengths() {
    let piece = DataPiece {
        sk: 5,
        offset: 32768,
        dir: common::Direction::EGRESS,
        piece_len: 3,
    };
    let mut bytes = raw(&Record::new(9, 10, 77, piece));
    bytes.extend_from_slice(b"xyz");
    let obs = decode(&bytes).unwrap();
    assert_eq!(
        obs,
        Observation::Piece {
            sk: 5,
            dir: Direction::Egress,
            tid: 10,
            ts_ns: 77,
            offset: 32768,
            bytes: b"xyz",
        }
    );
    assert_eq!(KINDS[obs.kind_index()], "data_piece");
    // shorter than it says, and empty
    assert_eq!(decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Lengths));
    let empty = DataPiece {
        piece_len: 0,
        ..piece
    };
    assert_eq!(
        decode(&raw(&Record::new(9, 10, 77, empty))),
        Err(DecodeError::Lengths)
    );
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
    // A header alone, for a kind whose payload is longer.
    let open = raw(&Record::new(0, 0, 0, ConnOpen::default()));
    assert_eq!(decode(&open[..24]), Err(DecodeError::Short(24)));

    let mut unknown = raw(&Record::new(0, 0, 0, Exit {}));
    unknown[..4].copy_from_slice(&99u32.to_ne_bytes());
    assert_eq!(decode(&unknown), Err(DecodeError::Kind(Kind(99))));
    assert_eq!(
        DecodeError::Kind(Kind(99)).to_string(),
        "unknown record kind 99"
    );

    let bad_role = ConnOpen {
        role: common::Role(7),
        ..ConnOpen::default()
    };
    assert_eq!(
        decode(&raw(&Record::new(0, 0, 0, bad_role))),
        Err(DecodeError::Role(common::Role(7)))
    );
    let bad_found = ConnFound {
        role: common::Role(0),
        ..ConnFound::default()
    };
    assert_eq!(
        decode(&raw(&Record::new(0, 0, 0, bad_found))),
        Err(DecodeError::Role(common::Role(0)))
    );
    let bad_event = Tcp {
        sk: 1,
        event: common::TcpEvent(9),
        ..Tcp::default()
    };
    assert_eq!(
        decode(&raw(&Record::new(0, 0, 0, bad_event))),
        Err(DecodeError::TcpEvent(common::TcpEvent(9)))
    );

    // Data records: header alone, bad direction, head longer than sent.
    let data = Data {
        dir: common::Direction::EGRESS,
        len: 10,
        ..Data::default()
    };
    assert_eq!(
        decode(&data_record(&data, b"", b"abcd")[..40]),
        Err(DecodeError::Short(40))
    );
    let bad_dir = Data {
        dir: common::Direction(9),
        ..data
    };
    assert_eq!(
        decode(&data_record(&bad_dir, b"", b"abcd")),
        Err(DecodeError::Direction(common::Direction(9)))
    );
    let too_long = Data { len: 3, ..data };
    assert_eq!(
        decode(&data_record(&too_long, b"", b"abcd")),
        Err(DecodeError::Lengths)
    );
}

fn data_record(data: &Data, tail: &[u8], head: &[u8]) -> Vec<u8> {
    let data = Data {
        head_len: head.len() as u32,
        tail_len: tail.len() as u32,
        ..*data
    };
    let header: DataHeader = Record::new(9, 10, 77, data);
    let mut out = raw(&header);
    let mut area = [0u8; DATA_TAIL_MAX];
    area[..tail.len()].copy_from_slice(tail);
    out.extend_from_slice(&area);
    out.extend_from_slice(head);
    out
}

#[test]
fn decodes_data_with_head_and_tail() {
    let data = Data {
        dir: common::Direction::INGRESS,
        sk: 5,
        len: 5000,
        ..Data::default()
    };
    let raw = data_record(&data, b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n");
    assert_eq!(
        decode(&raw).unwrap(),
        Observation::Data {
            sk: 5,
            dir: Direction::Ingress,
            len: 5000,
            tgid: 9,
            tid: 10,
            ts_ns: 77,
            head: b"HTTP/1.1 200 OK\r\n",
            tail: b"0\r\n\r\n",
        }
    );
    // A read at end-of-file: no bytes at all.
    let eof = Data { len: 0, ..data };
    let raw = data_record(&eof, b"", b"");
    let Observation::Data {
        len, head, tail, ..
    } = decode(&raw).unwrap()
    else {
        panic!("not data");
    };
    assert_eq!((len, head, tail), (0, &b""[..], &b""[..]));
}
