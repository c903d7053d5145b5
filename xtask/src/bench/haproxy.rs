//! The HAProxy pairs of `cargo xtask bench`: Debian's HAProxy 2.6 (single process, 2
//! threads; `deploy/bench/haproxy.cfg`) in front of the same upstream nginx, baseline
//! against `gatescope --pid <haproxy>`, flat out, each pair with its stats round, exactly
//! as the nginx pairs. The nginx proxy stays up, idle, and is put back afterwards.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
};

use anyhow::{ensure, Context as _, Result};

use gatescope_tests::{http, util::free_port};

use super::{Gateway, Results, Stack, UPSTREAM_MARK};
use crate::{
    stack::{self, Template},
    util::{self, Guard},
};

const HAPROXY_CONF: Template = Template {
    path: "deploy/bench/haproxy.cfg",
    text: include_str!("../../../deploy/bench/haproxy.cfg"),
};

/// Debian's HAProxy (as tests/src/haproxy.rs).
const HAPROXY_BIN: &str = gatescope_tests::haproxy::HAPROXY_BIN;

/// `HAProxy version 2.6.12-1+deb12u1 2023/12/16 - https://haproxy.org/` -> `HAProxy 2.6.12-1+deb12u1`.
pub(crate) fn version() -> String {
    util::banner(Command::new(HAPROXY_BIN).arg("-v")).map_or_else(
        || "HAProxy unknown".into(),
        |v| {
            let words: Vec<&str> = v.split_whitespace().collect();
            match words.as_slice() {
                [name, "version", version, ..] => format!("{name} {version}"),
                _ => v,
            }
        },
    )
}

/// Renders the config into `dir`, runs `haproxy -db -f` on it and waits for `/healthz`.
fn start(dir: &Path, listen: SocketAddr, upstream_port: u16) -> Result<Guard> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf = dir.join("haproxy.cfg");
    let text = stack::render(
        &HAPROXY_CONF,
        &[
            ("listen_port", listen.port().to_string()),
            ("upstream_port", upstream_port.to_string()),
        ],
    )?;
    fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
    ensure!(
        Path::new(HAPROXY_BIN).exists(),
        "{HAPROXY_BIN} not found (cargo xtask setup installs Debian's haproxy)"
    );
    let mut haproxy = Guard::spawn(
        "haproxy",
        Command::new(HAPROXY_BIN).arg("-db").arg("-f").arg(&conf),
        &dir.join("haproxy.log"),
    )?;
    let took = util::wait_for(
        &format!("haproxy on {listen}"),
        &mut haproxy,
        stack::NGINX_READY,
        || stack::answers(listen, "/healthz"),
    )?;
    println!(
        "bench: haproxy pid {} answers on http://{listen}/ after {took:.1?}",
        haproxy.pid()
    );
    let resp = http::get(listen, "/").context("GET / through HAProxy")?;
    ensure!(
        resp.status == 200 && String::from_utf8_lossy(&resp.body).contains(UPSTREAM_MARK),
        "GET / through HAProxy answered {} {:?}, not the bench upstream's body",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    Ok(haproxy)
}

/// `pairs` flat-out pairs through HAProxy, numbered on from `first_pair`, into `results`.
pub(crate) fn rounds(
    stack: &mut Stack,
    results: &mut Results,
    first_pair: usize,
    pairs: usize,
) -> Result<()> {
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let upstream_port = stack.upstream_addr.port();
    let haproxy = start(&stack.dir.join("haproxy"), listen, upstream_port)?;
    let nginx = std::mem::replace(&mut stack.proxy, haproxy);
    let nginx_addr = std::mem::replace(&mut stack.proxy_addr, listen);
    stack.gateway = Gateway::Haproxy;
    let warm = stack.warm_up();
    let result = warm.and_then(|()| {
        (first_pair..first_pair + pairs).try_for_each(|pair| stack.flat_pair(results, pair))
    });
    let mut haproxy = std::mem::replace(&mut stack.proxy, nginx);
    stack.proxy_addr = nginx_addr;
    stack.gateway = Gateway::Nginx;
    let status = haproxy.stop(stack::STOP_GRACE)?;
    println!("bench: stopped haproxy ({status})");
    result
}
