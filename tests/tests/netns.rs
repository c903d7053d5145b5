//! Two gateway pods on one node (issue 14): each pod has its own network
//! namespace, so both listen on the same port. Here two `ip netns`
//! namespaces, each joined to the host by a veth pair as a pod is, run their
//! own nginx on `0.0.0.0` and the same port, and one agent with `--discover`
//! observes both; clients connect from the host through the veths. Each namespace's listener has its
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
use gatescope_tests::metrics::{DOWN_BYTES, DOWN_WIRE_PACKETS, UP_BYTES};
use gatescope_tests::netns::VethNs;
use gatescope_tests::nginx::{Nginx, NginxConfig, RenamedBinary, Tuning};
use gatescope_tests::prom::Scrape;
use gatescope_tests::util::{free_port, is_listening_seen_by, poll, TempDir};
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A network namespace joined to the host by a veth pair, as a pod is.
struct NetNs {
    veth: VethNs,
    name: String,
}

/// A child process killed (and reaped) on drop, whatever the test's
/// outcome: children hold the test's lock file open.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = (self.0.kill(), self.0.wait());
    }
}

impl NetNs {
    fn create() -> Result<Self> {
        let veth = VethNs::create()?;
        let name = veth.name().to_owned();
        Ok(NetNs { veth, name })
    }

