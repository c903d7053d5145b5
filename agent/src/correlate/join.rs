//! Joins each finished upstream attempt to the client request it was made
//! for, or leaves it unlinked. A missing link is acceptable, a wrong one is
//! not: an attempt is linked to a client request only when some evidence
//! points at that very request and none points elsewhere.
//!
//! Only the attempts that lie inside the client request's span are weighed,
//! by three witnesses, each saying "this request", "another one" or nothing:
//! - headers: the same `traceparent` or `X-Request-ID` on both legs, carried
//!   by no other attempt inside the span (`Link::Evidence`);
//! - the request side of the thread's order (order.rs): the read that
//!   completed this request (its `request_last_ns`, and no earlier request
//!   completed by the same read), or the last write of the previous response
//!   on the connection for a pipelined request;
//! - the response side: the first client write after the attempt's response
//!   was read is this request's first response byte, with the same status.
//!
//! An attempt one witness ties to this request and another to a different
//! one is left unlinked (`Link::Ambiguous`), and so, with that doubt, are the
//! request's other inferred attempts; but for a read before the attempt that
//! names another request while the answer names this one: a timer-driven
//! call inherits whatever read its event loop iteration made last. A request then takes its answered
//! attempt and the chain of attempts it retried, or without an answer a
//! single first attempt and its retries: anything else (a timer-driven
//! action that inherited an unrelated "I/O just before") leaves the doubtful
//! attempts unlinked. Attempts no request claims are given up with age or at
//! exit (`Link::None`).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{
    order::{Claim, Io, Order, Origin},
    Attempt, Link, UpstreamLeg,
};
use crate::{capture::decode::Endpoints, http::Exchange};

/// What a witness says about an attempt and one client request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Says {
    This,
    Another,
    Nothing,
}

/// A client connection's last finished exchange.
#[derive(Clone, Copy, Debug)]
struct Previous {
    request_last_ns: u64,
    end_ns: u64,
}

/// Attempts wait here, per gateway process, until the client request they
/// were made for finishes. nginx serves a request from one worker from first
/// byte to last, and reads the upstream response before it writes the last
/// byte of the client response, so the attempt is waiting by then.
#[derive(Debug, Default)]
pub struct Correlator {
    order: Order,
    /// Per process, by (end, arrival): a client request looks only at the
    /// attempts that ended inside its span, whatever else waits. A queue
    /// stays in place when it empties (until its process exits): a queue
    /// dropped and rebuilt per request freed and allocated its node each
    /// time, which `perf` showed as malloc's consolidation (3% of the
    /// agent's CPU). FxHash for these maps, as in order.rs: each is looked
    /// up once or twice per exchange.
    pending: FxHashMap<u32, BTreeMap<(u64, u64), Attempt>>,
    /// Arrival numbers, to keep attempts with the same end apart.
    arrivals: u64,
    clients: FxHashMap<Endpoints, Previous>,
    /// Attempts given up, for `Sinks::unlinked` (see [`Correlator::take_unlinked`]).
    unlinked: Vec<(u32, Attempt)>,
}

/// Waiting attempts kept per process; the oldest are given up first. A
/// worker has at most a few thousand requests in flight.
const PENDING_MAX: usize = 4096;
/// An attempt older than this (relative to a newer client request) can no
/// longer be linked (nginx's longest default timeout is 60 s).
const PENDING_AGE_NS: u64 = 120_000_000_000;
/// Client connections remembered at most (each removed at its close).
const CLIENTS_MAX: usize = 262_144;

fn key(a: &Attempt) -> Endpoints {
    Endpoints {
        local: a.local,
        remote: a.peer,
    }
}

impl Correlator {
    /// Thread `tid` of a gateway process did `io` (before the record's
    /// exchanges are finished, so a claim is complete when they are).
    pub fn io(&mut self, tgid: u32, tid: u32, io: Io) {
        self.order.io(tgid, tid, io);
    }

    /// An upstream exchange of process `tgid` finished on the connection
    /// `local` -> `peer`.
    pub fn upstream_done(
        &mut self,
        tgid: u32,
        exchange: &Exchange,
        local: std::net::SocketAddr,
        peer: std::net::SocketAddr,
    ) {
        let attempt = Attempt {
            exchange: exchange.clone(),
            peer,
            local,
            link: Link::None,
        };
        self.order
            .finished(&key(&attempt), exchange.request_first_ns, exchange.status);
        // The client request whose read it claims already finished (a 499:
        // nginx closes the upstream connection after the client's): too
        // late. (A claimed client write says nothing against other requests,
        // so such an attempt waits: its response side may still name one.)
        let claim = self.order.claim(&key(&attempt), exchange.request_first_ns);
        let late = match claim.origin {
            Origin::ClientRead { client, ts } => self
                .clients
                .get(&client)
                .is_some_and(|p| p.request_last_ns >= ts),
            Origin::ClientWrite { .. } | Origin::Unknown => false,
        };
        if late {
            self.settle(tgid, attempt, Link::None);
            return;
        }
        self.arrivals += 1;
        let queue = self.pending.entry(tgid).or_default();
        let oldest = (queue.len() >= PENDING_MAX)
            .then(|| queue.pop_first())
            .flatten();
        queue.insert((exchange.end_ns(), self.arrivals), attempt);
        if let Some((_, old)) = oldest {
            self.settle(tgid, old, Link::None);
        }
    }

