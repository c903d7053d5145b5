//! Tests of the demo's summary: agreeing scrapes, and the differences it must list.

use super::*;
use crate::traffic::SERVICE;

const LISTENER: &str = "127.0.0.1:8080";
const PEER: &str = "127.0.0.1:9000";

fn counts() -> Counts {
    let mut c = Counts {
        connections: 2,
        requests: 3,
        bytes_sent: 300,
        bytes_received: 500,
        ..Counts::default()
    };
    for (route, code, source, n) in [("/a/{id}", 200, SERVICE, 2), ("/missing", 404, GATEWAY, 1)] {
        let rc = c.routes.entry((route.into(), code, source)).or_default();
        rc.requests = n;
        rc.methods.insert("GET");
    }
    c
}

fn stats() -> UpstreamStats {
    UpstreamStats {
        accepted: 1,
        open: 1,
        requests: 2,
        bytes_received: 100,
        bytes_sent: 200,
    }
}

/// A native scrape that agrees with `counts()` and `stats()`, with `extra` appended.
fn scrape(extra: &str) -> Vec<Sample> {
    let svc = format!("service=\"{LISTENER}\"");
    let text = format!(
        "gatescope_downstream_connections_accepted_total 2\n\
         gatescope_downstream_connections_handled_total 2\n\
         gatescope_downstream_connections{{state=\"active\"}} 0\n\
         gatescope_downstream_connections{{state=\"reading\"}} 0\n\
         gatescope_downstream_connections{{state=\"writing\"}} 0\n\
         gatescope_downstream_connections{{state=\"waiting\"}} 0\n\
         gatescope_downstream_bytes_total{{direction=\"ingress\",listener=\"{LISTENER}\"}} 300\n\
         gatescope_downstream_bytes_total{{direction=\"egress\",listener=\"{LISTENER}\"}} 500\n\
         gatescope_downstream_wire_syn_total{{interface=\"lo\",listener=\"{LISTENER}\"}} 2\n\
         gatescope_downstream_tcp_handshake_seconds_count{{interface=\"lo\",listener=\"{LISTENER}\"}} 2\n\
         gatescope_http_requests_all_total 3\n\
         gatescope_http_requests_total{{code=\"200\",route=\"/a/{{id}}\",{svc},source=\"service\"}} 2\n\
         gatescope_http_requests_total{{code=\"404\",route=\"/missing\",{svc},source=\"kong\"}} 1\n\
         gatescope_http_request_duration_seconds_sum{{route=\"/a/{{id}}\",{svc}}} 0.002\n\
         gatescope_http_request_duration_seconds_count{{route=\"/a/{{id}}\",{svc}}} 2\n\
         gatescope_http_request_duration_seconds_sum{{route=\"/missing\",{svc}}} 0.001\n\
         gatescope_http_request_duration_seconds_count{{route=\"/missing\",{svc}}} 1\n\
         gatescope_http_bytes_total{{direction=\"ingress\",route=\"/a/{{id}}\",{svc}}} 200\n\
         gatescope_http_bytes_total{{direction=\"ingress\",route=\"/missing\",{svc}}} 100\n\
         gatescope_http_bytes_total{{direction=\"egress\",route=\"/a/{{id}}\",{svc}}} 500\n\
         gatescope_http_upstream_requests_total{{code=\"200\",peer=\"{PEER}\"}} 2\n\
         gatescope_upstream_connections{{peer=\"{PEER}\"}} 1\n\
         gatescope_upstream_connections_opened_total{{peer=\"{PEER}\"}} 1\n\
         gatescope_upstream_bytes_total{{direction=\"egress\",peer=\"{PEER}\"}} 100\n\
         gatescope_upstream_bytes_total{{direction=\"ingress\",peer=\"{PEER}\"}} 200\n\
         gatescope_untracked_bytes_total{{direction=\"ingress\"}} 0\n\
         gatescope_untracked_bytes_total{{direction=\"egress\"}} 0\n\
         gatescope_events_lost_total{{reason=\"ringbuf_full\"}} 0\n\
         gatescope_events_lost_total{{reason=\"targets_map_full\"}} 0\n\
         gatescope_events_lost_total{{reason=\"sockets_map_full\"}} 0\n\
         gatescope_http_anomalies_total{{kind=\"desync\"}} 0\n\
         gatescope_target_processes 3\n\
         gatescope_listen_sockets 4\n\
         {extra}"
    );
    gatescope_tests::prom::Scrape::parse(&text).unwrap().samples
}

fn differences_in(samples: &[Sample]) -> Vec<String> {
    let (c, u) = (counts(), stats());
    let o = Observed {
        listener: LISTENER.into(),
        peer: PEER.into(),
        client: &c,
        upstream: u,
        upstream_codes: BTreeMap::from([(200, 2)]),
    };
    print(samples, Compat::None, &o)
        .into_iter()
        .map(|d| format!("{} {} {}", d.series, d.seen, d.expected))
        .collect()
}

fn differences(extra: &str) -> Vec<String> {
    differences_in(&scrape(extra))
}

#[test]
fn agreeing_scrape_has_no_differences() {
    assert!(differences("").is_empty());
}

#[test]
fn unexpected_series_differ() {
    let svc = format!("service=\"{LISTENER}\"");
    let extra = format!(
        "gatescope_http_requests_total{{code=\"502\",route=\"/a/{{id}}\",{svc},source=\"kong\"}} 1\n\
         gatescope_http_upstream_requests_total{{code=\"0\",peer=\"{PEER}\"}} 1\n"
    );
    assert_eq!(
        differences(&extra),
        [
            format!("gatescope_http_requests_total{{{svc},route=\"/a/{{id}}\",code=\"502\",source=\"kong\"}} 1 0"),
            format!("gatescope_http_upstream_requests_total{{peer=\"{PEER}\",code=\"0\"}} 1 0"),
        ]
    );
}

#[test]
fn requests_of_another_service_differ() {
    let extra = "gatescope_http_requests_total{code=\"200\",route=\"/a\",service=\"10.0.0.1:80\",source=\"service\"} 1\n";
    assert_eq!(
        differences(extra),
        ["gatescope_http_requests_total{code=\"200\",route=\"/a\",service=\"10.0.0.1:80\",source=\"service\"} 1 0"]
    );
}

#[test]
fn wrong_and_missing_values_differ() {
    let got = differences("gatescope_http_anomalies_total{kind=\"resync\"} 2\n");
    assert_eq!(got, ["gatescope_http_anomalies_total 2 0"]);
    // Without the latency series, their count is missing.
    let samples: Vec<Sample> = scrape("")
        .into_iter()
        .filter(|s| !s.name.starts_with("gatescope_http_request_duration"))
        .collect();
    let got = differences_in(&samples);
    assert_eq!(
        got,
        [format!(
            "gatescope_http_request_duration_seconds_count{{service=\"{LISTENER}\"}} missing 3"
        )]
    );
}
