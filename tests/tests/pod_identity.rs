//! Each gateway process carries its container and pod (issue 14):
//! `gatescope_gateway_info{pid,comm,container_id,pod_uid,namespace,pod}`.
//!
//! A real nginx is started as a kubelet and containerd would leave it: in a
//! real cgroup v2 directory shaped like kubelet's systemd driver's
//! (`kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<UID>
//! .slice/cri-containerd-<ID>.scope`), in its own mount namespace where
//! `/etc/hostname` holds the pod's name and the service account's namespace
//! file is mounted under `/run/secrets` (`/var/run` links there). A second
//! nginx runs on the host as it is. One agent observes both: the pod's
//! processes (master and workers) carry exactly those labels, the host's
//! carry empty ones, and Kong mode adds no such family. Each nginx's
//! per-listener series (`gatescope_downstream_bytes_total`) carry the same
//! `namespace`, `pod` and `container_id` as its processes.

use anyhow::{bail, ensure, Context, Result};
use gatescope_tests::agent::{http_get, Agent};
use gatescope_tests::metrics::DOWN_BYTES;
use gatescope_tests::nginx::{Nginx, NginxConfig, Tuning};
use gatescope_tests::util::{free_port, poll, TempDir};
use gatescope_tests::{upstream::Upstream, Scene};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

const INFO: &str = "gatescope_gateway_info";
const CONTAINER: &str = "4b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";
const UID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const NAMESPACE: &str = "shop";
const POD: &str = "web-7d9f8c-x2k4p";

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid host), from /proc/self/mountinfo.
fn cgroup2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() == Some("cgroup2") {
            if let Some(point) = left.split(' ').nth(4) {
                return Ok(PathBuf::from(point));
            }
        }
    }
    bail!("no cgroup2 mount in /proc/self/mountinfo")
}

/// The pod's cgroup directories, removed (innermost first) on drop, once
/// the processes in them are gone.
struct PodCgroup {
    dirs: Vec<PathBuf>,
}

impl PodCgroup {
    fn create() -> Result<Self> {
        let mut at = cgroup2_root()?;
        let uid = UID.replace('-', "_");
        let mut dirs = Vec::new();
        for part in [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{uid}.slice"),
            format!("cri-containerd-{CONTAINER}.scope"),
        ] {
            at.push(part);
            if !at.exists() {
                std::fs::create_dir(&at).with_context(|| format!("mkdir {}", at.display()))?;
                dirs.push(at.clone());
            }
        }
        Ok(PodCgroup { dirs })
    }

