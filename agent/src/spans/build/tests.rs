use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use opentelemetry::{trace::TraceId, Value};

use super::*;
use crate::{
    correlate::Link,
    http::TraceHeaders,
    label::{Routed, Source},
    spans::sampler::Root,
};

const MS: u64 = 1_000_000;
/// Wall time = monotonic + this.
const OFFSET: i128 = 1_700_000_000_000_000_000;
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const GATEWAY: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn exchange(method: &str, path: &str, status: u16, first_ms: u64, last_ms: u64) -> Exchange {
    Exchange {
        method: method.into(),
        path: path.into(),
        host: Some("api.example.com:8443".into()),
        status,
        request_bytes: 10,
        response_bytes: 20,
        request_first_ns: first_ms * MS,
        request_last_ns: first_ms * MS,
        response_first_ns: last_ms * MS,
        response_last_ns: last_ms * MS,
        closed_ns: 0,
        upgraded: false,
        version: 1,
        trace: TraceHeaders::default(),
        grpc: None,
        genai: None,
    }
}

fn attempt(status: u16, first_ms: u64, last_ms: u64, traceparent: Option<&str>) -> Attempt {
    let mut exchange = exchange("GET", "/v1/orders/12", status, first_ms, last_ms);
    exchange.trace.traceparent = traceparent.map(str::to_owned);
    Attempt {
        exchange,
        peer: addr("127.0.0.1:9000"),
        local: addr("127.0.0.1:40000"),
        link: Link::Inferred,
    }
}

fn request(status: u16, attempts: Vec<Attempt>, traceparent: Option<&str>) -> Labelled {
    let mut exchange = exchange("GET", "/orders/12", status, 1000, 1100);
    exchange.trace.traceparent = traceparent.map(str::to_owned);
    exchange.trace.tracestate = Some("rojo=00f067aa0ba902b7".into());
    Labelled {
        role: Role::Downstream,
        exchange,
        tgid: 42,
        remote: addr("10.1.2.3:5555"),
        listener: Some(addr("0.0.0.0:8080")),
        upstream: None,
        attempts,
        name: Some(Routed {
            service: Arc::from("orders"),
            route: Arc::from("orders-route"),
            overflow: false,
            configured: true,
        }),
        source: Source::Service,
    }
}

fn builder(trust: Trust) -> Builder {
    Builder::new(
        trust,
        Sampler::default(),
        TraceCap::new(3, 1000 * MS),
        WallClock::fixed(OFFSET),
    )
}

fn spans(o: Outcome) -> Vec<SpanData> {
    match o {
        Outcome::Spans(s) => s,
        other => panic!("{other:?}"),
    }
}

fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn wall(ms: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_nanos((i128::from(ms * MS) + OFFSET) as u64)
}

