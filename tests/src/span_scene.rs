//! The span tests' scene (tests/tests/spans.rs, span_export.rs): nginx
//! (`Nginx::start_spans`), its upstream and a retry pair whose first peer
//! answers 502, plus a plain GET client that can send a `traceparent`.

use crate::nginx::Nginx;
use crate::upstream::{Reply, Upstream, UpstreamExchange};
use crate::util;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const EXPORTED: &str = "gatescope_spans_exported_total";
pub const DROPPED: &str = "gatescope_spans_dropped_total";
pub const EXPORT_ERRORS: &str = "gatescope_span_export_errors_total";
pub const SPAN_TIMEOUT: Duration = Duration::from_secs(20);

fn answer_502(_: &str, _: &str, _: u64) -> Reply {
    Reply {
        status: 502,
        reason: "Bad Gateway",
        content_type: "text/plain",
        body: b"bad".to_vec(),
    }
}

fn answer_200(_: &str, _: &str, _: u64) -> Reply {
    Reply {
        status: 200,
        reason: "OK",
        content_type: "text/plain",
        body: b"fine".to_vec(),
    }
}

/// nginx, its upstream and the two retry peers (the first answers 502).
pub struct SpanScene {
    pub upstream: Upstream,
    pub retry: [Upstream; 2],
    pub nginx: Nginx,
}

impl SpanScene {
    pub fn start() -> Result<Self> {
        let upstream = Upstream::start()?;
        let retry = [
            Upstream::start_answering(answer_502)?,
            Upstream::start_answering(answer_200)?,
        ];
        let nginx = Nginx::start_spans(
            util::free_port()?,
            upstream.port(),
            [retry[0].port(), retry[1].port()],
        )?;
        Ok(Self {
            upstream,
            retry,
            nginx,
        })
    }

    /// Every upstream record, by the path the upstream saw.
    pub fn truth(&self) -> BTreeMap<String, Vec<UpstreamExchange>> {
        let mut by: BTreeMap<String, Vec<UpstreamExchange>> = BTreeMap::new();
        for u in [&self.upstream, &self.retry[0], &self.retry[1]] {
            for e in u.exchanges() {
                by.entry(e.path.clone()).or_default().push(e);
            }
        }
        by
    }

    pub fn upstream_total(&self) -> usize {
        self.upstream.exchanges().len()
            + self.retry[0].exchanges().len()
            + self.retry[1].exchanges().len()
    }
}

/// One GET on a fresh connection with `Connection: close` and an optional
/// `traceparent`; returns the status and the wall-clock interval around it.
pub fn get(port: u16, path: &str, traceparent: Option<&str>) -> Result<(u16, u64, u64)> {
    let before = now_ns();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let tp = traceparent.map_or(String::new(), |t| format!("traceparent: {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{tp}Connection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let after = now_ns();
    let head = String::from_utf8_lossy(&resp);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in the response to {path}: {head:?}"))?;
    Ok((status, before, after))
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A caller's trace and span ids, number `i`.
pub fn caller(i: u64) -> (String, String) {
    (
        format!("{:032x}", 0xabc_0000 + i),
        format!("{:016x}", 0x5150 + i),
    )
}
