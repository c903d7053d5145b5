//! The tracing rounds of `cargo xtask bench`: the agent's CPU with spans
//! exported over OTLP/HTTP against the same agent without, both paced at the
//! same rate, so the ratio is the cost of tracing alone (issue 9: "agent CPU
//! per 10k requests/s with tracing on versus off").
//!
//! The collector is a local OTLP/HTTP endpoint that reads each export and
//! answers an empty `ExportTraceServiceResponse`: a real collector's own CPU
//! would be counted with the machine's, not the agent's, and is not what is
//! measured here.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
};

use anyhow::{Context as _, Result};

use super::{summary, Mode, Round, Spec, Stack};

/// Pairs of tracing rounds (off then on, then on then off: drift cancels).
const PAIRS: usize = 2;

/// Exports received by the local endpoint.
#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Starts the endpoint; it lives until the process ends.
fn endpoint() -> Result<(SocketAddr, Arc<Received>)> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the OTLP endpoint")?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Received::default());
    let counts = received.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counts = counts.clone();
            thread::spawn(move || {
                let _ = serve(stream, &counts);
            });
        }
    });
    Ok((addr, received))
}

/// Answers every request on one connection with 200 and an empty body.
fn serve(stream: TcpStream, counts: &Received) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.bytes.fetch_add(length as u64, Ordering::Relaxed);
        out.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        )?;
    }
}

/// The tracing rounds, numbered on from `first_number` in pairs from
/// `first_pair`, paced at `rate`.
pub(crate) fn rounds(
    stack: &mut Stack,
    first_number: usize,
    first_pair: usize,
    rate: u32,
) -> Result<Vec<Round>> {
    let (otlp, received) = endpoint()?;
    println!("bench: tracing rounds export to the local OTLP/HTTP endpoint http://{otlp}");
    let mut rounds = Vec::new();
    for i in 0..PAIRS {
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for tracing in order {
            let spec = Spec {
                mode: Mode::Gatescope,
                paced_rate: Some(rate),
                otlp: tracing.then_some(otlp),
                ..Spec::default()
            };
            let round = stack.round(first_number + rounds.len(), first_pair + i, spec)?;
            println!("{}", summary::round_line(&round));
            rounds.push(round);
        }
    }
    println!(
        "bench: the OTLP endpoint received {} exports, {} bytes",
        received.requests.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed)
    );
    Ok(rounds)
}

/// Agent CPU cores per 10k requests/s of the round's load.
fn cores_per_10k(r: &Round) -> Option<f64> {
    let a = r.agent.as_ref()?;
    Some(a.cpu_load / r.wall / (r.wrk.requests_per_second / 1e4))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The summary's tracing section; empty when no tracing rounds ran.
pub(crate) fn section(rounds: &[Round]) -> String {
    if rounds.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n### Tracing\n\n\
         The agent alone, paced at the same rate, without and with spans exported over \
         OTLP/HTTP to a local endpoint that discards them (pairs alternate which runs \
         first). Agent CPU cores per 10k requests/s of load:\n\n\
         | round | tracing | requests/s | agent cores per 10k requests/s | spans exported | spans dropped |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let fmt = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |v| format!("{v:.0}"));
    for r in rounds {
        let a = r.agent.as_ref();
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} | {} |",
            r.number,
            if r.tracing { "on" } else { "off" },
            r.wrk.requests_per_second,
            cores_per_10k(r).map_or_else(|| "—".into(), |c| format!("{c:.3}")),
            fmt(a.and_then(|a| a.spans_exported)),
            fmt(a.and_then(|a| a.spans_dropped)),
        );
    }
    let of = |on: bool| {
        median(
            rounds
                .iter()
                .filter(|r| r.tracing == on)
                .filter_map(cores_per_10k)
                .collect(),
        )
    };
    let (off, on) = (of(false), of(true));
    let _ = writeln!(
        s,
        "\nMedian agent cores per 10k requests/s: {off:.3} without tracing, {on:.3} with; \
         tracing on / off = **{:.2}×**.",
        on / off
    );
    s
}