    /// The upstream calls linked to a client exchange served by process
    /// `tgid` on `client`, in the order they were made (the answered one
    /// last).
    pub fn downstream_done(
        &mut self,
        tgid: u32,
        client: Endpoints,
        exchange: &Exchange,
    ) -> Vec<Attempt> {
        let prev = self.clients.get(&client).copied();
        if self.clients.len() >= CLIENTS_MAX && prev.is_none() {
            self.clients.clear();
        }
        self.clients.insert(
            client,
            Previous {
                request_last_ns: exchange.request_last_ns,
                end_ns: exchange.end_ns(),
            },
        );
        // Taken out while `settle` needs `self` (an empty map allocates
        // nothing), and put back below with its nodes.
        let Some(mut queue) = self.pending.get_mut(&tgid).map(std::mem::take) else {
            return Vec::new();
        };
        let start = exchange.request_first_ns;
        let end = exchange.end_ns();
        // Too old to be linked to any request still to finish.
        while let Some(entry) = queue.first_entry() {
            if entry.key().0.saturating_add(PENDING_AGE_NS) >= start {
                break;
            }
            let old = entry.remove();
            self.settle(tgid, old, Link::None);
        }
        // The attempts that ended inside this request's span. A span that
        // ends before it starts (an exchange cut short, timestamps from two
        // CPUs) holds none; `BTreeMap::range` panics on such a range
        // (`cargo xtask bench` met one once queues stayed in place).
        // A process whose threads share connections is linked by headers
        // only (order.rs, `shared_threads`): only the calls that carry this
        // request's header can be linked. Looking up the order's claim of
        // every waiting call instead (HAProxy's wait by the thousand) was a
        // quarter of the agent's CPU through HAProxy (`perf`: downstream_done
        // and Order::claim, BENCHMARKS.md).
        let shared_header = |a: &Attempt| same_header(exchange, &a.exchange);
        let headers_only = self.order.is_shared(tgid);
        let inside: Vec<(u64, u64)> = if end < start {
            Vec::new()
        } else {
            queue
                .range((start, 0)..=(end, u64::MAX))
                .filter(|(_, a)| a.exchange.request_first_ns >= start)
                .filter(|(_, a)| !headers_only || shared_header(a))
                .map(|(k, _)| *k)
                .collect()
        };
        if inside.is_empty() {
            self.pending.insert(tgid, queue);
            return Vec::new();
        }
        let header_holders = inside.iter().filter(|k| shared_header(&queue[*k])).count();
        // Sized to fit: a candidate is 520 bytes, and the four `push`
        // reserves first (2 KiB) is a request glibc serves only after
        // consolidating its fast bins (`perf`: 3% of the agent's CPU).
        let mut candidates: Vec<(Attempt, Claim, Says)> = Vec::with_capacity(inside.len());
        // An attempt pointed both at this request and elsewhere: the order
        // around this request is not to be trusted for the others either.
        let mut doubt = false;
        for k in inside {
            let attempt = &queue[&k];
            let claim = self
                .order
                .claim(&key(attempt), attempt.exchange.request_first_ns);
            let response = response_side(&claim, attempt, client, exchange);
            let mut request = request_side(&claim, client, exchange, prev);
            if request == Says::Another && response == Says::This {
                // nginx runs the timers that expired after the events of
                // the same loop iteration (ngx_process_events_and_timers),
                // so a timer-driven call (a `limit_req` delay, a retry after
                // `proxy_connect_timeout`) comes 25-120 µs after whatever
                // the iteration read last, as a handler's own call would:
                // the read names an unrelated request. The answer read and
                // written to this client at once, with the same status,
                // names this one. (trace_links left 7-17 `limit_req` calls
                // in 200 ambiguous under load by believing the read, and
                // CI's machine fell below the 99% linked it asks.)
                request = Says::Nothing;
            }
            let header = if header_holders == 1 && shared_header(attempt) {
                Says::This
            } else {
                Says::Nothing
            };
            let says = [request, response, header];
            if !says.contains(&Says::This) {
                continue;
            }
            let mut attempt = queue.remove(&k).expect("a key just read");
            if says.contains(&Says::Another) {
                doubt = true;
                self.settle(tgid, attempt, Link::Ambiguous);
                continue;
            }
            attempt.link = if header == Says::This {
                Link::Evidence
            } else {
                Link::Inferred
            };
            // Whether it answered this request: kept in the claim's response.
            let mut claim = claim;
            if response != Says::This {
                claim.response = None;
            }
            candidates.push((attempt, claim, request));
        }
        self.pending.insert(tgid, queue);
        let mut linked = self.one_chain(tgid, candidates, doubt);
        linked.sort_by_key(|a| a.exchange.request_first_ns);
        // The client got the answer of its last call: a last call answered
        // with another status did not answer this request (a client that
        // gave up, 499, got none). An event loop that reads several clients
        // before it writes upstream, as HAProxy's does, can make the order
        // name the wrong request: tests/tests/haproxy.rs saw a 404 call
        // inferred for a 200 request. Headers still count.
        let last_status = linked.last().map_or(0, |a| a.exchange.status);
        if last_status != 0 && last_status != exchange.status && exchange.status != 499 {
            let (keep, doubtful): (Vec<Attempt>, Vec<Attempt>) =
                linked.into_iter().partition(|a| a.link == Link::Evidence);
            for attempt in doubtful {
                self.settle(tgid, attempt, Link::Ambiguous);
            }
            linked = keep;
        }
        linked
    }

