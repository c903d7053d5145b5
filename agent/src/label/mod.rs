//! Stage 6, labelling: one labelled record per finished exchange.
//!
//! Each correlated exchange becomes one [`Labelled`] record (service, route,
//! source, the connection's ends) that every sink reads.
//!
//! Names come from the [`Router`] (routes.rs). Naming is done only for the
//! roles some sink asked for ([`Needs`]): it scans route prefixes and may take
//! one of a service's bounded template slots, so exchanges nobody labels by
//! name do not use them up.

pub mod genai;
pub mod routes;

use std::{net::SocketAddr, sync::Arc};

pub use genai::{ModelCap, Providers};
pub use routes::{Routed, Router};

use self::routes::RouteInput;
use crate::{
    capture::decode::Role,
    correlate::{Attempt, Completed, UpstreamLeg},
    http::Exchange,
};

/// Who produced a response (Kong's `source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An upstream answered: a downstream exchange whose upstream leg has a
    /// response status and that the client waited for, and every upstream
    /// exchange.
    Service,
    /// The gateway answered itself: no upstream was involved, the upstream
    /// never answered (nginx's 502 or 504 after a failed connect or a
    /// timeout; as Kong, whose source is then "error"), or the client gave
    /// up first (499).
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
    #[must_use]
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
    /// Method, path, status, byte counts, timestamps, trace headers.
    pub exchange: Exchange,
    /// The gateway process that served it.
    pub tgid: u32,
    /// The other end of the connection: the client, or the upstream peer.
    pub remote: SocketAddr,
    /// The gateway's listening socket the client connected to (downstream).
    pub listener: Option<SocketAddr>,
    /// The upstream call made on behalf of a downstream request, when
    /// correlation found one.
    pub upstream: Option<UpstreamLeg>,
    /// Downstream: every upstream call linked to it, in order (see
    /// [`Completed::Downstream`]); empty for upstream records.
    pub attempts: Vec<Attempt>,
    /// Service and route; `None` when no sink needs them for this role.
    pub name: Option<Routed>,
    pub source: Source,
}

/// Names exchanges by service and route.
pub struct Labeller {
    router: Router,
    needs: Needs,
    /// Which candidate GenAI calls are calls ([`Providers::confirms`]).
    genai: Arc<Providers>,
}

impl Labeller {
    /// `needs`: what the sinks need named ([`crate::sinks::Sinks::needs`]).
    pub fn new(router: Router, needs: Needs) -> Self {
        Labeller {
            router,
            needs,
            genai: Arc::default(),
        }
    }

    /// With the `[[genai.provider]]` sections, which may confirm candidate
    /// GenAI calls by their upstream or host.
    #[must_use]
    pub fn with_genai(mut self, providers: Arc<Providers>) -> Self {
        self.genai = providers;
        self
    }

    /// Drops `exchange`'s GenAI call, to `peer`, when it is a candidate
    /// nothing confirms ([`Providers::confirms`]).
    fn confirm_genai(&self, exchange: &mut Exchange, peer: SocketAddr) {
        if exchange
            .genai
            .as_deref()
            .is_some_and(|call| !self.genai.confirms(call, peer, exchange.host.as_deref()))
        {
            exchange.genai = None;
        }
    }

