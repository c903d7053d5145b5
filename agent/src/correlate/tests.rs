//! Correlation without a kernel: a scripted worker thread does what nginx's
//! event loop does, and each attempt must be linked to the request the
//! script made it for, or left unlinked, never linked to another.

use std::net::SocketAddr;

use super::*;
use crate::{capture::decode::Endpoints, http::TraceHeaders};

pub(super) const TID: u32 = 7;
pub(super) const TGID: u32 = 7;

pub(super) fn client(n: u16) -> Endpoints {
    Endpoints {
        local: "127.0.0.1:8080".parse().unwrap(),
        remote: SocketAddr::new("10.0.0.1".parse().unwrap(), 40000 + n),
    }
}

pub(super) fn upstream(n: u16) -> Endpoints {
    Endpoints {
        local: SocketAddr::new("127.0.0.1".parse().unwrap(), 50000 + n),
        remote: "127.0.0.1:9000".parse().unwrap(),
    }
}

pub(super) fn exchange(path: &str, status: u16, req: (u64, u64), resp: (u64, u64)) -> Exchange {
    Exchange {
        method: "GET".into(),
        path: path.into(),
        host: None,
        status,
        request_bytes: 1,
        response_bytes: u64::from(resp.0 != 0),
        request_first_ns: req.0,
        request_last_ns: req.1,
        response_first_ns: resp.0,
        response_last_ns: resp.1,
        closed_ns: 0,
        upgraded: false,
        version: 1,
        trace: TraceHeaders::default(),
        grpc: None,
        genai: None,
    }
}

/// One worker thread, its clock, and what correlation said.
#[derive(Default)]
pub(super) struct Sim {
    pub(super) c: Correlator,
    now: u64,
}

impl Sim {
    pub(super) fn tick(&mut self) -> u64 {
        self.now += 10;
        self.now
    }
    /// Nothing happens on the thread for `ns`.
    pub(super) fn wait(&mut self, ns: u64) {
        self.now += ns;
    }
    pub(super) fn on(&mut self, tid: u32, io: impl FnOnce(u64) -> Io) -> u64 {
        let ts = self.tick();
        // Each thread its own process, as nginx's workers.
        self.c.io(tid, tid, io(ts));
        ts
    }
    pub(super) fn read_client(&mut self, n: u16) -> u64 {
        self.on(TID, |ts| Io::ClientRead {
            conn: client(n),
            len: 100,
            ts,
        })
    }
    pub(super) fn write_client(&mut self, n: u16) -> u64 {
        self.on(TID, |ts| Io::ClientWrite {
            conn: client(n),
            ts,
        })
    }
    pub(super) fn write_up(&mut self, n: u16) -> u64 {
        self.on(TID, |ts| Io::UpstreamWrite {
            conn: upstream(n),
            sk: u64::from(n),
            ts,
        })
    }
    pub(super) fn read_up(&mut self, n: u16) -> u64 {
        self.on(TID, |ts| Io::UpstreamRead {
            conn: upstream(n),
            ts,
        })
    }
    pub(super) fn connect(&mut self, n: u16) -> u64 {
        self.on(TID, |ts| Io::Connect {
            sk: u64::from(n),
            ts,
        })
    }
    pub(super) fn up_done(&mut self, n: u16, status: u16, first: u64, last: u64) {
        let e = exchange("/same", status, (first, first), (last, last));
        let u = upstream(n);
        self.c.upstream_done(TGID, &e, u.local, u.remote);
    }
    /// The attempts linked to the client exchange, as (upstream port,
    /// first write, link).
    pub(super) fn down_done(&mut self, n: u16, e: &Exchange) -> Vec<(u16, u64, Link)> {
        self.c
            .downstream_done(TGID, client(n), e)
            .iter()
            .map(|a| (a.local.port() - 50000, a.exchange.request_first_ns, a.link))
            .collect()
    }
    pub(super) fn unlinked(&mut self) -> Vec<(u16, Link)> {
        self.c
            .take_unlinked()
            .iter()
            .map(|(_, a)| (a.local.port() - 50000, a.link))
            .collect()
    }
}

use Link::{Ambiguous, Evidence, Inferred};

