//! The command line and its value checks.
//!
//! Every flag can also be set with a `GATESCOPE_*` variable, as a DaemonSet would.

use std::{net::SocketAddr, path::PathBuf};

use clap::{
    builder::{BoolishValueParser, TypedValueParser as _},
    error::ErrorKind,
    value_parser, ArgAction, ArgGroup, CommandFactory as _, Parser, Subcommand, ValueEnum,
};
use gatescope_common::{COMM_LEN, DATA_HEAD_MAX, DISCOVER_MAX};

use crate::{
    capture::{check_max_sockets, PayloadFrom},
    error::StartError,
    spans::context::Trust,
};

#[derive(Debug, Parser)]
#[command(
    name = "gatescope",
    version,
    about = "See what an API gateway is doing, from the kernel.",
    subcommand_negates_reqs = true,
    group = ArgGroup::new("gateway").args(["pids", "discover"]).multiple(true).required(true)
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// PID of a gateway process to observe; it and all its descendants
    /// (workers, reloaded workers) are followed. Repeatable. This or
    /// --discover is required unless a subcommand is given.
    #[arg(
        long = "pid",
        env = "GATESCOPE_PID",
        value_delimiter = ',',
        global = true
    )]
    pub pids: Vec<u32>,

    /// Command name (as in /proc/PID/comm, at most 15 bytes) of gateway
    /// processes to observe, with their descendants: those running when
    /// gatescope starts and those started later (a restarted gateway).
    /// Repeatable.
    #[arg(
        long = "discover",
        env = "GATESCOPE_DISCOVER",
        value_delimiter = ',',
        value_name = "NAME",
        value_parser = comm_name,
        global = true
    )]
    pub discover: Vec<String>,

    /// Address to serve Prometheus metrics on (`/metrics`).
    #[arg(long, env = "GATESCOPE_LISTEN", default_value = "0.0.0.0:9542")]
    pub listen: SocketAddr,

    /// `kong` renders the families that have a Kong Prometheus plugin
    /// equivalent under Kong's exact names, so existing dashboards work.
    #[arg(long, env = "GATESCOPE_METRICS_COMPAT", value_enum, default_value_t = Compat::None)]
    pub metrics_compat: Compat,

    /// Services and routes (TOML): names exchanges by host, method and path
    /// prefix, or by upstream address, as Kong's entities do.
    #[arg(long, env = "GATESCOPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Distinct path templates kept per service without a configured route;
    /// more are counted under route "other".
    #[arg(
        long,
        env = "GATESCOPE_MAX_ROUTES_PER_SERVICE",
        default_value_t = 100,
        value_name = "N"
    )]
    pub max_routes_per_service: usize,

    /// Distinct model names kept per GenAI provider as metric labels; calls
    /// with more are counted under model "other".
    #[arg(
        long,
        env = "GATESCOPE_MAX_GENAI_MODELS_PER_PROVIDER",
        default_value_t = 100,
        value_name = "N"
    )]
    pub max_genai_models_per_provider: usize,

    /// Requests by status code per service and route.
    #[arg(long, env = "GATESCOPE_STATUS_CODE_METRICS", value_name = "BOOL", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub status_code_metrics: bool,

    /// Request, upstream and gateway-added latency histograms.
    #[arg(long, env = "GATESCOPE_LATENCY_METRICS", value_name = "BOOL", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub latency_metrics: bool,

    /// HTTP bytes per service and route.
    #[arg(long, env = "GATESCOPE_BANDWIDTH_METRICS", value_name = "BOOL", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub bandwidth_metrics: bool,

    /// Upstream requests per peer and status code.
    #[arg(long, env = "GATESCOPE_UPSTREAM_HEALTH_METRICS", value_name = "BOOL", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub upstream_health_metrics: bool,

    /// Node identity for Kong's `node_id` label; defaults to /etc/machine-id
    /// written as a UUID, or the host name.
    #[arg(long, env = "GATESCOPE_NODE_ID")]
    pub node_id: Option<String>,

    /// Size of the kernel-to-agent ring buffer in bytes (a power of two, at
    /// least one page).
    #[arg(
        long,
        env = "GATESCOPE_RING_BUFFER_BYTES",
        default_value_t = gatescope_common::EVENTS_DEFAULT_BYTES,
        value_parser = value_parser!(u32).try_map(ring_buffer_bytes)
    )]
    pub ring_buffer_bytes: u32,

    /// Capacity of the kernel's socket map and of the agent's connection
    /// table: connections tracked at once. When full, new connections are
    /// refused and counted (`gatescope_events_lost_total{reason="sockets_map_full"}`),
    /// never evicted. Preallocated in the kernel: 88 bytes per entry.
    #[arg(
        long,
        env = "GATESCOPE_MAX_SOCKETS",
        default_value_t = gatescope_common::SOCKS_MAX,
        value_name = "N",
        value_parser = value_parser!(u32).try_map(check_max_sockets)
    )]
    pub max_sockets: u32,

    /// Bytes copied from the start of each send/recv for HTTP parsing (at
    /// most 4096); bodies beyond it are counted, not copied.
    #[arg(
        long,
        env = "GATESCOPE_CAPTURE_BYTES",
        default_value_t = gatescope_common::CAPTURE_BYTES_DEFAULT,
        value_parser = value_parser!(u32).try_map(capture_bytes)
    )]
    pub capture_bytes: u32,

    /// The wire view: packets, bytes and resets of the gateway's ports and
    /// upstream peers, and client handshake times, from a socket filter on
    /// AF_PACKET sockets (observe-only).
    #[arg(long, env = "GATESCOPE_WIRE", value_name = "BOOL", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub wire: bool,

    /// Interfaces the wire view taps (repeatable, comma-separated). Default:
    /// every interface that is up, loopback included, followed as
    /// interfaces come and go.
    #[arg(
        long = "interface",
        env = "GATESCOPE_INTERFACE",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub interfaces: Vec<String>,

    /// Attach the programs that have a raw tracepoint form (the syscall entry
    /// hook, process exit, retransmissions, received resets) as raw
    /// tracepoints where the host allows it: cheaper per run (the syscall
    /// entry hook runs for every syscall on the host) and at shutdown.
    /// `false` keeps every program on its perf trace event.
    #[arg(long, env = "GATESCOPE_RAW_TRACEPOINTS", value_name = "BOOL", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub raw_tracepoints: bool,

    /// Where the payload programs find each transfer's buffer: `regs`, the
    /// saved registers of the syscall in progress, read in the socket
    /// tracepoints (no syscall hook: nothing added to the rest of the
    /// host's syscalls); `syscall-hook`, a `sys_enter` hook that saves every
    /// send/recv buffer (about +70 to +160 ns on every syscall of every
    /// process on the host; BENCHMARKS.md); `auto`, `regs` where the host
    /// allows it, else `syscall-hook` (the start-up line says which).
    #[arg(long, env = "GATESCOPE_PAYLOAD_FROM", value_enum, default_value_t = PayloadFrom::Auto, value_name = "SOURCE")]
    pub payload_from: PayloadFrom,

    /// Parse TLS traffic: uprobes on OpenSSL's `SSL_read`/`SSL_write` (and
    /// `_ex`) in every libssl a target maps give the plaintext, parsed like
    /// clear text. `false`: TLS connections are counted as bytes only.
    #[arg(long, env = "GATESCOPE_TLS", value_name = "BOOL", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub tls: bool,

    /// Append one JSON line per finished HTTP exchange to this file (method,
    /// path without query, status, bytes, timings; never header values).
    #[arg(long, env = "GATESCOPE_REQUEST_LOG")]
    pub request_log: Option<PathBuf>,

    /// OTLP/HTTP traces URL of a collector (e.g.
    /// `http://127.0.0.1:4318/v1/traces`). Spans are exported only when
    /// this, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the standard `OTEL_*` variables
    /// (headers, timeout, compression, sampler, service name, resource)
    /// apply.
    #[arg(long, env = "GATESCOPE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Whose incoming `traceparent` a SERVER span joins: `all` (as
    /// gateways' own tracers do), `none`, or comma-separated client
    /// networks (`10.0.0.0/8,192.168.1.7`). Others start a new trace.
    #[arg(
        long,
        env = "GATESCOPE_TRUST_TRACEPARENT",
        default_value = "all",
        value_name = "all|none|CIDR,...",
        value_parser = clap::builder::NonEmptyStringValueParser::new().try_map(|s| s.parse::<Trust>())
    )]
    pub trust_traceparent: Trust,

    /// Spans accepted into one incoming trace per minute; more are dropped
    /// and counted (`gatescope_spans_dropped_total{reason="trace_cap"}`), so
    /// a client cannot grow one trace without bound.
    #[arg(
        long,
        env = "GATESCOPE_MAX_SPANS_PER_TRACE",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub max_spans_per_trace: u32,

    /// Spans the export queue holds (about 1 KB each) while the collector
    /// is slow or away; more are dropped and counted
    /// (`gatescope_spans_dropped_total{reason="queue_full"}`).
    #[arg(
        long,
        env = "GATESCOPE_SPAN_QUEUE",
        default_value_t = 8192,
        value_name = "N",
        value_parser = value_parser!(u32).range(1..)
    )]
    pub span_queue: u32,

    /// Serve a status page at `/` on the metrics port: rates, error ratios
    /// and latencies per service and route, upstream peers, connections and
    /// the agent's health, as HTML with no script.
    #[arg(long, env = "GATESCOPE_STATUS_PAGE", value_name = "BOOL", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub status_page: bool,

    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "GATESCOPE_LOG", default_value = "info")]
    pub log: String,
}

