//! `cargo xtask demo`: nginx (2 workers) in front of an in-process upstream, gatescope
//! attached to nginx's master, some traffic, and a summary of what gatescope reports.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};

use gatescope_tests::{
    prom::Scrape,
    upstream::Upstream,
    util::{free_port, TempDir},
};

use crate::{
    demo_summary,
    stack::{self, Template},
    traffic, util, Compat,
};

pub const NGINX_CONF: Template = Template {
    path: "deploy/demo/nginx.conf",
    text: include_str!("../../deploy/demo/nginx.conf"),
};

pub struct DemoArgs {
    pub keep_running: bool,
    pub compat: Compat,
}

pub fn demo(agent: &Path, args: &DemoArgs) -> Result<()> {
    util::catch_signals();
    let mut dir = TempDir::new("demo")?;
    let result = run(agent, args, dir.path());
    if result.is_err() {
        dir.keep();
        eprintln!(
            "xtask: demo files and logs kept in {}",
            dir.path().display()
        );
    }
    result
}

fn run(agent: &Path, args: &DemoArgs, dir: &Path) -> Result<()> {
    let upstream =
        Upstream::start_answering(traffic::answer).context("starting the demo upstream")?;
    println!(
        "demo: upstream server on {} (thread in xtask)",
        upstream.addr()
    );
    let nginx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let (mut nginx, took) = stack::start_nginx(
        "nginx",
        &NGINX_CONF,
        dir,
        nginx_addr,
        &[("upstream_port", upstream.port().to_string())],
    )?;
    println!(
        "demo: nginx master pid {} (2 workers) answers on http://{nginx_addr}/ after {took:.1?}",
        nginx.pid()
    );

    let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let compat: &[&str] = match args.compat {
        Compat::Kong => &["--metrics-compat", "kong"],
        Compat::None => &[],
    };
    let (mut gatescope, took) = stack::start_gatescope(
        agent,
        nginx.pid(),
        metrics_addr,
        compat,
        &dir.join("gatescope.log"),
    )?;
    println!(
        "demo: gatescope (pid {}) serves metrics after {took:.1?}",
        gatescope.pid()
    );

    let counts = traffic::send(nginx_addr)?;
    println!(
        "demo: client sent {} requests over {} connections ({}): {} bytes sent, {} received",
        counts.requests,
        counts.connections,
        traffic::describe(),
        counts.bytes_sent,
        counts.bytes_received
    );
    let scrape = stack::settled_scrape(metrics_addr)?;
    let samples = Scrape::parse(&scrape)
        .with_context(|| format!("reading gatescope's metrics:\n{scrape}"))?
        .samples;
    let observed = demo_summary::Observed {
        listener: nginx_addr.to_string(),
        peer: upstream.addr(),
        client: &counts,
        upstream: upstream.stats(),
        upstream_codes: upstream.codes(),
    };
    let differences = demo_summary::print(&samples, args.compat, &observed);
    if differences.is_empty() {
        println!("demo: every expected value agrees with what the demo counted");
    } else {
        println!(
            "demo: {} value(s) differ from what the demo counted:",
            differences.len()
        );
        for d in &differences {
            println!("  {}: gatescope {}, demo {}", d.series, d.seen, d.expected);
        }
    }
    println!("demo: metrics at http://{metrics_addr}/metrics");

    if args.keep_running {
        println!(
            "demo: running (nginx http://{nginx_addr}/, logs in {}); press Ctrl-C to stop",
            dir.display()
        );
        while !util::interrupted() {
            for proc in [&mut gatescope, &mut nginx] {
                if let Some(status) = proc.exited()? {
                    return Err(proc.died(status));
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        println!();
    }

    stack::stop_gatescope(&mut gatescope)?;
    let nginx_status = nginx.stop(stack::STOP_GRACE)?;
    println!("demo: stopped gatescope (exit 0) and nginx ({nginx_status})");
    ensure!(
        differences.is_empty(),
        "{} of gatescope's values differ from the demo's counts (listed above)",
        differences.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_placeholder() {
        let text = stack::render(
            &NGINX_CONF,
            &[
                ("dir", "/tmp/d".into()),
                ("listen_port", "8080".into()),
                ("upstream_port", "9000".into()),
            ],
        )
        .unwrap();
        assert!(text.contains("listen 127.0.0.1:8080;"));
        assert!(text.contains("server 127.0.0.1:9000;"));
        assert!(text.contains("pid /tmp/d/nginx.pid;"));
        assert!(text.contains("location = /missing {"));
    }
}
