//! The worker thread's order of I/O, read as nginx's event loop writes it.
//!
//! The capture's records of one thread arrive in the order the thread made
//! its syscalls (one ring buffer). An nginx worker runs one event handler at
//! a time, so what a thread did just before and just after an upstream
//! request says which client request it was for:
//!
//! - Before: the handler that read the last bytes of a client request on
//!   connection A goes on, without returning to the event loop, to write the
//!   upstream request on a cached keep-alive connection U, or to `connect()`
//!   a new one (CLOSE -> SYN_SENT runs in that syscall; the request is then
//!   written later, on a writable event). A `proxy_next_upstream` retry is
//!   started from the handler that read the failed attempt's answer (a 502,
//!   or end-of-file) on U1. A pipelined request is started right after the
//!   last write of the previous response on A.
//! - After: the handler that reads the upstream response writes it to the
//!   client at once: the first write to a client connection after reads on U.
//!
//! A timer-driven action (a retry after `proxy_connect_timeout`, a
//! `limit_req` delay) has no I/O before it, so "the I/O just before" can be
//! unrelated. What this file records is therefore only a *claim*; `join.rs`
//! accepts it only when it fits the client request exactly (the very read
//! that completed it, the very write that began its response, the same
//! status) and nothing contradicts it.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::capture::decode::Endpoints;

/// One transfer or connect by a worker thread, as correlation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// A read of `len` bytes (0: end-of-file) on a client connection.
    ClientRead { conn: Endpoints, len: u64, ts: u64 },
    /// A write on a client connection.
    ClientWrite { conn: Endpoints, ts: u64 },
    /// A read (0: end-of-file) on an upstream connection.
    UpstreamRead { conn: Endpoints, ts: u64 },
    /// A write on an upstream connection (kernel socket `sk`).
    UpstreamWrite { conn: Endpoints, sk: u64, ts: u64 },
    /// A failed read (a reset) on kernel socket `sk` the connection table no
    /// longer follows: the reset closed it first (its TCP_CLOSE comes from
    /// softirq before nginx's `recv()` fails).
    ReadFailed { sk: u64, ts: u64 },
    /// `connect()` of a new upstream connection, known by its kernel socket
    /// only: CLOSE -> SYN_SENT runs before `inet_hash_connect` picks the
    /// local port, so the record's local port is 0.
    Connect { sk: u64, ts: u64 },
}

impl Io {
    fn ts(self) -> u64 {
        match self {
            Io::ClientRead { ts, .. }
            | Io::ClientWrite { ts, .. }
            | Io::UpstreamRead { ts, .. }
            | Io::UpstreamWrite { ts, .. }
            | Io::ReadFailed { ts, .. }
            | Io::Connect { ts, .. } => ts,
        }
    }
}

/// How long after the previous I/O an action may begin and still count as
/// the same handler's. An nginx handler goes from its read to its write or
/// `connect()` in tens of microseconds (trace_links: 99% within 100 µs); a
/// timer-driven action after an unrelated read came 1 to 5 ms later under
/// `limit_req` at 200 requests a second. Beyond this the order claims
/// nothing: a missing claim costs a link at most, a false one speaks against
/// the right request (and left 3 in 4 of those calls ambiguous).
const SAME_HANDLER_NS: u64 = 1_000_000;

/// What started an upstream request, as its thread's order of I/O tells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// The read at `ts` on client connection `client`, which should be the
    /// one that completed the request.
    ClientRead { client: Endpoints, ts: u64 },
    /// The write at `ts` on `client`, which should be the last of the
    /// previous response there: the next (pipelined) request on it.
    ClientWrite { client: Endpoints, ts: u64 },
    /// Nothing the order vouches for (a timer, or nothing recorded before).
    #[default]
    Unknown,
}

