//! Last stage, sinks: the consumers of labelled exchanges.
//!
//! Each [`Sink`] receives every [`Labelled`] record, in order; capture,
//! parsing, correlation and labelling do not know which sinks there are.
//!
//! Today: the HTTP metric families ([`metrics`]), the request log
//! ([`request_log`], `--request-log`) and spans over OTLP
//! ([`crate::spans::SpanSink`], a module of its own beside this one for its
//! several concerns). A new consumer is one more module implementing
//! [`Sink`], added to [`Sinks`] where `main.rs` builds them.

pub mod metrics;
pub mod request_log;

use crate::{
    correlate::Attempt,
    label::{Labelled, Needs},
};

/// A consumer of labelled exchanges. Runs on the pipeline's task: it must
/// not block (buffer, and write out in [`Sink::flush`]), and it reports its
/// own errors (a sink's failure does not stop the others).
pub trait Sink: Send {
    /// For which roles this sink needs service and route names.
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// One finished exchange.
    fn exchange(&mut self, record: &Labelled);

    /// An upstream call of process `tgid` that correlation could not tie to
    /// a client request (ambiguous, or none possible). Its metrics came with
    /// its [`Sink::exchange`] record already; this is for sinks that report
    /// each call on its own (spans: a root CLIENT span).
    fn unlinked(&mut self, _tgid: u32, _attempt: &Attempt) {}

    /// Called after each drain of the ring buffer: write out what is
    /// buffered.
    fn flush(&mut self) {}
}

/// The sinks, in the order they receive each record.
#[derive(Default)]
pub struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
}

impl Sinks {
    pub fn push(&mut self, sink: impl Sink + 'static) {
        self.sinks.push(Box::new(sink));
    }

    /// What any sink needs named (give it to the labelling stage).
    pub fn needs(&self) -> Needs {
        self.sinks
            .iter()
            .fold(Needs::default(), |needs, s| needs.or(s.needs()))
    }

    pub fn exchange(&mut self, record: &Labelled) {
        for sink in &mut self.sinks {
            sink.exchange(record);
        }
    }

    pub fn unlinked(&mut self, tgid: u32, attempt: &Attempt) {
        for sink in &mut self.sinks {
            sink.unlinked(tgid, attempt);
        }
    }

    pub fn flush(&mut self) {
        for sink in &mut self.sinks {
            sink.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::http::TraceHeaders;
    use crate::{capture::decode::Role, correlate::Completed, http::Exchange, label::Labeller};

    /// Records what it receives, for the test to read.
    struct Probe {
        needs: Needs,
        name: &'static str,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for Probe {
        fn needs(&self) -> Needs {
            self.needs
        }
        fn exchange(&mut self, r: &Labelled) {
            let name = r.name.as_ref().map(|n| n.route.to_string());
            self.seen.lock().unwrap().push(format!(
                "{} {:?} {}",
                self.name,
                r.role,
                name.unwrap_or_default()
            ));
        }
        fn flush(&mut self) {
            self.seen
                .lock()
                .unwrap()
                .push(format!("{} flush", self.name));
        }
    }

    #[test]
    fn every_sink_gets_every_record_in_order_and_needs_combine() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut sinks = Sinks::default();
        for (name, downstream) in [("a", false), ("b", true)] {
            sinks.push(Probe {
                needs: Needs {
                    downstream,
                    upstream: false,
                },
                name,
                seen: seen.clone(),
            });
        }
        let needs = sinks.needs();
        assert_eq!((needs.downstream, needs.upstream), (true, false));
        let mut labeller = Labeller::new(crate::label::Router::from_config(None, 10), needs);
        let exchange = Exchange {
            method: "GET".into(),
            path: "/a/1".into(),
            host: None,
            status: 200,
            request_bytes: 1,
            response_bytes: 1,
            request_first_ns: 1,
            request_last_ns: 1,
            response_first_ns: 2,
            response_last_ns: 2,
            closed_ns: 0,
            upgraded: false,
            version: 1,
            trace: TraceHeaders::default(),
            grpc: None,
            genai: None,
        };
        let done = Completed::Downstream {
            exchange,
            listener: "127.0.0.1:80".parse().unwrap(),
            upstream: None,
            attempts: Vec::new(),
        };
        sinks.exchange(&labeller.label(done, "10.0.0.1:1".parse().unwrap(), 1));
        sinks.flush();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("a {:?} /a/{{id}}", Role::Downstream),
                format!("b {:?} /a/{{id}}", Role::Downstream),
                "a flush".to_owned(),
                "b flush".to_owned(),
            ]
        );
    }
}