    /// Labels `done`, served by process `tgid`; `client` is the other end of
    /// a downstream exchange's connection.
    pub fn label(&mut self, done: Completed, client: SocketAddr, tgid: u32) -> Labelled {
        let (role, mut exchange, remote, listener, upstream, mut attempts) = match done {
            Completed::Downstream {
                exchange,
                listener,
                upstream,
                attempts,
            } => (
                Role::Downstream,
                exchange,
                client,
                Some(listener),
                upstream,
                attempts,
            ),
            Completed::Upstream { exchange, peer } => {
                (Role::Upstream, exchange, peer, None, None, Vec::new())
            }
        };
        // A candidate GenAI call nothing confirmed is a plain HTTP exchange
        // (`POST /rooms/7/messages`), in every sink: as a record, and as a
        // downstream request's attempt (spans).
        self.confirm_genai(&mut exchange, remote);
        for a in &mut attempts {
            self.confirm_genai(&mut a.exchange, a.peer);
        }
        let source = match role {
            // A leg's status is 0 when the upstream sent no response head.
            Role::Downstream
                if upstream.as_ref().is_none_or(|l| l.status == 0) || exchange.status == 499 =>
            {
                Source::Gateway
            }
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
            tgid,
            remote,
            listener,
            upstream,
            attempts,
            name,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::TraceHeaders;

    fn exchange(status: u16) -> Exchange {
        Exchange {
            method: "GET".into(),
            path: "/orders/12".into(),
            host: Some("api.example.com".into()),
            status,
            request_bytes: 10,
            response_bytes: 20,
            request_first_ns: 100,
            request_last_ns: 100,
            response_first_ns: 200,
            response_last_ns: 200,
            closed_ns: 0,
            upgraded: false,
            version: 1,
            trace: TraceHeaders::default(),
            grpc: None,
            genai: None,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn down(status: u16, leg: bool) -> Completed {
        down_leg(status, leg.then_some(status))
    }

    /// A downstream exchange with `status`, and a leg with `leg_status`.
    fn down_leg(status: u16, leg_status: Option<u16>) -> Completed {
        Completed::Downstream {
            exchange: exchange(status),
            listener: addr("127.0.0.1:8080"),
            upstream: leg_status.map(|status| UpstreamLeg {
                peer: addr("127.0.0.1:9000"),
                status,
                first_ns: 120,
                last_ns: 180,
            }),
            attempts: Vec::new(),
        }
    }

    #[test]
    fn source_is_the_service_only_when_an_upstream_answered_in_time() {
        let mut l = Labeller::new(Router::from_config(None, 10), Needs::default());
        let client = addr("10.0.0.1:5000");
        assert_eq!(l.label(down(200, true), client, 1).source, Source::Service);
        assert_eq!(l.label(down(404, false), client, 1).source, Source::Gateway);
        // The client gave up first: the gateway's answer, leg or not.
        assert_eq!(l.label(down(499, true), client, 1).source, Source::Gateway);
        // The upstream timed out (no response head, leg status 0): the
        // gateway's 504.
        let timeout = l.label(down_leg(504, Some(0)), client, 1);
        assert_eq!(timeout.source, Source::Gateway);
        // An upstream's own 504 is the service's.
        let own = l.label(down_leg(504, Some(504)), client, 1);
        assert_eq!(own.source, Source::Service);
    }

    #[test]
    fn names_only_the_roles_a_sink_needs() {
        let needs = Needs {
            downstream: true,
            upstream: false,
        };
        let mut l = Labeller::new(Router::from_config(None, 10), needs);
        let client = addr("10.0.0.1:5000");
        let r = l.label(down(200, true), client, 1);
        assert_eq!(r.role, Role::Downstream);
        assert_eq!(
            (r.remote, r.listener),
            (client, Some(addr("127.0.0.1:8080")))
        );
        let name = r.name.unwrap();
        assert_eq!(
            (&*name.service, &*name.route),
            ("127.0.0.1:8080", "/orders/{id}")
        );

        let peer = addr("127.0.0.1:9000");
        let up = Completed::Upstream {
            exchange: exchange(200),
            peer,
        };
        let r = l.label(up, client, 1);
        // An upstream exchange's remote end is its peer.
        assert_eq!((r.role, r.remote, r.listener), (Role::Upstream, peer, None));
        assert!(r.name.is_none());
    }

    /// A candidate GenAI call (a path shape ordinary APIs share) nothing
    /// confirmed reaches the sinks as a plain exchange; one whose answer
    /// named a vendor, or whose peer a section names, as a GenAI call.
    #[test]
    fn unconfirmed_genai_candidates_are_plain_exchanges() {
        use crate::http::genai::{GenAiApi, GenAiVendor};
        let call = |vendor| genai::tests::candidate(GenAiApi::AnthropicMessages, vendor);
        let up = |vendor| {
            let mut exchange = exchange(200);
            exchange.genai = Some(Box::new(call(vendor)));
            Completed::Upstream {
                exchange,
                peer: addr("127.0.0.1:9000"),
            }
        };
        let client = addr("10.0.0.1:5000");
        let mut l = Labeller::new(Router::from_config(None, 10), Needs::default());
        assert!(l.label(up(None), client, 1).exchange.genai.is_none());
        let vendor = Some(GenAiVendor::Anthropic);
        assert!(l.label(up(vendor), client, 1).exchange.genai.is_some());
        let config = crate::config::Config::parse(
            "[[genai.provider]]\nname = \"chat\"\nupstream = [\"127.0.0.1:9000\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let mut l = Labeller::new(Router::from_config(None, 10), Needs::default())
            .with_genai(Arc::new(Providers::from_config(Some(&config))));
        assert!(l.label(up(None), client, 1).exchange.genai.is_some());
        // a downstream request's attempts, each by its own peer
        let Completed::Upstream { exchange: leg, .. } = up(None) else {
            unreachable!()
        };
        let attempt = |peer: &str| Attempt {
            exchange: leg.clone(),
            peer: addr(peer),
            local: addr("127.0.0.1:40000"),
            link: crate::correlate::Link::Inferred,
        };
        let Completed::Downstream {
            exchange,
            listener,
            upstream,
            ..
        } = down(200, true)
        else {
            unreachable!()
        };
        let r = l.label(
            Completed::Downstream {
                exchange,
                listener,
                upstream,
                attempts: vec![attempt("127.0.0.1:9000"), attempt("10.0.0.9:443")],
            },
            client,
            1,
        );
        let kept: Vec<bool> = r
            .attempts
            .iter()
            .map(|a| a.exchange.genai.is_some())
            .collect();
        assert_eq!(kept, [true, false]);
    }
}
