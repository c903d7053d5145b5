//! Stage 5, correlation: joins each downstream exchange with the upstream
//! calls (attempts) the gateway made for it, so metrics can tell upstream
//! latency from gateway-added latency and a response the gateway produced
//! itself from one an upstream produced, and spans can parent each CLIENT
//! span. An attempt no evidence ties to one request stays unlinked.
//!
//! - `order.rs`: what each worker thread's order of I/O claims about the
//!   request each upstream call was made for;
//! - `join.rs`: weighs those claims, and the trace headers, against each
//!   finished client exchange ([`Correlator`]).

mod join;
mod order;

use std::net::SocketAddr;

pub use join::Correlator;
pub use order::Io;

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

impl UpstreamLeg {
    pub(super) fn of(a: &Attempt) -> UpstreamLeg {
        UpstreamLeg {
            peer: a.peer,
            status: a.exchange.status,
            first_ns: a.exchange.request_first_ns,
            last_ns: a.exchange.end_ns(),
        }
    }
}

/// The leg the metrics use: the attempt whose response the client got.
pub fn answered(attempts: &[Attempt]) -> Option<UpstreamLeg> {
    attempts.last().map(UpstreamLeg::of)
}

#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod tests;
