//! Spans over OTLP: a sink (sinks/) that turns each client request into a
//! SERVER span with one CLIENT span per upstream attempt, and each upstream
//! call correlation left unlinked into a root CLIENT span, and exports them.
//!
//! One concern per file: `context` (W3C traceparent/tracestate, whom to
//! believe), `sampler` (OTEL_TRACES_SAMPLER), `cap` (spans per incoming
//! trace), `clock` (kernel monotonic time to wall time), `build` (records
//! to spans, pure), `export` (the bounded queue and the export thread).
//! Tracing is off unless an OTLP endpoint is set.

pub mod build;
pub mod cap;
pub mod clock;
pub mod context;
pub mod export;
pub mod sampler;

use std::{collections::HashMap, sync::Arc};

use self::{
    build::{Builder, Outcome},
    export::{Item, Queue},
};
use crate::{
    correlate::Attempt,
    kernel_targets::monotonic_ns,
    label::{Labelled, Needs},
    metrics::SpanMetrics,
    sinks::Sink,
};

/// Gateway processes whose command name is kept (one /proc read each).
const COMMS_MAX: usize = 4096;

/// The span sink: builds spans on the pipeline's task and queues them.
pub struct SpanSink {
    builder: Builder,
    queue: Queue,
    metrics: SpanMetrics,
    /// tgid -> /proc/PID/comm, read once per process.
    comms: HashMap<u32, Arc<str>>,
}

impl SpanSink {
    pub fn new(builder: Builder, queue: Queue, metrics: SpanMetrics) -> Self {
        SpanSink {
            builder,
            queue,
            metrics,
            comms: HashMap::new(),
        }
    }

    fn comm(&mut self, tgid: u32) -> Arc<str> {
        if let Some(c) = self.comms.get(&tgid) {
            return c.clone();
        }
        if self.comms.len() >= COMMS_MAX {
            self.comms.clear();
        }
        let comm: Arc<str> = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
            .map_or_else(|_| "unknown".into(), |c| c.trim_end().into());
        self.comms.insert(tgid, comm.clone());
        comm
    }

    fn deliver(&mut self, tgid: u32, outcome: Outcome) {
        match outcome {
            Outcome::Spans(spans) => {
                let comm = self.comm(tgid);
                for span in spans {
                    self.queue.send(Item {
                        tgid,
                        comm: comm.clone(),
                        span,
                    });
                }
            }
            Outcome::Capped(n) => self.metrics.dropped("trace_cap", n as u64),
            Outcome::QueueFull(n) => self.metrics.dropped("queue_full", n as u64),
            Outcome::SampledOut | Outcome::Skipped => {}
        }
    }
}

impl Sink for SpanSink {
    /// SERVER spans are named by configured route.
    fn needs(&self) -> Needs {
        Needs {
            downstream: true,
            upstream: false,
        }
    }

    fn exchange(&mut self, record: &Labelled) {
        let full = self.queue.is_full();
        let outcome = self.builder.request(record, monotonic_ns(), full);
        self.deliver(record.tgid, outcome);
    }

    fn unlinked(&mut self, tgid: u32, attempt: &Attempt) {
        let full = self.queue.is_full();
        let outcome = self.builder.unlinked(attempt, monotonic_ns(), full);
        self.deliver(tgid, outcome);
    }

    fn flush(&mut self) {
        self.builder.clock.refresh(monotonic_ns());
    }
}

/// What `main` passes from the command line.
pub struct Settings {
    /// `--otlp-endpoint`.
    pub endpoint: Option<String>,
    pub trust: context::Trust,
    pub max_spans_per_trace: u32,
    pub queue: usize,
    /// The `[[genai.provider]]` sections, for GenAI calls' `gen_ai.*`.
    pub genai: Arc<crate::label::Providers>,
}

/// The window of `--max-spans-per-trace`.
pub const TRACE_CAP_WINDOW_NS: u64 = 60_000_000_000;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The span sink and its exporter's shutdown handle, when an endpoint is
/// set (`--otlp-endpoint`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_ENDPOINT`); `None` leaves tracing off. Bad `OTEL_*`
/// values are start-up errors that name the variable.
pub fn start(
    settings: Settings,
    metrics: SpanMetrics,
) -> anyhow::Result<Option<(SpanSink, export::Shutdown)>> {
    if settings.endpoint.is_none()
        && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    export::check_protocol(
        env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").as_deref(),
        env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let sampler = sampler::Sampler::from_env(
        env("OTEL_TRACES_SAMPLER").as_deref(),
        env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned());
    let (queue, shutdown) = export::start(
        export::ExportConfig {
            endpoint: settings.endpoint,
            queue: settings.queue,
            service_name: env("OTEL_SERVICE_NAME"),
            host_name,
        },
        metrics.clone(),
    )?;
    let builder = Builder::new(
        settings.trust,
        sampler,
        cap::TraceCap::new(settings.max_spans_per_trace, TRACE_CAP_WINDOW_NS),
        clock::WallClock::new(),
    )
    .with_genai(settings.genai);
    Ok(Some((SpanSink::new(builder, queue, metrics), shutdown)))
}