#[test]
fn concurrent_requests_on_one_path_answered_out_of_order() {
    let mut s = Sim::default();
    // Two clients, same path, cached upstream connections 1 and 2.
    let r1 = s.read_client(1);
    let w1 = s.write_up(1);
    let r2 = s.read_client(2);
    let w2 = s.write_up(2);
    // The second answers first.
    let a2 = s.read_up(2);
    s.up_done(2, 201, w2, a2);
    let o2 = s.write_client(2);
    let a1 = s.read_up(1);
    s.up_done(1, 200, w1, a1);
    let o1 = s.write_client(1);
    // Timing alone cannot tell them apart: both lie inside both requests.
    assert_eq!(
        s.down_done(2, &exchange("/same", 201, (r2, r2), (o2, o2))),
        [(2, w2, Inferred)]
    );
    assert_eq!(
        s.down_done(1, &exchange("/same", 200, (r1, r1), (o1, o1))),
        [(1, w1, Inferred)]
    );
    assert!(s.unlinked().is_empty());
    assert_eq!(s.c.waiting(), 0);
}

#[test]
fn each_thread_has_its_own_order() {
    let mut s = Sim::default();
    // Worker thread 7 reads request 1; thread 8's I/O (another worker
    // process) lands in between in the ring buffer; thread 7 writes
    // upstream.
    let r1 = s.read_client(1);
    s.on(8, |ts| Io::ClientRead {
        conn: client(2),
        len: 100,
        ts,
    });
    let w1 = s.write_up(1);
    let a1 = s.read_up(1);
    s.up_done(1, 200, w1, a1);
    s.on(8, |ts| Io::ClientWrite {
        conn: client(2),
        ts,
    });
    let o1 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r1, r1), (o1, o1))),
        [(1, w1, Inferred)]
    );
}

#[test]
fn a_new_connection_takes_the_request_of_its_connect() {
    let mut s = Sim::default();
    let r1 = s.read_client(1);
    s.connect(1);
    // Meanwhile another request goes out on a cached connection.
    let r2 = s.read_client(2);
    let w2 = s.write_up(2);
    // The new connection became writable: its first write follows
    // unrelated I/O.
    let w1 = s.write_up(1);
    let a2 = s.read_up(2);
    s.up_done(2, 200, w2, a2);
    let o2 = s.write_client(2);
    let a1 = s.read_up(1);
    s.up_done(1, 200, w1, a1);
    let o1 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r1, r1), (o1, o1))),
        [(1, w1, Inferred)]
    );
    assert_eq!(
        s.down_done(2, &exchange("/b", 200, (r2, r2), (o2, o2))),
        [(2, w2, Inferred)]
    );
}

#[test]
fn a_retry_after_a_502_joins_its_request() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    let w1 = s.write_up(1);
    let a1 = s.read_up(1);
    s.up_done(1, 502, w1, a1);
    // proxy_next_upstream: from the handler that read the 502.
    s.connect(2);
    let w2 = s.write_up(2);
    let a2 = s.read_up(2);
    s.up_done(2, 200, w2, a2);
    let o = s.write_client(1);
    let attempts = s.down_done(1, &exchange("/a", 200, (r, r), (o, o)));
    assert_eq!(attempts, [(1, w1, Inferred), (2, w2, Inferred)]);
    // The metrics take the answered attempt.
    let legs =
        s.c.downstream_done(TGID, client(1), &exchange("/a", 200, (r, r), (o, o)));
    assert!(answered(&legs).is_none(), "attempts are consumed once");
}

#[test]
fn a_reset_then_retry_links_the_answer_and_leaves_the_unchained_first_try() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    let w1 = s.write_up(1);
    // The first peer resets: the failed read is not a record, so the
    // retry's write follows unrelated I/O (another client's response).
    let other = s.write_client(9);
    s.up_done(1, 0, w1, other);
    let w2 = s.write_up(2);
    let a2 = s.read_up(2);
    s.up_done(2, 200, w2, a2);
    let o = s.write_client(1);
    // The answer is linked by its response; the first attempt cannot be
    // told from a timer-driven action that took this request's read.
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r, r), (o, o))),
        [(2, w2, Inferred)]
    );
    assert_eq!(s.unlinked(), [(1, Ambiguous)]);
}

