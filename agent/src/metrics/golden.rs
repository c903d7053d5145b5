//! Golden test of the whole exposition and of the request log.
//!
//! A fixed sequence of inputs is rendered in every naming schema and
//! compared byte for byte with `golden/*.prom` (and `request_log.jsonl`).
//! It pins names, HELP texts, label names and order, bucket boundaries and
//! values, so a refactor of how families are described or fed cannot change
//! what a scrape returns. After a deliberate change to the exposition, rewrite
//! the files with `GATESCOPE_GOLDEN_UPDATE=1 cargo test -p gatescope golden`
//! and review their diff.

use std::{net::SocketAddr, path::Path};

use gatescope_common::{
    Direction as KernelDirection, ListenKey, Role as KernelRole, WireCounts, WireKey, AF_INET,
};

use super::{render, Identity, ListenerName, MetricGroups, Metrics};
use crate::http::{
    genai::{GenAiApi, GenAiCall, GenAiUsage, UsageUnavailable},
    TraceHeaders,
};
use crate::{
    capture::decode::{Direction, TcpEvent},
    cli::Compat,
    config::Config,
    conntrack::{Fact, Gauges, Peer},
    correlate::{Attempt, Completed, Link, UpstreamLeg},
    http::{Anomaly, Exchange, GrpcCall},
    label::{Labeller, Providers, Router},
    sinks::{request_log::RequestLog, Sinks},
};

const ID: Identity = Identity {
    node_id: "node-1",
    version: "0.1.0",
    kernel: "6.18.0",
};
const MS: u64 = 1_000_000;

const CONFIG: &str = r#"
[[service]]
name = "orders"
upstream = "127.0.0.1:9000"
  [[service.route]]
  name = "orders-route"
  paths = ["/orders"]
[[service]]
name = "admin"
hosts = ["admin.example.com"]
  [[service.route]]
  name = "admin-route"
  paths = ["/admin"]
[[genai.provider]]
name = "openai"
upstream = "127.0.0.1:9400"
  [genai.provider.models."gpt-4o"]
  input_per_million = 10.0
  output_per_million = 10.0
"#;

/// The listener on 8443 is in a pod's network namespace.
const POD_8443: ListenKey = ListenKey::new(4_026_532_301, 8443);