#[test]
fn a_request_with_a_retry_is_one_server_and_two_client_spans() {
    let mut b = builder(Trust::All);
    let r = request(
        200,
        vec![
            attempt(502, 1010, 1020, None),
            attempt(200, 1030, 1090, None),
        ],
        None,
    );
    let s = spans(b.request(&r, 0, false));
    assert_eq!(s.len(), 3);
    let (server, c0, c1) = (&s[0], &s[1], &s[2]);
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.name, "GET orders-route");
    assert_eq!(server.parent_span_id, SpanId::INVALID);
    assert!(!server.parent_span_is_remote);
    assert_eq!(
        (server.start_time, server.end_time),
        (wall(1000), wall(1100))
    );
    assert_eq!(attr(server, "http.request.method"), Some(&"GET".into()));
    assert_eq!(attr(server, "url.path"), Some(&"/orders/12".into()));
    assert_eq!(attr(server, "url.scheme"), Some(&"http".into()));
    assert_eq!(
        attr(server, "http.response.status_code"),
        Some(&200i64.into())
    );
    assert_eq!(attr(server, "http.route"), Some(&"orders-route".into()));
    assert_eq!(
        attr(server, "server.address"),
        Some(&"api.example.com".into())
    );
    assert_eq!(attr(server, "server.port"), Some(&8443i64.into()));
    assert_eq!(attr(server, "client.address"), Some(&"10.1.2.3".into()));
    assert_eq!(
        attr(server, "network.peer.address"),
        Some(&"10.1.2.3".into())
    );
    assert_eq!(attr(server, "network.peer.port"), Some(&5555i64.into()));
    assert_eq!(
        attr(server, "network.protocol.version"),
        Some(&"1.1".into())
    );
    assert_eq!(attr(server, "error.type"), None);
    assert_eq!(server.status, Status::Unset);
    for (i, c) in [c0, c1].into_iter().enumerate() {
        assert_eq!(c.span_kind, SpanKind::Client);
        assert_eq!(c.name, "GET");
        assert_eq!(c.span_context.trace_id(), server.span_context.trace_id());
        assert_eq!(c.parent_span_id, server.span_context.span_id());
        assert!(!c.parent_span_is_remote);
        assert_ne!(c.span_context.span_id(), server.span_context.span_id());
        assert_eq!(attr(c, "server.address"), Some(&"127.0.0.1".into()));
        assert_eq!(attr(c, "server.port"), Some(&9000i64.into()));
        assert_eq!(attr(c, "network.peer.port"), Some(&9000i64.into()));
        assert_eq!(attr(c, "url.path"), Some(&"/v1/orders/12".into()));
        assert_eq!(attr(c, "client.address"), None);
        assert_eq!(attr(c, "http.route"), None);
        let resend = attr(c, "http.request.resend_count");
        assert_eq!(resend, (i > 0).then_some(&Value::I64(1)));
    }
    assert_eq!((c0.start_time, c0.end_time), (wall(1010), wall(1020)));
    // A CLIENT 5xx is an error; the answered 200 is not.
    assert_eq!(c0.status, Status::error(""));
    assert_eq!(attr(c0, "error.type"), Some(&"502".into()));
    assert_eq!(c1.status, Status::Unset);
}

#[test]
fn names_never_hold_the_path_and_unknown_methods_are_other() {
    let mut b = builder(Trust::All);
    let mut r = request(200, Vec::new(), None);
    r.name.as_mut().unwrap().configured = false;
    r.name.as_mut().unwrap().route = Arc::from("/orders/{id}");
    let s = spans(b.request(&r, 0, false));
    assert_eq!(s[0].name, "GET");
    assert_eq!(attr(&s[0], "http.route"), None);
    r.exchange.method = "PURGE".into();
    r.exchange.version = 0;
    let s = spans(b.request(&r, 0, false));
    assert_eq!(s[0].name, "HTTP");
    assert_eq!(attr(&s[0], "http.request.method"), Some(&"_OTHER".into()));
    assert_eq!(attr(&s[0], "network.protocol.version"), Some(&"1.0".into()));
}

#[test]
fn status_rules_follow_the_conventions() {
    let mut b = builder(Trust::All);
    let one = |b: &mut Builder, status: u16, up: u16| {
        spans(b.request(
            &request(status, vec![attempt(up, 1010, 1020, None)], None),
            0,
            false,
        ))
    };
    // SERVER 4xx: unset; CLIENT 4xx: error.
    let s = one(&mut b, 404, 404);
    assert_eq!(
        (&s[0].status, &s[1].status),
        (&Status::Unset, &Status::error(""))
    );
    assert_eq!(attr(&s[0], "error.type"), None);
    // SERVER 5xx: error.
    let s = one(&mut b, 503, 503);
    assert_eq!(s[0].status, Status::error(""));
    assert_eq!(attr(&s[0], "error.type"), Some(&"503".into()));
    // The client gave up (499): error.type, status unset (a 4xx).
    let s = one(&mut b, 499, 0);
    assert_eq!(attr(&s[0], "error.type"), Some(&"aborted".into()));
    assert_eq!(s[0].status, Status::Unset);
    assert_eq!(attr(&s[1], "error.type"), Some(&"reset".into()));
    // The gateway timed out waiting for the upstream (504).
    let s = one(&mut b, 504, 0);
    assert_eq!(attr(&s[1], "error.type"), Some(&"timeout".into()));
    assert_eq!(s[1].status, Status::error(""));
    assert_eq!(attr(&s[1], "http.response.status_code"), None);
}

