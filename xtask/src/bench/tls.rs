//! The TLS pairs of `cargo xtask bench`: the same nginx proxy on its TLS listener
//! (`listen ... ssl`, OpenSSL, a self-signed certificate), wrk over https, baseline
//! against gatescope, flat out, each pair with its stats round, so that the uprobes'
//! cost per request (`ssl_read`, `ssl_write`, `ssl_ret` in the bpf_stats table) and the
//! throughput ratio are measured as the clear-text pairs are.
//!
//! wrk loads a copy of libssl of its own (`LD_LIBRARY_PATH`). The probes are attached
//! to the file nginx maps, for every process mapping it; with the same file, wrk's own
//! `SSL_read`/`SSL_write` would trap too, a cost a load generator on another host does
//! not pay (measured: about half the probe hits, BENCHMARKS.md *TLS pair*).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{Gateway, Results, Stack};

/// `pairs` flat-out pairs through the proxy's TLS listener, numbered on from
/// `first_pair`, into `results`.
pub(crate) fn rounds(
    stack: &mut Stack,
    results: &mut Results,
    first_pair: usize,
    pairs: usize,
) -> Result<()> {
    let clear = std::mem::replace(&mut stack.proxy_addr, stack.tls_addr);
    stack.gateway = Gateway::NginxTls;
    stack.wrk_libs = Some(private_libssl(&stack.dir)?);
    println!("bench: TLS pairs through https://{}/", stack.tls_addr);
    let result = stack.warm_up().and_then(|()| {
        (first_pair..first_pair + pairs).try_for_each(|pair| stack.flat_pair(results, pair))
    });
    stack.proxy_addr = clear;
    stack.gateway = Gateway::Nginx;
    stack.wrk_libs = None;
    result
}

/// `pairs` flat-out pairs through the proxy's HTTP/2 listener (over TLS),
/// h2load loading it, numbered on from `first_pair`, into `results`.
pub(crate) fn h2_rounds(
    stack: &mut Stack,
    results: &mut Results,
    first_pair: usize,
    pairs: usize,
) -> Result<()> {
    let clear = std::mem::replace(&mut stack.proxy_addr, stack.h2_addr);
    stack.gateway = Gateway::NginxH2;
    stack.wrk_libs = Some(private_libssl(&stack.dir)?);
    println!(
        "bench: HTTP/2 pairs through https://{}/ (h2load)",
        stack.h2_addr
    );
    let result = stack.warm_up().and_then(|()| {
        (first_pair..first_pair + pairs).try_for_each(|pair| stack.flat_pair(results, pair))
    });
    stack.proxy_addr = clear;
    stack.gateway = Gateway::Nginx;
    stack.wrk_libs = None;
    result
}

/// A directory under `dir` holding a copy of the libssl wrk links (h2load
/// links the same one).
fn private_libssl(dir: &Path) -> Result<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "ldd \"$(command -v wrk)\""])
        .output()
        .context("ldd wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let system = text
        .lines()
        .filter(|l| l.trim_start().starts_with("libssl.so"))
        .find_map(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(PathBuf::from)
        .with_context(|| format!("no libssl in `ldd wrk`:\n{text}"))?;
    let libs = dir.join("wrk-openssl");
    fs::create_dir_all(&libs)?;
    let name = system.file_name().context("libssl's file name")?;
    fs::copy(&system, libs.join(name)).with_context(|| format!("copying {}", system.display()))?;
    println!(
        "bench: wrk loads its own copy of {} (the probes stay off its calls)",
        system.display()
    );
    Ok(libs)
}
