//! The demo's summary: gatescope's numbers next to what the client and the upstream counted.
//!
//! Rows are grouped under titles that name the listener, service or peer, so the rows leave
//! those label values out (`{listener,direction="ingress"}`); the list of differences at the
//! end names every series in full.

use std::collections::{BTreeMap, BTreeSet};

use gatescope_tests::{
    prom::{label_values, sum as value, Sample},
    upstream::UpstreamStats,
};

use crate::{
    traffic::{Counts, GATEWAY},
    Compat,
};

pub struct Observed<'a> {
    pub listener: String,
    pub peer: String,
    pub client: &'a Counts,
    pub upstream: UpstreamStats,
    /// Responses the upstream sent, by status code.
    pub upstream_codes: BTreeMap<u16, u64>,
}

/// A row whose value is not what the demo counted.
pub struct Difference {
    /// The series, every label spelt out.
    pub series: String,
    pub seen: String,
    pub expected: String,
}

struct Row {
    /// As shown: label values the title names are left out.
    label: String,
    series: String,
    seen: Option<f64>,
    /// Shown instead of `seen` (a mean with its unit).
    shown: Option<String>,
    expect: Option<f64>,
    note: String,
}

enum Line {
    Title(String),
    Row(Row),
    /// A sub-heading inside a section, or values listed in one line.
    Text(String),
}

#[derive(Default)]
struct Table(Vec<Line>);

impl Table {
    fn title(&mut self, text: String) {
        self.0.push(Line::Title(text));
    }

    fn text(&mut self, text: String) {
        self.0.push(Line::Text(text));
    }

    /// A row for series `series` shown as `label`, whose value should be `expect`.
    fn row(
        &mut self,
        label: impl Into<String>,
        series: impl Into<String>,
        seen: Option<f64>,
        expect: Option<u64>,
        note: impl Into<String>,
    ) {
        self.0.push(Line::Row(Row {
            label: label.into(),
            series: series.into(),
            seen,
            shown: None,
            expect: expect.map(|e| e as f64),
            note: note.into(),
        }));
    }

    /// A row shown for information: `shown` in the value column, nothing expected.
    fn info(&mut self, label: impl Into<String>, shown: String, note: impl Into<String>) {
        let label = label.into();
        self.0.push(Line::Row(Row {
            series: label.clone(),
            label,
            seen: None,
            shown: Some(shown),
            expect: None,
            note: note.into(),
        }));
    }
}

/// The families under the names `--metrics-compat` gives them.
struct Names {
    /// Series with a `state` label (Kong's connections also carry `accepted` and `handled`).
    conns: &'static str,
    requests_all: &'static str,
    requests: &'static str,
    latency: &'static str,
    /// Milliseconds per unit of `latency`.
    latency_ms: f64,
    http_bytes: &'static str,
    /// Labels every series of `requests` and `http_bytes` has beyond gatescope's, as shown
    /// and as matched.
    extra: &'static str,
    extra_match: &'static [(&'static str, &'static str)],
}

const NATIVE: Names = Names {
    conns: "gatescope_downstream_connections",
    requests_all: "gatescope_http_requests_all_total",
    requests: "gatescope_http_requests_total",
    latency: "gatescope_http_request_duration_seconds",
    latency_ms: 1000.0,
    http_bytes: "gatescope_http_bytes_total",
    extra: "",
    extra_match: &[],
};

const KONG: Names = Names {
    conns: "kong_nginx_connections_total",
    requests_all: "kong_nginx_requests_total",
    requests: "kong_http_requests_total",
    latency: "kong_request_latency_ms",
    latency_ms: 1.0,
    http_bytes: "kong_bandwidth_bytes",
    extra: ",consumer=\"\"",
    extra_match: &[("consumer", "")],
};

/// Prints the table; returns the values that differ from what the demo counted.
pub fn print(samples: &[Sample], compat: Compat, o: &Observed) -> Vec<Difference> {
    let names = match compat {
        Compat::None => &NATIVE,
        Compat::Kong => &KONG,
    };
    let mut t = Table::default();
    connections(&mut t, samples, compat, names, o);
    requests(&mut t, samples, compat, names, o);
    upstream(&mut t, samples, o);
    health(&mut t, samples);
    render(&t)
}

