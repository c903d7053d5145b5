//! A real Prometheus server (Debian's `prometheus`, installed by `cargo xtask
//! setup`), started on a configuration of the test's and asked through its
//! HTTP API, as a dashboard or an operator would ask it. [`Client`] is the API
//! alone, for a Prometheus someone else runs (`cargo xtask demo --stack`).

use crate::agent::http_get;
use crate::util::{free_port, poll, TempDir};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long Prometheus may take to open its storage and load its rules.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One instant-vector sample of a query's result: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

pub struct Prometheus {
    child: Child,
    dir: TempDir,
    client: Client,
}

/// Prometheus' HTTP API at an address.
pub struct Client {
    addr: String,
}

impl Prometheus {
    /// Starts Prometheus on `config` (the text of a prometheus.yml), with
    /// `files` (name, text) beside it, where its relative `rule_files` and
    /// `file_sd_configs` paths point; waits until it is ready.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Result<Self> {
        let dir = TempDir::new("prometheus")?;
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)?;
        }
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .context("starting prometheus (`cargo xtask setup` installs Debian's prometheus)")?;
        let mut p = Self {
            child,
            dir,
            client: Client::new(addr),
        };
        poll(READY_TIMEOUT, "Prometheus to be ready", || {
            if let Some(st) = p.child.try_wait()? {
                bail!("prometheus exited ({st}):\n{}", p.stderr());
            }
            Ok(p.client.ready().then_some(()))
        })
        .with_context(|| p.stderr())?;
        Ok(p)
    }

    /// What Prometheus wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl std::ops::Deref for Prometheus {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Client {
    /// `addr` is host:port.
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `/-/ready` answers 200: the storage is open and the rules are loaded.
    pub fn ready(&self) -> bool {
        matches!(http_get(&self.addr, "/-/ready"), Ok((200, _)))
    }

    /// GET `path` of the HTTP API: its `data`, or the error it reported.
    pub fn api(&self, path: &str) -> Result<Value> {
        let (status, body) = http_get(&self.addr, path)?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("GET {path}: {status}, not JSON: {body}"))?;
        ensure!(
            status == 200 && v["status"] == "success",
            "GET {path}: {status} {}: {}",
            v["errorType"],
            v["error"]
        );
        Ok(v["data"].clone())
    }

    /// An instant query (`/api/v1/query`) returning a vector.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)))?;
        ensure!(
            data["resultType"] == "vector",
            "{promql}: a {} result, not a vector",
            data["resultType"]
        );
        let mut out = Vec::new();
        for r in data["result"].as_array().context("result")? {
            let labels = r["metric"]
                .as_object()
                .context("metric")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let value: f64 = r["value"][1]
                .as_str()
                .context("value")?
                .parse()
                .context("value")?;
            out.push((labels, value));
        }
        Ok(out)
    }

    /// The values of `label` over the series `selector` matches
    /// (`/api/v1/label/.../values`, what Grafana's `label_values` asks).
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>> {
        let data = self.api(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            encode(selector)
        ))?;
        Ok(data
            .as_array()
            .context("label values")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// The active scrape targets (`/api/v1/targets`).
    pub fn active_targets(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/targets?state=active")?["activeTargets"]
            .as_array()
            .context("activeTargets")?
            .clone())
    }

    /// The targets service discovery found and relabelling dropped.
    pub fn dropped_targets(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/targets?state=dropped")?["droppedTargets"]
            .as_array()
            .context("droppedTargets")?
            .clone())
    }

    /// Every alerting and recording rule loaded, from `/api/v1/rules`.
    pub fn rules(&self) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/rules")?;
        let mut out = Vec::new();
        for g in data["groups"].as_array().context("groups")? {
            out.extend(g["rules"].as_array().context("rules")?.iter().cloned());
        }
        Ok(out)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter (RFC 3986: all but the unreserved).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_all_but_the_unreserved() {
        assert_eq!(
            super::encode(r#"sum(up{job="a b"})"#),
            "sum%28up%7Bjob%3D%22a%20b%22%7D%29"
        );
    }
}
