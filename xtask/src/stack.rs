//! What `demo` and `bench` both run: nginx from a `deploy/` template, gatescope attached to
//! an nginx master, and scrapes of gatescope's `/metrics`. The command lines are the test
//! toolkit's; the processes are xtask's [`Guard`]s (own process group, stopped in order on
//! Ctrl-C), and readiness is an HTTP answer rather than the tests' /proc checks.

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use gatescope_tests::{agent, http, nginx};

use crate::util::{self, Guard};

pub const NGINX_READY: Duration = Duration::from_secs(10);
pub const GATESCOPE_READY: Duration = Duration::from_secs(30);
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// An nginx configuration template under `deploy/`, with `{{name}}` placeholders.
pub struct Template {
    /// Where it lives, for error messages.
    pub path: &'static str,
    pub text: &'static str,
}

/// Fills every `{{key}}` from `vars`; a placeholder left over is an error.
pub fn render(template: &Template, vars: &[(&str, String)]) -> Result<String> {
    let mut text = template.text.to_string();
    for (key, value) in vars {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    if let Some(at) = text.find("{{") {
        bail!(
            "{} has an unknown placeholder near {:?}",
            template.path,
            &text[at..text.len().min(at + 30)]
        );
    }
    Ok(text)
}

/// `GET path` on a fresh connection answered 200.
pub fn answers(addr: SocketAddr, path: &str) -> bool {
    http::get(addr, path).is_ok_and(|r| r.status == 200)
}

/// Renders `template` into `dir/nginx.conf` (`{{dir}}` is `dir`, `{{listen_port}}` the port
/// of `listen`, plus `vars`), runs nginx on it in the foreground with every file it writes in
/// `dir`, and waits until `GET /healthz` on `listen` answers 200. Returns nginx (its pid is
/// the master's) and how long it took to answer.
pub fn start_nginx(
    name: &str,
    template: &Template,
    dir: &Path,
    listen: SocketAddr,
    vars: &[(&str, String)],
) -> Result<(Guard, Duration)> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut all = vec![
        ("dir", dir.to_string_lossy().into_owned()),
        ("listen_port", listen.port().to_string()),
    ];
    all.extend(vars.iter().cloned());
    let conf = dir.join("nginx.conf");
    fs::write(&conf, render(template, &all)?)
        .with_context(|| format!("writing {}", conf.display()))?;
    let mut nginx = Guard::spawn(
        name,
        &mut nginx::command(Path::new("nginx"), &conf, dir),
        &dir.join("error.log"),
    )?;
    let took = util::wait_for(
        &format!("{name} on {listen}"),
        &mut nginx,
        NGINX_READY,
        || answers(listen, "/healthz"),
    )?;
    Ok((nginx, took))
}

/// Starts `agent --pid <pid> --listen <metrics> <extra>` with its output in `log` and waits
/// until `/metrics` answers. Returns the agent and how long it took to answer.
pub fn start_gatescope(
    agent: &Path,
    pid: u32,
    metrics: SocketAddr,
    extra: &[&str],
    log: &Path,
) -> Result<(Guard, Duration)> {
    let mut gatescope = Guard::spawn(
        "gatescope",
        Command::new(agent).args(agent::args(&[pid], &metrics.to_string(), extra)),
        log,
    )?;
    let took = util::wait_for(
        &format!("gatescope's http://{metrics}/metrics"),
        &mut gatescope,
        GATESCOPE_READY,
        || answers(metrics, "/metrics"),
    )?;
    Ok((gatescope, took))
}

/// SIGTERM; gatescope must detach and exit 0.
pub fn stop_gatescope(gatescope: &mut Guard) -> Result<()> {
    let status = gatescope.stop(STOP_GRACE)?;
    if !status.success() {
        bail!(
            "gatescope exited with {status} on SIGTERM (it should exit 0); last lines of {}:\n{}",
            gatescope.log.display(),
            util::tail(&gatescope.log, 30)
        );
    }
    Ok(())
}

pub fn scrape(addr: SocketAddr) -> Result<String> {
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

/// Scrapes until two scrapes 1.2 s apart agree (events still in flight have landed, and the
/// counters the agent copies from kernel maps once a second have moved), at most 8 s.
pub fn settled_scrape(addr: SocketAddr) -> Result<String> {
    let start = Instant::now();
    let strip = |t: &str| -> String { t.lines().filter(|l| !l.starts_with('#')).collect() };
    let mut last = scrape(addr)?;
    loop {
        thread::sleep(Duration::from_millis(1200));
        let now = scrape(addr)?;
        if strip(&now) == strip(&last) || start.elapsed() > Duration::from_secs(8) {
            return Ok(now);
        }
        last = now;
    }
}

/// A self-signed certificate and key for 127.0.0.1 and localhost in `dir`
/// (`{stem}.crt`, `{stem}.key`), for the TLS listeners of the bench and the demo.
pub fn self_signed(dir: &Path, stem: &str) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    gatescope_tests::tls::write_self_signed(
        &dir.join(format!("{stem}.crt")),
        &dir.join(format!("{stem}.key")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_placeholder() {
        let t = Template {
            path: "t.conf",
            text: "listen 127.0.0.1:{{port}}; pid {{dir}}/x.pid; {{port}}",
        };
        let text = render(&t, &[("port", "80".into()), ("dir", "/d".into())]).unwrap();
        assert_eq!(text, "listen 127.0.0.1:80; pid /d/x.pid; 80");
        let err = render(&t, &[("port", "80".into())]).unwrap_err();
        assert!(err.to_string().contains("t.conf"), "{err}");
    }
}
