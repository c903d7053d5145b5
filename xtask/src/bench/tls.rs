//! The TLS pairs of `cargo xtask bench`: the same nginx proxy on its TLS listener
//! (`listen ... ssl`, OpenSSL, a self-signed certificate), wrk over https, baseline
//! against gatescope, flat out, each pair with its stats round, so that the uprobes'
//! cost per request (`ssl_read`, `ssl_write`, `ssl_ret` in the bpf_stats table) and the
//! throughput ratio are measured as the clear-text pairs are.

use anyhow::Result;

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
    println!("bench: TLS pairs through https://{}/", stack.tls_addr);
    let result = stack.warm_up().and_then(|()| {
        (first_pair..first_pair + pairs).try_for_each(|pair| stack.flat_pair(results, pair))
    });
    stack.proxy_addr = clear;
    stack.gateway = Gateway::Nginx;
    result
}