#[test]
fn a_believed_caller_is_the_remote_parent() {
    let mut b = builder(Trust::All);
    let s = spans(b.request(
        &request(
            200,
            vec![attempt(200, 1010, 1020, Some(CALLER))],
            Some(CALLER),
        ),
        0,
        false,
    ));
    let caller = parse_traceparent(CALLER).unwrap();
    assert_eq!(s[0].span_context.trace_id(), caller.trace_id);
    assert_eq!(s[0].parent_span_id, caller.span_id);
    assert!(s[0].parent_span_is_remote);
    assert_eq!(
        s[0].span_context.trace_state().header(),
        "rojo=00f067aa0ba902b7"
    );
    // Forwarded unchanged: our CLIENT span is the SERVER span's child.
    assert_eq!(s[1].span_context.trace_id(), caller.trace_id);
    assert_eq!(s[1].parent_span_id, s[0].span_context.span_id());
    assert!(!s[1].parent_span_is_remote);

    // An invalid header, or an untrusted client: a new trace.
    let bad = CALLER.replace("4bf9", "4BF9");
    let s = spans(b.request(&request(200, Vec::new(), Some(&bad)), 0, false));
    assert_ne!(s[0].span_context.trace_id(), caller.trace_id);
    assert_eq!(s[0].parent_span_id, SpanId::INVALID);
    assert_eq!(s[0].span_context.trace_state().header(), "");
    let mut b = builder("192.168.0.0/16".parse().unwrap());
    let s = spans(b.request(&request(200, Vec::new(), Some(CALLER)), 0, false));
    assert_ne!(s[0].span_context.trace_id(), caller.trace_id);
    assert_eq!(s[0].parent_span_id, SpanId::INVALID);
}

#[test]
fn a_header_the_gateway_wrote_parents_the_client_span() {
    let gw = parse_traceparent(GATEWAY).unwrap();
    // No caller context: the whole request joins the gateway's trace.
    let mut b = builder(Trust::All);
    let s = spans(b.request(
        &request(200, vec![attempt(200, 1010, 1020, Some(GATEWAY))], None),
        0,
        false,
    ));
    assert_eq!(s[0].span_context.trace_id(), gw.trace_id);
    assert_eq!(s[0].parent_span_id, SpanId::INVALID);
    assert_eq!(s[1].span_context.trace_id(), gw.trace_id);
    assert_eq!(s[1].parent_span_id, gw.span_id);
    assert!(s[1].parent_span_is_remote);
    // Never the header's id as our own (the gateway's tracer exports it).
    assert_ne!(s[1].span_context.span_id(), gw.span_id);
    assert_ne!(s[0].span_context.span_id(), gw.span_id);

    // With a caller: the SERVER span stays in the caller's trace.
    let s = spans(b.request(
        &request(
            200,
            vec![attempt(200, 1010, 1020, Some(GATEWAY))],
            Some(CALLER),
        ),
        0,
        false,
    ));
    assert_eq!(
        s[0].span_context.trace_id(),
        parse_traceparent(CALLER).unwrap().trace_id
    );
    assert_eq!(
        (s[1].span_context.trace_id(), s[1].parent_span_id),
        (gw.trace_id, gw.span_id)
    );
}

#[test]
fn unlinked_calls_are_roots_unless_they_carry_a_header() {
    let mut b = builder(Trust::All);
    let s = spans(b.unlinked(&attempt(200, 10, 20, None), 0, false));
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].span_kind.clone(), s[0].parent_span_id),
        (SpanKind::Client, SpanId::INVALID)
    );
    let s = spans(b.unlinked(&attempt(200, 10, 20, Some(GATEWAY)), 0, false));
    let gw = parse_traceparent(GATEWAY).unwrap();
    assert_eq!(
        (s[0].span_context.trace_id(), s[0].parent_span_id),
        (gw.trace_id, gw.span_id)
    );
    // Not trusting every client, a header's sender is unknown here.
    let mut b = builder(Trust::None);
    let s = spans(b.unlinked(&attempt(200, 10, 20, Some(GATEWAY)), 0, false));
    assert_eq!(s[0].parent_span_id, SpanId::INVALID);
}

