//! Two gateway pods on one node (issue 14): each pod has its own network
//! namespace, so both listen on the same port. Here two `ip netns`
//! namespaces each run their own nginx on the same address and port, and one
//! agent with `--discover` observes both. Each namespace's listener has its
//! own series, told apart by the `netns` label (the namespace's inode, as
//! `stat /run/netns/NAME` gives it), and each series holds exactly its own
//! nginx's bytes as its access log counts them: nothing is mixed.
//!
//! A third namespace runs the same nginx under a name the agent does not
//! discover and takes traffic on the same port: none of it may show, which
//! is the kernel's claim of passive opens by namespace and port.

use anyhow::{ensure, Context, Result};
use gatescope_tests::access_log::AccessLogEntry;
use gatescope_tests::agent::Agent;
use gatescope_tests::metrics::DOWN_BYTES;
use gatescope_tests::nginx::{Nginx, NginxConfig, RenamedBinary, Tuning};
use gatescope_tests::util::{free_port, poll, TempDir};
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A network namespace made with `ip netns add`, loopback up; deleted on
/// drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn create(tag: &str) -> Result<Self> {
        let name = format!("gs-{tag}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// The namespace's inode: what the kernel's `net->ns.inum` holds.
    fn inode(&self) -> Result<u64> {
        Ok(std::fs::metadata(format!("/run/netns/{}", self.name))?.ino())
    }

    /// A launcher that runs nginx in this namespace: `ip netns exec` execs
    /// it in place, so the harness's child is nginx's master.
    fn launcher(&self, dir: &Path, nginx: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("in-{}", self.name));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
                self.name,
                nginx.display()
            ),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    /// A client connection from inside the namespace that sends nothing and
    /// stays open until the child is killed.
    fn idle_connection(&self, port: u16) -> Result<Child> {
        let code = format!(
            "import socket,sys,time\ns=socket.create_connection(('127.0.0.1',{port}))\n\
             print('up',flush=True)\ntime.sleep(120)"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", &code])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        ensure!(
            line.trim() == "up",
            "idle client in {}: {line:?}",
            self.name
        );
        Ok(child)
    }

    /// `n` one-shot GETs from inside the namespace; each status must be 200.
    fn requests(&self, port: u16, n: usize) -> Result<()> {
        for i in 0..n {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.name,
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                ])
                .args(["-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/ns/{i}?q={}", self.name))
                .output()?;
            let code = String::from_utf8_lossy(&out.stdout);
            ensure!(
                code == "200",
                "curl in {}: {code} {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// nginx in `ns` on 127.0.0.1:`port`, answering `/ns/` itself (no upstream
/// in the namespace), run as `bin`.
fn nginx_in(ns: &NetNs, dir: &Path, bin: &Path, port: u16) -> Result<Nginx> {
    Nginx::start_tuned(
        &NginxConfig {
            workers: 2,
            listen_port: port,
            // Never contacted: every request is for /ns/.
            upstream_port: 9,
        },
        &Tuning {
            bin: Some(ns.launcher(dir, bin)?),
            server_extra: "location /ns/ { return 200 \"served in a namespace of its own\\n\"; }",
            ..Tuning::default()
        },
    )
}

/// (request bytes, response bytes) of `n` lines of `nginx`'s access log.
fn logged(nginx: &Nginx, n: usize) -> Result<(f64, f64)> {
    let lines: Vec<AccessLogEntry> = nginx.wait_access_log(n, Duration::from_secs(10))?;
    ensure!(lines.len() == n, "{} log lines, want {n}", lines.len());
    ensure!(lines.iter().all(|l| l.status == 200), "{lines:?}");
    Ok((
        lines.iter().map(|l| l.request_length as f64).sum(),
        lines.iter().map(|l| l.bytes_sent as f64).sum(),
    ))
}

#[test]
fn two_namespaces_on_one_port_never_share_a_series() -> Result<()> {
    let dir = TempDir::new("netns")?;
    let port = free_port()?;
    let (a, b, other) = (
        NetNs::create("a")?,
        NetNs::create("b")?,
        NetNs::create("o")?,
    );
    let gateway = RenamedBinary::new("gsns")?;
    let agent = Agent::start(&[], &["--discover", gateway.name()])?;
    let nginx_a = nginx_in(&a, dir.path(), gateway.path(), port)?;
    let nginx_b = nginx_in(&b, dir.path(), gateway.path(), port)?;
    // Not discovered: its own name.
    let stranger = RenamedBinary::new("gsot")?;
    let nginx_o = nginx_in(&other, dir.path(), stranger.path(), port)?;

    // Different counts, so a mix-up cannot balance out.
    let (n_a, n_b, n_o) = (7, 3, 5);
    a.requests(port, n_a)?;
    b.requests(port, n_b)?;
    other.requests(port, n_o)?;
    let want_a = logged(&nginx_a, n_a)?;
    let want_b = logged(&nginx_b, n_b)?;
    logged(&nginx_o, n_o)?;

    let listener = format!("127.0.0.1:{port}");
    let (ino_a, ino_b) = (a.inode()?.to_string(), b.inode()?.to_string());
    let bytes = |s: &gatescope_tests::prom::Scrape, netns: &str| -> Result<(f64, f64)> {
        let get = |dir: &str| {
            s.get_or_zero(
                DOWN_BYTES,
                &[
                    ("listener", listener.as_str()),
                    ("netns", netns),
                    ("direction", dir),
                ],
            )
        };
        Ok((get("ingress")?, get("egress")?))
    };
    let scrape = poll(Duration::from_secs(10), "both namespaces' bytes", || {
        let s = agent.scrape()?;
        Ok((bytes(&s, &ino_a)? == want_a && bytes(&s, &ino_b)? == want_b).then_some(s))
    })
    .with_context(|| {
        format!(
            "want {want_a:?} in netns {ino_a} and {want_b:?} in netns {ino_b}:\n{}",
            agent.scrape_text().unwrap_or_default()
        )
    })?;

    // Every series of the family is one of the two, and names its listener:
    // nothing of the undiscovered namespace, nothing under `*:port`.
    let series: Vec<_> = scrape.matching(DOWN_BYTES, &[]).collect();
    for s in &series {
        ensure!(
            s.label("listener") == Some(listener.as_str())
                && [ino_a.as_str(), ino_b.as_str()].contains(&s.label("netns").unwrap_or("")),
            "a series of neither namespace: {s:?}"
        );
    }
    ensure!(series.len() == 4, "{series:?}");
    // The agent saw both listeners, each in its namespace.
    ensure!(
        scrape.get_or_zero("gatescope_listen_sockets", &[])? == 2.0,
        "{}",
        scrape.text
    );
    // Each client connection was accepted once, by its own nginx.
    ensure!(
        scrape.get_or_zero("gatescope_downstream_connections_accepted_total", &[])?
            == (n_a + n_b) as f64,
        "{}",
        scrape.text
    );

    // An idle client connection in the discovered namespace `a` and one in
    // the undiscovered one on the same port: the agent tracks exactly the
    // first. Keyed by port alone, the kernel would claim both.
    let mut idle_a = a.idle_connection(port)?;
    let mut idle_o = other.idle_connection(port)?;
    let tracked = [("role", "downstream")];
    let active = [("state", "active")];
    let gauges = poll(
        Duration::from_secs(10),
        "one idle connection tracked",
        || {
            let s = agent.scrape()?;
            let g = (
                s.get_or_zero("gatescope_connections_tracked", &tracked)?,
                s.get_or_zero("gatescope_downstream_connections", &active)?,
            );
            Ok((g == (1.0, 1.0)).then_some(g))
        },
    );
    // Still one a while later: the other namespace's open record, had the
    // kernel sent one, would have been read by now.
    std::thread::sleep(Duration::from_secs(1));
    let later = agent.scrape();
    let _ = (idle_a.kill(), idle_o.kill(), idle_a.wait(), idle_o.wait());
    gauges.with_context(|| agent.scrape_text().unwrap_or_default())?;
    let later = later?;
    ensure!(
        later.get_or_zero("gatescope_connections_tracked", &tracked)? == 1.0,
        "{}",
        later.text
    );

    println!(
        "netns {ino_a}: {want_a:?} bytes in {n_a} requests; netns {ino_b}: {want_b:?} in {n_b}; \
         a third namespace's {n_o} requests on the same port unseen"
    );
    drop(agent);
    drop((nginx_a, nginx_b, nginx_o));
    Ok(())
}
