//! The request log sink: one JSON line per finished exchange.
//!
//! `--request-log`: an access log written from the kernel's view. It
//! carries method, path without query string, status, byte counts and
//! timings; never header values, query strings or bodies.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
};

use serde::Serialize;

use tracing::warn;

use super::Sink;
use crate::{capture::decode::Role, label::Labelled};

#[derive(Serialize)]
struct Line<'a> {
    role: &'static str,
    /// The client (downstream) or the upstream peer (upstream).
    remote: String,
    /// The gateway's listening socket, downstream only.
    #[serde(skip_serializing_if = "Option::is_none")]
    listener: Option<String>,
    method: &'a str,
    path: &'a str,
    status: u16,
    request_bytes: u64,
    response_bytes: u64,
    /// First request byte to last response byte, in milliseconds.
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<Upstream>,
}

#[derive(Serialize)]
struct Upstream {
    peer: String,
    status: u16,
    duration_ms: f64,
}

pub struct RequestLog {
    out: BufWriter<File>,
}

fn ms(first_ns: u64, last_ns: u64) -> f64 {
    last_ns.saturating_sub(first_ns) as f64 / 1e6
}

impl RequestLog {
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RequestLog {
            out: BufWriter::new(file),
        })
    }

    fn write(&mut self, r: &Labelled) -> io::Result<()> {
        let e = &r.exchange;
        let line = Line {
            role: match r.role {
                Role::Downstream => "downstream",
                Role::Upstream => "upstream",
            },
            remote: r.remote.to_string(),
            listener: r.listener.map(|l| l.to_string()),
            method: &e.method,
            path: &e.path,
            status: e.status,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            duration_ms: e.duration_ns() as f64 / 1e6,
            upstream: r.upstream.as_ref().map(|leg| Upstream {
                peer: leg.peer.to_string(),
                status: leg.status,
                duration_ms: ms(leg.first_ns, leg.last_ns),
            }),
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }
}

impl Sink for RequestLog {
    fn exchange(&mut self, record: &Labelled) {
        if let Err(e) = self.write(record) {
            warn!("request log: {e}");
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            warn!("request log: {e}");
        }
    }
}
