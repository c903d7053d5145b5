//! `cargo xtask demo`: nginx (2 workers) in front of an in-process upstream, gatescope
//! attached to nginx's master, some traffic, and a summary of what gatescope reports.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    http, metrics, report, traffic, upstream,
    util::{self, Guard, TempDir},
    Compat,
};

const NGINX_CONF: &str = include_str!("../../deploy/demo/nginx.conf");
const NGINX_READY: Duration = Duration::from_secs(10);
const GATESCOPE_READY: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct DemoArgs {
    pub keep_running: bool,
    pub compat: Compat,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C (and SIGTERM/SIGHUP) only set a flag: the demo then stops its children in order.
fn catch_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn demo(agent: &Path, args: &DemoArgs) -> Result<()> {
    catch_signals();
    let mut dir = TempDir::new("gatescope-demo")?;
    let result = run(agent, args, &dir.path);
    if result.is_err() {
        dir.keep();
        eprintln!("xtask: demo files and logs kept in {}", dir.path.display());
    }
    result
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to find a free port")?
        .local_addr()?
        .port())
}

pub fn render(template: &str, dir: &Path, listen_port: u16, upstream_port: u16) -> Result<String> {
    let text = template
        .replace("{{dir}}", &dir.to_string_lossy())
        .replace("{{listen_port}}", &listen_port.to_string())
        .replace("{{upstream_port}}", &upstream_port.to_string());
    if let Some(at) = text.find("{{") {
        bail!(
            "deploy/demo/nginx.conf has an unknown placeholder near {:?}",
            &text[at..text.len().min(at + 30)]
        );
    }
    Ok(text)
}

/// Polls until `ready` (or `check` fails, e.g. the process died); returns how long it took.
fn wait_for(
    what: &str,
    proc: &mut Guard,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(start.elapsed());
        }
        if let Some(status) = proc.exited()? {
            return Err(proc.died(status)).with_context(|| format!("waiting for {what}"));
        }
        check_interrupted()?;
        thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{what} did not answer within {timeout:?}; last lines of {}:\n{}",
        proc.log.display(),
        util::tail(&proc.log, 30)
    )
}

fn answers(addr: SocketAddr, path: &str) -> bool {
    http::get(addr, path).is_ok_and(|r| r.status == 200)
}

fn scrape(addr: SocketAddr) -> Result<String> {
    let resp =
        http::get(addr, "/metrics").with_context(|| format!("scraping http://{addr}/metrics"))?;
    if resp.status != 200 {
        bail!("http://{addr}/metrics answered {}", resp.status);
    }
    let content_type = resp.head.header("content-type").unwrap_or("(none)");
    if !content_type.contains("version=0.0.4") {
        eprintln!(
            "xtask: warning: /metrics has Content-Type {content_type}, not Prometheus text 0.0.4"
        );
    }
    Ok(String::from_utf8_lossy(&resp.body).into_owned())
}

/// Scrapes until two scrapes 500 ms apart agree (events still in flight have landed), at most 5 s.
fn settled_scrape(addr: SocketAddr) -> Result<String> {
    let start = Instant::now();
    let strip = |t: &str| -> String { t.lines().filter(|l| !l.starts_with('#')).collect() };
    let mut last = scrape(addr)?;
    loop {
        thread::sleep(Duration::from_millis(500));
        let now = scrape(addr)?;
        if strip(&now) == strip(&last) || start.elapsed() > Duration::from_secs(5) {
            return Ok(now);
        }
        last = now;
    }
}

fn run(agent: &Path, args: &DemoArgs, dir: &Path) -> Result<()> {
    let upstream = upstream::start().context("starting the demo upstream")?;
    let nginx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        render(NGINX_CONF, dir, nginx_addr.port(), upstream.addr.port())?,
    )?;
    println!(
        "demo: upstream server on {} (thread in xtask)",
        upstream.addr
    );

    let mut nginx = Guard::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log")),
        &dir.join("error.log"),
    )?;
    let took = wait_for(
        &format!("nginx on {nginx_addr}"),
        &mut nginx,
        NGINX_READY,
        || answers(nginx_addr, "/healthz"),
    )?;
    println!(
        "demo: nginx master pid {} (2 workers) answers on http://{nginx_addr}/ after {took:.1?}",
        nginx.pid()
    );

    let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mut cmd = Command::new(agent);
    cmd.arg("--pid")
        .arg(nginx.pid().to_string())
        .arg("--listen")
        .arg(metrics_addr.to_string());
    if args.compat == Compat::Kong {
        cmd.args(["--metrics-compat", "kong"]);
    }
    let mut gatescope = Guard::spawn("gatescope", &mut cmd, &dir.join("gatescope.log"))?;
    let took = wait_for(
        &format!("gatescope's http://{metrics_addr}/metrics"),
        &mut gatescope,
        GATESCOPE_READY,
        || answers(metrics_addr, "/metrics"),
    )?;
    println!(
        "demo: gatescope (pid {}) serves metrics after {took:.1?}",
        gatescope.pid()
    );

    let counts = traffic::send(nginx_addr)?;
    println!(
        "demo: client sent {} requests over {} connections ({} keep-alive x {} requests, {} one-shot): {} bytes sent, {} received",
        counts.requests,
        counts.connections,
        traffic::KEEPALIVE_CONNECTIONS,
        traffic::REQUESTS_PER_KEEPALIVE,
        traffic::ONE_SHOT_CONNECTIONS,
        counts.bytes_sent,
        counts.bytes_received
    );
    let samples = metrics::parse(&settled_scrape(metrics_addr)?);
    let observed = report::Observed {
        listener: nginx_addr.to_string(),
        peer: upstream.addr.to_string(),
        client: &counts,
        upstream: &upstream.stats,
    };
    let differing = report::print(&samples, args.compat, &observed);
    if differing > 0 {
        println!("demo: {differing} value(s) differ from what the demo counted (marked \"<-\")");
    }
    println!("demo: metrics at http://{metrics_addr}/metrics");

    if args.keep_running {
        println!(
            "demo: running (nginx http://{nginx_addr}/, logs in {}); press Ctrl-C to stop",
            dir.display()
        );
        while !INTERRUPTED.load(Ordering::SeqCst) {
            for proc in [&mut gatescope, &mut nginx] {
                if let Some(status) = proc.exited()? {
                    return Err(proc.died(status));
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        println!();
    }

    let status = gatescope.stop(STOP_GRACE)?;
    if !status.success() {
        bail!(
            "gatescope exited with {status} on SIGTERM (it should exit 0); last lines of {}:\n{}",
            gatescope.log.display(),
            util::tail(&gatescope.log, 30)
        );
    }
    let nginx_status = nginx.stop(STOP_GRACE)?;
    println!("demo: stopped gatescope ({status}) and nginx ({nginx_status})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_placeholder() {
        let text = render(NGINX_CONF, Path::new("/tmp/d"), 8080, 9000).unwrap();
        assert!(text.contains("listen 127.0.0.1:8080;"));
        assert!(text.contains("server 127.0.0.1:9000;"));
        assert!(text.contains("pid /tmp/d/nginx.pid;"));
        assert!(render("{{nope}}", Path::new("/"), 1, 2).is_err());
    }
}
