//! nginx's upstream leg over TLS (`proxy_pass https://`, from a keep-alive
//! pool and one connection per request): gatescope reads the plaintext of
//! nginx's own OpenSSL client calls. The oracle is the TLS upstream's access
//! log: a second nginx, not observed, that terminates TLS and passes each
//! request on to the counting upstream (tests/src/upstream.rs).

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::Agent;
use gatescope_tests::client::{Conn, Req};
use gatescope_tests::metrics::EVENTS_LOST;
use gatescope_tests::nginx::{conf_head, Nginx};
use gatescope_tests::request_log::parse_request_log;
use gatescope_tests::tls::SelfSigned;
use gatescope_tests::upstream::Upstream;
use gatescope_tests::util::{self, free_port, TempDir};
use std::collections::BTreeSet;
use std::time::Duration;

/// What the TLS upstream logs per request.
const LOG_FORMAT: &str = "$connection $request_method $uri $status $request_length $bytes_sent";

#[test]
fn upstream_calls_over_tls_match_the_tls_upstreams_log() -> Result<()> {
    let body = Upstream::start()?;
    let cert = SelfSigned::generate()?;
    let tls_port = free_port()?;
    let (crt, key) = (cert.cert(), cert.key());
    let body_port = body.port();
    let back = Nginx::start_conf(
        |d| {
            format!(
                "{head}    log_format t '{LOG_FORMAT}';
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        access_log {d}/tls.log t;
        location / {{
            proxy_pass http://127.0.0.1:{body_port};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
",
                head = conf_head(d, 1),
                crt = crt.display(),
                key = key.display(),
            )
        },
        1,
        tls_port,
    )?;
    let gw_port = free_port()?;
    let gw = Nginx::start_conf(
        |d| {
            format!(
                "{head}    upstream tlsback {{
        server 127.0.0.1:{tls_port};
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{gw_port};
        location /ka/ {{
            proxy_pass https://tlsback/;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
        location /one/ {{
            proxy_pass https://127.0.0.1:{tls_port}/;
        }}
    }}
}}
",
                head = conf_head(d, 2),
            )
        },
        2,
        gw_port,
    )?;
    let dir = TempDir::new("reqlog-tls-upstream")?;
    let req_log = dir.path().join("requests.jsonl");
    let req_log_arg = req_log.display().to_string();
    let agent = Agent::start(&[gw.master_pid()], &["--request-log", &req_log_arg])?;

    // Keep-alive clients through the pool, and calls that open a TLS
    // connection each; bodies far larger than one TLS record both ways.
    let reqs = [
        Req::get("/ka/size/100"),
        Req::post("/ka/size/200", 5000),
        Req::get("/ka/size/70000"),
        Req::get("/ka/chunked/3"),
        Req::get("/ka/missing"),
        Req::post("/ka/size/10", 40_000),
        Req::get("/one/size/10"),
        Req::get("/one/size/30000"),
        Req::get("/one/chunked/2"),
    ];
    let mut sent = 0;
    for round in 0..2 {
        let mut c = Conn::open(gw_port)?;
        for r in &reqs {
            c.exchange(r.clone())
                .with_context(|| format!("round {round}: {} {}", r.method, r.path))?;
            sent += 1;
        }
        c.close()?;
    }

    // The TLS upstream's own account: (method, path, status, request bytes,
    // response bytes) per request, and its TLS connections.
    let log_path = back.dir_path().join("tls.log");
    let theirs: Vec<(String, String, u16, u64, u64)> =
        util::poll(Duration::from_secs(10), "the TLS upstream's log", || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            Ok((lines.len() >= sent).then(|| text.clone()))
        })?
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            ensure!(f.len() == 6, "TLS upstream log line {l:?}");
            Ok((
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].parse()?,
                f[4].parse()?,
                f[5].parse()?,
            ))
        })
        .collect::<Result<_>>()?;
    let connections: BTreeSet<String> = std::fs::read_to_string(&log_path)?
        .lines()
        .filter_map(|l| l.split(' ').next().map(str::to_owned))
        .collect();
    ensure!(
        theirs.len() == sent,
        "the TLS upstream logged {} of {sent}",
        theirs.len()
    );

    // The agent's upstream lines to the TLS upstream, the same fields.
    let peer = format!("127.0.0.1:{tls_port}");
    let ours = util::poll(
        Duration::from_secs(10),
        "the agent's upstream lines",
        || {
            let lines = parse_request_log(&std::fs::read_to_string(&req_log).unwrap_or_default())?;
            let up: Vec<_> = lines
                .into_iter()
                .filter(|l| !l.is_downstream() && l.remote == peer)
                .collect();
            Ok((up.len() >= sent).then_some(up))
        },
    )
    .with_context(|| agent.stderr())?;
    let mut want = theirs;
    let mut got: Vec<(String, String, u16, u64, u64)> = ours
        .iter()
        .map(|l| {
            (
                l.method.clone(),
                l.path.clone(),
                l.status,
                l.request_bytes,
                l.response_bytes,
            )
        })
        .collect();
    want.sort();
    got.sort();
    ensure!(
        got == want,
        "the agent's upstream calls over TLS differ from the TLS upstream's log:\n agent: {got:?}\n  log: {want:?}"
    );

    // One handshake per TLS connection the upstream saw; nothing lost or
    // taken for non-HTTP.
    let s = agent.scrape()?;
    let ok = s.get_or_zero(
        "gatescope_upstream_tls_handshakes_total",
        &[("peer", peer.as_str()), ("result", "ok")],
    )?;
    ensure!(
        ok == connections.len() as f64,
        "{ok} upstream handshakes ok, the TLS upstream saw {} connections",
        connections.len()
    );
    for reason in gatescope_tests::metrics::TLS_LOSSES {
        ensure!(
            s.get_or_zero(EVENTS_LOST, &[("reason", reason)])? == 0.0,
            "{reason} lost"
        );
    }
    for kind in ["non_http", "desync", "resync"] {
        ensure!(
            s.get_or_zero("gatescope_http_anomalies_total", &[("kind", kind)])? == 0.0,
            "{kind} anomalies"
        );
    }
    eprintln!(
        "{sent} requests, {} upstream TLS connections ({ok} handshakes ok); every upstream call \
         over TLS equal to the TLS upstream's log",
        connections.len()
    );
    drop((gw, back));
    Ok(())
}