#[test]
fn a_reset_read_after_the_close_chains_the_retry() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    let w1 = s.write_up(1);
    // The reset closed the connection (softirq), then nginx's recv()
    // failed: the table no longer knows the socket.
    s.c.io(TGID, TID, Io::ReadFailed { sk: 1, ts: w1 + 5 });
    s.up_done(1, 0, w1, w1 + 5);
    s.c.closed(&upstream(1));
    let w2 = s.write_up(2);
    let a2 = s.read_up(2);
    s.up_done(2, 200, w2, a2);
    let o = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r, r), (o, o))),
        [(1, w1, Inferred), (2, w2, Inferred)]
    );
}

#[test]
fn a_retry_after_another_clients_read_is_linked_by_its_answer_alone() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    let w1 = s.write_up(1);
    // Reset; the retry follows another client's read, so its request side
    // names that client and its response side this one: the answer wins (a
    // timer-driven retry inherits the loop's last read). The first try is
    // no longer chained to it: unlinked.
    let other = s.read_client(9);
    s.up_done(1, 0, w1, other);
    let w2 = s.write_up(2);
    let a2 = s.read_up(2);
    s.up_done(2, 200, w2, a2);
    let o = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r, r), (o, o))),
        [(2, w2, Inferred)]
    );
    assert_eq!(s.unlinked(), [(1, Ambiguous)]);
}

#[test]
fn pipelined_requests_follow_the_previous_response() {
    let mut s = Sim::default();
    // Both requests arrive in one read.
    let r = s.read_client(1);
    let w1 = s.write_up(1);
    let a1 = s.read_up(1);
    s.up_done(1, 200, w1, a1);
    let o1 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r, r), (o1, o1))),
        [(1, w1, Inferred)]
    );
    // The second is processed after the first response's last write.
    let w2 = s.write_up(1);
    let a2 = s.read_up(1);
    s.up_done(1, 404, w2, a2);
    let o2 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/b", 404, (r, r), (o2, o2))),
        [(1, w2, Inferred)]
    );
}

#[test]
fn a_pipelined_request_written_before_the_previous_answer_went_out_is_no_retry() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    let w1 = s.write_up(1);
    let a1 = s.read_up(1);
    s.up_done(1, 200, w1, a1);
    // The next pipelined request goes out before the first answer is
    // written to the client: not a retry of the first (it was a 200).
    let w2 = s.write_up(1);
    let o1 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r, r), (o1, o1))),
        [(1, w1, Inferred)]
    );
    let a2 = s.read_up(1);
    s.up_done(1, 200, w2, a2);
    let o2 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/b", 200, (r, r), (o2, o2))),
        [(1, w2, Inferred)]
    );
}

#[test]
fn an_action_long_after_the_last_io_claims_nothing() {
    let mut s = Sim::default();
    // Request B is read completely, then waits (limit_req delay).
    let rb = s.read_client(2);
    // 3 ms later a timer sends request X's upstream call: the read is not
    // its handler's.
    s.now += 3_000_000;
    let w = s.write_up(1);
    let a = s.read_up(1);
    s.up_done(1, 200, w, a);
    let ox = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/x", 200, (1, 1), (ox, ox))),
        [(1, w, Inferred)]
    );
    // B's own call, from a later timer, is linked by its answer as well.
    s.now += 3_000_000;
    let wb = s.write_up(2);
    let ab = s.read_up(2);
    s.up_done(2, 200, wb, ab);
    let ob = s.write_client(2);
    assert_eq!(
        s.down_done(2, &exchange("/b", 200, (rb, rb), (ob, ob))),
        [(2, wb, Inferred)]
    );
    assert!(s.unlinked().is_empty());
}

