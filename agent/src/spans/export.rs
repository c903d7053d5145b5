//! The exporter: our own bounded queue and a dedicated thread that sends
//! batches with the OTLP/HTTP exporter.
//!
//! The SDK's `BatchSpanProcessor` keeps its drop count private, so the queue
//! is ours: a `sync_channel` the pipeline `try_send`s into (drop-newest when
//! full, counted), drained by one thread that exports a batch when it holds
//! [`BATCH_MAX`] spans or [`BATCH_WAIT`] after its first span. The exporter
//! is blocking (reqwest's blocking client, built on that thread, outside any
//! async runtime); a collector that is down, slow or refusing holds up the
//! thread, never the pipeline: the queue fills and further spans are dropped
//! and counted, so memory stays within the queue's bound.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    error::OTelSdkError,
    resource::EnvResourceDetector,
    trace::{SpanData, SpanExporter as _},
    Resource,
};

use crate::metrics::SpanMetrics;

/// Spans per export call.
pub const BATCH_MAX: usize = 512;
/// How long a batch waits for more spans after its first.
pub const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Distinct gateway processes whose resource is kept built.
const RESOURCES_MAX: usize = 1024;

/// One span and the gateway process it describes.
pub struct Item {
    pub tgid: u32,
    /// The process's command name (`/proc/PID/comm`).
    pub comm: Arc<str>,
    pub span: SpanData,
}

/// Where and how to export.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// `--otlp-endpoint`: the full traces URL; `None` leaves it to the
    /// standard variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`), which the OTLP crate
    /// reads with `…_HEADERS`, `…_TIMEOUT` and `…_COMPRESSION`.
    pub endpoint: Option<String>,
    /// Spans the queue holds.
    pub queue: usize,
    /// `OTEL_SERVICE_NAME`; default: the gateway's command name.
    pub service_name: Option<String>,
    pub host_name: String,
}

/// The pipeline's end of the queue (the span sink holds it). Dropping it
/// closes the queue: the thread exports what is left and ends.
pub struct Queue {
    tx: SyncSender<Item>,
    capacity: u64,
    /// Spans queued or in an export call not yet finished.
    pending: Arc<AtomicU64>,
    metrics: SpanMetrics,
}

/// `main`'s end: waits for the last export at exit.
pub struct Shutdown {
    pending: Arc<AtomicU64>,
    done: Receiver<()>,
    metrics: SpanMetrics,
}

/// What an export failure was, for `gatescope_span_export_errors_total`.
pub fn error_kind(e: &OTelSdkError) -> &'static str {
    let text = e.to_string();
    if text.contains("status code") {
        "http_status"
    } else if matches!(e, OTelSdkError::Timeout(_))
        || text.contains("network")
        || text.contains("connect")
        || text.contains("timed out")
    {
        "network"
    } else {
        "other"
    }
}

/// Fails start-up on a protocol this build does not speak, rather than
/// sending protobuf over HTTP to a gRPC port.
pub fn check_protocol(traces: Option<&str>, all: Option<&str>) -> Result<(), String> {
    let (var, value) = match (traces, all) {
        (Some(v), _) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v),
        (None, Some(v)) => ("OTEL_EXPORTER_OTLP_PROTOCOL", v),
        (None, None) => return Ok(()),
    };
    match value.trim() {
        "" | "http/protobuf" => Ok(()),
        other => Err(format!(
            "{var}={other:?}: gatescope exports OTLP over HTTP/protobuf only; set http/protobuf \
             and point the endpoint at the collector's OTLP/HTTP port (4318 by default)"
        )),
    }
}

/// Builds the OTLP exporter on its own thread and starts it; an invalid
/// endpoint or variable is an error here, at start.
pub fn start(config: ExportConfig, metrics: SpanMetrics) -> anyhow::Result<(Queue, Shutdown)> {
    let (tx, rx) = mpsc::sync_channel::<Item>(config.queue);
    let capacity = config.queue as u64;
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
    let (done_tx, done) = mpsc::sync_channel::<()>(1);
    let pending = Arc::new(AtomicU64::new(0));
    let thread_pending = pending.clone();
    let thread_metrics = metrics.clone();
    thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            let exporter = match builder.build() {
                Ok(e) => {
                    let _ = ready_tx.send(Ok(()));
                    e
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            run(exporter, &rx, &config, &thread_pending, &thread_metrics);
            let _ = done_tx.send(());
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => anyhow::bail!("cannot set up the OTLP exporter: {e}"),
        Err(_) => anyhow::bail!("the OTLP export thread ended at start"),
    }
    Ok((
        Queue {
            tx,
            capacity,
            pending: pending.clone(),
            metrics: metrics.clone(),
        },
        Shutdown {
            pending,
            done,
            metrics,
        },
    ))
}

impl Queue {
    /// Queues a span; drops it (counted) when the queue is full. Never
    /// blocks.
    pub fn send(&self, item: Item) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.metrics.dropped("queue_full", 1);
            }
        }
    }

    /// No room for another span: the queue holds its capacity (`pending`
    /// also counts the batch being exported, so this errs towards room).
    pub fn is_full(&self) -> bool {
        self.pending.load(Ordering::Relaxed) >= self.capacity + BATCH_MAX as u64
    }
}

