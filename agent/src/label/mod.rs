//! Stage 6, labelling: one labelled record per finished exchange.
//!
//! Each correlated exchange becomes one [`Labelled`] record (service, route,
//! source, the connection's ends) that every sink reads.
//!
//! Names come from the [`Router`] (routes.rs). Naming is done only for the
//! roles some sink asked for ([`Needs`]): it scans route prefixes and may take
//! one of a service's bounded template slots, so exchanges nobody labels by
//! name do not use them up.

pub mod routes;

use std::net::SocketAddr;

pub use routes::{Routed, Router};

use self::routes::RouteInput;
use crate::{
    capture::decode::Role,
    correlate::{Completed, UpstreamLeg},
    http::Exchange,
};

/// Who produced a response (Kong's `source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An upstream answered: a downstream exchange with an upstream leg that
    /// the client waited for, and every upstream exchange.
    Service,
    /// The gateway answered itself, or the client gave up first (499).
    Gateway,
}

impl Source {
    /// The label value, as Kong spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Service => "service",
            Source::Gateway => "kong",
        }
    }
}

/// For which roles the sinks need a service and route name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub downstream: bool,
    pub upstream: bool,
}

impl Needs {
    /// What either needs.
    pub fn or(self, other: Needs) -> Needs {
        Needs {
            downstream: self.downstream || other.downstream,
            upstream: self.upstream || other.upstream,
        }
    }

    fn names(self, role: Role) -> bool {
        match role {
            Role::Downstream => self.downstream,
            Role::Upstream => self.upstream,
        }
    }
}

/// One finished exchange with everything the sinks label it by.
#[derive(Clone, Debug)]
pub struct Labelled {
    /// Downstream: a client's request to the gateway; upstream: a request
    /// the gateway made to an upstream.
    pub role: Role,
    /// Method, path, status, byte counts, timestamps, traceparent.
    pub exchange: Exchange,
    /// The other end of the connection: the client, or the upstream peer.
    pub remote: SocketAddr,
    /// The gateway's listening socket the client connected to (downstream).
    pub listener: Option<SocketAddr>,
    /// The upstream call made on behalf of a downstream request, when
    /// correlation found one.
    pub upstream: Option<UpstreamLeg>,
    /// Service and route; `None` when no sink needs them for this role.
    pub name: Option<Routed>,
    pub source: Source,
}

/// Names exchanges by service and route.
pub struct Labeller {
    router: Router,
    needs: Needs,
}

impl Labeller {
    /// `needs`: what the sinks need named ([`crate::sinks::Sinks::needs`]).
    pub fn new(router: Router, needs: Needs) -> Self {
        Labeller { router, needs }
    }

    /// Labels `done`; `client` is the other end of a downstream exchange's
    /// connection.
    pub fn label(&mut self, done: Completed, client: SocketAddr) -> Labelled {
        let (role, exchange, remote, listener, upstream) = match done {
            Completed::Downstream {
                exchange,
                listener,
                upstream,
            } => (Role::Downstream, exchange, client, Some(listener), upstream),
            Completed::Upstream { exchange, peer } => (Role::Upstream, exchange, peer, None, None),
        };
        let source = match role {
            Role::Downstream if upstream.is_none() || exchange.status == 499 => Source::Gateway,
            Role::Downstream | Role::Upstream => Source::Service,
        };
        let name = self.needs.names(role).then(|| {
            self.router.route(&RouteInput {
                role,
                listener,
                peer: (role == Role::Upstream).then_some(remote),
                host: exchange.host.as_deref(),
                method: &exchange.method,
                path: &exchange.path,
            })
        });
        Labelled {
            role,
            exchange,
            remote,
            listener,
            upstream,
            name,
            source,
        }
    }
}