#[test]
fn one_incoming_trace_is_capped_and_sampling_is_parent_based() {
    let mut b = builder(Trust::All);
    // Cap 3 per window: a request of 2 spans, then one of 2 is refused whole.
    let r = request(200, vec![attempt(200, 1010, 1020, None)], Some(CALLER));
    assert_eq!(spans(b.request(&r, 0, false)).len(), 2);
    assert!(matches!(b.request(&r, MS, false), Outcome::Capped(2)));
    // Requests without a caller's trace are not capped.
    let fresh = request(200, vec![attempt(200, 1010, 1020, None)], None);
    for _ in 0..5 {
        assert_eq!(spans(b.request(&fresh, 2 * MS, false)).len(), 2);
    }
    // A new window.
    assert_eq!(spans(b.request(&r, 1001 * MS, false)).len(), 2);

    let mut b = Builder::new(
        Trust::All,
        Sampler::ParentBased(Root::AlwaysOff),
        TraceCap::new(100, MS),
        WallClock::fixed(OFFSET),
    );
    assert!(matches!(b.request(&fresh, 0, false), Outcome::SampledOut));
    assert_eq!(spans(b.request(&r, 0, false)).len(), 2);
    let unsampled = CALLER.replace("-01", "-00");
    let r = request(200, Vec::new(), Some(&unsampled));
    assert!(matches!(b.request(&r, 0, false), Outcome::SampledOut));
    // A full export queue: decided after sampling and the cap, nothing built.
    let mut b = builder(Trust::All);
    assert!(matches!(b.request(&fresh, 0, true), Outcome::QueueFull(2)));
    assert!(matches!(
        b.unlinked(&attempt(200, 10, 20, None), 0, true),
        Outcome::QueueFull(1)
    ));
    // Upstream records come as attempts, not on their own.
    let mut up = fresh.clone();
    up.role = Role::Upstream;
    assert!(matches!(b.request(&up, 0, false), Outcome::Skipped));
    let _ = TraceId::INVALID;
}

#[test]
fn server_address_comes_from_host_else_the_listener() {
    let l = Some(addr("10.0.0.1:8080"));
    let f = |h: Option<&str>| server_address(h, l);
    assert_eq!(f(Some("a.example")), (Some("a.example".into()), Some(8080)));
    assert_eq!(
        f(Some("a.example:81")),
        (Some("a.example".into()), Some(81))
    );
    assert_eq!(f(Some("[::1]:82")), (Some("::1".into()), Some(82)));
    assert_eq!(f(Some("[::1]")), (Some("::1".into()), Some(8080)));
    assert_eq!(f(None), (Some("10.0.0.1".into()), Some(8080)));
}