impl Shutdown {
    /// Waits at most `deadline` for the queue (closed when the span sink is
    /// dropped with the pipeline) to be exported; what is still pending
    /// then is counted as dropped (`shutdown`) and left to die with the
    /// process.
    pub fn wait(self, deadline: Duration) {
        if self.done.recv_timeout(deadline).is_err() {
            let left = self.pending.swap(0, Ordering::Relaxed);
            self.metrics.dropped("shutdown", left);
            tracing::warn!(
                spans = left,
                "the OTLP collector did not take the last spans within {deadline:?}: dropped"
            );
        }
    }
}

fn run(
    mut exporter: opentelemetry_otlp::SpanExporter,
    rx: &Receiver<Item>,
    config: &ExportConfig,
    pending: &AtomicU64,
    metrics: &SpanMetrics,
) {
    let mut resources: HashMap<u32, Resource> = HashMap::new();
    let mut current: Option<u32> = None;
    let mut batch: Vec<Item> = Vec::with_capacity(BATCH_MAX);
    loop {
        // Wait for a first span, then gather more for up to BATCH_WAIT.
        let closed = match rx.recv() {
            Ok(item) => {
                batch.push(item);
                let until = Instant::now() + BATCH_WAIT;
                let mut closed = false;
                while batch.len() < BATCH_MAX {
                    let left = until.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(item) => batch.push(item),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                closed
            }
            Err(_) => true,
        };
        // One export call per gateway process in the batch: the resource
        // (service.name, process.pid) is per process.
        batch.sort_by_key(|i| i.tgid);
        let mut items = std::mem::take(&mut batch).into_iter().peekable();
        while let Some(first) = items.next() {
            let tgid = first.tgid;
            if resources.len() >= RESOURCES_MAX && !resources.contains_key(&tgid) {
                resources.clear();
            }
            let resource = resources
                .entry(tgid)
                .or_insert_with(|| resource(config, tgid, &first.comm));
            if current != Some(tgid) {
                exporter.set_resource(resource);
                current = Some(tgid);
            }
            let mut spans = vec![first.span];
            while let Some(next) = items.next_if(|i| i.tgid == tgid) {
                spans.push(next.span);
            }
            let n = spans.len() as u64;
            match futures_executor::block_on(exporter.export(spans)) {
                Ok(()) => metrics.exported.inc_by(n),
                Err(e) => {
                    let kind = error_kind(&e);
                    metrics.export_error(kind);
                    metrics.dropped("export_failed", n);
                    tracing::debug!(kind, "OTLP export of {n} spans failed: {e}");
                }
            }
            let _ = pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(n))
            });
        }
        // The channel reports the close only once it is empty.
        if closed {
            return;
        }
    }
}

