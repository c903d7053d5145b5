//! Accuracy over HTTPS (issue 11): the accuracy workload through an nginx
//! whose listener is `listen ... ssl` (a self-signed certificate; every other
//! directive, the `acc` log format and the locations as in http_accuracy.rs),
//! the client's TLS connections made by the Python forwarder of
//! `gatescope_tests::tls`, whose client counts exactly the plaintext bytes.
//! Upstream traffic stays clear text (`proxy_pass http://`).
//!
//! Requests are matched as in http_accuracy.rs by (client address:port, order on
//! that connection): nginx's `$remote_addr:$remote_port` and
//! `$connection_requests`, the agent's `remote` (the TLS connection's client
//! end) and the order of its downstream lines for that remote.

use anyhow::{bail, ensure, Context, Result};
use gatescope_tests::accuracy::request_log::{request_log_vs_nginx, Addrs, Shares};
use gatescope_tests::accuracy::*;
use gatescope_tests::agent::Agent;
use gatescope_tests::client::{Conn, Endpoint, Sent};
use gatescope_tests::metrics::{EVENTS_LOST, TLS_LOSSES};
use gatescope_tests::request_log::parse_request_log;
use gatescope_tests::util::TempDir;
use gatescope_tests::workload::{self, poll_last};
use gatescope_tests::AccuracyScene;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

const TLS_HANDSHAKES: &str = "gatescope_downstream_tls_handshakes_total";
/// Share of requests whose durations must be within nginx's 1 ms resolution
/// of its log: 90% in clear text, 80% here, for the cached clock's longer
/// staleness over TLS (see the tolerance below). Measured: 105 to 115 of 117
/// (2026-12-02, both payload paths, seven runs).
const TLS_WITHIN_SHARE: f64 = 0.8;
/// Share of requests allowed beyond 5 ms of the log: 3% in clear text, 10%
/// here (seen: one request 10-19 ms off in 2 runs of 5).
const TLS_STALE_SHARE: f64 = 0.1;

/// The TLS workload, with the forwarder's errors in the message if it fails.
fn run_tls_workload(scene: &AccuracyScene) -> Result<Vec<Sent>> {
    workload::run_mixed_tls(scene.endpoint()).with_context(|| {
        scene
            .tls
            .as_ref()
            .map(|t| t.forwarder.diagnostics())
            .unwrap_or_default()
    })
}

/// The TLS version and cipher a fresh connection gets (it sends nothing, so
/// nginx logs nothing for it).
fn negotiated(ep: Endpoint) -> Result<String> {
    let c = Conn::open_at(ep)?;
    Ok(c.tls().unwrap_or_default().to_string())
}

/// Without the agent: the TLS workload's own account against nginx's access
/// log, and the comparison against a synthetic perfect (and a faulty) agent
/// (`self_check::harness_self_check`, as for clear text). The harness's
/// self-test; it must pass for the agent test to mean anything.
#[test]
fn tls_workload_matches_nginx_access_log() -> Result<()> {
    let scene = AccuracyScene::start_tls(2)?;
    let ep = scene.endpoint();
    let tls = negotiated(ep)?;
    ensure!(tls.starts_with("TLSv1.3 "), "negotiated {tls:?}");
    let sent = run_tls_workload(&scene)?;
    let log = self_check::harness_self_check(&scene, &sent)?;
    ensure!(
        sent.iter().any(|s| s.written > 100_000) && sent.iter().any(|s| s.read > 100_000),
        "no request or response of many TLS records"
    );
    eprintln!(
        "{} requests over {tls}, {} logged by nginx",
        sent.len(),
        log.len()
    );
    // The listener is TLS only: clear text to it is refused by nginx (400),
    // so every request above went through the forwarder's TLS connections.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", ep.server_port()))?;
    plain.set_read_timeout(Some(Duration::from_secs(10)))?;
    plain.write_all(b"GET /size/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    plain.read_to_string(&mut resp)?;
    ensure!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("plain HTTP request was sent to HTTPS"),
        "clear text to the TLS port got:\n{resp}"
    );
    Ok(())
}

