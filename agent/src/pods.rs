//! Which container and pod a gateway process runs in (issue 14), from the
//! node alone, as Beyla and Coroot do: the container id and the pod UID from
//! the process's cgroup path as kubelet and containerd or CRI-O write it, the
//! pod's namespace from the service-account file Kubernetes mounts into the
//! container, and the pod's name from the container's `/etc/hostname` (the
//! kubelet writes the pod name there; a host-network pod shows the node's).
//!
//! Every value is checked against the shape Kubernetes gives it before it
//! becomes a label: a container writes its own files, and a value that does
//! not fit is left empty rather than exported.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::Path,
};

use crate::procfs::Proc;

/// A gateway process as `gatescope_gateway_info` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gateway {
    /// /proc/PID/comm.
    pub comm: String,
    pub identity: PodIdentity,
}

/// The live gateway processes and their identities, read once per process
/// (a process does not change container or pod).
#[derive(Debug, Default)]
pub struct Gateways {
    proc: Proc,
    known: BTreeMap<u32, Gateway>,
}

impl Gateways {
    pub fn new(proc: Proc) -> Self {
        Gateways {
            proc,
            known: BTreeMap::new(),
        }
    }

    /// The processes alive now are `live`: reads the new ones, forgets the
    /// gone. Whether anything changed.
    pub fn update(&mut self, live: &[u32]) -> bool {
        let before = self.known.len();
        let live_set: HashSet<u32> = live.iter().copied().collect();
        self.known.retain(|pid, _| live_set.contains(pid));
        let mut changed = self.known.len() != before;
        for &pid in live {
            if self.known.contains_key(&pid) {
                continue;
            }
            let comm = fs::read_to_string(self.proc.pid_dir(pid).join("comm"))
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_default();
            let identity = PodIdentity::of(&self.proc, pid);
            self.known.insert(pid, Gateway { comm, identity });
            changed = true;
        }
        changed
    }

    /// The identity of gateway process `pid`: as read when it was first
    /// seen, or read now for one the next update has yet to see (a gateway
    /// that just started and listened).
    pub fn identity(&self, pid: u32) -> PodIdentity {
        match self.known.get(&pid) {
            Some(g) => g.identity.clone(),
            None => PodIdentity::of(&self.proc, pid),
        }
    }

    /// The live gateway processes, by pid.
    pub fn list(&self) -> impl Iterator<Item = (u32, &Gateway)> {
        self.known.iter().map(|(pid, g)| (*pid, g))
    }
}

/// A process's container and pod; empty strings where unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    /// The runtime's container id (64 hex digits).
    pub container_id: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
}

/// Where Kubernetes mounts the service account's namespace in a container
/// (`/var/run/secrets/...`), under both names: in most images `/var/run` is
/// a symbolic link to `/run`, and an absolute link followed under
/// /proc/PID/root resolves in the reader's root, not the container's, so
/// the mount is found at `run/...` there.
const SA_NAMESPACE: [&str; 2] = [
    "run/secrets/kubernetes.io/serviceaccount/namespace",
    "var/run/secrets/kubernetes.io/serviceaccount/namespace",
];

impl PodIdentity {
    /// Reads process `pid`'s identity through `proc` (its cgroup file, and
    /// its root for the files of its container). A process in no container
    /// has an empty identity.
    pub fn of(proc: &Proc, pid: u32) -> PodIdentity {
        let dir = proc.pid_dir(pid);
        let Ok(cgroup) = fs::read_to_string(dir.join("cgroup")) else {
            return PodIdentity::default();
        };
        let (container_id, pod_uid) = from_cgroup(&cgroup);
        let mut id = PodIdentity {
            container_id: container_id.unwrap_or_default(),
            pod_uid: pod_uid.unwrap_or_default(),
            ..PodIdentity::default()
        };
        if !id.pod_uid.is_empty() {
            // /proc/PID/root is the process's root in its mount namespace:
            // the container's own files.
            let root = dir.join("root");
            id.namespace = SA_NAMESPACE
                .iter()
                .map(|p| read_name(&root.join(p), 63))
                .find(|n| !n.is_empty())
                .unwrap_or_default();
            id.pod = read_name(&root.join("etc/hostname"), 253);
        }
        id
    }
}

/// The container id and the pod UID in a /proc/PID/cgroup text (cgroup v2's
/// `0::` line first, then v1's lines). Shapes (kubelet's cgroup drivers,
/// containerd, CRI-O, Docker):
/// - systemd: `/kubepods.slice/kubepods-burstable.slice/
///   kubepods-burstable-pod<UID, '_' for '-'>.slice/cri-containerd-<ID>.scope`
///   (`crio-<ID>.scope`, `docker-<ID>.scope`);
/// - cgroupfs: `/kubepods/burstable/pod<UID>/<ID>`;
/// - Docker outside Kubernetes: `/system.slice/docker-<ID>.scope`, no pod.
pub fn from_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let mut lines: Vec<&str> = text.lines().collect();
    // The unified hierarchy first: under cgroup v2 it is the only line.
    lines.sort_by_key(|l| !l.starts_with("0::"));
    for line in lines {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let container = segments.iter().rev().find_map(|s| container_id(s));
        let kube = segments.first().is_some_and(|s| s.starts_with("kubepods"));
        let pod = kube
            .then(|| segments.iter().find_map(|s| pod_uid(s)))
            .flatten();
        if container.is_some() || pod.is_some() {
            return (container, pod);
        }
    }
    (None, None)
}