fn render(t: &Table) -> Vec<Difference> {
    let rows = || {
        t.0.iter().filter_map(|l| match l {
            Line::Row(r) => Some(r),
            _ => None,
        })
    };
    let width = rows().map(|r| r.label.len()).max().unwrap_or(0);
    let mut differences = Vec::new();
    let mut first = true;
    println!();
    for line in &t.0 {
        match line {
            Line::Title(text) if first => {
                first = false;
                println!(
                    "  {text:<w$} {:>9} {:>7}",
                    "gatescope",
                    "demo",
                    w = width + 2
                );
            }
            Line::Title(text) => println!("  {text}"),
            Line::Text(text) => println!("    {text}"),
            Line::Row(r) => {
                let seen = r
                    .shown
                    .clone()
                    .unwrap_or_else(|| r.seen.map_or("missing".into(), fmt));
                let expect = r.expect.map_or(String::new(), fmt);
                let mark = match (r.expect, r.seen) {
                    (Some(e), Some(s)) if e != s => "  <- differs",
                    (Some(_), None) => "  <- missing",
                    _ => "",
                };
                if !mark.is_empty() {
                    differences.push(Difference {
                        series: r.series.clone(),
                        seen: seen.clone(),
                        expected: expect.clone(),
                    });
                }
                let note = if r.note.is_empty() {
                    String::new()
                } else {
                    format!("  {}", r.note)
                };
                println!("    {:<width$} {seen:>9} {expect:>7}{note}{mark}", r.label);
            }
        }
    }
    println!();
    differences
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `{a,b}` from label texts, leaving out empty ones; empty when all are.
fn braces(labels: &[&str]) -> String {
    let inner = labels
        .iter()
        .filter(|l| !l.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    if inner.is_empty() {
        inner
    } else {
        format!("{{{inner}}}")
    }
}

fn connections(t: &mut Table, s: &[Sample], compat: Compat, n: &Names, o: &Observed) {
    let c = o.client;
    t.title(format!(
        "client connections to nginx (listener {})",
        o.listener
    ));
    let state = |t: &mut Table, state: &str, expect: u64, note: &str| {
        let (name, labels) = match (compat, state) {
            (Compat::None, "accepted" | "handled") => {
                (format!("{}_{state}_total", n.conns), String::new())
            }
            _ => (n.conns.to_string(), format!("state=\"{state}\"")),
        };
        let shown = match compat {
            Compat::Kong => braces(&["node_id", "subsystem=\"http\"", &labels]),
            Compat::None => braces(&[&labels]),
        };
        let seen = if labels.is_empty() {
            value(s, &name, &[])
        } else {
            value(s, &name, &[("state", state)])
        };
        t.row(
            format!("{name}{shown}"),
            format!("{name}{}", braces(&[&labels])),
            seen,
            Some(expect),
            note,
        );
    };
    state(t, "accepted", c.connections, "opened by the client");
    state(
        t,
        "handled",
        c.connections,
        "every connection sent a request",
    );
    state(t, "active", 0, "the client closed them all");
    state(t, "reading", 0, "");
    state(t, "writing", 0, "");
    state(t, "waiting", 0, "");

    let bytes = "gatescope_downstream_bytes_total";
    let mut listeners = label_values(s, bytes, "listener");
    if !listeners.contains(&o.listener) {
        listeners.insert(0, o.listener.clone());
    }
    for l in listeners {
        let ours = l == o.listener;
        for (dir, count, verb) in [
            ("ingress", c.bytes_sent, "sent"),
            ("egress", c.bytes_received, "received"),
        ] {
            let series = format!("{bytes}{{listener=\"{l}\",direction=\"{dir}\"}}");
            t.row(
                if ours {
                    format!("{bytes}{{listener,direction=\"{dir}\"}}")
                } else {
                    series.clone()
                },
                series,
                value(s, bytes, &[("listener", &l), ("direction", dir)]),
                ours.then_some(count),
                if ours {
                    format!("TCP payload {verb} by the client")
                } else {
                    "not the demo's listener".into()
                },
            );
        }
    }

    // The wire view, on loopback where the demo's client connects.
    let lo = [("interface", "lo"), ("listener", o.listener.as_str())];
    for (name, note) in [
        (
            "gatescope_downstream_wire_syn_total",
            "one SYN per connection the client opened",
        ),
        (
            "gatescope_downstream_tcp_handshake_seconds_count",
            "one handshake per connection the client opened",
        ),
    ] {
        t.row(
            format!("{name}{{interface=\"lo\",listener}}"),
            format!("{name}{{interface=\"lo\",listener=\"{}\"}}", o.listener),
            value(s, name, &lo),
            Some(c.connections),
            note,
        );
    }
}

fn requests(t: &mut Table, s: &[Sample], compat: Compat, n: &Names, o: &Observed) {
    let c = o.client;
    let service = [("service", o.listener.as_str())];
    t.title(format!(
        "requests to service=\"{}\" (the listener's address)",
        o.listener
    ));
    match compat {
        Compat::Kong => {
            for (name, labels, state) in [
                (n.requests_all, "node_id,subsystem=\"http\"", None),
                (
                    n.conns,
                    "node_id,subsystem=\"http\",state=\"total\"",
                    Some("total"),
                ),
            ] {
                let mut want = vec![("subsystem", "http")];
                want.extend(state.map(|st| ("state", st)));
                t.row(
                    format!("{name}{{{labels}}}"),
                    format!("{name}{{{labels}}}"),
                    value(s, name, &want),
                    Some(c.requests),
                    "requests the client sent",
                );
            }
        }
        Compat::None => t.row(
            n.requests_all,
            n.requests_all,
            value(s, n.requests_all, &[]),
            Some(c.requests),
            "requests the client sent",
        ),
    }

    // By route, code and source: what the client counted, and whatever else gatescope has.
    let mut keys: BTreeSet<(String, u16, String)> = c
        .routes
        .keys()
        .map(|(r, code, src)| (r.clone(), *code, src.to_string()))
        .collect();
    for x in s
        .iter()
        .filter(|x| x.name == n.requests && x.label("service") == Some(&o.listener))
    {
        if let (Some(r), Some(code), Some(src)) = (
            x.label("route"),
            x.label("code").and_then(|c| c.parse().ok()),
            x.label("source"),
        ) {
            keys.insert((r.to_string(), code, src.to_string()));
        }
    }
    t.text(format!(
        "{}{{service,route,code,source{}}}   source: \"service\" = the upstream answered, \"{GATEWAY}\" = nginx itself",
        n.requests, n.extra
    ));
    let route_width = keys.iter().map(|k| k.0.len()).max().unwrap_or(0);
    for (route, code, source) in &keys {
        let counted = c
            .routes
            .iter()
            .find(|((r, cd, src), _)| r == route && cd == code && src == source)
            .map(|(_, rc)| rc);
        let code_text = code.to_string();
        t.row(
            format!("  {route:<route_width$}  {code}  {source}"),
            format!(
                "{}{{service=\"{}\",route=\"{route}\",code=\"{code}\",source=\"{source}\"{}}}",
                n.requests, o.listener, n.extra
            ),
            value(
                s,
                n.requests,
                &[
                    &service[..],
                    &[("route", route), ("code", &code_text), ("source", source)],
                    n.extra_match,
                ]
                .concat(),
            ),
            Some(counted.map_or(0, |rc| rc.requests)),
            counted.map_or("not sent by the client".into(), |rc| {
                rc.methods.iter().copied().collect::<Vec<_>>().join(", ")
            }),
        );
    }

    // Every client request went to the listener: any other service is a misattribution.
    for x in s
        .iter()
        .filter(|x| x.name == n.requests && x.label("service").is_some_and(|v| v != o.listener))
    {
        let labels = x
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join(",");
        let series = format!("{}{{{labels}}}", n.requests);
        t.row(
            format!("  {series}"),
            series,
            Some(x.value),
            Some(0),
            "not the demo's listener",
        );
    }

    let count = format!("{}_count", n.latency);
    let sum = format!("{}_sum", n.latency);
    let latency_count = value(s, &count, &service);
    t.row(
        format!("{count}{{service}}"),
        format!("{count}{{service=\"{}\"}}", o.listener),
        latency_count,
        Some(c.requests),
        "one per request (all routes)",
    );
    if let (Some(total), Some(count)) = (value(s, &sum, &service), latency_count) {
        if count > 0.0 {
            t.info(
                format!("{sum} / _count"),
                format!("{:.3} ms", total / count * n.latency_ms),
                "mean request latency, for information",
            );
        }
    }

    for (dir, count, what) in [
        ("ingress", c.bytes_sent, "request"),
        ("egress", c.bytes_received, "response"),
    ] {
        t.row(
            format!("{}{{service,direction=\"{dir}\"{}}}", n.http_bytes, n.extra),
            format!(
                "{}{{service=\"{}\",direction=\"{dir}\"{}}}",
                n.http_bytes, o.listener, n.extra
            ),
            value(
                s,
                n.http_bytes,
                &[&service[..], &[("direction", dir)], n.extra_match].concat(),
            ),
            Some(count),
            format!("{what} heads + bodies (all routes)"),
        );
    }
}

fn upstream(t: &mut Table, s: &[Sample], o: &Observed) {
    let u = o.upstream;
    let (open, accepted) = (u.open, u.accepted);
    let (got, sent) = (u.bytes_received, u.bytes_sent);
    let codes = &o.upstream_codes;
    let mut peers = label_values(s, "gatescope_upstream_connections_opened_total", "peer");
    if !peers.contains(&o.peer) {
        peers.insert(0, o.peer.clone());
    }
    for p in peers {
        let ours = p == o.peer;
        t.title(if ours {
            format!("nginx's upstream (peer {p}, the demo's server)")
        } else {
            format!("another upstream (peer {p}, not the demo's server)")
        });
        let peer = [("peer", p.as_str())];
        let series = |name: &str, labels: &str| {
            let shown = format!("{name}{}", braces(&["peer", labels]));
            let full = format!("{name}{}", braces(&[&format!("peer=\"{p}\""), labels]));
            (shown, full)
        };
        let (shown, full) = series("gatescope_upstream_connections", "");
        t.row(
            shown,
            full,
            value(s, "gatescope_upstream_connections", &peer),
            ours.then_some(open),
            "open at the server (nginx's keepalive pool)",
        );
        let (shown, full) = series("gatescope_upstream_connections_opened_total", "");
        t.row(
            shown,
            full,
            value(s, "gatescope_upstream_connections_opened_total", &peer),
            ours.then_some(accepted),
            "accepted by the server",
        );
        for (dir, count, text) in [("egress", got, "received by"), ("ingress", sent, "sent by")] {
            let (shown, full) = series(
                "gatescope_upstream_bytes_total",
                &format!("direction=\"{dir}\""),
            );
            t.row(
                shown,
                full,
                value(
                    s,
                    "gatescope_upstream_bytes_total",
                    &[("peer", &p), ("direction", dir)],
                ),
                ours.then_some(count),
                format!("TCP payload {text} the server"),
            );
        }
        let name = "gatescope_http_upstream_requests_total";
        let mut all: BTreeSet<u16> = s
            .iter()
            .filter(|x| x.name == name && x.label("peer") == Some(&p))
            .filter_map(|x| x.label("code")?.parse().ok())
            .collect();
        if ours {
            all.extend(codes.keys());
        }
        for code in all {
            let (shown, full) = series(name, &format!("code=\"{code}\""));
            let answered = codes.get(&code).copied();
            t.row(
                shown,
                full,
                value(s, name, &[("peer", &p), ("code", &code.to_string())]),
                ours.then_some(answered.unwrap_or(0)),
                match (ours, answered) {
                    (false, _) => "not the demo's upstream".into(),
                    (true, Some(_)) => format!("answered {code} by the server"),
                    (true, None) => "the server sent none".to_string(),
                },
            );
        }
    }
}

fn health(t: &mut Table, s: &[Sample]) {
    t.title("gatescope itself".into());
    for dir in ["ingress", "egress"] {
        let name = format!("gatescope_untracked_bytes_total{{direction=\"{dir}\"}}");
        t.row(
            name.clone(),
            name,
            value(s, "gatescope_untracked_bytes_total", &[("direction", dir)]),
            Some(0),
            "no connection predates gatescope",
        );
    }
    for reason in ["ringbuf_full", "targets_map_full", "sockets_map_full"] {
        let name = format!("gatescope_events_lost_total{{reason=\"{reason}\"}}");
        t.row(
            name.clone(),
            name,
            value(s, "gatescope_events_lost_total", &[("reason", reason)]),
            Some(0),
            "",
        );
    }
    t.row(
        "gatescope_http_anomalies_total (all kinds)",
        "gatescope_http_anomalies_total",
        value(s, "gatescope_http_anomalies_total", &[]),
        Some(0),
        "every byte parsed as HTTP and matched to a request",
    );
    t.row(
        "gatescope_target_processes",
        "gatescope_target_processes",
        value(s, "gatescope_target_processes", &[]),
        Some(3),
        "nginx master + 2 workers",
    );
    t.row(
        "gatescope_listen_sockets",
        "gatescope_listen_sockets",
        value(s, "gatescope_listen_sockets", &[]),
        Some(4),
        "the demo's listeners (HTTP, HTTPS, gRPC over h2c, GenAI)",
    );
    let received = label_values(s, "gatescope_events_received_total", "kind")
        .into_iter()
        .map(|kind| {
            let v = value(s, "gatescope_events_received_total", &[("kind", &kind)]);
            format!("{kind} {}", v.map_or("?".into(), fmt))
        })
        .collect::<Vec<_>>();
    if !received.is_empty() {
        t.text(format!(
            "gatescope_events_received_total{{kind}}: {}",
            received.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests;