/// The agent against nginx over HTTPS, request by request (method, path,
/// status, `$request_length`, `$bytes_sent`, durations, the upstream leg),
/// the request metrics against the log's counts, and no HTTP anomaly: the
/// agent must read the plaintext at OpenSSL (issue 11). One native agent with
/// `--request-log` and `--capture-bytes 256` on nginx's master.
#[test]
fn agent_matches_nginx_access_log_over_tls() -> Result<()> {
    let scene = AccuracyScene::start_tls(2)?;
    let dir = TempDir::new("reqlog-tls")?;
    let req_log = dir.path().join("requests.jsonl");
    let req_log_arg = req_log.display().to_string();
    let native = Agent::start(
        &[scene.nginx.master_pid()],
        &["--request-log", &req_log_arg, "--capture-bytes", "256"],
    )?;
    let payload = match std::env::var("GATESCOPE_PAYLOAD_FROM").as_deref() {
        Ok("syscall-hook") => "payload=syscall hook sys_enter (taxes every syscall of the host)",
        _ => "payload=sock_*_length with the saved registers (no syscall hook)",
    };
    ensure!(
        native.stderr().contains(payload),
        "expected `{payload}` in:\n{}",
        native.stderr()
    );
    let listener = scene.nginx.listen_addr();
    let backend = scene.upstream.addr();
    let down = format!("127.0.0.1:{}", scene.down_port);

    let tls = negotiated(scene.endpoint())?;
    let sent = run_tls_workload(&scene)?;
    let log = gatescope_tests::util::poll(LOG_TIMEOUT, "the acc log", || {
        let l = scene.nginx.acc_log()?;
        Ok((l.len() >= sent.len()).then_some(l))
    })?;
    // nginx times a request with its cached clock, updated once per event
    // loop iteration. Over TLS an iteration can take tens of milliseconds
    // (handshakes' public-key work, more so under the syscall-hook fallback
    // on two shared cores): 2 runs in 5 put one request 10-19 ms off, its
    // start or end a whole iteration stale, both times equal to the
    // millisecond; a clean-clone CI run on 463eead one 25.3 ms off (nginx
    // 40 ms, the agent 14.7). So each request is held to 50 ms here; the
    // shares within 1 ms and beyond 5 ms and the median below keep a bias
    // from passing.
    let mut report = Report {
        tolerance_ms: Some(50.0),
        ..Report::default()
    };
    let truth = upstream_truth(&scene, &log)?;
    let want_up = truth.len();
    let (complete, lines) = poll_last(LOG_TIMEOUT, || {
        let l = parse_request_log(&std::fs::read_to_string(&req_log).unwrap_or_default())?;
        let down_n = l.iter().filter(|x| x.is_downstream()).count();
        Ok((down_n >= log.len() && l.len() - down_n >= want_up, l))
    })?;
    let down_n = lines.iter().filter(|x| x.is_downstream()).count();
    let at = Addrs {
        listener: &listener,
        backend: &backend,
        down: &down,
    };
    let (_, diffs, up_diffs) = request_log_vs_nginx(
        &lines,
        &log,
        &sent,
        &truth,
        &at,
        Shares {
            within_resolution: TLS_WITHIN_SHARE,
            stale: TLS_STALE_SHARE,
        },
        &mut report,
    );

    // Metrics: requests by code against the log.
    let by_status = counts_by_status(&log);
    metric_check(
        &mut report,
        "metrics: gatescope_http_requests_total by code",
        &native,
        &by_status,
        |s| sum_by_code(s, HTTP_REQUESTS),
    )?;
    metric_check(
        &mut report,
        "metrics: gatescope_http_requests_all_total",
        &native,
        &Some(log.len() as f64),
        |s| s.get(HTTP_REQUESTS_ALL, &[]).ok().flatten(),
    )?;
    let mut up_by_code = BTreeMap::new();
    for t in &truth {
        *up_by_code.entry(t.status.to_string()).or_insert(0.0) += 1.0;
    }
    metric_check(
        &mut report,
        "metrics: gatescope_http_upstream_requests_total by code",
        &native,
        &up_by_code,
        |s| {
            let mut m = BTreeMap::new();
            for x in s.matching(HTTP_UPSTREAM_REQUESTS, &[("peer", backend.as_str())]) {
                let code = x.labels.get("code").cloned().unwrap_or_default();
                *m.entry(code).or_insert(0.0) += x.value;
            }
            m.retain(|_, v| *v != 0.0);
            m
        },
    )?;
    // Well-formed HTTP/1.1 inside TLS: no anomaly (ciphertext parsed as HTTP
    // would be one).
    metric_check(
        &mut report,
        "metrics: gatescope_http_anomalies_total all 0",
        &native,
        &BTreeMap::new(),
        |s| {
            let mut m = BTreeMap::new();
            for x in s.matching(HTTP_ANOMALIES, &[]) {
                if x.value != 0.0 {
                    let kind = x.labels.get("kind").cloned().unwrap_or_default();
                    *m.entry(kind).or_insert(0.0) += x.value;
                }
            }
            m
        },
    )?;

    // OpenSSL's plaintext tied to its socket every time: no call lost.
    metric_check(
        &mut report,
        "metrics: no TLS loss (TLS_LOSSES)",
        &native,
        &[0.0; 4],
        |s| {
            TLS_LOSSES.map(|r| {
                s.get_or_zero(EVENTS_LOST, &[("reason", r)])
                    .unwrap_or(f64::NAN)
            })
        },
    )?;
    // Handshakes as the clients made them: one per client connection that
    // carried a request (plaintext flowed), and the version probe's, which
    // completed and closed without a request.
    let connections = sent.iter().map(|s| s.client).collect::<BTreeSet<_>>().len() as f64;
    let listener_label = listener.clone();
    metric_check(
        &mut report,
        "metrics: gatescope_downstream_tls_handshakes_total ok = client connections, closed = 1, all TLSv1.3",
        &native,
        &[connections, 0.0, 1.0],
        |s| {
            ["ok", "failed", "closed"].map(|r| {
                s.get_or_zero(
                    TLS_HANDSHAKES,
                    &[
                        ("listener", listener_label.as_str()),
                        ("result", r),
                        ("version", "TLSv1.3"),
                    ],
                )
                .unwrap_or(f64::NAN)
            })
        },
    )?;
    ensure!(
        native
            .stderr()
            .contains("TLS: plaintext taken at OpenSSL's SSL_read/SSL_write"),
        "the agent's log names no OpenSSL it attached to:\n{}",
        native.stderr()
    );

    report.notes.push(format!(
        "{} requests over {tls}; the agent wrote {down_n} downstream lines for nginx's {} \
         (complete before the timeout: {complete})",
        sent.len(),
        log.len()
    ));
    let summary = format!(
        "{}{}{}",
        report.render(),
        diffs.render("request duration"),
        up_diffs.render("upstream duration")
    );
    eprintln!("{summary}");
    if report.failed() {
        bail!(
            "{summary}\n--- nginx acc log ---\n{}\n--- agent request log ---\n{}\n--- agent stderr (tail) ---\n{}",
            scene.nginx.acc_log_text(),
            std::fs::read_to_string(&req_log).unwrap_or_default(),
            gatescope_tests::util::tail(&native.stderr(), 30)
        );
    }
    Ok(())
}

