//! The metrics sink: labelled exchanges into the HTTP families.
//!
//! Requests, latencies and bandwidth per service and route, upstream
//! requests per peer and stub_status's request count, and gRPC calls by
//! grpc-status; the families are described in metrics/families.rs and kept
//! in metrics/http.rs and metrics/grpc.rs. GenAI calls (upstream exchanges
//! with `Exchange::genai`) move the GenAI families (metrics/genai.rs).

use super::Sink;
use crate::{
    capture::decode::Role,
    label::{Labelled, Needs},
    metrics::{GenAiMetrics, HttpMetrics},
};

impl Sink for GenAiMetrics {
    fn exchange(&mut self, r: &Labelled) {
        if r.role != Role::Upstream {
            return;
        }
        if let Some(call) = &r.exchange.genai {
            self.call(&r.exchange, call, r.remote);
        }
    }
}

impl Sink for HttpMetrics {
    fn needs(&self) -> Needs {
        Needs {
            downstream: self.wants_downstream_route(),
            upstream: self.wants_upstream_route(),
        }
    }

    fn exchange(&mut self, r: &Labelled) {
        match r.role {
            Role::Downstream => {
                self.request_read();
                if !self.wants_downstream_route() {
                    return;
                }
                let Some(name) = &r.name else { return };
                if name.overflow {
                    self.overflowed(&name.service);
                }
                self.downstream(
                    &r.exchange,
                    r.upstream.as_ref(),
                    r.source,
                    &name.service,
                    &name.route,
                );
                if let Some(call) = &r.exchange.grpc {
                    self.grpc.downstream(call, &name.service, &name.route);
                }
            }
            Role::Upstream => {
                self.upstream_request(r.remote, r.exchange.status);
                if let Some(call) = &r.exchange.grpc {
                    self.grpc.upstream(call, r.remote);
                }
                if !self.wants_upstream_route() {
                    return;
                }
                let Some(name) = &r.name else { return };
                if name.overflow {
                    self.overflowed(&name.service);
                }
                self.upstream_latency(&r.exchange, &name.service, &name.route);
            }
        }
    }
}
