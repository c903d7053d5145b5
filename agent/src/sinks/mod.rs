//! Last stage, sinks: the consumers of labelled exchanges.
//!
//! Each [`Sink`] receives every [`Labelled`] record, in order; capture,
//! parsing, correlation and labelling do not know which sinks there are.
//!
//! Today: the HTTP metric families ([`metrics`]) and the request log
//! ([`request_log`], `--request-log`). A new consumer (spans over OTLP, say)
//! is one more module here implementing [`Sink`], added to [`Sinks`] where
//! `main.rs` builds them.

pub mod metrics;
pub mod request_log;

use crate::label::{Labelled, Needs};

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

    pub fn flush(&mut self) {
        for sink in &mut self.sinks {
            sink.flush();
        }
    }
}
