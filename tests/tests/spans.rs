//! Spans over OTLP (issue 9, sections 1, 2, 4 and 5): nginx, a real upstream
//! and the agent, exporting to rotel (a real collector) and on to a receiver
//! the test controls,
//! asserted span by span against nginx's access log and the upstreams' own
//! records. Collector faults, the per-trace cap and SIGTERM are in
//! span_export.rs.
//!
//! Requests are sent one at a time, one connection each, with unique paths,
//! so each access-log line, upstream record and span is matched by path.

use anyhow::{ensure, Context, Result};
use gatescope_tests::access_log::AccEntry;
use gatescope_tests::accuracy::TOLERANCE_MS;
use gatescope_tests::agent::Agent;
use gatescope_tests::nginx::GW_SPAN_ID;
use gatescope_tests::otlp::{
    Receiver, Rotel, Span, KIND_CLIENT, KIND_SERVER, STATUS_ERROR, STATUS_UNSET,
};
use gatescope_tests::span_scene::{caller, get, SpanScene, DROPPED, EXPORTED, SPAN_TIMEOUT};
use gatescope_tests::util::{self, TempDir};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

const CONFIG: &str = r#"
[[service]]
name = "sized"
  [[service.route]]
  name = "size"
  paths = ["/size/"]
"#;

/// What a request of the workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// With a valid `traceparent`: the SERVER span joins it.
    Joined,
    /// With an invalid one (upper-case hex): a new trace.
    Invalid,
    /// To the retry pair.
    Retry,
    /// nginx writes its own upstream `traceparent`.
    Gateway,
    /// The same, the client sending a valid one too.
    GatewayJoined,
    /// nginx answers itself (404), no upstream.
    Missing,
}

struct Sent {
    path: String,
    kind: Kind,
    traceparent: Option<String>,
    status: u16,
    before_ns: u64,
    after_ns: u64,
}

fn workload(port: u16) -> Result<Vec<Sent>> {
    let mut plan: Vec<(String, Kind, Option<String>)> = Vec::new();
    for i in 0..8 {
        plan.push((format!("/size/{}", 100 + i), Kind::Plain, None));
    }
    for i in 0..4 {
        let (t, s) = caller(i);
        let tp = format!("00-{t}-{s}-01");
        plan.push((format!("/size/{}", 200 + i), Kind::Joined, Some(tp)));
    }
    for i in 0..3 {
        let (t, s) = caller(100 + i);
        let tp = format!("00-{}-{s}-01", t.to_uppercase().replace('0', "A"));
        plan.push((format!("/size/{}", 300 + i), Kind::Invalid, Some(tp)));
    }
    for i in 0..6 {
        plan.push((format!("/retry/{}", 400 + i), Kind::Retry, None));
    }
    for i in 0..4 {
        plan.push((format!("/gw/{}", 600 + i), Kind::Gateway, None));
    }
    for i in 0..2 {
        let (t, s) = caller(200 + i);
        let tp = format!("00-{t}-{s}-01");
        plan.push((format!("/gw/{}", 700 + i), Kind::GatewayJoined, Some(tp)));
    }
    plan.push(("/missing".into(), Kind::Missing, None));
    plan.into_iter()
        .map(|(path, kind, traceparent)| {
            let (status, before_ns, after_ns) = get(port, &path, traceparent.as_deref())?;
            Ok(Sent {
                path,
                kind,
                traceparent,
                status,
                before_ns,
                after_ns,
            })
        })
        .collect()
}

/// Mismatches, all collected before failing.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

/// The path the upstream saw for a request path (`/gw/N` is rewritten to
/// `/size/N`).
fn upstream_path(path: &str) -> String {
    path.strip_prefix("/gw/")
        .map_or_else(|| path.to_owned(), |n| format!("/size/{n}"))
}