    /// Of the attempts that point at one request, keeps those that form one
    /// chain: the answered attempt (if one) and the attempts it retried, or
    /// without an answer a single first attempt and its retries. Anything
    /// else pointing at the same request (a timer-driven action that
    /// inherited an unrelated "I/O just before") leaves the doubtful
    /// attempts unlinked; so does any doubt met on the way (`doubt`: an
    /// attempt pointed at this request and at another). Header evidence
    /// needs no chain.
    fn one_chain(
        &mut self,
        tgid: u32,
        candidates: Vec<(Attempt, Claim, Says)>,
        doubt: bool,
    ) -> Vec<Attempt> {
        let inferred = |a: &Attempt| a.link == Link::Inferred;
        let answered: Vec<usize> = (0..candidates.len())
            .filter(|&i| inferred(&candidates[i].0) && candidates[i].1.response.is_some())
            .collect();
        let mut keep = vec![true; candidates.len()];
        if let [answer] = answered[..] {
            // Follow the retries back from the answer.
            let mut chain = vec![false; candidates.len()];
            let mut at = Some(answer);
            while let Some(i) = at.filter(|&i| !chain[i]) {
                chain[i] = true;
                at = candidates[i].1.retry_of.and_then(|(conn, ts)| {
                    candidates
                        .iter()
                        .position(|(a, _, _)| key(a) == conn && a.exchange.request_first_ns == ts)
                });
            }
            for (i, (a, _, _)) in candidates.iter().enumerate() {
                keep[i] = !inferred(a) || chain[i];
            }
        } else {
            let firsts = candidates
                .iter()
                .filter(|(a, c, r)| inferred(a) && *r == Says::This && c.retry_of.is_none())
                .count();
            for (i, (a, _, _)) in candidates.iter().enumerate() {
                keep[i] = !inferred(a) || (answered.is_empty() && firsts <= 1);
            }
        }
        let mut linked = Vec::with_capacity(candidates.len());
        for ((attempt, _, _), keep) in candidates.into_iter().zip(keep) {
            if keep && !(doubt && attempt.link == Link::Inferred) {
                self.order
                    .forget_claim(&key(&attempt), attempt.exchange.request_first_ns);
                linked.push(attempt);
            } else {
                self.settle(tgid, attempt, Link::Ambiguous);
            }
        }
        linked
    }

    /// A connection closed. (Attempts still pointing at a closed client
    /// connection are given up with age, not by a scan per close.)
    pub fn closed(&mut self, conn: &Endpoints) {
        self.order.closed(conn);
        self.clients.remove(conn);
    }

    /// At exit: every waiting attempt is given up, so sinks see each call.
    pub fn forget_all(&mut self) {
        let tgids: Vec<u32> = self.pending.keys().copied().collect();
        for tgid in tgids {
            self.forget(tgid);
        }
    }

    /// A process exited: its waiting attempts can never be linked.
    pub fn forget(&mut self, tgid: u32) {
        for attempt in self.pending.remove(&tgid).unwrap_or_default().into_values() {
            self.settle(tgid, attempt, Link::None);
        }
    }

    /// Attempts given up since the last call, with their process.
    pub fn take_unlinked(&mut self) -> Vec<(u32, Attempt)> {
        std::mem::take(&mut self.unlinked)
    }

