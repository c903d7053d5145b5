//! A network namespace joined to this one by a veth pair, for traffic that
//! crosses a real (virtual) link: `gsv<pid>x<n>a` here with `10.a.b.1/24`,
//! `gsv<pid>x<n>b` in the namespace `gsns<pid>x<n>` with `10.a.b.2/24`. veth
//! offloads segmentation (TSO/GSO) by default, so a bulk transfer crosses it
//! as packets of many segments. Removed on drop.

use crate::tun::{free_subnet, run_ip};
use anyhow::{ensure, Context, Result};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct VethNs {
    ns: String,
    here: String,
    local: Ipv4Addr,
    remote: Ipv4Addr,
}

impl VethNs {
    pub fn create() -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let (ns, here, there) = (
            format!("gsns{pid}x{n}"),
            format!("gsv{pid}x{n}a"),
            format!("gsv{pid}x{n}b"),
        );
        ensure!(
            here.len() < libc::IFNAMSIZ,
            "interface name {here} too long"
        );
        // The link numbers differ from the TUN harness's (n + 1000).
        let (a, b) = free_subnet(pid, n + 1000)?;
        let (local, remote) = (Ipv4Addr::new(10, a, b, 1), Ipv4Addr::new(10, a, b, 2));
        run_ip(&["netns", "add", &ns])?;
        let v = Self {
            ns,
            here,
            local,
            remote,
        };
        run_ip(&[
            "link", "add", &v.here, "type", "veth", "peer", "name", &there, "netns", &v.ns,
        ])?;
        run_ip(&["addr", "add", &format!("{local}/24"), "dev", &v.here])?;
        run_ip(&["link", "set", "dev", &v.here, "up"])?;
        let ipn = |args: &[&str]| {
            let mut all = vec!["-n", v.ns.as_str()];
            all.extend_from_slice(args);
            run_ip(&all)
        };
        ipn(&["addr", "add", &format!("{remote}/24"), "dev", &there])?;
        ipn(&["link", "set", "dev", &there, "up"])?;
        ipn(&["link", "set", "dev", "lo", "up"])?;
        Ok(v)
    }

    /// The namespace's name (`ip netns`), for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// The interface on this side.
    pub fn interface(&self) -> &str {
        &self.here
    }

    /// This side's address.
    pub fn local_addr(&self) -> Ipv4Addr {
        self.local
    }

    /// The namespace side's address.
    pub fn remote_addr(&self) -> Ipv4Addr {
        self.remote
    }

    /// Run `f` on a thread inside the namespace (`setns` moves only the
    /// calling thread; sockets it creates stay in the namespace).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{}", self.ns);
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::spawn(move || -> Result<T> {
            // SAFETY: setns on a namespace file descriptor we hold open.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("setns");
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread in the namespace panicked"))?
    }
}

impl Drop for VethNs {
    fn drop(&mut self) {
        let _ = run_ip(&["link", "del", &self.here]);
        let _ = run_ip(&["netns", "del", &self.ns]);
    }
}

/// A value of the `Tcp:` line of `/proc/thread-self/net/snmp`: this thread's
/// network namespace's count (e.g. `OutSegs`, which counts each segment of a
/// GSO packet).
pub fn snmp_tcp_here(field: &str) -> Result<u64> {
    crate::tun::proc_net_counter("/proc/thread-self/net/snmp", "Tcp:", field)
}