#[test]
fn a_timer_after_a_client_read_is_not_that_request() {
    let mut s = Sim::default();
    // Request B is read completely, then waits (limit_req delay).
    let rb = s.read_client(2);
    // A timer fires: a retry for request X (first try on upstream 1 timed
    // out) takes "the I/O just before", B's read.
    let rx = 1;
    let w3 = s.write_up(3);
    let a3 = s.read_up(3);
    s.up_done(3, 200, w3, a3);
    let ox = s.write_client(1);
    // B's own attempt, also from a timer.
    let wb = s.write_up(4);
    let ab = s.read_up(4);
    s.up_done(4, 200, wb, ab);
    let ob = s.write_client(2);
    // B: the timer's retry points at B by its request side but at X by its
    // response side: unlinked; and with that doubt about the order around
    // B, so is B's own attempt (which only its response side names).
    assert!(s
        .down_done(2, &exchange("/b", 200, (rb, rb), (ob, ob)))
        .is_empty());
    assert_eq!(s.unlinked(), [(3, Ambiguous), (4, Ambiguous)]);
    let _ = wb;
    // X gets nothing wrong either.
    assert!(s
        .down_done(1, &exchange("/x", 200, (rx, rx), (ox, ox)))
        .is_empty());
}

#[test]
fn a_timer_right_after_another_clients_read_is_linked_by_its_answer() {
    let mut s = Sim::default();
    // X was read long ago and delayed (limit_req); B is read now, delayed
    // too, and X's timer fires in the same loop iteration, just after.
    let rx = s.read_client(1);
    s.wait(50_000_000);
    let rb = s.read_client(2);
    let wx = s.write_up(3);
    let ax = s.read_up(3);
    s.up_done(3, 200, wx, ax);
    let ox = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/x", 200, (rx, rx), (ox, ox))),
        [(3, wx, Inferred)]
    );
    // B's own call, from its own timer, after X's response.
    s.wait(5_000_000);
    let wb = s.write_up(4);
    let ab = s.read_up(4);
    s.up_done(4, 200, wb, ab);
    let ob = s.write_client(2);
    assert_eq!(
        s.down_done(2, &exchange("/b", 200, (rb, rb), (ob, ob))),
        [(4, wb, Inferred)]
    );
    assert!(s.unlinked().is_empty());
}

#[test]
fn a_failed_timer_retry_next_to_an_answered_request_is_left_unlinked() {
    let mut s = Sim::default();
    let rb = s.read_client(2);
    // A timer-driven retry for another request takes B's read, and fails.
    let w3 = s.write_up(3);
    let a3 = s.read_up(3);
    s.up_done(3, 502, w3, a3);
    // B's own attempt later (timer, after some other client's response),
    // answered.
    s.write_client(5);
    let wb = s.write_up(4);
    let ab = s.read_up(4);
    s.up_done(4, 200, wb, ab);
    let ob = s.write_client(2);
    // Attempt 3's read says B, its 502 went to client 5's write: doubt,
    // and nothing around B is linked.
    assert!(s
        .down_done(2, &exchange("/b", 200, (rb, rb), (ob, ob)))
        .is_empty());
    assert_eq!(s.unlinked(), [(3, Ambiguous), (4, Ambiguous)]);
    let _ = wb;
}

#[test]
fn an_idle_connection_closing_does_not_make_a_retry_of_an_answered_request() {
    let mut s = Sim::default();
    let r1 = s.read_client(1);
    let w1 = s.write_up(1);
    let a1 = s.read_up(1);
    s.up_done(1, 200, w1, a1);
    let o1 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/a", 200, (r1, r1), (o1, o1))),
        [(1, w1, Inferred)]
    );
    // Later: the idle keep-alive connection is closed by the upstream (a
    // read of end-of-file), then a timer starts an unrelated request.
    s.read_up(1);
    let w2 = s.write_up(2);
    let a2 = s.read_up(2);
    s.up_done(2, 200, w2, a2);
    // Nothing links it to request 1 (already answered); it waits.
    let r3 = s.read_client(3);
    let o3 = s.write_client(3);
    assert!(s
        .down_done(3, &exchange("/c", 404, (r3, r3), (o3, o3)))
        .is_empty());
    s.c.forget(TGID);
    assert_eq!(s.unlinked(), [(2, Link::None)]);
}