#[test]
fn grpc_calls_carry_rpc_attributes_and_their_status_rules() {
    let call = |status| {
        Some(Box::new(crate::http::GrpcCall {
            service: "shop.Cart".into(),
            method: "Get".into(),
            status,
            message_len: None,
        }))
    };
    let mut b = builder(Trust::All);
    let one = |b: &mut Builder, status: Option<u16>| {
        let mut up = attempt(200, 1010, 1020, None);
        up.exchange.grpc = call(status);
        let mut r = request(200, vec![up], None);
        r.exchange.grpc = call(status);
        r.exchange.version = Exchange::VERSION_H2;
        spans(b.request(&r, 0, false))
    };
    // NOT_FOUND: the caller's concern on the server, an error for the client.
    let s = one(&mut b, Some(5));
    for span in &s {
        assert_eq!(span.name, "shop.Cart/Get");
        assert_eq!(attr(span, "rpc.system"), Some(&"grpc".into()));
        assert_eq!(attr(span, "rpc.service"), Some(&"shop.Cart".into()));
        assert_eq!(attr(span, "rpc.method"), Some(&"Get".into()));
        assert_eq!(attr(span, "rpc.grpc.status_code"), Some(&Value::I64(5)));
        assert_eq!(
            attr(span, "http.response.status_code"),
            Some(&Value::I64(200))
        );
    }
    assert_eq!(
        (&s[0].status, attr(&s[0], "error.type")),
        (&Status::Unset, None)
    );
    assert_eq!(
        (&s[1].status, attr(&s[1], "error.type")),
        (&Status::error(""), Some(&"5".into()))
    );
    // UNAVAILABLE: the server failed, an error on both.
    let s = one(&mut b, Some(14));
    assert_eq!(s[0].status, Status::error(""));
    assert_eq!(attr(&s[0], "error.type"), Some(&"14".into()));
    // OK, and no status seen: no error, no status code attribute.
    let s = one(&mut b, Some(0));
    assert!(s.iter().all(|x| x.status == Status::Unset));
    let s = one(&mut b, None);
    assert!(s.iter().all(|x| x.status == Status::Unset));
    assert_eq!(attr(&s[0], "rpc.grpc.status_code"), None);
    assert_eq!(attr(&s[0], "rpc.system"), Some(&"grpc".into()));
}

#[test]
fn genai_calls_carry_gen_ai_attributes_on_the_client_span() {
    use crate::http::genai::{GenAiApi, GenAiCall, GenAiUsage, UsageUnavailable};
    let config = crate::config::Config::parse(
        "[[genai.provider]]\nname = \"azure\"\nupstream = \"127.0.0.1:9000\"\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let mut b = builder(Trust::All).with_genai(Arc::new(Providers::from_config(Some(&config))));
    let call = GenAiCall {
        api: GenAiApi::OpenAiChat,
        candidate: false,
        vendor: None,
        request_model: Some("gpt-4o".into()),
        response_model: Some("gpt-4o-2024-08-06".into()),
        streaming: true,
        usage: Ok(GenAiUsage {
            input: 25,
            output: 12,
            total: 37,
            cached_input: 0,
        }),
        first_token_ns: Some(1015 * MS),
    };
    let mut up = attempt(200, 1010, 1020, None);
    up.exchange.method = "POST".into();
    up.exchange.path = "/v1/chat/completions".into();
    up.exchange.genai = Some(Box::new(call.clone()));
    let s = spans(b.request(&request(200, vec![up.clone()], None), 0, false));
    let client = &s[1];
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(client.name, "chat gpt-4o");
    for (key, value) in [
        ("gen_ai.operation.name", Value::from("chat")),
        ("gen_ai.provider.name", "azure".into()),
        ("gen_ai.request.model", "gpt-4o".into()),
        ("gen_ai.response.model", "gpt-4o-2024-08-06".into()),
        ("gen_ai.usage.input_tokens", Value::I64(25)),
        ("gen_ai.usage.output_tokens", Value::I64(12)),
        ("http.request.method", "POST".into()),
    ] {
        assert_eq!(attr(client, key), Some(&value), "{key}");
    }
    // The SERVER span is the client's request to the gateway: no gen_ai.*.
    assert!(s[0]
        .attributes
        .iter()
        .all(|kv| !kv.key.as_str().starts_with("gen_ai.")));

    // Unknown usage and model, another peer: the API's provider, no tokens,
    // the HTTP name; an unlinked call too.
    let mut unknown = call;
    unknown.api = GenAiApi::AnthropicMessages;
    unknown.request_model = None;
    unknown.response_model = None;
    unknown.usage = Err(UsageUnavailable::Absent);
    up.exchange.genai = Some(Box::new(unknown));
    up.peer = addr("10.0.0.9:443");
    let s = spans(b.unlinked(&up, 0, false));
    let client = &s[0];
    assert_eq!(client.name, "POST");
    assert_eq!(
        attr(client, "gen_ai.provider.name"),
        Some(&"anthropic".into())
    );
    for key in [
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
    ] {
        assert_eq!(attr(client, key), None, "{key}");
    }
}
