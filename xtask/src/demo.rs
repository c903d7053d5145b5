//! `cargo xtask demo`: nginx (2 workers) in front of an in-process upstream (and a gRPC
//! server), gatescope attached to nginx's master, some traffic, and a summary of what
//! gatescope reports; with `--stack`, a real Prometheus too ([`demo_stack`]).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};

use gatescope_tests::{
    genai::{run_clients, CallSpec, Mock},
    grpc::GrpcApp,
    otlp::{self, Receiver, Rotel, KIND_CLIENT, KIND_SERVER},
    prom::Scrape,
    upstream::Upstream,
    util::{free_port, TempDir},
};

use crate::{
    demo_stack, demo_summary,
    stack::{self, Template},
    traffic, util, Compat,
};

pub const NGINX_CONF: Template = Template {
    path: "deploy/demo/nginx.conf",
    text: include_str!("../../deploy/demo/nginx.conf"),
};

pub struct DemoArgs {
    pub keep_running: bool,
    pub compat: Compat,
    /// Prometheus with the alert rules, and the dashboard's queries ([`demo_stack`]).
    pub stack: bool,
}

pub fn demo(agent: &Path, args: &DemoArgs) -> Result<()> {
    util::catch_signals();
    let mut dir = TempDir::new("demo")?;
    let result = run(agent, args, dir.path());
    if result.is_err() {
        dir.keep();
        eprintln!(
            "xtask: demo files and logs kept in {}",
            dir.path().display()
        );
    }
    result
}

