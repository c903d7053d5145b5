//! gatescope's binary: wiring only.
//!
//! Parses the command line, starts logging, builds the stages of the library
//! crate (capture -> conntrack -> correlation -> labelling -> sinks, driven by
//! `pipeline`; `/metrics` served by `server`) and runs them, or runs
//! `gatescope check`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};
use tracing::{info, warn};

use gatescope::{
    btf,
    capture::{
        decode::KINDS,
        tls::TlsProbes,
        wire::{Selection, Taps},
        Capture, CaptureConfig,
    },
    check,
    cli::{self, Args},
    config,
    error::StartError,
    identity,
    kernel_targets::TargetSet,
    label,
    metrics::{Identity, MetricGroups, Metrics},
    pipeline::{self, Pipeline},
    preflight,
    procfs::Proc,
    server,
    sinks::{request_log::RequestLog, Sinks},
    spans,
};

/// How long the exit waits for the last spans to reach the collector; the
/// whole exit stays under 2 s under load (tests/tests/resilience.rs).
const SPAN_FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_millis(600);

fn main() -> ExitCode {
    let args = cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .init();
    if let Some(cli::Command::Check) = args.command {
        return check::run(&args.pids, &args.discover);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let proc = Proc::default();
    if let Some(&pid) = args.pids.iter().find(|&&pid| !proc.is_process(pid)) {
        return Err(StartError::NoSuchPid(pid).into());
    }
    // Before anything needs privileges: a bad file fails fast.
    let config = args
        .config
        .as_deref()
        .map(config::Config::load)
        .transpose()?;
    let genai = Arc::new(label::Providers::from_config(config.as_ref()));
    let genai_peers: Vec<SocketAddr> = genai.upstreams().into_iter().collect();
    let router = label::Router::from_config(config, args.max_routes_per_service);
    let max_sockets = args.max_sockets;
    preflight::check_host()?;
    let listener = server::bind(args.listen)?;

    // Connections open before we start are picked up on first use, with
    // socket field offsets from the kernel's BTF; without BTF they stay
    // untracked (their bytes are still counted).
    let sock_offsets = btf::sock_offsets(std::path::Path::new(btf::VMLINUX)).unwrap_or_else(|e| {
        warn!("{e}: connections open before gatescope started will not be attributed");
        gatescope_common::SockOffsets::default()
    });
    // The programs key listeners by network namespace only with BTF; the
    // agent's keys must match theirs.
    let by_netns = sock_offsets.knows_netns();
    let (capture, mut maps, events) = Capture::load(&CaptureConfig {
        ring_buffer_bytes: args.ring_buffer_bytes,
        capture_bytes: args.capture_bytes,
        max_sockets,
        sock_offsets,
        discover: &args.discover,
        raw_tracepoints: args.raw_tracepoints,
        payload_from: args.payload_from,
        tls: args.tls,
        genai_peers: &genai_peers,
    })?;
    let node_id = args
        .node_id
        .clone()
        .unwrap_or_else(identity::default_node_id);
    let kernel = identity::kernel_release();
    let id = Identity {
        node_id: &node_id,
        version: env!("CARGO_PKG_VERSION"),
        kernel: &kernel,
    };
    let groups = MetricGroups {
        status_code: args.status_code_metrics,
        latency: args.latency_metrics,
        bandwidth: args.bandwidth_metrics,
        upstream_health: args.upstream_health_metrics,
    };
    let metrics = Metrics::new(args.metrics_compat, &id, &KINDS);
    metrics
        .health
        .set_capacity("ring_buffer_bytes", args.ring_buffer_bytes);
    metrics.health.set_capacity("sockets", max_sockets);
    metrics
        .health
        .programs_attached
        .set(capture.programs_attached as i64);
    let registry = metrics.registry();
    let status = args.status_page.then(|| metrics.status_names());

    // The consumers of labelled exchanges (sinks/), in the order they get them.
    let mut sinks = Sinks::default();
    sinks.push(metrics.http(groups));
    sinks.push(metrics.genai(genai.clone(), args.max_genai_models_per_provider));
    if let Some(path) = &args.request_log {
        sinks.push(
            RequestLog::create(path, genai.clone())
                .with_context(|| format!("cannot open the request log {}", path.display()))?,
        );
    }
    // Spans over OTLP, when an endpoint is set.
    let span_export = match spans::start(
        spans::Settings {
            endpoint: args.otlp_endpoint.clone(),
            trust: args.trust_traceparent.clone(),
            max_spans_per_trace: args.max_spans_per_trace,
            queue: args.span_queue as usize,
            genai: genai.clone(),
        },
        metrics.spans.clone(),
    )? {
        Some((sink, shutdown)) => {
            sinks.push(sink);
            info!("exporting spans over OTLP/HTTP");
            Some(shutdown)
        }
        None => None,
    };
    let labeller = label::Labeller::new(router, sinks.needs()).with_genai(genai.clone());
    let taps = match (args.wire, maps.wire_program.take()) {
        (true, Some(program)) => {
            let selection = if args.interfaces.is_empty() {
                Selection::AllUp
            } else {
                Selection::Named(args.interfaces.clone())
            };
            let mut taps = Taps::new(program, selection);
            taps.sync(std::path::Path::new(pipeline::SYS_CLASS_NET))?;
            Some(taps)
        }
        _ => None,
    };
    let programs_attached = capture.programs_attached;
    // The pipeline attaches the OpenSSL probes as targets map libssl; the
    // capture comes back here to be detached at the end.
    let tls_on = capture.tls;
    let capture = Arc::new(Mutex::new(capture));
    let tls = tls_on.then(|| TlsProbes::new(capture.clone(), Proc::default()));
    let targets = TargetSet::new(proc, args.pids.clone(), args.discover.clone(), by_netns);
    // The agent's table holds what the kernel's socket map can hold.
    let mut pipeline = Pipeline::new(pipeline::Parts {
        metrics,
        labeller,
        sinks,
        targets,
        maps,
        taps,
        tls,
        max_connections: max_sockets as usize,
        genai_peers: genai_peers.iter().copied().collect(),
    });
    pipeline.start();

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(listener, registry, status, stop_rx.clone()));
    info!(
        pids = ?args.pids,
        discover = ?args.discover,
        listen = %args.listen,
        programs = capture.lock().map_or(programs_attached, |c| c.programs_attached),
        "gatescope attached; metrics at http://{}/metrics",
        args.listen
    );

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let pipeline = tokio::spawn(pipeline.run(events, stop_rx));
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: detaching"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: detaching"),
    }
    // The pipeline first quiets the programs (no targets: each returns after
    // one lookup), starts closing the wire view's taps and drains what is
    // left; then the tracepoints are detached while the taps finish closing.
    // Both wait for RCU grace periods in the kernel, so they overlap.
    let stopping = std::time::Instant::now();
    let _ = stop_tx.send(true);
    let _ = server.await;
    let drained = pipeline.await;
    // The pipeline's end dropped the span sink, closing the export queue:
    // the last spans go out while the programs detach.
    let flushing = span_export.map(|s| std::thread::spawn(move || s.wait(SPAN_FLUSH_DEADLINE)));
    // The pipeline's end dropped its handle.
    if let Some(capture) = Arc::into_inner(capture).and_then(|m| m.into_inner().ok()) {
        capture.detach();
    }
    if let Some(f) = flushing {
        let _ = f.join();
    }
    info!(elapsed = ?stopping.elapsed(), "detached");
    let closing = drained
        .context("pipeline task")?
        .context("reading the ring buffer")?;
    if let Some(taps) = closing {
        taps.wait();
        info!(elapsed = ?stopping.elapsed(), "wire view taps closed");
    }
    info!("bye");
    Ok(())
}