/// Everything the order of I/O says about one upstream request (an
/// attempt), keyed by its connection and its first write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    pub origin: Origin,
    /// Started from the handler that read an earlier attempt's answer: a
    /// retry of the attempt on that connection that began at that time. Its
    /// `origin` is the earlier attempt's.
    pub retry_of: Option<(Endpoints, u64)>,
    /// The first client write after the reads of this attempt's response:
    /// that client connection and the write's time.
    pub response: Option<(Endpoints, u64)>,
    /// The attempt's final status once its exchange finished (0: no
    /// response). nginx retries only after an error or a status of 400 or
    /// more, so a read of a 2xx or 3xx answer starts no retry (a pipelined
    /// request is written next on the same connection).
    pub status: Option<u16>,
}

/// Claims kept at most; the oldest go first (each is taken when its
/// attempt is linked or given up, so only lost attempts age out).
const CLAIMS_MAX: usize = 65_536;
/// Threads and upstream connections followed at most.
const THREADS_MAX: usize = 16_384;
const UPSTREAMS_MAX: usize = 65_536;

#[derive(Debug, Default)]
struct Thread {
    last: Option<Io>,
    /// The upstream attempt whose response the thread's last reads were
    /// reading (connection, first write of its request).
    reading: Option<(Endpoints, u64)>,
    /// The last I/O began a new upstream request not started by a
    /// `connect()`: its claim's key.
    began: Option<(Endpoints, u64)>,
    /// The last reads were on two or more upstream connections in a row.
    batched_reads: bool,
}

#[derive(Debug, Default)]
struct Upstream {
    /// The last I/O on the connection was a write: the request is still
    /// being written.
    writing: bool,
    /// First write of the request in progress or last made.
    request_ts: Option<u64>,
}

/// Per-thread order of I/O and the claims it makes about upstream requests.
///
/// FxHash, as in the connection table: these maps are looked up several
/// times per data record (SipHash was about 6% of the agent's CPU under
/// `perf record` when the table still used it, BENCHMARKS.md), and their
/// keys are thread ids, kernel socket addresses and the gateway's own
/// upstream connections, none of which a client chooses.
#[derive(Debug, Default)]
pub struct Order {
    threads: FxHashMap<u32, Thread>,
    upstreams: FxHashMap<Endpoints, Upstream>,
    /// Kernel socket -> the origin of its `connect()`, until its first
    /// request is written.
    connects: FxHashMap<u64, (Origin, Option<(Endpoints, u64)>)>,
    /// Kernel socket -> upstream connection and the first write of its last
    /// request, for a failed read after the connection was closed.
    sockets: FxHashMap<u64, (Endpoints, u64)>,
    claims: FxHashMap<(Endpoints, u64), Claim>,
    claims_by_age: VecDeque<(Endpoints, u64)>,
    /// Thread -> its process.
    tgids: FxHashMap<u32, u32>,
    /// Process -> the first thread seen doing its socket I/O, and whether
    /// another thread did too.
    procs: FxHashMap<u32, (u32, bool)>,
}

impl Order {
    /// Whether process `tgid` (0: look it up by `tid`) does its socket I/O
    /// from more than one thread. The order of I/O reads an event loop that
    /// serves a request from one thread, first byte to last (nginx's worker
    /// processes). A gateway whose threads share connections (HAProxy's
    /// `nbthread`, Go's scheduler under Caddy) can read a client on one
    /// thread and write its upstream request on another, where the I/O just
    /// before belongs to an unrelated request: tests/tests/haproxy.rs saw
    /// such wrong links with two threads. Its calls are linked by headers
    /// only.
    fn shared_threads(&mut self, tgid: u32, tid: u32) -> bool {
        let tgid = if tgid == 0 {
            match self.tgids.get(&tid) {
                Some(&t) => t,
                None => return false,
            }
        } else {
            if self.tgids.len() >= THREADS_MAX && !self.tgids.contains_key(&tid) {
                self.tgids.clear();
            }
            self.tgids.insert(tid, tgid);
            tgid
        };
        if self.procs.len() >= THREADS_MAX && !self.procs.contains_key(&tgid) {
            self.procs.clear();
        }
        let (first, multi) = self.procs.entry(tgid).or_insert((tid, false));
        if *first != tid {
            *multi = true;
        }
        *multi
    }

