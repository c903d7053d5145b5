//! Stages 3-4 per connection: one HTTP parser (`http::HttpConn`) for each
//! tracked connection, fed in order with the segments of both directions,
//! and the stub_status phase counts (reading / writing / waiting) of the
//! downstream connections, kept incrementally.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::{
    capture::decode::{Direction, Role},
    http::{HttpConn, HttpEvent, Phase, Segment, Side},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

impl PhaseCounts {
    fn slot(&mut self, phase: Phase) -> Option<&mut u64> {
        match phase {
            Phase::Reading => Some(&mut self.reading),
            Phase::Writing => Some(&mut self.writing),
            Phase::Waiting => Some(&mut self.waiting),
            Phase::Opaque => None,
        }
    }
}

struct Session {
    http: HttpConn,
    side: Side,
    /// When the last response on this connection ended: a pipelined request
    /// waits for it, and the gateway's clock for it starts only then.
    last_response_ns: u64,
}

/// A connection the kernel closed (a reset) with bytes still queued for the
/// gateway to read: a client's request, an upstream's response.
struct LateSession {
    http: HttpConn,
    side: Side,
    last_ns: u64,
    /// When the agent last fed it, for [`Sessions::idle_late`].
    touched: Instant,
}

/// How long a late session waits for the gateway's next read before it ends.
pub const LATE_IDLE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Sessions {
    /// By socket address (FxHash: one lookup per transfer; kernel
    /// addresses are not attacker-chosen).
    conns: FxHashMap<u64, Session>,
    phases: PhaseCounts,
    /// Parsed apart and outside the phase counts: the connection is no
    /// longer active. Flushed by [`Sessions::close_late`].
    late: FxHashMap<u64, LateSession>,
}

impl Sessions {
    pub fn phases(&self) -> PhaseCounts {
        self.phases
    }

    /// Starts parsing a connection: from its first byte when its open was
    /// seen, else (`midstream`) from the next message boundary.
    pub fn open(&mut self, sk: u64, role: Role, midstream: bool) {
        self.remove(sk, None, &mut Vec::new());
        let side = match role {
            Role::Downstream => Side::Server,
            Role::Upstream => Side::Client,
        };
        let http = if midstream {
            HttpConn::new_midstream(side)
        } else {
            HttpConn::new(side)
        };
        let session = Session {
            http,
            side,
            last_response_ns: 0,
        };
        count(&mut self.phases, &session, true);
        self.conns.insert(sk, session);
    }

    /// Feeds one transfer. A zero-length read is the peer's end of stream.
    /// From an upstream it ends a close-delimited response at once. From a
    /// client it changes nothing yet: the gateway reacts by finishing (or
    /// abandoning, 499) what is in flight, closing its upstream call first,
    /// and the exchange ends when the gateway closes the client connection
    /// (see [`Sessions::close`]), as nginx accounts for it.
    pub fn data(&mut self, sk: u64, dir: Direction, seg: &Segment, out: &mut Vec<HttpEvent>) {
        if seg.len == 0 {
            let upstream_eof = dir == Direction::Ingress
                && self.conns.get(&sk).is_some_and(|s| s.side == Side::Client);
            if let Some(mut session) = upstream_eof.then(|| self.conns.remove(&sk)).flatten() {
                count(&mut self.phases, &session, false);
                session.http.on_close(seg.ts_ns, out);
            }
            return;
        }
        // In place: a session is a few hundred bytes, and this runs for
        // every transfer.
        let Some(session) = self.conns.get_mut(&sk) else {
            return;
        };
        count(&mut self.phases, session, false);
        let first_new = out.len();
        if dir == requests_direction(session.side) {
            session.http.on_request_bytes(seg, out);
        } else {
            session.http.on_response_bytes(seg, out);
        }
        if session.side == Side::Server {
            for event in &mut out[first_new..] {
                if let HttpEvent::Exchange(exchange) = event {
                    exchange.request_first_ns =
                        exchange.request_first_ns.max(session.last_response_ns);
                    session.last_response_ns =
                        session.last_response_ns.max(exchange.response_last_ns);
                }
            }
        }
        count(&mut self.phases, session, true);
    }

    /// The kernel closed `sk` at `ts_ns` with bytes still queued: its parsing
    /// goes on with what the gateway reads next, outside the phase counts.
    pub fn defer(&mut self, sk: u64, ts_ns: u64, now: Instant) {
        let Some(session) = self.conns.remove(&sk) else {
            return;
        };
        count(&mut self.phases, &session, false);
        self.late.insert(
            sk,
            LateSession {
                http: session.http,
                side: session.side,
                last_ns: ts_ns,
                touched: now,
            },
        );
    }