    fn settle(&mut self, tgid: u32, mut attempt: Attempt, link: Link) {
        tracing::debug!(
            link = link.as_str(),
            local = %attempt.local,
            first_ns = attempt.exchange.request_first_ns,
            claim = ?self.order.claim(&key(&attempt), attempt.exchange.request_first_ns),
            "upstream call left unlinked"
        );
        self.order
            .forget_claim(&key(&attempt), attempt.exchange.request_first_ns);
        attempt.link = link;
        self.unlinked.push((tgid, attempt));
    }

    /// For the metrics only, when no call is linked to a client request:
    /// the call its worker most likely made for it, by time and URI (the
    /// waiting or just given-up calls of process `tgid` inside the
    /// request's span, the last with the same method and path first). The
    /// `source` label and Kong's upstream and gateway-added latencies need
    /// to know whether an upstream answered and when, for every request; a
    /// rare wrong pairing moves one latency sample between two requests of
    /// the same worker and instant, where a missing one would count an
    /// answered request as the gateway's own (`http_accuracy` asserts both
    /// against nginx's log). Spans never use this guess.
    pub fn guess_leg(&self, tgid: u32, exchange: &Exchange) -> Option<UpstreamLeg> {
        let (start, end) = (exchange.request_first_ns, exchange.end_ns());
        let inside =
            |a: &&Attempt| a.exchange.request_first_ns >= start && a.exchange.end_ns() <= end;
        // Only the waiting calls that ended inside the span, by the queue's
        // order: the calls a scan of all would find, in the same order, but
        // for one that ended before its own start (timestamps from two
        // CPUs), which `downstream_done`'s range skips as well. Where
        // calls are linked by headers only (HAProxy) thousands wait, and a
        // scan of them all per request was 61% of the agent's CPU under
        // `cargo xtask bench`'s HAProxy rounds (BENCHMARKS.md).
        let waiting = self
            .pending
            .get(&tgid)
            .filter(|_| start <= end)
            .into_iter()
            .flat_map(|queue| queue.range((start, 0)..=(end, u64::MAX)))
            .map(|(_, a)| a);
        let given_up = self
            .unlinked
            .iter()
            .filter(|(t, _)| *t == tgid)
            .map(|(_, a)| a);
        let candidates: Vec<&Attempt> = waiting.chain(given_up).filter(inside).collect();
        let same_uri = |a: &&&Attempt| {
            a.exchange.method == exchange.method && a.exchange.path == exchange.path
        };
        candidates
            .iter()
            .filter(same_uri)
            .max_by_key(|a| a.exchange.request_first_ns)
            .or_else(|| {
                candidates
                    .iter()
                    .max_by_key(|a| a.exchange.request_first_ns)
            })
            .map(|a| UpstreamLeg::of(a))
    }

    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum::<usize>() + self.order.claims_len()
    }
}

/// The request side: the I/O just before the attempt began.
fn request_side(
    claim: &Claim,
    client: Endpoints,
    exchange: &Exchange,
    prev: Option<Previous>,
) -> Says {
    match claim.origin {
        Origin::Unknown => Says::Nothing,
        Origin::ClientRead { client: c, ts } => {
            // The very read that completed this request, and not also an
            // earlier request (two pipelined requests in one read).
            let this = c == client
                && ts == exchange.request_last_ns
                && prev.is_none_or(|p| p.request_last_ns != ts);
            if this {
                Says::This
            } else {
                Says::Another
            }
        }
        Origin::ClientWrite { client: c, ts } => {
            // The last write of the previous response, this request already
            // received by then. Weaker than a read (a timer may fire between
            // a response and the posted event that starts the next pipelined
            // request), so it never speaks against a request.
            let this = c == client
                && prev.is_some_and(|p| p.end_ns == ts)
                && exchange.request_last_ns <= ts;
            if this {
                Says::This
            } else {
                Says::Nothing
            }
        }
    }
}

/// The response side: the first client write after the response was read.
fn response_side(claim: &Claim, attempt: &Attempt, client: Endpoints, exchange: &Exchange) -> Says {
    match claim.response {
        None => Says::Nothing,
        Some((c, ts))
            if c == client
                && ts == exchange.response_first_ns
                && attempt.exchange.status == exchange.status =>
        {
            Says::This
        }
        Some(_) => Says::Another,
    }
}

/// Both legs carry the same `traceparent`, or the same `X-Request-ID`.
/// Different values say nothing: a gateway may start its own trace or id.
fn same_header(client: &Exchange, upstream: &Exchange) -> bool {
    let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
    same(&client.trace.traceparent, &upstream.trace.traceparent)
        || same(&client.trace.request_id, &upstream.trace.request_id)
}