#[test]
fn a_timer_retry_after_a_finished_connections_write_is_linked_by_its_answer() {
    let mut s = Sim::default();
    // Request X on client 1 waits for a connect timeout.
    let rx = s.read_client(1);
    s.connect(9);
    // Client 2's request comes and goes.
    let r2 = s.read_client(2);
    let w2 = s.write_up(2);
    let a2 = s.read_up(2);
    s.up_done(2, 200, w2, a2);
    let o2 = s.write_client(2);
    // The timer: X's retry, right after client 2's response.
    let w3 = s.write_up(3);
    assert_eq!(
        s.down_done(2, &exchange("/b", 200, (r2, r2), (o2, o2))),
        [(2, w2, Inferred)]
    );
    // Client 2's next request is served before the retry's answer.
    let r4 = s.read_client(2);
    let w4 = s.write_up(4);
    let a4 = s.read_up(4);
    s.up_done(4, 200, w4, a4);
    let o4 = s.write_client(2);
    assert_eq!(
        s.down_done(2, &exchange("/c", 200, (r4, r4), (o4, o4))),
        [(4, w4, Inferred)]
    );
    let a3 = s.read_up(3);
    s.up_done(3, 200, w3, a3);
    let ox = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/x", 200, (rx, rx), (ox, ox))),
        [(3, w3, Inferred)]
    );
    assert!(s.unlinked().is_empty());
}

#[test]
fn a_timer_after_a_response_does_not_take_the_next_request() {
    let mut s = Sim::default();
    let r1 = s.read_client(1);
    let w1 = s.write_up(1);
    let a1 = s.read_up(1);
    s.up_done(1, 200, w1, a1);
    let o1 = s.write_client(1);
    s.down_done(1, &exchange("/a", 200, (r1, r1), (o1, o1)));
    // A timer-driven attempt right after the response's last write.
    let w2 = s.write_up(2);
    s.up_done(2, 0, w2, w2 + 1);
    // The client's next request arrives later: not the timer's.
    let r3 = s.read_client(1);
    let w3 = s.write_up(3);
    let a3 = s.read_up(3);
    s.up_done(3, 200, w3, a3);
    let o3 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/b", 200, (r3, r3), (o3, o3))),
        [(3, w3, Inferred)]
    );
    // Given up with age: a request two minutes later sees it expire.
    s.c.closed(&client(1));
    assert!(s.unlinked().is_empty());
    s.now += 121_000_000_000;
    let r4 = s.read_client(4);
    let o4 = s.write_client(4);
    assert!(s
        .down_done(4, &exchange("/c", 404, (r4, r4), (o4, o4)))
        .is_empty());
    assert_eq!(s.unlinked(), [(2, Link::None)]);
    assert_eq!(s.c.waiting(), 0);
}

#[test]
fn a_pipelined_request_after_one_nginx_answered_itself() {
    let mut s = Sim::default();
    // Both requests in one read; nginx answers the first itself.
    let r = s.read_client(1);
    let o1 = s.write_client(1);
    assert!(s
        .down_done(1, &exchange("/local", 404, (r, r), (o1, o1)))
        .is_empty());
    let w = s.write_up(1);
    let a = s.read_up(1);
    s.up_done(1, 200, w, a);
    let o2 = s.write_client(1);
    assert_eq!(
        s.down_done(1, &exchange("/b", 200, (r, r), (o2, o2))),
        [(1, w, Inferred)]
    );
}

#[test]
fn a_504_or_499_attempt_is_linked_by_its_request_side() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    let w = s.write_up(1);
    // proxy_read_timeout: nginx closes the upstream connection, then
    // answers 504 itself.
    s.up_done(1, 0, w, w + 1_000);
    let o = s.write_client(1);
    let mut e = exchange("/slow", 504, (r, r), (o, o));
    e.response_first_ns = o + 1_000;
    e.response_last_ns = o + 1_000;
    assert_eq!(s.down_done(1, &e), [(1, w, Inferred)]);
    // A client that gave up before its upstream attempt ended: the attempt
    // comes after its request was reported, and stays unlinked.
    let r2 = s.read_client(2);
    let w2 = s.write_up(2);
    let mut gone = exchange("/slow", 499, (r2, r2), (0, 0));
    gone.closed_ns = w2 + 5;
    assert!(s.down_done(2, &gone).is_empty());
    s.up_done(2, 0, w2, w2 + 10);
    assert_eq!(s.unlinked(), [(2, Link::None)]);
}