    fn scope(&self) -> Result<&Path> {
        self.dirs
            .last()
            .map(PathBuf::as_path)
            .context("the container's cgroup existed already")
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            // The processes may take a moment to leave after nginx stops.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A launcher for nginx "in the pod": joins the container's cgroup, makes a
/// private mount namespace with the pod's /etc/hostname and service-account
/// namespace file, then execs nginx with its arguments (same pid: the
/// master the harness waits on).
fn launcher(dir: &Path, scope: &Path) -> Result<PathBuf> {
    let hostname = dir.join("hostname");
    std::fs::write(&hostname, format!("{POD}\n"))?;
    let inner = format!(
        "set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
echo {NAMESPACE} > /run/secrets/kubernetes.io/serviceaccount/namespace
mount --bind {hostname} /etc/hostname
exec /usr/sbin/nginx \"$@\"",
        hostname = hostname.display(),
    );
    let script = format!(
        "#!/bin/sh\nset -e\necho $$ > {procs}\nexec unshare --mount sh -c '{inner}' nginx \"$@\"\n",
        procs = scope.join("cgroup.procs").display(),
    );
    let path = dir.join("pod-nginx");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// `gatescope_gateway_info`'s series by pid: their labels.
fn info_by_pid(agent: &Agent) -> Result<BTreeMap<u32, BTreeMap<String, String>>> {
    let s = agent.scrape()?;
    let mut out = BTreeMap::new();
    for sample in s.samples.iter().filter(|x| x.name == INFO) {
        ensure!(sample.value == 1.0, "{sample:?}");
        let pid: u32 = sample.label("pid").context("pid")?.parse()?;
        out.insert(pid, sample.labels.clone());
    }
    Ok(out)
}

#[test]
fn pod_processes_carry_their_container_and_pod() -> Result<()> {
    let cgroup = PodCgroup::create()?;
    let dir = TempDir::new("pod")?;
    let bin = launcher(dir.path(), cgroup.scope()?)?;
    let upstream = Upstream::start()?;
    let pod = Nginx::start_tuned(
        &NginxConfig {
            workers: 2,
            listen_port: free_port()?,
            upstream_port: upstream.port(),
        },
        &Tuning {
            bin: Some(bin),
            ..Tuning::default()
        },
    )?;
    let host = Scene::start(1)?;
    // The launcher did put nginx where the test says.
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", pod.master_pid()))?;
    ensure!(cg.contains(CONTAINER), "nginx's cgroup: {cg}");

    let pids = [pod.master_pid(), host.nginx.master_pid()];
    let agent = Agent::start(&pids, &[])?;
    let mut pod_pids = vec![pod.master_pid()];
    pod_pids.extend(pod.worker_pids());
    let mut host_pids = vec![host.nginx.master_pid()];
    host_pids.extend(host.nginx.worker_pids());
    let info = poll(Duration::from_secs(10), "every process's info", || {
        let info = info_by_pid(&agent)?;
        Ok((info.len() == pod_pids.len() + host_pids.len()).then_some(info))
    })
    .with_context(|| format!("{:?}", info_by_pid(&agent)))?;
    let want = |pid: u32, id: [&str; 4]| -> BTreeMap<String, String> {
        [
            ("pid", pid.to_string()),
            ("comm", "nginx".to_owned()),
            ("container_id", id[0].to_owned()),
            ("pod_uid", id[1].to_owned()),
            ("namespace", id[2].to_owned()),
            ("pod", id[3].to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    for pid in pod_pids {
        let labels = info
            .get(&pid)
            .with_context(|| format!("no info for {pid}"))?;
        ensure!(
            *labels == want(pid, [CONTAINER, UID, NAMESPACE, POD]),
            "pod process {pid}: {labels:?}"
        );
    }
    for pid in host_pids {
        let labels = info
            .get(&pid)
            .with_context(|| format!("no info for {pid}"))?;
        ensure!(
            *labels == want(pid, [""; 4]),
            "host process {pid}: {labels:?}"
        );
    }

    // Per-listener series carry the pod of the process that listens: one
    // request to each nginx, and each one's bytes are under its own labels.
    for addr in [pod.listen_addr(), host.nginx.listen_addr()] {
        let (code, _) = http_get(&addr, "/size/10")?;
        ensure!(code == 200, "{addr}: {code}");
    }
    let pod_listener = [
        ("listener", pod.listen_addr()),
        ("namespace", NAMESPACE.to_owned()),
        ("pod", POD.to_owned()),
        ("container_id", CONTAINER.to_owned()),
    ];
    let host_listener = [
        ("listener", host.nginx.listen_addr()),
        ("namespace", String::new()),
        ("pod", String::new()),
        ("container_id", String::new()),
    ];
    let pairs = |l: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut v = l.to_vec();
        v.push(("direction", "ingress".to_owned()));
        v
    };
    poll(Duration::from_secs(10), "each listener's bytes", || {
        let s = agent.scrape()?;
        let found = |l: &[(&'static str, String)]| -> Result<bool> {
            let l = pairs(l);
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Ok(s.get(DOWN_BYTES, &l)?.is_some_and(|v| v > 0.0))
        };
        Ok((found(&pod_listener)? && found(&host_listener)?).then_some(()))
    })
    .with_context(|| agent.scrape_text().unwrap_or_default())?;

    // Kong mode keeps Kong's label sets: no such family.
    let kong = Agent::start(&pids, &["--metrics-compat", "kong"])?;
    let text = kong.scrape_text()?;
    ensure!(!text.contains(INFO), "Kong mode exports {INFO}");
    drop(kong);
    drop(agent);
    drop(pod);
    drop(cgroup);
    Ok(())
}