/// A listener in the host's namespace, known by port alone (no BTF keys
/// them as 0), and one in a pod with its identity.
fn listeners() -> Vec<(ListenKey, ListenerName)> {
    vec![
        (
            ListenKey::new(0, 8080),
            ListenerName {
                listener: "127.0.0.1:8080".into(),
                ..ListenerName::default()
            },
        ),
        (
            POD_8443,
            ListenerName {
                listener: "[::1]:8443".into(),
                netns: "4026532301".into(),
                namespace: "ingress".into(),
                pod: "gw-7d4b9c-x2x9q".into(),
                container_id: "5b2c".repeat(16),
            },
        ),
    ]
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An exchange that started at 1 s and answered after `last_ms` (0: never).
fn exchange(method: &str, path: &str, status: u16, last_ms: u64) -> Exchange {
    let last = if last_ms == 0 {
        0
    } else {
        (1000 + last_ms) * MS
    };
    Exchange {
        method: method.into(),
        path: path.into(),
        host: Some("api.example.com".into()),
        status,
        request_bytes: 100 + u64::from(status),
        response_bytes: if last_ms == 0 { 0 } else { 250 + last_ms },
        request_first_ns: 1000 * MS,
        request_last_ns: 1000 * MS,
        response_first_ns: last,
        response_last_ns: last,
        closed_ns: if last_ms == 0 { 1100 * MS } else { 0 },
        upgraded: false,
        version: 1,
        trace: TraceHeaders::default(),
        grpc: None,
        genai: None,
    }
}

/// The finished exchanges fed to every run, in order.
fn exchanges() -> Vec<(Completed, SocketAddr)> {
    let client = addr("10.0.0.7:40000");
    let peer = addr("127.0.0.1:9000");
    let peer6 = addr("[::1]:9100");
    let genai_peer = addr("127.0.0.1:9400");
    let leg = |peer, status, first_ms: u64, last_ms: u64| UpstreamLeg {
        peer,
        status,
        first_ns: (1000 + first_ms) * MS,
        last_ns: if last_ms == 0 {
            0
        } else {
            (1000 + last_ms) * MS
        },
    };
    let down = |exchange, listener: &str, upstream| {
        (
            Completed::Downstream {
                exchange,
                listener: addr(listener),
                upstream,
                attempts: Vec::new(),
            },
            client,
        )
    };
    let up = |mut exchange: Exchange, peer, first_ms: u64| {
        exchange.request_first_ns = (1000 + first_ms) * MS;
        exchange.host = Some("backend".into());
        (Completed::Upstream { exchange, peer }, peer)
    };
    let mut admin = exchange("GET", "/admin/users/7", 200, 3);
    admin.host = Some("admin.example.com".into());
    let mut slow = exchange(
        "GET",
        "/orders/items/550e8400-e29b-41d4-a716-446655440000",
        200,
        1500,
    );
    slow.request_bytes = 0;
    // gRPC calls over HTTP/2: one answered NOT_FOUND (5) through an
    // upstream, one abandoned with no grpc-status (unknown).
    let grpc = |status: u16, grpc_status: Option<u16>, last_ms| {
        let mut e = exchange("POST", "/shop.Cart/Get", status, last_ms);
        e.version = Exchange::VERSION_H2;
        e.grpc = Some(Box::new(GrpcCall {
            service: "shop.Cart".into(),
            method: "Get".into(),
            status: grpc_status,
            message_len: None,
        }));
        e
    };
    // GenAI calls (upstream exchanges the gateway made): the request's
    // last byte 1 ms after its first.
    let genai = |path: &str, status, last_ms, call: GenAiCall| {
        let mut e = exchange("POST", path, status, last_ms);
        e.request_last_ns = 1001 * MS;
        e.host = Some("api.openai.com".into());
        e.genai = Some(Box::new(call));
        (
            Completed::Upstream {
                exchange: e,
                peer: genai_peer,
            },
            genai_peer,
        )
    };
    let usage = |input, output| {
        Ok(GenAiUsage {
            input,
            output,
            total: input + output,
            cached_input: input / 5,
        })
    };
    let chat = |model: Option<&str>, streaming, usage, first_token_ms: Option<u64>| GenAiCall {
        api: GenAiApi::OpenAiChat,
        candidate: false,
        vendor: None,
        request_model: model.map(str::to_owned),
        response_model: model.map(|m| format!("{m}-2024-08-06")),
        streaming,
        usage,
        first_token_ns: first_token_ms.map(|ms| (1000 + ms) * MS),
    };
    let mut messages = chat(Some("claude-sonnet-4"), true, usage(30, 0), Some(120));
    messages.api = GenAiApi::AnthropicMessages;
    messages.usage = Err(UsageUnavailable::Truncated);
    vec![
        genai(
            "/v1/chat/completions",
            200,
            400,
            chat(Some("gpt-4o"), false, usage(25, 12), None),
        ),
        // Streamed: first token at 31 ms, 100 more tokens in 1 s.
        genai(
            "/v1/chat/completions",
            200,
            1031,
            chat(Some("gpt-4o"), true, usage(10, 101), Some(31)),
        ),
        // Streamed without include_usage: no tokens, no cost.
        genai(
            "/v1/chat/completions",
            200,
            90,
            chat(
                Some("gpt-4o-mini"),
                true,
                Err(UsageUnavailable::Absent),
                Some(45),
            ),
        ),
        {
            // Another upstream, named by its API: anthropic.
            let (mut done, _) = genai("/v1/messages", 200, 800, messages);
            if let Completed::Upstream { exchange, peer } = &mut done {
                exchange.host = Some("api.anthropic.com".into());
                *peer = peer6;
            }
            (done, peer6)
        },
        genai(
            "/v1/chat/completions",
            429,
            5,
            chat(None, false, Err(UsageUnavailable::Absent), None),
        ),
        up(exchange("GET", "/orders/12", 200, 35), peer, 5),
        down(
            exchange("GET", "/orders/12", 200, 40),
            "127.0.0.1:8080",
            Some(leg(peer, 200, 5, 35)),
        ),
        down(
            exchange("GET", "/orders/12", 200, 12),
            "127.0.0.1:8080",
            Some(leg(peer, 200, 1, 11)),
        ),
        down(exchange("GET", "/missing", 404, 2), "127.0.0.1:8080", None),
        down(
            exchange("POST", "/orders/13", 499, 0),
            "127.0.0.1:8080",
            None,
        ),
        // A 499 while the upstream was still working: no upstream time.
        down(
            exchange("POST", "/orders/14", 499, 0),
            "127.0.0.1:8080",
            Some(leg(peer, 0, 2, 0)),
        ),
        up(exchange("POST", "/orders/14", 0, 0), peer, 2),
        // A retried request: a 502 from one peer, then a 200 from another.
        up(exchange("GET", "/orders/15", 502, 8), peer, 1),
        up(exchange("GET", "/orders/15", 200, 70), peer6, 9),
        down(
            exchange("GET", "/orders/15", 200, 75),
            "[::1]:8443",
            Some(leg(peer6, 200, 9, 70)),
        ),
        down(admin, "[::1]:8443", None),
        down(slow, "127.0.0.1:8080", Some(leg(peer, 200, 10, 1490))),
        // Distinct templates beyond the cap of 3 per service: overflow.
        down(exchange("GET", "/a/1", 200, 1), "127.0.0.1:8080", None),
        down(exchange("GET", "/b/2", 200, 1), "127.0.0.1:8080", None),
        down(exchange("GET", "/c/3", 200, 1), "127.0.0.1:8080", None),
        down(exchange("GET", "/b/9", 200, 1), "127.0.0.1:8080", None),
        down(
            exchange("DELETE", "/orders/16", 204, 20),
            "127.0.0.1:8080",
            Some(leg(peer, 204, 2, 18)),
        ),
        up(exchange("DELETE", "/orders/16", 204, 18), peer, 2),
        up(grpc(200, Some(5), 5), peer6, 1),
        down(
            grpc(200, Some(5), 6),
            "[::1]:8443",
            Some(leg(peer6, 200, 1, 5)),
        ),
        down(grpc(499, None, 0), "[::1]:8443", None),
    ]
}

fn wire_key(role: KernelRole, dir: KernelDirection, port: u16, ip: [u8; 4]) -> WireKey {
    let mut addr = [0u8; 16];
    if role != KernelRole::DOWNSTREAM {
        addr[..4].copy_from_slice(&ip);
    }
    WireKey {
        ifindex: 2,
        role,
        dir,
        port,
        family: if role == KernelRole::DOWNSTREAM {
            0
        } else {
            AF_INET
        },
        addr,
    }
}

fn counts(packets: u64, bytes: u64, resets: u64, syns: u64) -> WireCounts {
    WireCounts {
        packets,
        bytes,
        resets,
        syns,
    }
}

/// Every kind of input, in a fixed order; then the exposition.
fn run(compat: Compat, groups: MetricGroups, router: Router) -> String {
    let mut m = Metrics::new(compat, &ID, &["bytes", "http", "close"]);
    let mut sinks = Sinks::default();
    sinks.push(m.http(groups));
    sinks.push(m.genai(providers(), 2));
    let mut labeller = Labeller::new(router, sinks.needs());
    let peer = addr("127.0.0.1:9000");
    // The gateway's upstream peer in the host's namespace, and one reached
    // from the pod whose listener is on 8443.
    let up = Peer {
        netns: 0,
        addr: peer,
    };
    let pod_peer = Peer {
        netns: POD_8443.netns,
        addr: addr("[::1]:9100"),
    };
    m.set_listeners(&listeners());
    m.health.set_capacity("ring_buffer_bytes", 1 << 20);
    m.health.set_capacity("sockets", 65536);
    m.health.programs_attached.set(17);
    m.health.target_processes.set(3);
    m.health.wire_interfaces.set(2);
    m.health
        .events_received
        .with_label_values(&["bytes"])
        .inc_by(40);
    m.health
        .events_lost
        .with_label_values(&["undecodable"])
        .inc_by(2);
    m.health.lost_closes.inc_by(1);
    m.health.lost_opens.inc_by(1);
    let facts = [
        Fact::Accepted,
        Fact::Accepted,
        Fact::Accepted,
        Fact::Handled,
        Fact::Handled,
        Fact::DownstreamBytes {
            listener: ListenKey::new(0, 8080),
            dir: Direction::Ingress,
            len: 100,
        },
        Fact::DownstreamBytes {
            listener: ListenKey::new(0, 8080),
            dir: Direction::Egress,
            len: 250,
        },
        Fact::DownstreamBytes {
            listener: ListenKey::new(0, 8080),
            dir: Direction::Ingress,
            len: 5,
        },
        Fact::DownstreamBytes {
            listener: POD_8443,
            dir: Direction::Egress,
            len: 9,
        },
        Fact::DownstreamBytes {
            listener: ListenKey::new(0, 81),
            dir: Direction::Ingress,
            len: 7,
        },
        Fact::UpstreamOpened { peer: up },
        Fact::UpstreamOpened { peer: up },
        Fact::UpstreamOpened { peer: pod_peer },
        Fact::UpstreamBytes {
            peer: up,
            dir: Direction::Egress,
            len: 120,
        },
        Fact::UpstreamBytes {
            peer: up,
            dir: Direction::Ingress,
            len: 300,
        },
        Fact::UpstreamBytes {
            peer: up,
            dir: Direction::Egress,
            len: 1,
        },
        Fact::UntrackedBytes {
            dir: Direction::Ingress,
            len: 11,
        },
        Fact::DownstreamTcp {
            listener: ListenKey::new(0, 8080),
            event: TcpEvent::Retransmit,
        },
        Fact::DownstreamTcp {
            listener: ListenKey::new(0, 8080),
            event: TcpEvent::ResetSent,
        },
        Fact::UpstreamTcp {
            peer: up,
            event: TcpEvent::ResetReceived,
        },
        Fact::TableFull,
    ];
    for fact in &facts {
        m.record(fact);
    }
    m.set_gauges(&Gauges {
        downstream_active: 2,
        upstream_open: [(up, 1), (pod_peer, 0)].into(),
        tracked_downstream: 2,
        tracked_upstream: 1,
    });
    m.set_phases(1, 2, 3);
    for a in [
        Anomaly::NonHttp { bytes: 10 },
        Anomaly::Desync,
        Anomaly::Desync,
        Anomaly::Resync { skipped: 4 },
    ] {
        m.record_anomaly(&a);
    }
    for (done, remote) in exchanges() {
        sinks.exchange(&labeller.label(done, remote, 1));
    }
    m.handshake("eth0", ListenKey::new(0, 8080), 0.0004);
    m.handshake("eth0", ListenKey::new(0, 8080), 0.03);
    m.handshake("lo", POD_8443, 2.0);
    m.handshake("lo", ListenKey::new(0, 82), 0.0001);
    m.handshake_untimed(ListenKey::new(0, 8080));
    m.handshake_untimed(ListenKey::new(0, 83));
    let down_in = wire_key(
        KernelRole::DOWNSTREAM,
        KernelDirection::INGRESS,
        8080,
        [0; 4],
    );
    let down_out = wire_key(
        KernelRole::DOWNSTREAM,
        KernelDirection::EGRESS,
        8080,
        [0; 4],
    );
    let up_out = wire_key(
        KernelRole::UPSTREAM,
        KernelDirection::EGRESS,
        9000,
        [127, 0, 0, 1],
    );
    let interface = |i: u32| format!("if{i}");
    m.sync_wire(
        &[
            (down_in, counts(3, 180, 0, 2)),
            (down_out, counts(2, 120, 1, 0)),
            (up_out, counts(4, 400, 0, 1)),
        ],
        &interface,
    );
    m.sync_wire(
        &[
            (down_in, counts(5, 300, 1, 3)),
            (down_out, counts(2, 120, 1, 0)),
            (up_out, counts(6, 500, 1, 1)),
        ],
        &interface,
    );
    // A listener closed: its port is labelled `*:port` from here on.
    m.set_listeners(&listeners()[1..]);
    m.record(&Fact::DownstreamBytes {
        listener: ListenKey::new(0, 8080),
        dir: Direction::Ingress,
        len: 1000,
    });
    m.record(&Fact::DownstreamTcp {
        listener: ListenKey::new(0, 8080),
        event: TcpEvent::Retransmit,
    });
    m.set_gauges(&Gauges {
        downstream_active: 1,
        upstream_open: [(up, 0)].into(),
        tracked_downstream: 1,
        tracked_upstream: 0,
    });
    render(&m.registry())
}

fn providers() -> std::sync::Arc<Providers> {
    let config = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
    std::sync::Arc::new(Providers::from_config(Some(&config)))
}

fn auto_router() -> Router {
    Router::from_config(None, 3)
}

fn config_router() -> Router {
    Router::from_config(Some(Config::parse(CONFIG, Path::new("t.toml")).unwrap()), 3)
}

const OFF: MetricGroups = MetricGroups {
    status_code: false,
    latency: false,
    bandwidth: false,
    upstream_health: false,
};

/// Compares `text` with `golden/<name>` (or rewrites it, see above).
fn check(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/metrics/golden")
        .join(name);
    if std::env::var_os("GATESCOPE_GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (GATESCOPE_GOLDEN_UPDATE=1 writes it)",
            path.display()
        )
    });
    if text != want {
        let first = text
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(text.lines().count().min(want.lines().count()));
        panic!(
            "{name}: exposition differs from {} at line {}:\n got: {:?}\nwant: {:?}\n--- full output ---\n{text}",
            path.display(),
            first + 1,
            text.lines().nth(first),
            want.lines().nth(first),
        );
    }
}