    /// Whether process `tgid` was seen doing its socket I/O from more than
    /// one thread (see `shared_threads`): its calls are linked by headers
    /// only.
    pub fn is_shared(&self, tgid: u32) -> bool {
        self.procs.get(&tgid).is_some_and(|&(_, multi)| multi)
    }

    /// Thread `tid` of process `tgid` (0 when the record does not say) did
    /// `io`. A `tid` of 0 (not a thread's) is ignored.
    pub fn io(&mut self, tgid: u32, tid: u32, io: Io) {
        if tid == 0 {
            return;
        }
        let shared = self.shared_threads(tgid, tid);
        tracing::trace!(tid, ?io, "thread I/O");
        // A closed upstream connection's failed read: its last request.
        let (io, closed_request) = match io {
            Io::ReadFailed { sk, ts } => match self.sockets.get(&sk) {
                Some(&(conn, request)) => (Io::UpstreamRead { conn, ts }, Some(request)),
                None => (io, None),
            },
            io => (io, None),
        };
        if self.threads.len() >= THREADS_MAX && !self.threads.contains_key(&tid) {
            // Thread ids are reused, not grown without bound, by real
            // gateways; a flood only costs the links of the threads dropped.
            self.threads.clear();
        }
        let (mut prev, reading, began, mut batched_reads) = self
            .threads
            .get(&tid)
            .map_or((None, None, None, false), |t| {
                (t.last, t.reading, t.began, t.batched_reads)
            });
        if shared {
            // Nothing before it vouches for what a shared thread starts or
            // answers (see `shared_threads`).
            prev = None;
            batched_reads = true;
        }
        let mut next_reading = None;
        let mut next_began = None;
        let mut next_batched = false;
        match io {
            Io::Connect { sk, ts } => {
                let origin = self.origin_after(prev, reading, batched_reads, ts);
                if self.connects.len() >= UPSTREAMS_MAX {
                    // Connects that never wrote (refused, timed out).
                    self.connects.clear();
                }
                self.connects.insert(sk, origin);
                self.sockets.remove(&sk);
            }
            Io::UpstreamWrite { conn, sk, ts } => {
                // A new connection's first request is the connect()'s,
                // written later on a writable event.
                let (connected, origin) = match self.connects.remove(&sk) {
                    Some(connected) => (true, connected),
                    None => (false, self.origin_after(prev, reading, batched_reads, ts)),
                };
                let up = self.upstream(conn);
                let new_request = !up.writing;
                up.writing = true;
                if new_request {
                    up.request_ts = Some(ts);
                    let (mut origin, retry_of) = origin;
                    // Two new requests written one after the other, neither
                    // from a connect(): an event loop that read several
                    // clients before writing (HAProxy's: tests/tests/
                    // haproxy.rs saw swapped links), or a timer that fired
                    // for two requests. The read before the first names at
                    // most one of them: neither is claimed.
                    if !connected {
                        let burst = began.filter(|(c, _)| *c != conn).filter(|_| {
                            prev.is_some_and(|p| ts.saturating_sub(p.ts()) <= SAME_HANDLER_NS)
                        });
                        if let Some(key) = burst {
                            origin = Origin::Unknown;
                            if let Some(claim) = self.claims.get_mut(&key) {
                                claim.origin = Origin::Unknown;
                            }
                        }
                        next_began = Some((conn, ts));
                    }
                    if self.sockets.len() >= UPSTREAMS_MAX {
                        self.sockets.clear();
                    }
                    self.sockets.insert(sk, (conn, ts));
                    self.insert_claim(
                        (conn, ts),
                        Claim {
                            origin,
                            retry_of,
                            response: None,
                            status: None,
                        },
                    );
                }
            }
            Io::UpstreamRead { conn, ts } => {
                // Reads of two upstream connections in a row (HAProxy reads
                // several before writing to clients): the client write that
                // follows answers at most one of them, unknown which.
                next_batched = batched_reads
                    || matches!(prev, Some(Io::UpstreamRead { conn: c, ts: t })
                        if c != conn && ts.saturating_sub(t) <= SAME_HANDLER_NS);
                next_reading = if let Some(request) = closed_request {
                    Some((conn, request))
                } else {
                    let up = self.upstream(conn);
                    up.writing = false;
                    up.request_ts.map(|ts| (conn, ts))
                };
            }
            Io::ClientWrite { conn: client, ts } => {
                if let (Some(key), Some(Io::UpstreamRead { .. }), false) =
                    (reading, prev, batched_reads)
                {
                    if let Some(claim) = self.claims.get_mut(&key) {
                        if claim.response.is_none() {
                            claim.response = Some((client, ts));
                        }
                    }
                }
            }
            Io::ClientRead { .. } | Io::ReadFailed { .. } => {}
        }
        let thread = self.threads.entry(tid).or_default();
        thread.last = Some(io);
        thread.reading = next_reading;
        thread.began = next_began;
        thread.batched_reads = next_batched;
    }

