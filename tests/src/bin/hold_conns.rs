//! Opens COUNT idle TCP connections to DST, round-robin from the source
//! addresses SRC,..., prints `open COUNT` once all are established, and holds
//! them until its standard input closes (or it is killed). One process may hold
//! only RLIMIT_NOFILE descriptors, so tests that need more connections run
//! several of these (see `gatescope_tests::holders`).
//!
//! usage: hold_conns DST COUNT SRC[,SRC...]

use anyhow::{ensure, Context, Result};
use gatescope_tests::util;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;

/// Descriptors beyond the connections: stdio and whatever the runtime opens.
const SPARE_FDS: u64 = 64;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dst, count, srcs] = args.as_slice() else {
        anyhow::bail!("usage: hold_conns DST COUNT SRC[,SRC...]");
    };
    let dst: SocketAddrV4 = dst.parse().with_context(|| format!("DST {dst:?}"))?;
    let count: usize = count.parse().with_context(|| format!("COUNT {count:?}"))?;
    let srcs = srcs
        .split(',')
        .map(|s| s.parse().with_context(|| format!("SRC {s:?}")))
        .collect::<Result<Vec<Ipv4Addr>>>()?;
    let want = count as u64 + SPARE_FDS;
    let nofile = util::raise_nofile(want)?;
    ensure!(
        nofile >= want,
        "RLIMIT_NOFILE is {nofile}, {count} connections need {want}"
    );
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let c = util::connect_from(srcs[i % srcs.len()], dst)
            .with_context(|| format!("after {i} of {count} connections"))?;
        conns.push(c);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "open {count}")?;
    out.flush()?;
    // Until the test closes our stdin; then every connection closes with us.
    std::io::stdin().read_to_end(&mut Vec::new())?;
    drop(conns);
    Ok(())
}