/// A client that fails the handshake: `openssl s_client` offering only a
/// cipher nginx does not enable. nginx answers with a TLS alert in the clear
/// and closes; the agent counts one handshake `failed`, nothing else.
#[test]
fn a_failed_handshake_is_counted_as_failed() -> Result<()> {
    let scene = AccuracyScene::start_tls(1)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let listener = scene.nginx.listen_addr();
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &listener,
            "-tls1_2",
            "-cipher",
            "NULL-SHA256@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running openssl s_client")?;
    ensure!(
        !out.status.success(),
        "openssl s_client connected with a NULL cipher:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // No ServerHello was sent: the version is unknown.
    let results = |s: &gatescope_tests::prom::Scrape| {
        ["ok", "failed", "closed"].map(|r| {
            s.get_or_zero(
                TLS_HANDSHAKES,
                &[
                    ("listener", listener.as_str()),
                    ("result", r),
                    ("version", "unknown"),
                ],
            )
            .unwrap_or(f64::NAN)
        })
    };
    let got = gatescope_tests::util::poll(Duration::from_secs(10), "the failed handshake", || {
        let s = agent.scrape()?;
        let r = results(&s);
        Ok((r != [0.0; 3]).then_some(r))
    })?;
    ensure!(
        got == [0.0, 1.0, 0.0],
        "handshakes ok/failed/closed {got:?}, want one failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = agent.scrape()?;
    for kind in ["non_http", "desync", "resync"] {
        ensure!(
            s.get_or_zero(HTTP_ANOMALIES, &[("kind", kind)])? == 0.0,
            "{kind} anomalies"
        );
    }
    Ok(())
}

/// `openssl s_client -tls1_2` sends one request and reads the response to
/// nginx's close: one handshake `ok` with version `TLSv1.2` (read from the
/// ServerHello), and the request parsed from the plaintext.
#[test]
fn a_tls12_client_is_counted_with_its_version() -> Result<()> {
    let scene = AccuracyScene::start_tls(1)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let listener = scene.nginx.listen_addr();
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &listener, "-tls1_2", "-quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running openssl s_client")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(b"GET /size/100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    // s_client -quiet ignores the end of its input and waits for nginx's
    // close (Connection: close).
    drop(stdin);
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.starts_with("HTTP/1.1 200"),
        "s_client got:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = gatescope_tests::util::poll(LOG_TIMEOUT, "the acc log", || {
        let l = scene.nginx.acc_log()?;
        Ok((!l.is_empty()).then_some(l))
    })?;
    ensure!(log.len() == 1 && log[0].status == 200, "{log:?}");
    let ok12 = [
        ("listener", listener.as_str()),
        ("result", "ok"),
        ("version", "TLSv1.2"),
    ];
    let (_, s) = poll_last(Duration::from_secs(10), || {
        let s = agent.scrape()?;
        let done = s.get_or_zero(TLS_HANDSHAKES, &ok12)? > 0.0
            && s.get_or_zero(HTTP_REQUESTS_ALL, &[])? > 0.0;
        Ok((done, s))
    })?;
    ensure!(s.get_or_zero(TLS_HANDSHAKES, &ok12)? == 1.0);
    ensure!(
        s.get_or_zero(TLS_HANDSHAKES, &[("listener", listener.as_str())])? == 1.0,
        "handshakes other than one TLSv1.2 ok"
    );
    ensure!(
        s.get_or_zero(HTTP_REQUESTS, &[("code", "200")])? == 1.0,
        "the request was not parsed:\n{}\n{}",
        s.text,
        gatescope_tests::util::tail(&agent.stderr(), 20)
    );
    Ok(())
}