#[test]
fn spans_through_rotel_match_nginx_and_the_upstreams() -> Result<()> {
    let scene = SpanScene::start()?;
    let receiver = Receiver::start()?;
    let rotel = Rotel::start(&receiver)?;
    let dir = TempDir::new("spans")?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, CONFIG)?;
    let endpoint = rotel.traces_url();
    let mut agent = Agent::start(
        &[scene.nginx.master_pid()],
        &[
            "--otlp-endpoint",
            &endpoint,
            "--config",
            config.to_str().context("temp path")?,
        ],
    )?;
    let port = scene.nginx.listen_port();
    let sent = workload(port)?;

    // nginx's account and the upstreams' own.
    let log: Vec<AccEntry> = util::poll(SPAN_TIMEOUT, "the acc log", || {
        let l = scene.nginx.acc_log()?;
        Ok((l.len() >= sent.len()).then_some(l))
    })?;
    ensure!(
        log.len() == sent.len(),
        "{} log lines for {} requests",
        log.len(),
        sent.len()
    );
    let ids = scene.nginx.ids_log()?;
    let truth = scene.truth();
    let expected = log.len() + scene.upstream_total();
    let spans = receiver
        .wait_spans(expected, SPAN_TIMEOUT)
        .with_context(|| format!("rotel log:\n{}\nagent:\n{}", rotel.log(), agent.stderr()))?;
    // Anything extra would have arrived by now (rotel batches for 200 ms).
    std::thread::sleep(Duration::from_secs(1));
    let spans_now = receiver.spans();
    ensure!(
        spans_now.len() == expected,
        "{} spans arrived, expected {expected} ({} requests + {} upstream calls)",
        spans_now.len(),
        log.len(),
        scene.upstream_total()
    );
    let s = agent.scrape()?;
    ensure!(s.require(EXPORTED, &[])? == expected as f64);
    for reason in ["queue_full", "export_failed", "trace_cap", "shutdown"] {
        ensure!(
            s.require(DROPPED, &[("reason", reason)])? == 0.0,
            "{reason}"
        );
    }

    let mut r = Report::default();
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    r.check(by_id.len() == spans.len(), || "duplicate span ids".into());
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == KIND_SERVER).collect();
    let clients: Vec<&Span> = spans.iter().filter(|s| s.kind == KIND_CLIENT).collect();
    r.check(servers.len() == log.len(), || {
        format!(
            "{} SERVER spans for {} access-log lines",
            servers.len(),
            log.len()
        )
    });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned();
    let workers: BTreeSet<i64> = scene
        .nginx
        .worker_pids()
        .into_iter()
        .map(i64::from)
        .collect();
    for sp in &spans {
        r.check(
            sp.resource
                .get("service.name")
                .and_then(gatescope_tests::otlp::Attr::as_str)
                == Some("nginx"),
            || format!("service.name {:?}", sp.resource.get("service.name")),
        );
        r.check(
            sp.resource
                .get("host.name")
                .and_then(gatescope_tests::otlp::Attr::as_str)
                == Some(host.as_str()),
            || format!("host.name {:?}", sp.resource.get("host.name")),
        );
        r.check(
            sp.resource
                .get("process.pid")
                .and_then(gatescope_tests::otlp::Attr::as_int)
                .is_some_and(|p| workers.contains(&p)),
            || {
                format!(
                    "process.pid {:?} not a worker {workers:?}",
                    sp.resource.get("process.pid")
                )
            },
        );
    }

    let mut roots_per_trace: BTreeMap<&str, usize> = BTreeMap::new();
    for sp in &spans {
        if sp.is_root() {
            *roots_per_trace.entry(sp.trace_id.as_str()).or_default() += 1;
        }
    }
    r.check(roots_per_trace.values().all(|&n| n == 1), || {
        format!("traces with more than one root: {roots_per_trace:?}")
    });

    let mut client_total = 0;
    let mut joined = 0;
    // Largest differences from nginx's times, for the output.
    let (mut worst_server, mut worst_client) = (0.0f64, 0.0f64);
    for (n, (req, line)) in sent.iter().zip(&log).enumerate() {
        let p = &req.path;
        r.check(line.uri == *p && line.status == req.status, || {
            format!(
                "{p}: log line {} {} for sent status {}",
                line.uri, line.status, req.status
            )
        });
        let found: Vec<&&Span> = servers
            .iter()
            .filter(|s| s.str("url.path") == Some(p.as_str()))
            .collect();
        if found.len() != 1 {
            r.0.push(format!("{p}: {} SERVER spans", found.len()));
            continue;
        }
        let server = *found[0];
        // Name, attributes, status.
        let want_name = if p.starts_with("/size/") {
            "GET size"
        } else {
            "GET"
        };
        r.check(server.name == want_name, || {
            format!("{p}: name {:?}", server.name)
        });
        r.check(
            server.str("http.route") == p.starts_with("/size/").then_some("size"),
            || format!("{p}: http.route {:?}", server.attr("http.route")),
        );
        r.check(server.str("http.request.method") == Some("GET"), || {
            format!("{p}: method")
        });
        r.check(server.str("url.scheme") == Some("http"), || {
            format!("{p}: url.scheme")
        });
        r.check(
            server.int("http.response.status_code") == Some(i64::from(line.status)),
            || {
                format!(
                    "{p}: status_code {:?} vs {}",
                    server.attr("http.response.status_code"),
                    line.status
                )
            },
        );
        r.check(server.str("server.address") == Some("127.0.0.1"), || {
            format!("{p}: server.address")
        });
        r.check(server.int("server.port") == Some(i64::from(port)), || {
            format!("{p}: server.port")
        });
        r.check(server.str("client.address") == Some("127.0.0.1"), || {
            format!("{p}: client.address")
        });
        r.check(
            server.int("network.peer.port") == Some(i64::from(line.client.port())),
            || {
                format!(
                    "{p}: network.peer.port {:?} vs {}",
                    server.attr("network.peer.port"),
                    line.client
                )
            },
        );
        r.check(
            server.str("network.protocol.version") == Some("1.1"),
            || format!("{p}: version"),
        );
        let want_status = if line.status >= 500 {
            STATUS_ERROR
        } else {
            STATUS_UNSET
        };
        r.check(server.status == want_status, || {
            format!("{p}: status {}", server.status)
        });
        // Times: inside the client's own interval, and as long as nginx says.
        r.check(
            server.start_ns + 5_000_000 >= req.before_ns
                && server.end_ns <= req.after_ns + 5_000_000,
            || {
                format!(
                    "{p}: span [{}, {}] outside the client's [{}, {}] (5 ms slack)",
                    server.start_ns, server.end_ns, req.before_ns, req.after_ns
                )
            },
        );
        let d = server.duration_ms() - line.request_ms();
        worst_server = worst_server.max(d.abs());
        r.check(d.abs() <= TOLERANCE_MS, || {
            format!(
                "{p}: SERVER {:.3} ms vs $request_time {:.3} ms",
                server.duration_ms(),
                line.request_ms()
            )
        });

        // Trace context.
        match req.kind {
            Kind::Joined | Kind::GatewayJoined => {
                joined += 1;
                let tp = req.traceparent.as_deref().unwrap_or_default();
                let (t, s) = (&tp[3..35], &tp[36..52]);
                r.check(server.trace_id == t && server.parent_span_id == s, || {
                    format!(
                        "{p}: not joined to {tp}: {} / {}",
                        server.trace_id, server.parent_span_id
                    )
                });
                r.check(server.parent_is_remote() == Some(true), || {
                    format!("{p}: parent not remote")
                });
            }
            Kind::Gateway => {
                let id = ids.get(p).map(String::as_str).unwrap_or_default();
                r.check(server.trace_id == id && server.is_root(), || {
                    format!(
                        "{p}: SERVER trace {} root {} vs $request_id {id}",
                        server.trace_id,
                        server.is_root()
                    )
                });
            }
            _ => {
                r.check(
                    server.is_root() && server.parent_is_remote() == Some(false),
                    || {
                        format!(
                            "{p}: not a local root: parent {:?} flags {:#x}",
                            server.parent_span_id, server.flags
                        )
                    },
                );
                if let Some(tp) = &req.traceparent {
                    r.check(!tp.to_lowercase().contains(&server.trace_id), || {
                        format!("{p}: joined an invalid traceparent {tp}")
                    });
                }
            }
        }

        // CLIENT spans: as many as the upstreams recorded for this request.
        let up = truth.get(&upstream_path(p)).cloned().unwrap_or_default();
        let gateway = matches!(req.kind, Kind::Gateway | Kind::GatewayJoined);
        let mut mine: Vec<&Span> = if gateway {
            let id = ids.get(p).map(String::as_str).unwrap_or_default();
            clients
                .iter()
                .copied()
                .filter(|c| c.trace_id == id)
                .collect()
        } else {
            clients
                .iter()
                .copied()
                .filter(|c| c.parent_span_id == server.span_id)
                .collect()
        };
        mine.sort_by_key(|c| c.start_ns);
        client_total += mine.len();
        r.check(
            mine.len() == up.len() && up.len() == line.upstream.len(),
            || {
                format!(
                    "{p}: {} CLIENT spans, the upstreams recorded {}, nginx logged {} attempts",
                    mine.len(),
                    up.len(),
                    line.upstream.len()
                )
            },
        );
        for (i, (c, attempt)) in mine.iter().zip(&line.upstream).enumerate() {
            r.check(
                c.name == "GET" && c.str("url.path") == Some(upstream_path(p).as_str()),
                || {
                    format!(
                        "{p}: CLIENT {i} name {:?} path {:?}",
                        c.name,
                        c.str("url.path")
                    )
                },
            );
            let peer: SocketAddr = attempt.addr.parse()?;
            r.check(
                c.str("server.address") == Some("127.0.0.1")
                    && c.int("server.port") == Some(i64::from(peer.port()))
                    && c.int("network.peer.port") == Some(i64::from(peer.port())),
                || {
                    format!(
                        "{p}: CLIENT {i} peer {:?} vs {peer}",
                        c.attr("network.peer.port")
                    )
                },
            );
            let st = attempt.status.unwrap_or(0);
            r.check(
                c.int("http.response.status_code") == Some(i64::from(st)),
                || {
                    format!(
                        "{p}: CLIENT {i} status {:?} vs {st}",
                        c.attr("http.response.status_code")
                    )
                },
            );
            let want = if st >= 400 {
                STATUS_ERROR
            } else {
                STATUS_UNSET
            };
            r.check(c.status == want, || {
                format!("{p}: CLIENT {i} status code {}", c.status)
            });
            r.check(
                c.int("http.request.resend_count") == (i > 0).then_some(i as i64),
                || {
                    format!(
                        "{p}: CLIENT {i} resend_count {:?}",
                        c.attr("http.request.resend_count")
                    )
                },
            );
            r.check(
                c.start_ns >= server.start_ns && c.end_ns <= server.end_ns,
                || {
                    format!(
                        "{p}: CLIENT {i} [{}, {}] outside SERVER [{}, {}]",
                        c.start_ns, c.end_ns, server.start_ns, server.end_ns
                    )
                },
            );
            // The first request opens nginx's first upstream connection:
            // its `$upstream_response_time` also counts the connect and the
            // event-loop turns around it (seen once in six runs: 8.0 ms for a
            // 0.05 ms exchange, right after the fault test's load), so only
            // the others are held to the accuracy test's bound.
            if let Some(t) = attempt.response_time.filter(|_| n > 0) {
                let d = c.duration_ms() - t * 1000.0;
                worst_client = worst_client.max(d.abs());
                r.check(d.abs() <= TOLERANCE_MS, || {
                    format!(
                        "{p}: CLIENT {i} {:.3} ms vs $upstream_response_time {:.3} ms",
                        c.duration_ms(),
                        t * 1000.0
                    )
                });
            }
            if gateway {
                // nginx's own traceparent: its span is our CLIENT span's
                // parent; our span id is never that one.
                r.check(
                    c.parent_span_id == GW_SPAN_ID
                        && c.parent_is_remote() == Some(true)
                        && c.span_id != GW_SPAN_ID,
                    || {
                        format!(
                            "{p}: CLIENT parent {} flags {:#x}",
                            c.parent_span_id, c.flags
                        )
                    },
                );
            } else {
                r.check(
                    c.trace_id == server.trace_id && c.parent_is_remote() == Some(false),
                    || format!("{p}: CLIENT {i} trace {} flags {:#x}", c.trace_id, c.flags),
                );
            }
        }
    }
    r.check(client_total == clients.len(), || {
        format!(
            "{} CLIENT spans belong to no request",
            clients.len() - client_total
        )
    });
    r.check(joined == 6, || format!("{joined} joined requests"));
    let retried = log.iter().filter(|l| l.upstream.len() > 1).count();
    r.check(retried > 0, || "no request was retried".into());
    println!(
        "spans: {} SERVER, {} CLIENT ({} retried requests), {} traces, all through rotel; \
         largest difference from $request_time {worst_server:.3} ms, from \
         $upstream_response_time {worst_client:.3} ms",
        servers.len(),
        clients.len(),
        retried,
        roots_per_trace.len()
    );
    agent.stop_ok()?;
    ensure!(
        r.0.is_empty(),
        "{} mismatches:\n{}",
        r.0.len(),
        r.0.join("\n")
    );
    Ok(())
}