/// The resource of gateway process `tgid`: `service.name` (OTEL_SERVICE_NAME,
/// else `service.name` in OTEL_RESOURCE_ATTRIBUTES, else the command name),
/// `host.name`, `process.pid`, `process.executable.name`, and the rest of
/// OTEL_RESOURCE_ATTRIBUTES.
pub fn resource(config: &ExportConfig, tgid: u32, comm: &str) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", comm.to_owned()),
            KeyValue::new("host.name", config.host_name.clone()),
            KeyValue::new("process.pid", i64::from(tgid)),
            KeyValue::new("process.executable.name", comm.to_owned()),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = &config.service_name {
        builder = builder.with_service_name(name.clone());
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Read as _, Write as _},
        net::TcpListener,
        sync::atomic::AtomicUsize,
    };

    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prometheus::Registry;

    use super::*;

    /// A collector stand-in: answers every POST with `status`, counting them.
    fn collector(status: u16) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", l.local_addr().unwrap());
        let posts = Arc::new(AtomicUsize::new(0));
        let p = posts.clone();
        thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let p = p.clone();
                thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut len = 0;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line.trim().is_empty() {
                                break;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        p.fetch_add(1, Ordering::Relaxed);
                        let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    }
                });
            }
        });
        (url, posts)
    }

    fn item(tgid: u32) -> Item {
        Item {
            tgid,
            comm: "nginx".into(),
            span: SpanData {
                span_context: SpanContext::new(
                    TraceId::from(1u128),
                    SpanId::from(2u64),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                parent_span_id: SpanId::INVALID,
                parent_span_is_remote: false,
                span_kind: SpanKind::Server,
                name: "GET".into(),
                start_time: std::time::SystemTime::UNIX_EPOCH,
                end_time: std::time::SystemTime::UNIX_EPOCH,
                attributes: Vec::new(),
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: opentelemetry::InstrumentationScope::default(),
            },
        }
    }

    fn config(endpoint: String, queue: usize) -> ExportConfig {
        ExportConfig {
            endpoint: Some(endpoint),
            queue,
            service_name: None,
            host_name: "h".into(),
        }
    }

    fn value(r: &Registry, name: &str, label: Option<&str>) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&r.gather())
            .unwrap();
        let want = label.map_or(name.to_owned(), |l| format!("{name}{{{l}}}"));
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{want} ")))
            .map_or(-1.0, |v| v.parse().unwrap())
    }

    #[test]
    fn exports_in_one_call_per_process_and_counts_failures() {
        let (url, posts) = collector(200);
        let registry = Registry::new();
        let metrics = SpanMetrics::new(&registry);
        let (queue, shutdown) = start(config(url, 100), metrics).unwrap();
        for tgid in [1, 2, 1, 1] {
            queue.send(item(tgid));
        }
        drop(queue);
        shutdown.wait(Duration::from_secs(5));
        assert_eq!(
            value(&registry, "gatescope_spans_exported_total", None),
            4.0
        );
        // Two processes, two resources: two export calls.
        assert_eq!(posts.load(Ordering::Relaxed), 2);

        let (url, _) = collector(400);
        let registry = Registry::new();
        let metrics = SpanMetrics::new(&registry);
        let (queue, shutdown) = start(config(url, 100), metrics).unwrap();
        queue.send(item(1));
        drop(queue);
        shutdown.wait(Duration::from_secs(5));
        assert_eq!(
            value(&registry, "gatescope_spans_exported_total", None),
            0.0
        );
        let dropped = value(
            &registry,
            "gatescope_spans_dropped_total",
            Some("reason=\"export_failed\""),
        );
        assert_eq!(dropped, 1.0);
        let errors = value(
            &registry,
            "gatescope_span_export_errors_total",
            Some("kind=\"http_status\""),
        );
        assert_eq!(errors, 1.0);
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_a_bad_protocol_is_refused() {
        // A collector that never answers: the first batch hangs.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", l.local_addr().unwrap());
        let registry = Registry::new();
        let metrics = SpanMetrics::new(&registry);
        let (queue, shutdown) = start(config(url, 2), metrics).unwrap();
        for _ in 0..1000 {
            queue.send(item(1));
        }
        let full = value(
            &registry,
            "gatescope_spans_dropped_total",
            Some("reason=\"queue_full\""),
        );
        // At most 2 queued and one batch (512) taken off the queue.
        assert!(full >= (1000 - 2 - BATCH_MAX) as f64, "{full}");
        drop(queue);
        let t = Instant::now();
        shutdown.wait(Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(1));
        let at_exit = value(
            &registry,
            "gatescope_spans_dropped_total",
            Some("reason=\"shutdown\""),
        );
        assert_eq!(full + at_exit, 1000.0);
        drop(l);

        assert!(check_protocol(None, Some("grpc")).is_err());
        assert!(check_protocol(Some("http/json"), Some("http/protobuf")).is_err());
        assert!(check_protocol(Some("http/protobuf"), Some("grpc")).is_ok());
        assert!(check_protocol(None, None).is_ok());
    }

    #[test]
    fn the_resource_names_the_gateway_process() {
        let c = config("http://x".into(), 1);
        let r = resource(&c, 42, "nginx");
        let get = |k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("nginx"));
        assert_eq!(get("process.pid").as_deref(), Some("42"));
        assert_eq!(get("process.executable.name").as_deref(), Some("nginx"));
        assert_eq!(get("host.name").as_deref(), Some("h"));
        let named = ExportConfig {
            service_name: Some("edge".into()),
            ..c
        };
        assert_eq!(
            resource(&named, 42, "nginx")
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|v| v.to_string())
                .as_deref(),
            Some("edge")
        );
    }
}
