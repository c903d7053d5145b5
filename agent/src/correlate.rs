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

/// A finished, correlated exchange, as the labelling stage (label/) takes it.
#[derive(Clone, Debug)]
pub enum Completed {
    /// A client's request to the gateway.
    Downstream {
        exchange: Exchange,
        /// The gateway's listening socket the client connected to.
        listener: SocketAddr,
        upstream: Option<UpstreamLeg>,
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
    method: String,
    path: String,
    leg: UpstreamLeg,
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

impl Correlator {
    pub fn upstream_done(&mut self, tgid: u32, exchange: &Exchange, peer: SocketAddr) {
        let queue = self.pending.entry(tgid).or_default();
        if queue.len() >= PENDING_MAX {
            queue.pop_front();
        }
        queue.push_back(Pending {
            method: exchange.method.clone(),
            path: exchange.path.clone(),
            leg: UpstreamLeg {
                peer,
                status: exchange.status,
                first_ns: exchange.request_first_ns,
                last_ns: exchange.end_ns(),
            },
        });
    }

    /// The upstream leg of a downstream exchange served by process `tgid`:
    /// among the waiting legs inside its time span, those with the same
    /// method and path are preferred (the gateway forwarded the URI as is);
    /// when a gateway retried another peer, the last attempt is the one whose
    /// response the client got. Every leg inside the span is consumed.
    pub fn downstream_done(&mut self, tgid: u32, exchange: &Exchange) -> Option<UpstreamLeg> {
        let queue = self.pending.get_mut(&tgid)?;
        let start = exchange.request_first_ns;
        let end = if exchange.response_last_ns == 0 {
            u64::MAX
        } else {
            exchange.response_last_ns
        };
        queue.retain(|p| p.leg.last_ns + PENDING_AGE_NS >= start);
        let inside = |p: &Pending| p.leg.first_ns >= start && p.leg.last_ns <= end;
        let same_uri = |p: &Pending| p.method == exchange.method && p.path == exchange.path;
        let chosen = queue
            .iter()
            .rposition(|p| inside(p) && same_uri(p))
            .or_else(|| queue.iter().rposition(inside))?;
        let leg = queue.remove(chosen).map(|p| p.leg);
        // Earlier attempts for the same request (retries) go with it.
        queue.retain(|p| !(inside(p) && same_uri(p)));
        if queue.is_empty() {
            self.pending.remove(&tgid);
        }
        leg
    }

    /// A process exited: its waiting legs can never match.
    pub fn forget(&mut self, tgid: u32) {
        self.pending.remove(&tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            traceparent: None,
        }
    }
    const PEER: &str = "127.0.0.1:9000";

    #[test]
    fn joins_the_leg_inside_the_request_by_uri() {
        let mut c = Correlator::default();
        let peer = PEER.parse().unwrap();
        c.upstream_done(1, &exchange("GET", "/a", 200, 110, 150), peer);
        c.upstream_done(1, &exchange("GET", "/b", 201, 120, 160), peer);
        // Served by process 1 from 100 to 170: both legs are inside, /b matches.
        let leg = c
            .downstream_done(1, &exchange("GET", "/b", 201, 100, 170))
            .unwrap();
        assert_eq!((leg.status, leg.first_ns, leg.last_ns), (201, 120, 160));
        let leg = c
            .downstream_done(1, &exchange("GET", "/a", 200, 105, 180))
            .unwrap();
        assert_eq!(leg.status, 200);
        assert!(c.pending.is_empty());
    }

    #[test]
    fn other_process_or_outside_the_span_does_not_match() {
        let mut c = Correlator::default();
        c.upstream_done(
            2,
            &exchange("GET", "/a", 200, 110, 150),
            PEER.parse().unwrap(),
        );
        assert_eq!(
            c.downstream_done(1, &exchange("GET", "/a", 200, 100, 170)),
            None
        );
        assert_eq!(
            c.downstream_done(2, &exchange("GET", "/a", 200, 120, 170)),
            None
        );
        // A 404 the gateway produced itself has no leg.
        assert_eq!(
            c.downstream_done(2, &exchange("GET", "/x", 404, 200, 210)),
            None
        );
    }

    #[test]
    fn retries_keep_the_last_attempt() {
        let mut c = Correlator::default();
        c.upstream_done(
            1,
            &exchange("GET", "/a", 502, 110, 120),
            "127.0.0.1:9001".parse().unwrap(),
        );
        c.upstream_done(
            1,
            &exchange("GET", "/a", 200, 130, 150),
            PEER.parse().unwrap(),
        );
        let leg = c
            .downstream_done(1, &exchange("GET", "/a", 200, 100, 170))
            .unwrap();
        assert_eq!((leg.status, leg.peer), (200, PEER.parse().unwrap()));
        assert!(c.pending.is_empty());
    }
}