    /// What the thread's previous I/O says started what it does next (at
    /// `now`): nothing unless it came just before, in the same handler.
    fn origin_after(
        &self,
        prev: Option<Io>,
        reading: Option<(Endpoints, u64)>,
        batched_reads: bool,
        now: u64,
    ) -> (Origin, Option<(Endpoints, u64)>) {
        let prev = prev.filter(|p| now.saturating_sub(p.ts()) <= SAME_HANDLER_NS);
        match prev {
            Some(Io::ClientRead { conn, len, ts }) if len > 0 => {
                (Origin::ClientRead { client: conn, ts }, None)
            }
            Some(Io::ClientWrite { conn, ts }) => (Origin::ClientWrite { client: conn, ts }, None),
            // The answer of an earlier attempt was read just before: a retry
            // of it, unless that answer already went to a client (then it
            // was not a failure nginx retries).
            // After reads of several upstream connections, which answer
            // failed is unknown.
            Some(Io::UpstreamRead { .. }) if batched_reads => (Origin::Unknown, None),
            Some(Io::UpstreamRead { .. }) => {
                match reading.and_then(|k| Some((k, self.claims.get(&k)?))) {
                    Some((key, claim))
                        if claim.response.is_none()
                            && claim.status.is_none_or(|s| s == 0 || s >= 400) =>
                    {
                        (claim.origin, Some(key))
                    }
                    _ => (Origin::Unknown, None),
                }
            }
            _ => (Origin::Unknown, None),
        }
    }

    fn upstream(&mut self, conn: Endpoints) -> &mut Upstream {
        if self.upstreams.len() >= UPSTREAMS_MAX && !self.upstreams.contains_key(&conn) {
            self.upstreams.clear();
        }
        self.upstreams.entry(conn).or_default()
    }

    fn insert_claim(&mut self, key: (Endpoints, u64), claim: Claim) {
        while self.claims_by_age.len() >= CLAIMS_MAX {
            if let Some(old) = self.claims_by_age.pop_front() {
                self.claims.remove(&old);
            }
        }
        if self.claims.insert(key, claim).is_none() {
            self.claims_by_age.push_back(key);
        }
    }

    /// The claim about the upstream request on `conn` whose first write was
    /// at `first_ns` (its exchange's `request_first_ns`).
    pub fn claim(&self, conn: &Endpoints, first_ns: u64) -> Claim {
        self.claims
            .get(&(*conn, first_ns))
            .copied()
            .unwrap_or_default()
    }

    /// The attempt on `conn` that began at `first_ns` finished with `status`.
    pub fn finished(&mut self, conn: &Endpoints, first_ns: u64, status: u16) {
        if let Some(claim) = self.claims.get_mut(&(*conn, first_ns)) {
            claim.status = Some(status);
        }
    }

    /// The attempt is linked or given up: its claim is no longer needed.
    pub fn forget_claim(&mut self, conn: &Endpoints, first_ns: u64) {
        self.claims.remove(&(*conn, first_ns));
    }

    /// An upstream connection closed. Its claims stay until their attempts
    /// are settled (the response's client write may come after the close).
    pub fn closed(&mut self, conn: &Endpoints) {
        self.upstreams.remove(conn);
    }

    /// Claims held (for the bounded-memory test).
    #[cfg(test)]
    pub fn claims_len(&self) -> usize {
        self.claims.len()
    }
}