/// wrk over https: 4 keep-alive TLS connections for 3 s. wrk counts the
/// responses it read before its deadline; nginx also logs those in flight
/// then, so nginx's log is the oracle and wrk's count bounds it. The agent's
/// requests by status equal the log's, with one handshake `ok` per
/// connection nginx logged, no anomaly and no TLS loss.
#[test]
fn wrk_over_https_is_counted_exactly() -> Result<()> {
    const CONNECTIONS: u32 = 4;
    let scene = AccuracyScene::start_tls(2)?;
    let agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    let url = format!("https://{}/size/300", scene.nginx.listen_addr());
    let (sum, out) = gatescope_tests::wrk::Wrk::spawn(&url, 2, CONNECTIONS, 3)?.wait()?;
    ensure!(sum.errors() == 0 && sum.requests > 100, "wrk:\n{out}");
    // The log holds still once the connections are closed.
    let mut last = usize::MAX;
    let log = gatescope_tests::util::poll(LOG_TIMEOUT, "the acc log to hold still", || {
        let l = scene.nginx.acc_log()?;
        let still = l.len() == last;
        last = l.len();
        std::thread::sleep(Duration::from_millis(300));
        Ok(still.then_some(l))
    })?;
    let logged = log.len() as u64;
    ensure!(
        (sum.requests..=sum.requests + u64::from(CONNECTIONS)).contains(&logged),
        "wrk read {} responses, nginx logged {logged}",
        sum.requests
    );
    let want = counts_by_status(&log);
    let listener = scene.nginx.listen_addr();
    let (done, s) = poll_last(LOG_TIMEOUT, || {
        let s = agent.scrape()?;
        Ok((sum_by_code(&s, HTTP_REQUESTS) == want, s))
    })?;
    ensure!(
        done,
        "agent by code {:?}, nginx {want:?}",
        sum_by_code(&s, HTTP_REQUESTS)
    );
    for x in s.matching(HTTP_ANOMALIES, &[]) {
        ensure!(x.value == 0.0, "anomalies {:?} = {}", x.labels, x.value);
    }
    for r in TLS_LOSSES {
        ensure!(
            s.get_or_zero(EVENTS_LOST, &[("reason", r)])? == 0.0,
            "{r} lost"
        );
    }
    let ok = s.get_or_zero(
        TLS_HANDSHAKES,
        &[("listener", listener.as_str()), ("result", "ok")],
    )?;
    // wrk opens a new connection when nginx ends one (keepalive_requests):
    // one handshake per connection nginx logged requests on.
    let connections = log.iter().map(|e| e.client).collect::<BTreeSet<_>>().len();
    ensure!(
        ok == connections as f64,
        "{ok} handshakes ok, nginx logged {connections} client connections"
    );
    eprintln!(
        "wrk read {} responses; nginx logged {logged} on {connections} connections",
        sum.requests
    );
    Ok(())
}
