//! The demo's summary: gatescope's numbers next to what the client and the upstream counted.

use std::sync::atomic::Ordering::Relaxed;

use crate::{
    metrics::{label_values, value, Sample},
    traffic::Counts,
    upstream::Stats,
    Compat,
};

struct Row {
    what: String,
    seen: Option<f64>,
    reference: String,
    expect: Option<f64>,
}

fn row(what: String, seen: Option<f64>, reference: String, expect: Option<u64>) -> Row {
    Row {
        what,
        seen,
        reference,
        expect: expect.map(|e| e as f64),
    }
}

pub struct Observed<'a> {
    pub listener: String,
    pub peer: String,
    pub client: &'a Counts,
    pub upstream: &'a Stats,
}

/// Prints the table; returns how many values differ from the expectation.
pub fn print(samples: &[Sample], compat: Compat, o: &Observed) -> usize {
    let mut rows = downstream(samples, compat, o);
    rows.extend(upstream(samples, o));
    rows.extend(health(samples));
    let width = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    println!();
    println!(
        "  {:<width$} {:>10}  expected (counted by the demo)",
        "metric (gatescope)", "value"
    );
    let mut differing = 0;
    for r in &rows {
        let seen = r.seen.map_or("missing".to_string(), fmt);
        let mark = match (r.expect, r.seen) {
            (Some(e), Some(s)) if e != s => " <- differs",
            (Some(_), None) => " <- missing",
            _ => "",
        };
        differing += usize::from(!mark.is_empty());
        println!("  {:<width$} {seen:>10}  {}{mark}", r.what, r.reference);
    }
    println!();
    differing
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn downstream(s: &[Sample], compat: Compat, o: &Observed) -> Vec<Row> {
    let c = o.client;
    let (conns, bytes, listener_label) = match compat {
        Compat::None => (
            "gatescope_downstream_connections",
            "gatescope_downstream_bytes_total",
            "listener",
        ),
        Compat::Kong => (
            "kong_nginx_connections_total",
            "kong_bandwidth_bytes",
            "service",
        ),
    };
    let state = |state: &str| match compat {
        Compat::Kong => value(s, conns, &[("state", state)]),
        Compat::None if state == "active" => value(s, conns, &[("state", state)]),
        Compat::None => value(s, &format!("{conns}_{state}_total"), &[]),
    };
    let label = |state: &str| match compat {
        Compat::Kong => format!("{conns}{{state=\"{state}\"}}"),
        Compat::None if state == "active" => format!("{conns}{{state=\"active\"}}"),
        Compat::None => format!("{conns}_{state}_total"),
    };
    let mut rows = vec![
        row(
            label("accepted"),
            state("accepted"),
            format!("{} connections opened by the client", c.connections),
            Some(c.connections),
        ),
        row(
            label("handled"),
            state("handled"),
            format!("{} (every connection sent a request)", c.connections),
            Some(c.connections),
        ),
        row(
            label("active"),
            state("active"),
            "0 (the client closed them all)".into(),
            Some(0),
        ),
    ];
    let mut listeners = label_values(s, bytes, listener_label);
    if !listeners.contains(&o.listener) {
        listeners.insert(0, o.listener.clone());
    }
    for l in listeners {
        let ours = l == o.listener;
        for (dir, count, verb) in [
            ("ingress", c.bytes_sent, "sent"),
            ("egress", c.bytes_received, "received"),
        ] {
            rows.push(row(
                format!("{bytes}{{{listener_label}=\"{l}\",direction=\"{dir}\"}}"),
                value(s, bytes, &[(listener_label, &l), ("direction", dir)]),
                if ours {
                    format!(
                        "{count} bytes {verb} by the client ({} requests)",
                        c.requests
                    )
                } else {
                    "(not the demo's listener)".into()
                },
                ours.then_some(count),
            ));
        }
    }
    rows
}

fn upstream(s: &[Sample], o: &Observed) -> Vec<Row> {
    let u = o.upstream;
    let (open, accepted) = (u.open.load(Relaxed), u.connections.load(Relaxed));
    let (got, sent) = (u.bytes_in.load(Relaxed), u.bytes_out.load(Relaxed));
    let mut peers = label_values(s, "gatescope_upstream_connections_opened_total", "peer");
    if !peers.contains(&o.peer) {
        peers.insert(0, o.peer.clone());
    }
    let mut rows = Vec::new();
    for p in peers {
        let ours = p == o.peer;
        let reference = |text: String| {
            if ours {
                text
            } else {
                "(not the demo's upstream)".into()
            }
        };
        let peer = [("peer", p.as_str())];
        rows.push(row(
            format!("gatescope_upstream_connections{{peer=\"{p}\"}}"),
            value(s, "gatescope_upstream_connections", &peer),
            reference(format!(
                "{open} open at the upstream server (nginx keepalive pool)"
            )),
            ours.then_some(open),
        ));
        rows.push(row(
            format!("gatescope_upstream_connections_opened_total{{peer=\"{p}\"}}"),
            value(s, "gatescope_upstream_connections_opened_total", &peer),
            reference(format!("{accepted} accepted by the upstream server")),
            ours.then_some(accepted),
        ));
        for (dir, count, text) in [("egress", got, "received by"), ("ingress", sent, "sent by")] {
            rows.push(row(
                format!("gatescope_upstream_bytes_total{{peer=\"{p}\",direction=\"{dir}\"}}"),
                value(
                    s,
                    "gatescope_upstream_bytes_total",
                    &[("peer", &p), ("direction", dir)],
                ),
                reference(format!(
                    "{count} bytes {text} the upstream server ({} requests)",
                    u.requests.load(Relaxed)
                )),
                ours.then_some(count),
            ));
        }
    }
    rows
}

fn health(s: &[Sample]) -> Vec<Row> {
    let mut rows = Vec::new();
    for dir in ["ingress", "egress"] {
        rows.push(row(
            format!("gatescope_untracked_bytes_total{{direction=\"{dir}\"}}"),
            value(s, "gatescope_untracked_bytes_total", &[("direction", dir)]),
            "0 (no connection predates gatescope)".into(),
            Some(0),
        ));
    }
    for reason in ["ringbuf_full", "targets_map_full", "sockets_map_full"] {
        rows.push(row(
            format!("gatescope_events_lost_total{{reason=\"{reason}\"}}"),
            value(s, "gatescope_events_lost_total", &[("reason", reason)]),
            "0".into(),
            Some(0),
        ));
    }
    rows.push(row(
        "gatescope_target_processes".into(),
        value(s, "gatescope_target_processes", &[]),
        "3 (nginx master + 2 workers)".into(),
        Some(3),
    ));
    rows.push(row(
        "gatescope_listen_sockets".into(),
        value(s, "gatescope_listen_sockets", &[]),
        "1 (the demo's listener)".into(),
        Some(1),
    ));
    for kind in label_values(s, "gatescope_events_received_total", "kind") {
        rows.push(row(
            format!("gatescope_events_received_total{{kind=\"{kind}\"}}"),
            value(s, "gatescope_events_received_total", &[("kind", &kind)]),
            String::new(),
            None,
        ));
    }
    rows
}
