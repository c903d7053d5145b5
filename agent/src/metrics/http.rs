//! The HTTP families and how an exchange moves them.
//!
//! Requests by status, latencies and bandwidth per service and route,
//! upstream requests per peer, and route overflow. Names, labels, units and buckets come from the schema's description
//! ([`families::Http`]). Families are registered only when their group is
//! on, as Kong's plugin does. Metric handles are cached per (service, route)
//! and per (peer, code), so a repeat exchange costs no label hashing by the
//! registry.

use std::{net::SocketAddr, sync::Arc};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};
use rustc_hash::FxHashMap;

use super::{
    downstream::Downstream,
    families::{self, Stat, UpstreamTime},
    grpc::GrpcMetrics,
};
use crate::{correlate::UpstreamLeg, http::Exchange, label::Source};

/// Optional metric groups, switched like the Kong plugin's
/// `status_code_metrics`, `latency_metrics`, `bandwidth_metrics` and
/// `upstream_health_metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricGroups {
    /// Requests by status code per service and route.
    pub status_code: bool,
    /// Request, upstream and gateway-added latency histograms.
    pub latency: bool,
    /// Request and response bytes per service and route.
    pub bandwidth: bool,
    /// Upstream requests per peer and status code.
    pub upstream_health: bool,
}

impl Default for MetricGroups {
    fn default() -> Self {
        MetricGroups {
            status_code: true,
            latency: true,
            bandwidth: true,
            upstream_health: true,
        }
    }
}

/// Cached (peer, code) handles kept; beyond it the registry is asked each time.
const MAX_PEER_HANDLES: usize = 4096;

/// The handles of one (service, route), created on first use so that only
/// observed series are exported (as Kong does).
#[derive(Default)]
struct RouteHandles {
    /// (status, source, counter)
    codes: Vec<(u16, Source, IntCounter)>,
    request_latency: Option<Histogram>,
    upstream_latency: Option<Histogram>,
    gateway_latency: Option<Histogram>,
    ingress: Option<IntCounter>,
    egress: Option<IntCounter>,
}

pub struct HttpMetrics {
    schema: &'static families::Http,
    /// stub_status's requests, counted per client request.
    stub_status: Downstream,
    /// `[service, route, code, source, tail…]`
    requests: Option<IntCounterVec>,
    request_latency: Option<HistogramVec>,
    /// Per the upstream exchange's own service/route, or per the downstream
    /// exchange's from its upstream leg (see [`UpstreamTime`]).
    upstream_latency: Option<HistogramVec>,
    gateway_latency: Option<HistogramVec>,
    /// `[service, route, direction, tail…]`
    bytes: Option<IntCounterVec>,
    upstream_requests: Option<IntCounterVec>,
    overflow: IntCounterVec,
    /// FxHash: looked up per exchange; the names are the router's, bounded
    /// per service (see `label::routes`).
    routes: FxHashMap<(Arc<str>, Arc<str>), RouteHandles>,
    peers: FxHashMap<(SocketAddr, u16), IntCounter>,
    overflows: FxHashMap<Arc<str>, IntCounter>,
    /// gRPC calls by grpc-status (metrics/grpc.rs), switched with the
    /// status-code and upstream-health groups.
    pub grpc: GrpcMetrics,
}

impl HttpMetrics {
    pub fn new(
        registry: &Registry,
        schema: &'static families::Http,
        stub_status: Downstream,
        groups: MetricGroups,
    ) -> Self {
        let latency =
            |family: &families::Family| groups.latency.then(|| family.histogram(registry));
        HttpMetrics {
            schema,
            stub_status,
            requests: groups
                .status_code
                .then(|| schema.requests.counter(registry)),
            request_latency: latency(&schema.request_latency),
            upstream_latency: latency(&schema.upstream_latency),
            gateway_latency: schema.gateway_latency.as_ref().and_then(latency),
            bytes: groups.bandwidth.then(|| schema.bytes.counter(registry)),
            upstream_requests: groups
                .upstream_health
                .then(|| families::HTTP_UPSTREAM_REQUESTS.counter(registry)),
            overflow: families::ROUTE_OVERFLOW.counter(registry),
            routes: FxHashMap::default(),
            peers: FxHashMap::default(),
            overflows: FxHashMap::default(),
            grpc: GrpcMetrics::new(registry, groups.status_code, groups.upstream_health),
        }
    }

    /// Whether downstream exchanges need a service and route at all.
    pub fn wants_downstream_route(&self) -> bool {
        self.requests.is_some()
            || self.request_latency.is_some()
            || self.bytes.is_some()
            || self.grpc.wants_downstream_route()
    }

    /// Whether upstream exchanges need a service and route (for upstream
    /// latency, when the schema takes it from upstream exchanges).
    pub fn wants_upstream_route(&self) -> bool {
        self.schema.upstream_time == UpstreamTime::UpstreamExchange
            && self.upstream_latency.is_some()
    }

    pub fn overflowed(&mut self, service: &Arc<str>) {
        if let Some(c) = self.overflows.get(&**service) {
            c.inc();
            return;
        }
        let c = self.overflow.with_label_values(&[service]);
        c.inc();
        self.overflows.insert(service.clone(), c);
    }