/// A command name the kernel can hold: 1 to 15 bytes, no NUL (the kernel
/// cuts longer program names to their first 15 bytes, so a longer NAME
/// would never match).
fn comm_name(name: &str) -> Result<String, String> {
    let max = COMM_LEN - 1;
    if name.is_empty() {
        Err("empty name".into())
    } else if name.len() > max {
        Err(format!(
            "{name:?} is {} bytes; command names are at most {max} (the kernel keeps the \
             first {max} bytes of a program's name: pass {:?})",
            name.len(),
            name.get(..max).unwrap_or(name)
        ))
    } else if name.contains('\0') {
        Err("a command name cannot hold NUL".into())
    } else {
        Ok(name.to_owned())
    }
}

/// `--ring-buffer-bytes`: the kernel takes a power of two, at least one page.
fn ring_buffer_bytes(n: u32) -> Result<u32, StartError> {
    if n.is_power_of_two() && n >= 4096 {
        Ok(n)
    } else {
        Err(StartError::RingBufferSize(n))
    }
}

/// `--capture-bytes`: at most what the programs' buffer holds.
fn capture_bytes(n: u32) -> Result<u32, StartError> {
    if n as usize <= DATA_HEAD_MAX {
        Ok(n)
    } else {
        Err(StartError::CaptureBytes(n))
    }
}