    /// Where the host reaches the namespace's nginx.
    fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.veth.remote_addr())
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

    /// A client connection from the host that sends nothing and stays open
    /// until the child is killed.
    fn idle_connection(&self, port: u16) -> Result<Killed> {
        let code = format!(
            "import socket,sys,time\ns=socket.create_connection(('{}',{port}))\n\
             print('up',flush=True)\ntime.sleep(120)",
            self.veth.remote_addr()
        );
        let mut child = Command::new("python3")
            .args(["-c", &code])
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().context("stdout")?;
        let child = Killed(child);
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        ensure!(
            line.trim() == "up",
            "idle client of {}: {line:?}",
            self.name
        );
        Ok(child)
    }

    /// A Python HTTP server on 127.0.0.1:`port` in the namespace: the
    /// upstream its nginx proxies `/up/` to (it answers 404: it serves an
    /// empty directory). Killed on drop.
    fn upstream(&self, dir: &Path, port: u16) -> Result<Killed> {
        let root = dir.join(format!("www-{}", self.name));
        std::fs::create_dir_all(&root)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-m", "http.server"])
            .args([&port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let child = Killed(child);
        let pid = child.0.id().to_string();
        poll(Duration::from_secs(10), "the namespace's upstream", || {
            Ok(is_listening_seen_by(&pid, [127, 0, 0, 1].into(), port).then_some(()))
        })?;
        Ok(child)
    }

    /// `n` one-shot GETs of `prefix<i>` from the host, through the veth;
    /// each status must be `want`.
    fn requests(&self, port: u16, prefix: &str, n: usize, want: &str) -> Result<()> {
        for i in 0..n {
            let out = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!(
                    "http://{}{prefix}{i}?q={}",
                    self.addr(port),
                    self.name
                ))
                .output()?;
            let code = String::from_utf8_lossy(&out.stdout);
            ensure!(
                code == want,
                "curl to {}: {code} {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// nginx in `ns` on 0.0.0.0:`port`, answering `/ns/` itself and
/// proxying the rest to 127.0.0.1:`upstream` in its namespace, run as `bin`.
fn nginx_in(ns: &NetNs, dir: &Path, bin: &Path, (port, upstream): (u16, u16)) -> Result<Nginx> {
    Nginx::start_tuned(
        &NginxConfig {
            workers: 2,
            listen_port: port,
            upstream_port: upstream,
        },
        &Tuning {
            bin: Some(ns.launcher(dir, bin)?),
            listen_host: "0.0.0.0",
            server_extra: "location /ns/ { return 200 \"served in a namespace of its own\\n\"; }",
            ..Tuning::default()
        },
    )
}

/// `family`'s two series of socket `who` in namespace `netns`, one per
/// direction of `dirs`.
fn sums(
    s: &Scrape,
    family: &str,
    who: (&str, &str),
    netns: &str,
    dirs: [&str; 2],
) -> Result<(f64, f64)> {
    let get = |dir: &str| s.get_or_zero(family, &[who, ("netns", netns), ("direction", dir)]);
    Ok((get(dirs[0])?, get(dirs[1])?))
}

/// What `n` lines of `nginx`'s access log sum to: the client side's
/// (request, response) bytes and the upstream side's (sent, received).
fn logged(nginx: &Nginx, n: usize) -> Result<((f64, f64), (f64, f64))> {
    let lines: Vec<AccessLogEntry> = nginx.wait_access_log(n, Duration::from_secs(10))?;
    ensure!(lines.len() == n, "{} log lines, want {n}", lines.len());
    let sum = |f: fn(&AccessLogEntry) -> u64| lines.iter().map(|l| f(l) as f64).sum::<f64>();
    Ok((
        (sum(|l| l.request_length), sum(|l| l.bytes_sent)),
        (
            sum(|l| l.upstream_bytes_sent),
            sum(|l| l.upstream_bytes_received),
        ),
    ))
}

#[test]
fn two_namespaces_on_one_port_never_share_a_series() -> Result<()> {
    let dir = TempDir::new("netns")?;
    // The same listening port, and the same upstream address, in each.
    let (port, up_port) = (free_port()?, free_port()?);
    let (a, b, other) = (NetNs::create()?, NetNs::create()?, NetNs::create()?);
    let gateway = RenamedBinary::new("gsns")?;
    let agent = Agent::start(&[], &["--discover", gateway.name()])?;
    let upstreams = [
        a.upstream(dir.path(), up_port)?,
        b.upstream(dir.path(), up_port)?,
    ];
    let ports = (port, up_port);
    let nginx_a = nginx_in(&a, dir.path(), gateway.path(), ports)?;
    let nginx_b = nginx_in(&b, dir.path(), gateway.path(), ports)?;
    // Not discovered: its own name.
    let stranger = RenamedBinary::new("gsot")?;
    let nginx_o = nginx_in(&other, dir.path(), stranger.path(), ports)?;

    // Different counts, so a mix-up cannot balance out: answered by nginx,
    // then proxied (the upstream's 404).
    let (n_a, n_b, n_o) = ((7, 2), (3, 4), 5);
    for (ns, (own, proxied)) in [(&a, n_a), (&b, n_b)] {
        ns.requests(port, "/ns/", own, "200")?;
        ns.requests(port, "/up/", proxied, "404")?;
    }
    other.requests(port, "/ns/", n_o, "200")?;
    let (want_a, up_a) = logged(&nginx_a, n_a.0 + n_a.1)?;
    let (want_b, up_b) = logged(&nginx_b, n_b.0 + n_b.1)?;
    logged(&nginx_o, n_o)?;
    ensure!(up_a.0 > 0.0 && up_b.0 > 0.0, "no upstream bytes logged");

    let listener = format!("0.0.0.0:{port}");
    let (ino_a, ino_b) = (a.inode()?.to_string(), b.inode()?.to_string());
    let bytes = |s: &Scrape, netns: &str| {
        sums(
            s,
            DOWN_BYTES,
            ("listener", &listener),
            netns,
            ["ingress", "egress"],
        )
    };
    // The same for the upstream peer, which both reach at the same address:
    // (sent to it, received from it).
    let peer = format!("127.0.0.1:{up_port}");
    let peer_bytes =
        |s: &Scrape, netns: &str| sums(s, UP_BYTES, ("peer", &peer), netns, ["egress", "ingress"]);
    let scrape = poll(Duration::from_secs(10), "both namespaces' bytes", || {
        let s = agent.scrape()?;
        Ok((bytes(&s, &ino_a)? == want_a
            && bytes(&s, &ino_b)? == want_b
            && peer_bytes(&s, &ino_a)? == up_a
            && peer_bytes(&s, &ino_b)? == up_b)
            .then_some(s))
    })
    .with_context(|| {
        format!(
            "want {want_a:?} and upstream {up_a:?} in netns {ino_a}, \
             {want_b:?} and upstream {up_b:?} in netns {ino_b}:\n{}",
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
    let peers: Vec<_> = scrape.matching(UP_BYTES, &[]).collect();
    ensure!(
        peers.len() == 4 && peers.iter().all(|s| s.label("peer") == Some(peer.as_str())),
        "{peers:?}"
    );
    // The wire view counts packets on the host's interfaces by port alone:
    // with two namespaces on the port, its series say so instead of naming
    // one of them.
    // (Its counters are read once a second.)
    let any = format!("*:{port}");
    let wired = poll(Duration::from_secs(10), "the wire view's series", || {
        let s = agent.scrape()?;
        Ok((s.matching(DOWN_WIRE_PACKETS, &[]).count() > 0).then_some(s))
    })?;
    let wire: Vec<_> = wired.matching(DOWN_WIRE_PACKETS, &[]).collect();
    ensure!(
        wire.iter()
            .all(|s| s.label("listener") == Some(any.as_str()) && s.label("netns") == Some("")),
        "wire series: {wire:?}"
    );
    // The agent saw both listeners, each in its namespace.
    ensure!(
        scrape.get_or_zero("gatescope_listen_sockets", &[])? == 2.0,
        "{}",
        scrape.text
    );
    // Each client connection was accepted once, by its own nginx.
    ensure!(
        scrape.get_or_zero("gatescope_downstream_connections_accepted_total", &[])?
            == (n_a.0 + n_a.1 + n_b.0 + n_b.1) as f64,
        "{}",
        scrape.text
    );

    // An idle client connection in the discovered namespace `a` and one in
    // the undiscovered one on the same port: the agent tracks exactly the
    // first. Keyed by port alone, the kernel would claim both.
    let idle = [a.idle_connection(port)?, other.idle_connection(port)?];
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
    drop(idle);
    gauges.with_context(|| agent.scrape_text().unwrap_or_default())?;
    let later = later?;
    ensure!(
        later.get_or_zero("gatescope_connections_tracked", &tracked)? == 1.0,
        "{}",
        later.text
    );

    println!(
        "netns {ino_a}: {want_a:?} bytes in {n_a:?} requests, upstream {up_a:?}; \
         netns {ino_b}: {want_b:?} in {n_b:?}, upstream {up_b:?}; \
         a third namespace's {n_o} requests on the same port unseen"
    );
    drop(agent);
    drop((nginx_a, nginx_b, nginx_o));
    drop(upstreams);
    Ok(())
}
