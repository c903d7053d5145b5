//! The gRPC families: calls by `grpc-status`, client side per service and
//! route, upstream side per peer.
//!
//! A gRPC call is an HTTP/2 exchange with `content-type: application/grpc*`
//! (`Exchange::grpc`, from http/src/h2). It is also counted by the HTTP
//! families (its HTTP status is nearly always 200, which is why these exist).
//! `grpc_status` is the number as sent, or `unknown` when no `grpc-status`
//! was seen (the call did not finish, or its trailers were not decodable).
//! Handles are cached like the HTTP families' (metrics/http.rs).

use std::{net::SocketAddr, sync::Arc};

use prometheus::{IntCounter, IntCounterVec, Registry};
use rustc_hash::FxHashMap;

use super::families;
use crate::http::GrpcCall;

/// Cached (peer, status) handles kept; beyond it the registry is asked.
const MAX_PEER_HANDLES: usize = 4096;

/// The `grpc_status` label value.
fn status_label(s: Option<u16>) -> String {
    s.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
}

/// (service, route, grpc-status)
type RouteKey = (Arc<str>, Arc<str>, Option<u16>);

pub struct GrpcMetrics {
    /// `[service, route, grpc_status]`
    requests: Option<IntCounterVec>,
    /// `[peer, grpc_status]`
    upstream: Option<IntCounterVec>,
    /// Bounded by the routes' own bounds (label/routes.rs) times the
    /// statuses seen (17 defined, any u16 possible: a handle is kept only
    /// while the map is under its cap).
    routes: FxHashMap<RouteKey, IntCounter>,
    peers: FxHashMap<(SocketAddr, Option<u16>), IntCounter>,
}

impl GrpcMetrics {
    /// `downstream`: with the requests-by-status group; `upstream`: with
    /// the upstream-health group (the HTTP families' switches).
    pub fn new(registry: &Registry, downstream: bool, upstream: bool) -> Self {
        GrpcMetrics {
            requests: downstream.then(|| families::GRPC_REQUESTS.counter(registry)),
            upstream: upstream.then(|| families::GRPC_UPSTREAM_REQUESTS.counter(registry)),
            routes: FxHashMap::default(),
            peers: FxHashMap::default(),
        }
    }

    /// Whether client calls need a service and route.
    pub fn wants_downstream_route(&self) -> bool {
        self.requests.is_some()
    }

    /// A client's call to the gateway, labelled `service`/`route`.
    pub fn downstream(&mut self, call: &GrpcCall, service: &Arc<str>, route: &Arc<str>) {
        let Some(family) = &self.requests else {
            return;
        };
        let key = (service.clone(), route.clone(), call.status);
        if let Some(c) = self.routes.get(&key) {
            c.inc();
            return;
        }
        let c = family.with_label_values(&[service, route, &status_label(call.status)]);
        c.inc();
        if self.routes.len() < MAX_PEER_HANDLES {
            self.routes.insert(key, c);
        }
    }

    /// The gateway's call to upstream `peer`.
    pub fn upstream(&mut self, call: &GrpcCall, peer: SocketAddr) {
        let Some(family) = &self.upstream else {
            return;
        };
        if let Some(c) = self.peers.get(&(peer, call.status)) {
            c.inc();
            return;
        }
        let c = family.with_label_values(&[&peer.to_string(), &status_label(call.status)]);
        c.inc();
        if self.peers.len() < MAX_PEER_HANDLES {
            self.peers.insert((peer, call.status), c);
        }
    }
}