#[test]
fn golden_native() {
    check(
        "native.prom",
        &run(Compat::None, MetricGroups::default(), auto_router()),
    );
}

#[test]
fn golden_kong() {
    check(
        "kong.prom",
        &run(Compat::Kong, MetricGroups::default(), auto_router()),
    );
}

#[test]
fn golden_native_config() {
    check(
        "native_config.prom",
        &run(Compat::None, MetricGroups::default(), config_router()),
    );
}

#[test]
fn golden_kong_config() {
    check(
        "kong_config.prom",
        &run(Compat::Kong, MetricGroups::default(), config_router()),
    );
}

#[test]
fn golden_groups_off() {
    check(
        "native_groups_off.prom",
        &run(Compat::None, OFF, auto_router()),
    );
    check(
        "kong_groups_off.prom",
        &run(Compat::Kong, OFF, auto_router()),
    );
}

#[test]
fn golden_some_groups() {
    let latency = MetricGroups {
        latency: true,
        ..OFF
    };
    check(
        "native_latency_only.prom",
        &run(Compat::None, latency, auto_router()),
    );
    check(
        "kong_latency_only.prom",
        &run(Compat::Kong, latency, auto_router()),
    );
    let counts = MetricGroups {
        status_code: true,
        upstream_health: true,
        ..OFF
    };
    check(
        "kong_status_upstream_only.prom",
        &run(Compat::Kong, counts, auto_router()),
    );
}

/// The request log of the same exchanges, line for line.
#[test]
fn golden_request_log() {
    let path = std::env::temp_dir().join(format!("gatescope-golden-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut sinks = Sinks::default();
    sinks.push(RequestLog::create(&path, providers()).unwrap());
    let mut labeller = Labeller::new(auto_router(), sinks.needs());
    let attempt = |exchange: &Exchange, peer, link| Attempt {
        exchange: exchange.clone(),
        peer,
        local: addr("127.0.0.1:51000"),
        link,
    };
    for (mut done, remote) in exchanges() {
        // Downstream lines list the calls linked to them.
        if let Completed::Downstream {
            exchange,
            upstream: Some(leg),
            attempts,
            ..
        } = &mut done
        {
            let mut call = exchange.clone();
            call.request_first_ns = leg.first_ns;
            attempts.push(attempt(&call, leg.peer, Link::Inferred));
        }
        sinks.exchange(&labeller.label(done, remote, 1));
    }
    let lost = exchange("GET", "/orders/14", 502, 3);
    sinks.unlinked(1, &attempt(&lost, addr("127.0.0.1:9000"), Link::Ambiguous));
    sinks.flush();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    check("request_log.jsonl", &text);
}
