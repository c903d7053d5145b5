//! The TLS pairs of `cargo xtask bench`: the same nginx proxy on its TLS listener
//! (`listen ... ssl`, OpenSSL, a self-signed certificate), wrk over https, baseline
//! against gatescope, flat out, each pair with its stats round, so that the uprobes'
//! cost per request (`ssl_read`, `ssl_write`, `ssl_ret` in the bpf_stats table) and the
//! throughput ratio are measured as the clear-text pairs are.

use std::{fs, path::Path, process::Command};

use anyhow::{ensure, Context as _, Result};

use super::{Gateway, Results, Stack};

/// A self-signed certificate and key for 127.0.0.1 in `dir` (`bench.crt`, `bench.key`),
/// where the proxy's config expects them.
pub(crate) fn certificate(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(dir.join("bench.key"))
        .arg("-out")
        .arg(dir.join("bench.crt"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running openssl req (cargo xtask setup installs openssl)")?;
    ensure!(status.success(), "openssl req failed: {status}");
    Ok(())
}

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
    println!("bench: TLS pairs through https://{}/", stack.tls_addr);
    let result = stack.warm_up().and_then(|()| {
        (first_pair..first_pair + pairs).try_for_each(|pair| stack.flat_pair(results, pair))
    });
    stack.proxy_addr = clear;
    stack.gateway = Gateway::Nginx;
    result
}