    /// Bytes the gateway read from a deferred connection (see
    /// [`Sessions::defer`]) after the kernel closed it. A response completes
    /// the upstream call in flight. A request is abandoned (499) when
    /// [`Sessions::close_late`] ends it: the client is gone. Bytes of a
    /// connection that was not deferred (the kernel could not read its queue:
    /// no BTF) are not parsed.
    pub fn late_data(
        &mut self,
        sk: u64,
        dir: Direction,
        seg: &Segment,
        now: Instant,
        out: &mut Vec<HttpEvent>,
    ) {
        let Some(late) = self.late.get_mut(&sk) else {
            return;
        };
        late.last_ns = late.last_ns.max(seg.ts_ns);
        late.touched = now;
        if seg.len == 0 {
            return;
        }
        if dir == requests_direction(late.side) {
            late.http.on_request_bytes(seg, out);
        } else {
            late.http.on_response_bytes(seg, out);
        }
    }

    /// Late sessions the gateway has not read from for [`LATE_IDLE`].
    pub fn idle_late(&self, now: Instant) -> Vec<u64> {
        self.late
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.touched) >= LATE_IDLE)
            .map(|(&sk, _)| sk)
            .collect()
    }

    /// Ends a late connection at its last read. False when it had none.
    pub fn close_late(&mut self, sk: u64, out: &mut Vec<HttpEvent>) -> bool {
        let Some(mut late) = self.late.remove(&sk) else {
            return false;
        };
        late.http.on_close(late.last_ns, out);
        true
    }

    /// The gateway closed its side of the connection, or it was reset: flush
    /// what it had in progress.
    pub fn close(&mut self, sk: u64, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        self.remove(sk, Some(ts_ns), out);
    }

    /// Drops a connection without flushing it: its close was never seen, so
    /// when it ended is unknown.
    pub fn forget(&mut self, sk: u64) {
        self.remove(sk, None, &mut Vec::new());
    }

    fn remove(&mut self, sk: u64, close_at: Option<u64>, out: &mut Vec<HttpEvent>) {
        if let Some(mut session) = self.conns.remove(&sk) {
            count(&mut self.phases, &session, false);
            if let Some(ts) = close_at {
                session.http.on_close(ts, out);
            }
        }
    }
}

/// Adds (or removes) a downstream session's phase to the counts.
fn count(phases: &mut PhaseCounts, session: &Session, add: bool) {
    if session.side != Side::Server {
        return;
    }
    if let Some(slot) = phases.slot(session.http.phase()) {
        if add {
            *slot += 1;
        } else {
            *slot = slot.saturating_sub(1);
        }
    }
}

/// Which way requests travel on a connection the gateway is `side` of.
fn requests_direction(side: Side) -> Direction {
    match side {
        Side::Server => Direction::Ingress,
        Side::Client => Direction::Egress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(ts_ns: u64, bytes: &[u8]) -> Segment<'_> {
        Segment {
            ts_ns,
            len: bytes.len() as u64,
            head: bytes,
            tail: &[],
        }
    }

    #[test]
    fn late_reads_of_a_closed_client_connection_end_as_abandoned() {
        let mut s = Sessions::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        // The client reset an unaccepted connection with its request queued.
        s.open(7, Role::Downstream, false);
        s.defer(7, 90, t0);
        // The head arrives in two reads, after the kernel closed the socket.
        s.late_data(
            7,
            Direction::Ingress,
            &seg(100, b"GET /a?x=1 HTTP/1.1\r\nHo"),
            t0,
            &mut out,
        );
        s.late_data(
            7,
            Direction::Ingress,
            &seg(150, b"st: gs\r\n\r\n"),
            t0,
            &mut out,
        );
        s.late_data(7, Direction::Ingress, &seg(160, b""), t0, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.phases(), PhaseCounts::default(), "not active");
        assert!(s.idle_late(t0 + LATE_IDLE / 2).is_empty());
        assert_eq!(s.idle_late(t0 + LATE_IDLE), vec![7]);
        assert!(s.close_late(7, &mut out));
        assert!(!s.close_late(7, &mut out));
        let [HttpEvent::Exchange(ex)] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(
            (
                ex.path.as_str(),
                ex.status,
                ex.request_bytes,
                ex.response_bytes
            ),
            ("/a", 499, 33, 0)
        );
        assert_eq!((ex.request_first_ns, ex.closed_ns), (100, 160));
        assert!(s.idle_late(t0 + LATE_IDLE).is_empty());
    }

    #[test]
    fn a_deferred_upstream_call_completes_with_the_response_read_late() {
        let mut s = Sessions::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        s.open(3, Role::Upstream, false);
        let req = b"GET /x HTTP/1.1\r\nHost: up\r\n\r\n";
        s.data(3, Direction::Egress, &seg(10, req), &mut out);
        // The upstream answered and reset before the gateway read.
        s.defer(3, 20, t0);
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        s.late_data(3, Direction::Ingress, &seg(30, resp), t0, &mut out);
        let [HttpEvent::Exchange(ex)] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(
            (ex.status, ex.response_bytes, ex.response_last_ns),
            (200, 40, 30)
        );
        out.clear();
        assert!(s.close_late(3, &mut out));
        assert!(out.is_empty(), "{out:?}");
        // Without a deferred session late bytes are not parsed.
        s.late_data(4, Direction::Ingress, &seg(30, resp), t0, &mut out);
        assert!(out.is_empty() && s.idle_late(t0 + LATE_IDLE).is_empty());
    }
}
