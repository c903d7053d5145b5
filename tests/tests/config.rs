//! `--config` against a real nginx: services and routes that name the real
//! traffic, asserted series by series. The client's and the upstream's own
//! records say which request went where (by the README's rules: a client
//! request takes the longest matching path prefix among the routes whose
//! hosts and methods match; an upstream request takes the service whose
//! `upstream` is its peer, then that service's route by method and path;
//! nothing matching: the listener's or the peer's address and the path
//! template), nginx's access log says the codes.

use anyhow::{ensure, Context, Result};
use gatescope_tests::accuracy::HTTP_REQUESTS;
use gatescope_tests::agent::{Agent, SETTLE_TIMEOUT};
use gatescope_tests::prom::Scrape;
use gatescope_tests::util::{self, TempDir};
use gatescope_tests::Scene;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

const UPSTREAM_DURATION: &str = "gatescope_http_upstream_duration_seconds_count";

type Series = BTreeMap<Vec<String>, f64>;

/// `name`'s non-zero samples keyed by the values of `keys`.
fn series(s: &Scrape, name: &str, keys: &[&str]) -> Series {
    let mut m = BTreeMap::new();
    for x in s.matching(name, &[]) {
        let k = keys
            .iter()
            .map(|k| x.labels.get(*k).cloned().unwrap_or_default())
            .collect();
        *m.entry(k).or_insert(0.0) += x.value;
    }
    m.retain(|_, v| *v != 0.0);
    m
}

fn key(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn config_names_real_traffic() -> Result<()> {
    let scene = Scene::start(2)?;
    let (port, up) = (scene.nginx.listen_port(), scene.upstream.addr());
    let listener = scene.nginx.listen_addr();
    let dir = TempDir::new("config")?;
    let config = dir.path().join("gatescope.toml");
    // `elsewhere` has the longest prefix for /size/7 but a host no client
    // names: client requests skip it; upstream requests, matched by method
    // and path only, take it.
    std::fs::write(
        &config,
        format!(
            r#"[[service]]
name = "api"
upstream = "{up}"

  [[service.route]]
  name = "reads"
  paths = ["/size/"]
  methods = ["GET"]

  [[service.route]]
  name = "writes"
  paths = ["/size/"]
  methods = ["POST"]
  hosts = ["127.0.0.1"]

  [[service.route]]
  name = "elsewhere"
  paths = ["/size/7"]
  hosts = ["api.example.com"]

# The same upstream as a GenAI provider: no GenAI path, no GenAI series.
[[genai.provider]]
name = "mock-llm"
upstream = "{up}"
  [genai.provider.models."gpt-4o"]
  input_per_million = 2.5
  output_per_million = 10.0
"#
        ),
    )?;
    let config = config.display().to_string();
    let agent = Agent::start(&[scene.nginx.master_pid()], &["--config", &config])?;

    let mut client = scene.client();
    for _ in 0..3 {
        client.one_shot("/size/100")?;
    }
    client.keep_alive(2, "/size/7")?;
    client.one_shot_post("/size/10", 500)?;
    client.one_shot_post("/size/10", 700)?;
    // No route: GET /nothing/42 (the upstream answers 404).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"GET /nothing/42 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    ensure!(
        resp.starts_with(b"HTTP/1.1 404 "),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let requests = client.totals().requests + 1;

    // The client's record, by the config's rules: (service, route, code, source).
    let mut want: Series = BTreeMap::new();
    want.insert(key(&["api", "reads", "200", "service"]), 5.0);
    want.insert(key(&["api", "writes", "200", "service"]), 2.0);
    want.insert(key(&[&listener, "/nothing/{id}", "404", "service"]), 1.0);
    // nginx's log must agree on the codes.
    let log = scene
        .nginx
        .wait_access_log(requests as usize, Duration::from_secs(5))?;
    let mut log_codes = BTreeMap::new();
    for e in &log {
        *log_codes.entry(e.status.to_string()).or_insert(0.0) += 1.0;
    }
    let mut want_codes = BTreeMap::new();
    for (k, v) in &want {
        *want_codes.entry(k[2].clone()).or_insert(0.0) += v;
    }
    ensure!(
        log_codes == want_codes,
        "nginx's log {log_codes:?}, the client's {want_codes:?}"
    );

    // The upstream's record, by the config's rules: (service, route).
    let exchanges = util::poll(Duration::from_secs(5), "upstream requests", || {
        let x = scene.upstream.exchanges();
        Ok((x.len() as u64 == requests).then_some(x))
    })?;
    let mut want_up: Series = BTreeMap::new();
    for x in &exchanges {
        let route = match (x.method.as_str(), x.path.as_str()) {
            (_, p) if p.starts_with("/size/7") => "elsewhere",
            ("GET", p) if p.starts_with("/size/") => "reads",
            ("POST", p) if p.starts_with("/size/") => "writes",
            (_, "/nothing/42") => "/nothing/{id}",
            other => anyhow::bail!("unexpected upstream request {other:?}"),
        };
        *want_up.entry(key(&["api", route])).or_insert(0.0) += 1.0;
    }

    let keys = ["service", "route", "code", "source"];
    let got = util::poll(SETTLE_TIMEOUT, "labelled series", || {
        let s = agent.scrape()?;
        let (got, got_up) = (
            series(&s, HTTP_REQUESTS, &keys),
            series(&s, UPSTREAM_DURATION, &["service", "route"]),
        );
        Ok((got == want && got_up == want_up).then_some(got))
    })
    .with_context(|| {
        let s = agent.scrape().map(|s| s.text).unwrap_or_default();
        format!("want {want:?} and upstream {want_up:?}:\n{s}")
    })?;
    eprintln!("config: {got:?}; upstream {want_up:?}");
    let text = agent.scrape()?.text;
    ensure!(
        !text.contains("gen_ai_") && !text.contains("gatescope_genai_"),
        "GenAI series without GenAI traffic:\n{text}"
    );
    Ok(())
}