/// The command line, or the process ends: as clap does (usage, status 2) for what does not
/// parse, and with one `error:` line and status 1, like every other start-up error, for a
/// number out of the range the kernel accepts ([`StartError`], from the value parsers).
pub fn parse() -> Args {
    Args::try_parse_checked_from(std::env::args_os()).unwrap_or_else(|e| {
        let start = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<StartError>());
        match start {
            Some(start) => {
                eprintln!("error: {start}");
                std::process::exit(1)
            }
            None => e.exit(),
        }
    })
}

impl Args {
    /// Parses `args`, each value by its value parser, then the one check that needs every
    /// occurrence of a flag at once: clap's parsers see one value and its groups see only
    /// presence, so the number of distinct `--discover` names is counted here.
    pub fn try_parse_checked_from<I, T>(args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(args)?;
        let mut names = args.discover.clone();
        names.sort();
        names.dedup();
        if names.len() > DISCOVER_MAX as usize {
            return Err(Args::command().error(
                ErrorKind::ValueValidation,
                format!("--discover: {} names, at most {DISCOVER_MAX}", names.len()),
            ));
        }
        Ok(args)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Probe what this host allows (capabilities, BTF, tracefs, ring buffer,
    /// and whether each eBPF program type loads and attaches), say what
    /// gatescope uses for each job, and exit non-zero when it cannot run.
    /// With --pid or --discover, also say for each target process where its
    /// OpenSSL is and whether the TLS probes attach to it.
    Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// gatescope's own names, following Prometheus conventions.
    None,
    /// Kong Prometheus plugin names and labels.
    Kong,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_groups_default_on_and_take_values() {
        let a = Args::try_parse_from(["gatescope", "--pid", "1"]).unwrap();
        assert!(a.status_code_metrics && a.latency_metrics && a.bandwidth_metrics);
        assert!(a.upstream_health_metrics);
        assert_eq!(a.max_routes_per_service, 100);
        assert_eq!(a.max_genai_models_per_provider, 100);
        assert_eq!(a.config, None);
        let a = Args::try_parse_from([
            "gatescope",
            "--pid=1",
            "--latency-metrics=false",
            "--bandwidth-metrics",
            "no",
            "--max-routes-per-service=5",
            "--max-genai-models-per-provider=7",
            "--config=/etc/g.toml",
        ])
        .unwrap();
        assert!(!a.latency_metrics && !a.bandwidth_metrics && a.status_code_metrics);
        assert_eq!(a.max_routes_per_service, 5);
        assert_eq!(a.max_genai_models_per_provider, 7);
        assert_eq!(
            a.config.as_deref(),
            Some(std::path::Path::new("/etc/g.toml"))
        );
        assert!(Args::try_parse_from(["gatescope", "--pid=1", "--latency-metrics=maybe"]).is_err());
    }

    #[test]
    fn wire_view_defaults_to_every_interface() {
        let a = Args::try_parse_from(["gatescope", "--pid=1"]).unwrap();
        assert!(a.wire);
        assert!(a.interfaces.is_empty());
        let a = Args::try_parse_from(["gatescope", "--pid=1", "--interface=lo,eth0", "--wire=off"])
            .unwrap();
        assert!(!a.wire);
        assert_eq!(a.interfaces, ["lo", "eth0"]);
    }

    #[test]
    fn max_sockets_defaults_to_the_map_size_and_takes_a_value() {
        if std::env::var_os("GATESCOPE_MAX_SOCKETS").is_none() {
            let a = Args::try_parse_from(["gatescope", "--pid=1"]).unwrap();
            assert_eq!(a.max_sockets, gatescope_common::SOCKS_MAX);
        }
        let a = Args::try_parse_from(["gatescope", "--pid=1", "--max-sockets", "1000"]).unwrap();
        assert_eq!(a.max_sockets, 1000);
        // What is not a u32 at all is a usage error; a u32 out of range is a start-up
        // error (`parse` prints it as one `error:` line and exits 1).
        for bad in ["-1", "lots"] {
            let e = Args::try_parse_from(["gatescope", "--pid=1", &format!("--max-sockets={bad}")])
                .unwrap_err();
            assert!(start_error(&e).is_none(), "{e}");
        }
        for (bad, max) in [("0", 4194304), ("4194305", 4194304)] {
            let e = Args::try_parse_from(["gatescope", "--pid=1", &format!("--max-sockets={bad}")])
                .unwrap_err();
            assert_eq!(
                start_error(&e).map(ToString::to_string).as_deref(),
                Some(&*format!("--max-sockets {bad} must be between 1 and {max}"))
            );
        }
    }

    #[test]
    fn span_flags_default_off_and_check_their_values() {
        let vars = [
            "GATESCOPE_OTLP_ENDPOINT",
            "GATESCOPE_TRUST_TRACEPARENT",
            "GATESCOPE_MAX_SPANS_PER_TRACE",
            "GATESCOPE_SPAN_QUEUE",
        ];
        if vars.iter().all(|v| std::env::var_os(v).is_none()) {
            let a = Args::try_parse_from(["gatescope", "--pid=1"]).unwrap();
            assert_eq!(a.otlp_endpoint, None);
            assert_eq!(a.trust_traceparent, Trust::All);
            assert_eq!((a.max_spans_per_trace, a.span_queue), (1000, 8192));
        }
        let a = Args::try_parse_from([
            "gatescope",
            "--pid=1",
            "--otlp-endpoint=http://127.0.0.1:4318/v1/traces",
            "--trust-traceparent=10.0.0.0/8,::1",
            "--span-queue=16",
        ])
        .unwrap();
        assert_eq!(
            a.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert!(matches!(a.trust_traceparent, Trust::Networks(ref n) if n.len() == 2));
        assert_eq!(a.span_queue, 16);
        for bad in [
            "--trust-traceparent=10.0.0.0/40",
            "--trust-traceparent=",
            "--span-queue=0",
        ] {
            assert!(
                Args::try_parse_from(["gatescope", "--pid=1", bad]).is_err(),
                "{bad}"
            );
        }
    }

    fn start_error(e: &clap::Error) -> Option<&StartError> {
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<StartError>())
    }

    /// The defaults the README states (flag table; "How it works" for
    /// `--capture-bytes`), each unless the environment of the test run sets it.
    #[test]
    fn defaults_are_the_readmes() {
        let a = Args::try_parse_from(["gatescope", "--pid=1"]).unwrap();
        let unset = |var: &str| std::env::var_os(var).is_none();
        if unset("GATESCOPE_LISTEN") {
            assert_eq!(a.listen, "0.0.0.0:9542".parse().unwrap());
        }
        if unset("GATESCOPE_RING_BUFFER_BYTES") {
            assert_eq!(a.ring_buffer_bytes, 4_194_304);
        }
        if unset("GATESCOPE_CAPTURE_BYTES") {
            assert_eq!(a.capture_bytes, 1024);
        }
        if unset("GATESCOPE_PAYLOAD_FROM") {
            assert_eq!(a.payload_from, PayloadFrom::Auto);
        }
        if unset("GATESCOPE_RAW_TRACEPOINTS") {
            assert!(a.raw_tracepoints);
        }
        if unset("GATESCOPE_TLS") {
            assert!(a.tls);
        }
        if unset("GATESCOPE_LOG") {
            assert_eq!(a.log, "info");
        }
    }

    #[test]
    fn ring_buffer_and_capture_bytes_are_checked_by_their_parsers() {
        let parse = |flag: &str| Args::try_parse_from(["gatescope", "--pid=1", flag]);
        assert_eq!(
            parse("--ring-buffer-bytes=8192").unwrap().ring_buffer_bytes,
            8192
        );
        assert_eq!(parse("--capture-bytes=4096").unwrap().capture_bytes, 4096);
        for (flag, message) in [
            (
                "--ring-buffer-bytes=6000",
                "--ring-buffer-bytes 6000 must be a power of two and at least 4096",
            ),
            (
                "--ring-buffer-bytes=2048",
                "--ring-buffer-bytes 2048 must be a power of two and at least 4096",
            ),
            (
                "--capture-bytes=4097",
                "--capture-bytes 4097 is larger than the maximum, 4096",
            ),
        ] {
            let e = parse(flag).unwrap_err();
            assert_eq!(
                start_error(&e).map(ToString::to_string).as_deref(),
                Some(message),
                "{flag}"
            );
        }
    }

    #[test]
    fn check_needs_no_pid_and_the_agent_still_does() {
        let a = Args::try_parse_from(["gatescope", "check"]).unwrap();
        assert_eq!(a.command, Some(Command::Check));
        assert!(a.pids.is_empty());
        let a =
            Args::try_parse_from(["gatescope", "--pid", "7", "--listen", "127.0.0.1:1"]).unwrap();
        assert_eq!(a.command, None);
        assert_eq!(a.pids, [7]);
        let a = Args::try_parse_from(["gatescope", "--pid=1,2"]).unwrap();
        assert_eq!(a.pids, [1, 2]);
        if std::env::var_os("GATESCOPE_PID").is_none()
            && std::env::var_os("GATESCOPE_DISCOVER").is_none()
        {
            let err = Args::try_parse_from(["gatescope"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
            let text = err.to_string();
            assert!(
                text.contains("--pid") && text.contains("--discover"),
                "{text}"
            );
        }
        assert!(Args::try_parse_from(["gatescope", "chekc"]).is_err());
    }

    #[test]
    fn discover_replaces_or_joins_pid() {
        let a = Args::try_parse_from(["gatescope", "--discover", "nginx"]).unwrap();
        assert_eq!(
            (a.pids.as_slice(), a.discover.as_slice()),
            (&[][..], &["nginx".to_owned()][..])
        );
        let a = Args::try_parse_from([
            "gatescope",
            "--discover=nginx,envoy",
            "--discover",
            "haproxy",
            "--pid=4",
        ])
        .unwrap();
        assert_eq!(a.discover, ["nginx", "envoy", "haproxy"]);
        assert_eq!(a.pids, [4]);
        // Exactly what the kernel holds as a comm: 15 bytes at most.
        assert!(Args::try_parse_from(["gatescope", "--discover=fifteen-bytes-x"]).is_ok());
        let err = Args::try_parse_from(["gatescope", "--discover=sixteen-bytes-xy"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at most 15") && err.contains("\"sixteen-bytes-x\""),
            "{err}"
        );
        assert!(Args::try_parse_from(["gatescope", "--discover="]).is_err());
        let many: Vec<String> = (0..=DISCOVER_MAX).map(|i| format!("n{i}")).collect();
        let err = Args::try_parse_checked_from([
            "gatescope".into(),
            format!("--discover={}", many.join(",")),
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "--discover: {} names, at most {DISCOVER_MAX}",
                DISCOVER_MAX + 1
            )),
            "{text}"
        );
        // the same name twice counts once
        let mut twice = many[..DISCOVER_MAX as usize].to_vec();
        twice.push("n0".into());
        assert!(Args::try_parse_checked_from([
            "gatescope".into(),
            format!("--discover={}", twice.join(",")),
        ])
        .is_ok());
    }
}