/// A container's cgroup directory: `<runtime>-<64 hex>.scope` or the bare id;
/// not CRI-O's `crio-conmon-<ID>.scope` (its monitor process).
fn container_id(segment: &str) -> Option<String> {
    if segment.contains("conmon") {
        return None;
    }
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = name.rsplit('-').next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// A pod's cgroup directory: `pod<UID>` (cgroupfs) or
/// `kubepods[-<class>]-pod<UID with '_'>.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let rest = if let Some(slice) = segment.strip_suffix(".slice") {
        slice.rsplit_once("-pod")?.1
    } else {
        segment.strip_prefix("pod")?
    };
    let uid = rest.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A UUID as Kubernetes writes pod UIDs: 8-4-4-4-12 lowercase hex digits.
fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// A file holding one DNS name (a namespace, a pod name): its trimmed text
/// if it is one (lowercase letters, digits, '-' and '.', at most `max`
/// bytes), else empty.
fn read_name(path: &Path, max: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return String::new();
    };
    let name = text.trim();
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        name.to_owned()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a9b8e7d6c5b4a3928171615141312111009080706050403020100ffeedd";
    const UID: &str = "0d1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    #[test]
    fn systemd_driver_with_containerd_crio_and_docker() {
        let uid = UID.replace('-', "_");
        for runtime in ["cri-containerd", "crio", "docker"] {
            let text = format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/{runtime}-{ID}.scope\n"
            );
            assert_eq!(
                from_cgroup(&text),
                (Some(ID.to_owned()), Some(UID.to_owned())),
                "{runtime}"
            );
        }
        // Guaranteed QoS: no class slice.
        let text = format!("0::/kubepods.slice/kubepods-pod{uid}.slice/cri-containerd-{ID}.scope");
        assert_eq!(
            from_cgroup(&text),
            (Some(ID.to_owned()), Some(UID.to_owned()))
        );
    }

    #[test]
    fn cgroupfs_driver_on_cgroup_v1() {
        let text = format!(
            "12:memory:/kubepods/besteffort/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n0::/\n"
        );
        assert_eq!(
            from_cgroup(&text),
            (Some(ID.to_owned()), Some(UID.to_owned()))
        );
    }

    #[test]
    fn outside_kubernetes_a_container_has_no_pod() {
        let docker = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(from_cgroup(&docker), (Some(ID.to_owned()), None));
        // A host process, a user session, CRI-O's monitor.
        for text in [
            "0::/\n",
            "0::/user.slice/user-0.slice/session-3.scope\n",
            &format!("0::/kubepods.slice/crio-conmon-{ID}.scope\n"),
            // A pod-like name outside kubepods.
            &format!("0::/system.slice/pod{UID}/x\n"),
        ] {
            assert_eq!(from_cgroup(text).1, None, "{text}");
        }
        assert_eq!(
            from_cgroup("0::/kubepods.slice/crio-conmon-x.scope"),
            (None, None)
        );
    }

    #[test]
    fn malformed_ids_are_not_taken() {
        for text in [
            // 63 hex digits, uppercase UID, UID too short.
            &format!("0::/kubepods/pod{UID}/{}", &ID[1..]),
            &format!("0::/kubepods/pod{}/x", UID.to_uppercase()),
            "0::/kubepods/pod0d1b2c3d-4e5f/x",
        ] {
            let (c, p) = from_cgroup(text);
            assert!(c.is_none() || p.is_none(), "{text}: {c:?} {p:?}");
        }
    }

    #[test]
    fn names_must_look_like_kubernetes_names() {
        let dir = std::env::temp_dir().join(format!("gatescope-pods-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("name");
        for (text, want) in [
            ("web-7d9f8c-x2k4p\n", "web-7d9f8c-x2k4p"),
            ("kube-system", "kube-system"),
            ("<script>", ""),
            ("Web", ""),
            ("", ""),
            ("a b", ""),
        ] {
            fs::write(&f, text).unwrap();
            assert_eq!(read_name(&f, 63), want, "{text:?}");
        }
        fs::write(&f, "a".repeat(64)).unwrap();
        assert_eq!(read_name(&f, 63), "");
        assert_eq!(read_name(&dir.join("absent"), 63), "");
        fs::remove_dir_all(&dir).unwrap();
    }
}
