//! Stage 5, correlation: joins each downstream exchange with the upstream
//! exchange the gateway made for it, so metrics can tell upstream latency
//! from gateway-added latency and a response the gateway produced itself
//! from one an upstream produced.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use crate::http::Exchange;

/// The upstream call made on behalf of a downstream request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamLeg {
    pub peer: SocketAddr,
    pub status: u16,
    /// First request byte sent to the upstream.
    pub first_ns: u64,
    /// Last response byte received from it.
    pub last_ns: u64,
}

/// How an upstream call was tied to the client request it was made for
/// (`gatescope_trace_links_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Both legs carry the same `traceparent` or `X-Request-ID`.
    Evidence,
    /// The capture's own order and timing single out one client request.
    Inferred,
    /// More than one client request could have caused it: left unlinked.
    Ambiguous,
    /// No client request could have caused it: left unlinked.
    None,
}

impl Link {
    pub const ALL: [Link; 4] = [Link::Evidence, Link::Inferred, Link::Ambiguous, Link::None];

    /// The `result` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Evidence => "evidence",
            Link::Inferred => "inferred",
            Link::Ambiguous => "ambiguous",
            Link::None => "none",
        }
    }

    /// Whether the call has a parent client request.
    pub fn linked(self) -> bool {
        matches!(self, Link::Evidence | Link::Inferred)
    }
}

/// One upstream call (an attempt: nginx's `proxy_next_upstream` retries are
/// attempts of their own), whole, for sinks that report each call (spans).
#[derive(Clone, Debug)]
pub struct Attempt {
    pub exchange: Exchange,
    /// The upstream peer.
    pub peer: SocketAddr,
    /// The gateway's end of the upstream connection.
    pub local: SocketAddr,
    pub link: Link,
}

/// A finished, correlated exchange, as the labelling stage (label/) takes it.
#[derive(Clone, Debug)]
pub enum Completed {
    /// A client's request to the gateway.
    Downstream {
        exchange: Exchange,
        /// The gateway's listening socket the client connected to.
        listener: SocketAddr,
        /// The attempt whose response the client got, for the metrics.
        upstream: Option<UpstreamLeg>,
        /// Every upstream call linked to this request, in the order they
        /// were made (retries first, the answered attempt last).
        attempts: Vec<Attempt>,
    },
    /// A request the gateway made to an upstream.
    Upstream {
        exchange: Exchange,
        peer: SocketAddr,
    },
}

/// An upstream exchange waiting for the downstream request it served.
#[derive(Debug)]
struct Pending {
    attempt: Attempt,
}

impl Pending {
    fn first_ns(&self) -> u64 {
        self.attempt.exchange.request_first_ns
    }
    fn last_ns(&self) -> u64 {
        self.attempt.exchange.end_ns()
    }
}

/// Upstream exchanges wait here, per gateway process, until the downstream
/// exchange they belong to completes. nginx-style gateways serve a request
/// from one worker (a process) from first byte to last, and the upstream
/// response is complete before the last byte of the downstream response is
/// sent, so the leg is waiting by the time the downstream exchange finishes.
#[derive(Debug, Default)]
pub struct Correlator {
    pending: HashMap<u32, VecDeque<Pending>>,
}

/// Waiting legs kept per process; older ones are dropped first. A worker has
/// at most a few thousand requests in flight.
const PENDING_MAX: usize = 4096;
/// A leg older than this (relative to a newer downstream completion) can no
/// longer match and is dropped (nginx's longest default timeout is 60 s).
const PENDING_AGE_NS: u64 = 120_000_000_000;

impl UpstreamLeg {
    fn of(a: &Attempt) -> UpstreamLeg {
        UpstreamLeg {
            peer: a.peer,
            status: a.exchange.status,
            first_ns: a.exchange.request_first_ns,
            last_ns: a.exchange.end_ns(),
        }
    }
}

impl Correlator {
    /// An upstream exchange of process `tgid` finished on the connection
    /// `local` → `peer`.
    pub fn upstream_done(
        &mut self,
        tgid: u32,
        exchange: &Exchange,
        local: SocketAddr,
        peer: SocketAddr,
    ) {
        let queue = self.pending.entry(tgid).or_default();
        if queue.len() >= PENDING_MAX {
            queue.pop_front();
        }
        queue.push_back(Pending {
            attempt: Attempt {
                exchange: exchange.clone(),
                peer,
                local,
                link: Link::Inferred,
            },
        });
    }

