//! Each worker thread's I/O, in the thread's order, for correlation
//! (correlate/order.rs): which connection it read or wrote, and when.

use crate::{
    capture::decode::{Direction, Observation, Role},
    correlate::Io,
};

use super::Pipeline;

impl Pipeline {
    /// Hands correlation each worker thread's I/O, in the thread's order.
    /// On a TLS connection that is the plaintext OpenSSL returned, at the
    /// times its requests are parsed at; the socket's transfers inside
    /// OpenSSL's calls come earlier and would claim for no request.
    pub(super) fn thread_order(&mut self, obs: &Observation) {
        let (tgid, tid, io) = match *obs {
            Observation::Data {
                sk,
                dir,
                len,
                tgid,
                tid,
                ts_ns: ts,
                ..
            }
            | Observation::Plaintext {
                sk,
                dir,
                len,
                tgid,
                tid,
                ts_ns: ts,
                ..
            } => {
                let Some(conn) = self.table.conn(sk) else {
                    return;
                };
                if conn.tls != matches!(obs, Observation::Plaintext { .. }) {
                    return;
                }
                let conn_ends = conn.endpoints;
                let io = match (conn.role, dir) {
                    (Role::Downstream, Direction::Ingress) => Io::ClientRead {
                        conn: conn_ends,
                        len,
                        ts,
                    },
                    (Role::Downstream, Direction::Egress) => Io::ClientWrite {
                        conn: conn_ends,
                        ts,
                    },
                    (Role::Upstream, Direction::Ingress) => Io::UpstreamRead {
                        conn: conn_ends,
                        ts,
                    },
                    (Role::Upstream, Direction::Egress) => Io::UpstreamWrite {
                        conn: conn_ends,
                        sk,
                        ts,
                    },
                };
                (tgid, tid, io)
            }
            Observation::ConnOpen {
                role: Role::Upstream,
                sk,
                ts_ns,
                tid,
                ..
            } => (0, tid, Io::Connect { sk, ts: ts_ns }),
            // A reset read: an upstream's failed answer (nginx retries the
            // next peer from this handler), or a client that went away.
            Observation::ReadFailed {
                sk,
                tgid,
                tid,
                ts_ns,
                ..
            } => {
                let Some(conn) = self.table.conn(sk) else {
                    return self
                        .correlator
                        .io(tgid, tid, Io::ReadFailed { sk, ts: ts_ns });
                };
                let io = match conn.role {
                    Role::Upstream => Io::UpstreamRead {
                        conn: conn.endpoints,
                        ts: ts_ns,
                    },
                    Role::Downstream => Io::ClientRead {
                        conn: conn.endpoints,
                        len: 0,
                        ts: ts_ns,
                    },
                };
                (tgid, tid, io)
            }
            _ => return,
        };
        self.correlator.io(tgid, tid, io);
    }
}