fn run(agent: &Path, args: &DemoArgs, dir: &Path) -> Result<()> {
    let upstream =
        Upstream::start_answering(traffic::answer).context("starting the demo upstream")?;
    println!(
        "demo: upstream server on {} (thread in xtask)",
        upstream.addr()
    );
    let grpc_app = GrpcApp::compile().context("compiling the demo's gRPC service")?;
    let grpc_server = grpc_app
        .server()
        .context("starting the demo's gRPC server")?;
    println!(
        "demo: gRPC server (grpcio) on 127.0.0.1:{}",
        grpc_server.port()
    );
    let nginx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let tls_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let grpc_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mock = Mock::start(&["openai"]).context("starting the demo's mock model provider")?;
    let genai_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    println!(
        "demo: mock model provider (OpenAI's API) on 127.0.0.1:{}",
        mock.port("openai")
    );
    stack::self_signed(dir, "demo")?;
    let (mut nginx, took) = stack::start_nginx(
        "nginx",
        &NGINX_CONF,
        dir,
        nginx_addr,
        &[
            ("upstream_port", upstream.port().to_string()),
            ("tls_port", tls_addr.port().to_string()),
            ("grpc_port", grpc_addr.port().to_string()),
            ("grpc_upstream_port", grpc_server.port().to_string()),
            ("genai_port", genai_addr.port().to_string()),
            ("genai_upstream_port", mock.port("openai").to_string()),
        ],
    )?;
    println!(
        "demo: nginx master pid {} (2 workers) answers on http://{nginx_addr}/ after {took:.1?}",
        nginx.pid()
    );

    // Spans: gatescope -> rotel (a real collector, when `cargo xtask setup`
    // installed it) -> a receiver in this process that decodes them.
    let receiver = Receiver::start().context("starting the OTLP receiver")?;
    let rotel = match Rotel::start(&receiver) {
        Ok(r) => {
            println!(
                "demo: spans go to rotel on {} and on to a receiver on {}",
                r.traces_url(),
                receiver.addr()
            );
            Some(r)
        }
        Err(e) => {
            println!(
                "demo: no rotel ({e:#}); spans go straight to a receiver on {}",
                receiver.addr()
            );
            None
        }
    };
    let endpoint = rotel
        .as_ref()
        .map_or_else(|| receiver.traces_url(), Rotel::traces_url);
    let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    // Prices for the mock's model, so that cost is shown too.
    let config = dir.join("gatescope.toml");
    std::fs::write(
        &config,
        format!(
            "[[genai.provider]]\nname = \"openai\"\nupstream = [\"127.0.0.1:{}\"]\n\
             [genai.provider.models.\"{GENAI_MODEL}\"]\n\
             input_per_million = {GENAI_INPUT_PRICE}\noutput_per_million = {GENAI_OUTPUT_PRICE}\n",
            mock.port("openai")
        ),
    )?;
    let config_arg = config.display().to_string();
    let mut extra: Vec<&str> = vec!["--otlp-endpoint", &endpoint, "--config", &config_arg];
    if args.compat == Compat::Kong {
        extra.extend(["--metrics-compat", "kong"]);
    }
    let (mut gatescope, took) = stack::start_gatescope(
        agent,
        nginx.pid(),
        metrics_addr,
        &extra,
        &dir.join("gatescope.log"),
    )?;
    println!(
        "demo: gatescope (pid {}) serves metrics after {took:.1?}",
        gatescope.pid()
    );
    // Before the traffic, so that the rates have a sample from before it.
    let mut prometheus = if args.stack {
        Some(demo_stack::start(dir, metrics_addr)?)
    } else {
        None
    };

    let counts = traffic::send(nginx_addr)?;
    println!(
        "demo: client sent {} requests over {} connections ({}): {} bytes sent, {} received",
        counts.requests,
        counts.connections,
        traffic::describe(),
        counts.bytes_sent,
        counts.bytes_received
    );
    let scrape = stack::settled_scrape(metrics_addr)?;
    let samples = Scrape::parse(&scrape)
        .with_context(|| format!("reading gatescope's metrics:\n{scrape}"))?
        .samples;
    let observed = demo_summary::Observed {
        listener: nginx_addr.to_string(),
        peer: upstream.addr(),
        client: &counts,
        upstream: upstream.stats(),
        upstream_codes: upstream.codes(),
    };
    let differences = demo_summary::print(&samples, args.compat, &observed);
    if differences.is_empty() {
        println!("demo: every expected value agrees with what the demo counted");
    } else {
        println!(
            "demo: {} value(s) differ from what the demo counted:",
            differences.len()
        );
        for d in &differences {
            println!("  {}: gatescope {}, demo {}", d.series, d.seen, d.expected);
        }
    }
    https(tls_addr, metrics_addr)?;
    grpc(&grpc_app, grpc_addr, metrics_addr, args.compat)?;
    genai(genai_addr, metrics_addr, args.compat)?;
    if let Some(p) = prometheus.as_mut() {
        p.report(args.compat, || traffic::send(nginx_addr).map(drop))?;
    }
    println!(
        "demo: metrics at http://{metrics_addr}/metrics, status page at http://{metrics_addr}/"
    );
    print_spans(&receiver);

    if args.keep_running {
        let prometheus_url = prometheus
            .as_ref()
            .map(|p| format!(", Prometheus {}", p.url()))
            .unwrap_or_default();
        println!(
            "demo: running (nginx http://{nginx_addr}/{prometheus_url}, logs in {}); press \
             Ctrl-C to stop",
            dir.display()
        );
        while !util::interrupted() {
            for proc in [&mut gatescope, &mut nginx] {
                if let Some(status) = proc.exited()? {
                    return Err(proc.died(status));
                }
            }
            if let Some(p) = prometheus.as_mut() {
                if let Some(status) = p.exited()? {
                    return Err(p.died(status));
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        println!();
    }

    if let Some(p) = prometheus.take() {
        println!("demo: stopped Prometheus ({})", p.stop()?);
    }
    stack::stop_gatescope(&mut gatescope)?;
    let nginx_status = nginx.stop(stack::STOP_GRACE)?;
    println!("demo: stopped gatescope (exit 0) and nginx ({nginx_status})");
    ensure!(
        differences.is_empty(),
        "{} of gatescope's values differ from the demo's counts (listed above)",
        differences.len()
    );
    Ok(())
}

/// Paths of the HTTPS requests, and the route gatescope names them by.
const HTTPS_REQUESTS: usize = 3;
const HTTPS_ROUTE: &str = "/api/secure/{id}";

/// A few requests over HTTPS on one keep-alive connection (curl), once over
/// HTTP/1.1 and once over HTTP/2, after the clear-text summary; then what
/// gatescope made of them: the plaintext read at OpenSSL, parsed like clear
/// text.
fn https(tls_addr: SocketAddr, metrics_addr: SocketAddr) -> Result<()> {
    for version in ["--http1.1", "--http2"] {
        let mut curl = Command::new("curl");
        curl.args(["-sk", version, "-w", "%{http_version}:%{http_code} "]);
        for i in 0..HTTPS_REQUESTS {
            curl.args([
                "-o",
                "/dev/null",
                &format!("https://{tls_addr}/api/secure/{i}"),
            ]);
        }
        let out = curl
            .output()
            .context("running curl (cargo xtask setup installs it)")?;
        let codes = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        println!(
            "demo: HTTPS: curl {version} sent {HTTPS_REQUESTS} requests on one connection to \
             https://{tls_addr}/api/secure/N (version:status): {codes}"
        );
    }
    let scrape = stack::settled_scrape(metrics_addr)?;
    let samples = Scrape::parse(&scrape)
        .with_context(|| format!("reading gatescope's metrics:\n{scrape}"))?
        .samples;
    let requests: f64 = samples
        .iter()
        .filter(|s| {
            s.name.ends_with("http_requests_total")
                && s.labels.get("route").map(String::as_str) == Some(HTTPS_ROUTE)
        })
        .map(|s| s.value)
        .sum();
    let listener = tls_addr.to_string();
    let handshakes: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "gatescope_downstream_tls_handshakes_total"
                && s.labels.get("listener") == Some(&listener)
                && s.labels.get("result").map(String::as_str) == Some("ok")
        })
        .map(|s| s.value)
        .sum();
    println!(
        "demo: HTTPS: gatescope parsed {requests} requests on route {HTTPS_ROUTE} from OpenSSL's \
         plaintext and counted {handshakes} TLS handshake(s) ok on {listener}"
    );
    ensure!(
        requests == 2.0 * HTTPS_REQUESTS as f64 && handshakes == 2.0,
        "gatescope saw {requests} HTTPS requests and {handshakes} handshakes, curl made \
         {} and 2",
        2 * HTTPS_REQUESTS
    );
    Ok(())
}

/// One gRPC call of each kind (unary OK, NOT_FOUND and UNAVAILABLE, server,
/// client and bidirectional streams) through nginx's `grpc_pass` over h2c;
/// then gatescope's calls by `grpc-status`, against the client's own.
fn grpc(app: &GrpcApp, addr: SocketAddr, metrics_addr: SocketAddr, compat: Compat) -> Result<()> {
    let calls = app
        .client(&addr.to_string(), None, 1, 1, 3)
        .context("the demo's gRPC client")?;
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for c in &calls {
        *want.entry(c.code.to_string()).or_default() += 1.0;
    }
    println!(
        "demo: gRPC: the client made {} calls through nginx's grpc_pass on {addr} (h2c): {}",
        calls.len(),
        calls
            .iter()
            .map(|c| format!("{} -> {}", c.method, c.code))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if compat == Compat::Kong {
        // Kong's families have no gRPC status; its HTTP families count the calls.
        println!("demo: gRPC: (Kong mode exports no grpc-status family)");
        return Ok(());
    }
    let scrape = stack::settled_scrape(metrics_addr)?;
    let samples = Scrape::parse(&scrape)
        .with_context(|| format!("reading gatescope's metrics:\n{scrape}"))?
        .samples;
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "gatescope_grpc_requests_total")
    {
        if let Some(status) = s.labels.get("grpc_status") {
            *got.entry(status.clone()).or_default() += s.value;
        }
    }
    println!("demo: gRPC: gatescope_grpc_requests_total by grpc_status: {got:?}");
    ensure!(
        got == want,
        "gatescope counted gRPC calls by status {got:?}, the client {want:?}"
    );
    Ok(())
}

const GENAI_MODEL: &str = "gpt-4o";
/// Dollars per million tokens, in and out (the config written above).
const GENAI_INPUT_PRICE: f64 = 2.5;
const GENAI_OUTPUT_PRICE: f64 = 10.0;

/// A non-streamed and a streamed chat completion (with `include_usage`)
/// from the openai SDK through nginx to the mock provider; then gatescope's
/// tokens and cost, against the usage the SDK itself read.
fn genai(addr: SocketAddr, metrics_addr: SocketAddr, compat: Compat) -> Result<()> {
    let base = format!("http://{addr}");
    let calls = [
        CallSpec::new("openai_chat", &base, GENAI_MODEL).max_tokens(20),
        CallSpec::new("openai_chat", &base, GENAI_MODEL)
            .max_tokens(30)
            .stream(true),
    ];
    let report = run_clients(&calls).context("the demo's openai SDK client")?;
    let own = report
        .models
        .values()
        .fold((0, 0), |(i, o), m| (i + m.input, o + m.output));
    println!(
        "demo: GenAI: the openai SDK made {} chat completions of {GENAI_MODEL} through nginx on \
         {addr} (one streamed): its usage says {} input and {} output tokens",
        report.calls, own.0, own.1
    );
    let scrape = stack::settled_scrape(metrics_addr)?;
    let samples = Scrape::parse(&scrape)
        .with_context(|| format!("reading gatescope's metrics:\n{scrape}"))?
        .samples;
    let sum = |name: &str, label: Option<(&str, &str)>| -> f64 {
        samples
            .iter()
            .filter(|s| {
                s.name == name
                    && label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .sum()
    };
    let (input, output, cost) = if compat == Compat::Kong {
        (
            sum(
                "kong_ai_llm_tokens_total",
                Some(("token_type", "prompt_tokens")),
            ),
            sum(
                "kong_ai_llm_tokens_total",
                Some(("token_type", "completion_tokens")),
            ),
            sum("kong_ai_llm_cost_total", None),
        )
    } else {
        (
            sum(
                "gen_ai_client_token_usage_sum",
                Some(("gen_ai_token_type", "input")),
            ),
            sum(
                "gen_ai_client_token_usage_sum",
                Some(("gen_ai_token_type", "output")),
            ),
            sum("gatescope_genai_cost_total", None),
        )
    };
    let ttft = sum("gen_ai_server_time_to_first_token_seconds_count", None);
    println!(
        "demo: GenAI: gatescope read {input} input and {output} output tokens, cost ${cost:.6} \
         at ${GENAI_INPUT_PRICE}/${GENAI_OUTPUT_PRICE} per million, and {ttft} time(s) to first \
         token"
    );
    let want_cost = (own.0 as f64 * GENAI_INPUT_PRICE + own.1 as f64 * GENAI_OUTPUT_PRICE) / 1e6;
    ensure!(
        (input, output) == (own.0 as f64, own.1 as f64)
            && (cost - want_cost).abs() <= 1e-9 * want_cost
            && ttft == 1.0,
        "gatescope read {input}/{output} tokens, cost {cost}, {ttft} first-token times; the SDK \
         {}/{} tokens, cost {want_cost}, 1 stream",
        own.0,
        own.1
    );
    Ok(())
}

/// Waits until the receiver's span count holds still for a second, then
/// prints the counts and the trace with the most spans as a tree.
fn print_spans(receiver: &Receiver) {
    let mut last = usize::MAX;
    for _ in 0..50 {
        let n = receiver.span_count();
        if n == last && n > 0 {
            break;
        }
        last = n;
        thread::sleep(Duration::from_secs(1));
    }
    let spans = receiver.spans();
    let server = spans.iter().filter(|s| s.kind == KIND_SERVER).count();
    let client = spans.iter().filter(|s| s.kind == KIND_CLIENT).count();
    println!(
        "demo: {} spans received: {server} SERVER, {client} CLIENT",
        spans.len()
    );
    let biggest = spans
        .iter()
        .filter(|s| s.kind == KIND_SERVER)
        .max_by_key(|s| {
            spans
                .iter()
                .filter(|c| c.parent_span_id == s.span_id)
                .count()
        });
    if let Some(s) = biggest {
        println!("demo: one trace:");
        print!("{}", otlp::render_tree(&spans, &s.trace_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_placeholder() {
        let text = stack::render(
            &NGINX_CONF,
            &[
                ("dir", "/tmp/d".into()),
                ("listen_port", "8080".into()),
                ("upstream_port", "9000".into()),
                ("tls_port", "8443".into()),
                ("grpc_port", "8444".into()),
                ("grpc_upstream_port", "9001".into()),
                ("genai_port", "8445".into()),
                ("genai_upstream_port", "9002".into()),
            ],
        )
        .unwrap();
        assert!(text.contains("listen 127.0.0.1:8444 http2;"));
        assert!(text.contains("server 127.0.0.1:9001;"));
        assert!(text.contains("listen 127.0.0.1:8445;"));
        assert!(text.contains("proxy_pass http://127.0.0.1:9002;"));
        assert!(text.contains("listen 127.0.0.1:8080;"));
        assert!(text.contains("listen 127.0.0.1:8443 ssl http2;"));
        assert!(text.contains("ssl_certificate /tmp/d/demo.crt;"));
        assert!(text.contains("server 127.0.0.1:9000;"));
        assert!(text.contains("pid /tmp/d/nginx.pid;"));
        assert!(text.contains("location = /missing {"));
    }
}