    /// The upstream calls of a downstream exchange served by process
    /// `tgid`, in order; the last is the one whose response the client got.
    /// Among the waiting legs inside its time span, those with the same
    /// method and path are preferred (the gateway forwarded the URI as is);
    /// when a gateway retried another peer, the last attempt is the one whose
    /// response the client got. Every leg inside the span is consumed.
    pub fn downstream_done(&mut self, tgid: u32, exchange: &Exchange) -> Vec<Attempt> {
        let Some(queue) = self.pending.get_mut(&tgid) else {
            return Vec::new();
        };
        let start = exchange.request_first_ns;
        let end = if exchange.response_last_ns == 0 {
            u64::MAX
        } else {
            exchange.response_last_ns
        };
        queue.retain(|p| p.last_ns() + PENDING_AGE_NS >= start);
        let inside = |p: &Pending| p.first_ns() >= start && p.last_ns() <= end;
        let same_uri = |p: &Pending| {
            p.attempt.exchange.method == exchange.method && p.attempt.exchange.path == exchange.path
        };
        let Some(chosen) = queue
            .iter()
            .rposition(|p| inside(p) && same_uri(p))
            .or_else(|| queue.iter().rposition(inside))
        else {
            return Vec::new();
        };
        let mut attempts = Vec::new();
        let last = queue.remove(chosen).map(|p| p.attempt);
        // Earlier attempts for the same request (retries) go with it.
        queue.retain(|p| {
            if inside(p)
                && same_uri(p)
                && p.first_ns() <= last.as_ref().map_or(0, |a| a.exchange.request_first_ns)
            {
                attempts.push(p.attempt.clone());
                false
            } else {
                !(inside(p) && same_uri(p))
            }
        });
        attempts.extend(last);
        if queue.is_empty() {
            self.pending.remove(&tgid);
        }
        attempts
    }

    /// A process exited: its waiting legs can never match.
    pub fn forget(&mut self, tgid: u32) {
        self.pending.remove(&tgid);
    }
}

/// The leg the metrics use: the attempt whose response the client got.
pub fn answered(attempts: &[Attempt]) -> Option<UpstreamLeg> {
    attempts.last().map(UpstreamLeg::of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::TraceHeaders;

    fn exchange(method: &str, path: &str, status: u16, first: u64, last: u64) -> Exchange {
        Exchange {
            method: method.into(),
            path: path.into(),
            host: None,
            status,
            request_bytes: 1,
            response_bytes: 1,
            request_first_ns: first,
            request_last_ns: first,
            response_first_ns: last,
            response_last_ns: last,
            closed_ns: 0,
            upgraded: false,
            version: 1,
            trace: TraceHeaders::default(),
        }
    }
    const PEER: &str = "127.0.0.1:9000";
    const LOCAL: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

    fn answer(c: &mut Correlator, tgid: u32, e: &Exchange) -> Option<UpstreamLeg> {
        answered(&c.downstream_done(tgid, e))
    }

    #[test]
    fn joins_the_leg_inside_the_request_by_uri() {
        let mut c = Correlator::default();
        let peer = PEER.parse().unwrap();
        c.upstream_done(1, &exchange("GET", "/a", 200, 110, 150), LOCAL, peer);
        c.upstream_done(1, &exchange("GET", "/b", 201, 120, 160), LOCAL, peer);
        // Served by process 1 from 100 to 170: both legs are inside, /b matches.
        let leg = answer(&mut c, 1, &exchange("GET", "/b", 201, 100, 170)).unwrap();
        assert_eq!((leg.status, leg.first_ns, leg.last_ns), (201, 120, 160));
        let leg = answer(&mut c, 1, &exchange("GET", "/a", 200, 105, 180)).unwrap();
        assert_eq!(leg.status, 200);
        assert!(c.pending.is_empty());
    }

    #[test]
    fn other_process_or_outside_the_span_does_not_match() {
        let mut c = Correlator::default();
        c.upstream_done(
            2,
            &exchange("GET", "/a", 200, 110, 150),
            LOCAL,
            PEER.parse().unwrap(),
        );
        assert_eq!(
            answer(&mut c, 1, &exchange("GET", "/a", 200, 100, 170)),
            None
        );
        assert_eq!(
            answer(&mut c, 2, &exchange("GET", "/a", 200, 120, 170)),
            None
        );
        // A 404 the gateway produced itself has no leg.
        assert_eq!(
            answer(&mut c, 2, &exchange("GET", "/x", 404, 200, 210)),
            None
        );
    }

    #[test]
    fn retries_keep_the_last_attempt() {
        let mut c = Correlator::default();
        c.upstream_done(
            1,
            &exchange("GET", "/a", 502, 110, 120),
            LOCAL,
            "127.0.0.1:9001".parse().unwrap(),
        );
        c.upstream_done(
            1,
            &exchange("GET", "/a", 200, 130, 150),
            LOCAL,
            PEER.parse().unwrap(),
        );
        let attempts = c.downstream_done(1, &exchange("GET", "/a", 200, 100, 170));
        let peers: Vec<_> = attempts
            .iter()
            .map(|a| (a.exchange.status, a.peer))
            .collect();
        assert_eq!(
            peers,
            [
                (502, "127.0.0.1:9001".parse().unwrap()),
                (200, PEER.parse().unwrap())
            ]
        );
        assert!(c.pending.is_empty());
    }
}