    /// One client request read (stub_status's requests), whatever became of
    /// it.
    pub fn request_read(&self) {
        self.stub_status.add(Stat::Requests, 1);
    }

    /// A client's exchange with the gateway, answered by `source`, labelled
    /// `service`/`route`.
    pub fn downstream(
        &mut self,
        ex: &Exchange,
        leg: Option<&UpstreamLeg>,
        source: Source,
        service: &Arc<str>,
        route: &Arc<str>,
    ) {
        let HttpMetrics {
            schema,
            requests,
            request_latency,
            upstream_latency,
            gateway_latency,
            bytes,
            routes,
            ..
        } = self;
        let h = handles(routes, service, route);
        let with_labels = |family: &IntCounterVec, extra: &[&str]| {
            let mut values: Vec<&str> = vec![service, route];
            values.extend_from_slice(extra);
            values.extend_from_slice(schema.tail);
            family.with_label_values(&values)
        };

        if let Some(family) = requests {
            let found = h
                .codes
                .iter()
                .position(|(code, s, _)| *code == ex.status && *s == source);
            let i = found.unwrap_or_else(|| {
                let counter = with_labels(family, &[&ex.status.to_string(), source.as_str()]);
                h.codes.push((ex.status, source, counter));
                h.codes.len() - 1
            });
            h.codes[i].2.inc();
        }

        if let Some(family) = bytes {
            for (len, slot, dir) in [
                (ex.request_bytes, &mut h.ingress, "ingress"),
                (ex.response_bytes, &mut h.egress, "egress"),
            ] {
                // Kong adds only non-zero sizes.
                if len > 0 {
                    slot.get_or_insert_with(|| with_labels(family, &[dir]))
                        .inc_by(len);
                }
            }
        }

        // An abandoned request (499) lasts until the connection closed, as
        // nginx's $request_time counts it.
        let Some(total_ns) = duration(ex.request_first_ns, ex.end_ns()) else {
            return;
        };
        let unit = |ns: u64| ns as f64 / schema.ns_per_unit;
        let pair = [service.as_ref(), route.as_ref()];
        if let Some(family) = request_latency {
            h.request_latency
                .get_or_insert_with(|| family.with_label_values(&pair))
                .observe(unit(total_ns));
        }
        if schema.upstream_time != UpstreamTime::DownstreamLeg {
            return;
        }
        let upstream_ns = leg.and_then(|l| duration(l.first_ns, l.last_ns));
        if let (Some(family), Some(up)) = (upstream_latency, upstream_ns) {
            h.upstream_latency
                .get_or_insert_with(|| family.with_label_values(&pair))
                .observe(unit(up));
        }
        // Gateway-added: the rest when an upstream was involved (until it
        // answered or was given up on), all of it when none was.
        let added = match (leg, upstream_ns) {
            (None, _) => Some(total_ns),
            (Some(_), Some(up)) => Some(total_ns.saturating_sub(up)),
            (Some(_), None) => None,
        };
        if let (Some(family), Some(added)) = (gateway_latency, added) {
            h.gateway_latency
                .get_or_insert_with(|| family.with_label_values(&pair))
                .observe(unit(added));
        }
    }

    /// The gateway's exchange with upstream `peer`.
    pub fn upstream_request(&mut self, peer: SocketAddr, status: u16) {
        let Some(family) = &self.upstream_requests else {
            return;
        };
        if let Some(c) = self.peers.get(&(peer, status)) {
            c.inc();
            return;
        }
        let c = family.with_label_values(&[&peer.to_string(), &status.to_string()]);
        c.inc();
        if self.peers.len() < MAX_PEER_HANDLES {
            self.peers.insert((peer, status), c);
        }
    }

    /// Upstream latency of an upstream exchange, labelled by its own
    /// service/route, when the schema takes it from upstream exchanges.
    pub fn upstream_latency(&mut self, ex: &Exchange, service: &Arc<str>, route: &Arc<str>) {
        if self.schema.upstream_time != UpstreamTime::UpstreamExchange {
            return;
        }
        let Some(family) = &self.upstream_latency else {
            return;
        };
        // An upstream that never answered counts until the gateway gave up
        // on it, as nginx's $upstream_response_time does.
        let Some(ns) = duration(ex.request_first_ns, ex.end_ns()) else {
            return;
        };
        handles(&mut self.routes, service, route)
            .upstream_latency
            .get_or_insert_with(|| family.with_label_values(&[service, route]))
            .observe(ns as f64 / self.schema.ns_per_unit);
    }
}

/// The cached handles of (`service`, `route`): one hash of the two names.
fn handles<'a>(
    routes: &'a mut FxHashMap<(Arc<str>, Arc<str>), RouteHandles>,
    service: &Arc<str>,
    route: &Arc<str>,
) -> &'a mut RouteHandles {
    routes.entry((service.clone(), route.clone())).or_default()
}

/// `last - first`, or `None` when there is no `last` (0) or it is earlier.
fn duration(first_ns: u64, last_ns: u64) -> Option<u64> {
    (last_ns != 0 && last_ns >= first_ns).then(|| last_ns - first_ns)
}

#[cfg(test)]
mod tests;