#[test]
fn headers_link_what_the_order_cannot() {
    let mut s = Sim::default();
    let r = s.read_client(1);
    // Unrelated I/O before the write (say, a reset retry).
    s.write_client(9);
    let w = s.write_up(1);
    let a = s.read_up(1);
    let mut up = exchange("/a", 500, (w, w), (a, a));
    up.trace.request_id = Some("req-1".into());
    let u = upstream(1);
    s.c.upstream_done(TGID, &up, u.local, u.remote);
    // nginx intercepted the error: the status differs, the response side
    // says nothing.
    let o = s.read_client(1);
    let mut e = exchange("/a", 502, (r, r), (o, o));
    e.trace.request_id = Some("req-1".into());
    assert_eq!(s.down_done(1, &e), [(1, w, Evidence)]);
}

#[test]
fn a_header_shared_by_two_waiting_attempts_is_no_evidence() {
    let mut s = Sim::default();
    let trace = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
    let r1 = s.read_client(1);
    let r2 = s.read_client(2);
    let mut firsts = Vec::new();
    for n in [1, 2] {
        let w = s.write_up(n);
        let a = s.read_up(n);
        let mut up = exchange("/a", 200, (w, w), (a, a));
        up.trace.traceparent.clone_from(&trace);
        let u = upstream(n);
        s.c.upstream_done(TGID, &up, u.local, u.remote);
        firsts.push(w);
    }
    // Neither attempt's order points at request 1 (client 2's read came
    // last), and the header is on both: nothing links.
    let mut e = exchange("/a", 200, (r1, r1), (s.now + 100, s.now + 100));
    e.trace.traceparent.clone_from(&trace);
    assert!(s.down_done(1, &e).is_empty());
    let _ = r2;
}

#[test]
fn memory_is_bounded_when_nothing_is_ever_linked() {
    let mut s = Sim::default();
    for i in 0..10_000u16 {
        let n = i % 500;
        let w = s.write_up(n);
        let a = s.read_up(n);
        s.up_done(n, 200, w, a);
    }
    assert!(s.c.waiting() <= 2 * 4096, "{}", s.c.waiting());
    s.c.forget(TGID);
    assert_eq!(s.unlinked().len(), 10_000);
    assert_eq!(s.c.waiting(), 0);
}

/// An event loop that reads two clients, then writes both requests, then
/// reads both answers before writing to the clients (HAProxy's does): the
/// order alone would name client 2 for upstream call 1 (the read before its
/// write) and client 1 for call 2's answer (the write after its read).
/// Calls 1 and 2 answer `status1` and `status2`; the client exchanges are
/// returned, client 1's first.
fn batched(s: &mut Sim, status1: u16, status2: u16) -> (Exchange, Exchange) {
    let r1 = s.read_client(1);
    let r2 = s.read_client(2);
    let w1 = s.write_up(1);
    let w2 = s.write_up(2);
    let a1 = s.read_up(1);
    let a2 = s.read_up(2);
    s.up_done(1, status1, w1, a1);
    s.up_done(2, status2, w2, a2);
    let o1 = s.write_client(1);
    let o2 = s.write_client(2);
    (
        exchange("/a", status1, (r1, r1), (o1, o1)),
        exchange("/b", status2, (r2, r2), (o2, o2)),
    )
}

#[test]
fn reads_batched_before_writes_leave_a_call_answered_otherwise_unlinked() {
    // Call 1 answered 404, client 2 got 200: not its answer.
    let mut s = Sim::default();
    let (a, b) = batched(&mut s, 404, 200);
    assert_eq!(s.down_done(2, &b), []);
    // The metrics still get a leg (an upstream answered): a guess by time.
    assert!(s.c.guess_leg(TGID, &b).is_some());
    assert_eq!(s.down_done(1, &a), []);
    // Neither call is claimed by the order (two new requests written in a
    // row; two upstream reads in a row): both wait, to be given up as
    // `none` (two attempts and their two claims).
    assert!(s.unlinked().is_empty());
    assert_eq!(s.c.waiting(), 4);
}

#[test]
fn batched_reads_never_swap_calls_of_the_same_status() {
    // Both answered 200: a swapped pair the status cannot catch.
    let mut s = Sim::default();
    let (a, b) = batched(&mut s, 200, 200);
    assert_eq!(s.down_done(2, &b), []);
    assert_eq!(s.down_done(1, &a), []);
}
