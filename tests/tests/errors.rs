//! Start-up errors, and a clean detach on SIGTERM.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{gatescope_bin, run_bin_to_exit, run_to_exit, Agent};
use gatescope_tests::metrics::*;
use gatescope_tests::util::{self, TempDir};
use gatescope_tests::{bpftool, Scene};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A live process to name with --pid, killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Result<Self> {
        Ok(Self(Command::new("sleep").arg("300").spawn()?))
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn args(pid: u32, listen: &str) -> Vec<String> {
    vec![
        "--pid".into(),
        pid.to_string(),
        "--listen".into(),
        listen.into(),
    ]
}

fn free_listen() -> Result<String> {
    Ok(format!("127.0.0.1:{}", util::free_port()?))
}

/// Exit code 1 and one `error: ` line containing `needle`.
fn check_startup_error(st: ExitStatus, stderr: &str, needle: &str) -> Result<()> {
    ensure!(
        st.code() == Some(1),
        "exit status {st}, want 1; stderr:\n{stderr}"
    );
    ensure!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains(needle)),
        "no `error: ...{needle}...` line in stderr:\n{stderr}"
    );
    Ok(())
}

#[test]
fn nonexistent_pid() -> Result<()> {
    let mut c = Command::new("true").spawn()?;
    let pid = c.id();
    c.wait()?;
    ensure!(!util::is_alive(pid), "pid {pid} reused already");
    let (st, err) = run_to_exit(&[], &args(pid, &free_listen()?), EXIT_TIMEOUT)?;
    check_startup_error(st, &err, &format!("no process with PID {pid}"))
}

#[test]
fn listen_address_in_use() -> Result<()> {
    let target = Sleeper::start()?;
    let busy = TcpListener::bind("127.0.0.1:0")?;
    let addr = busy.local_addr()?.to_string();
    let (st, err) = run_to_exit(&[], &args(target.pid(), &addr), EXIT_TIMEOUT)?;
    check_startup_error(st, &err, "address already in use")
}

#[test]
fn max_sockets_out_of_range() -> Result<()> {
    let target = Sleeper::start()?;
    for bad in ["0", "4194305"] {
        let mut a = args(target.pid(), &free_listen()?);
        a.extend(["--max-sockets".into(), bad.into()]);
        let (st, err) = run_to_exit(&[], &a, EXIT_TIMEOUT)?;
        check_startup_error(
            st,
            &err,
            &format!("--max-sockets {bad} must be between 1 and 4194304"),
        )?;
    }
    Ok(())
}

#[test]
fn unknown_interface() -> Result<()> {
    let target = Sleeper::start()?;
    let mut a = args(target.pid(), &free_listen()?);
    a.extend(["--interface".into(), "lo,gsnosuch0".into()]);
    let (st, err) = run_to_exit(&[], &a, EXIT_TIMEOUT)?;
    check_startup_error(st, &err, "--interface gsnosuch0: no such network interface")
}

#[test]
fn not_root() -> Result<()> {
    let target = Sleeper::start()?;
    // A world-readable copy, so uid 65534 can run it wherever the original lives.
    let dir = TempDir::new("unpriv")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("gatescope");
    std::fs::copy(gatescope_bin()?, &bin).context("copying the binary")?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let (st, err) = run_bin_to_exit(
        &bin,
        &wrapper,
        &args(target.pid(), &free_listen()?),
        EXIT_TIMEOUT,
    )?;
    ensure!(
        !err.contains("setpriv:"),
        "setpriv itself failed ({st}):\n{err}"
    );
    check_startup_error(st, &err, "CAP_BPF")
}

#[test]
fn sigterm_detaches_programs() -> Result<()> {
    let scene = Scene::start(2)?;
    let mut agent = Agent::start(&[scene.nginx.master_pid()], &[])?;
    // The agent's programs: those it holds fds of (other agents may be running
    // on a shared machine, so "new since start" is not enough).
    let ours = bpftool::prog_ids_held_by(agent.pid())?;
    let running = bpftool::progs()?;
    let mine: Vec<&bpftool::Prog> = running.iter().filter(|p| ours.contains(&p.id)).collect();
    ensure!(
        !ours.is_empty() && mine.len() == ours.len(),
        "agent (pid {}) holds programs {ours:?}, bpftool lists {mine:#?}",
        agent.pid()
    );
    let s = agent.scrape()?;
    let attached = s.require(PROGRAMS_ATTACHED, &[])?;
    // Each program attached holds one or more links (a trace-event program one per
    // tracepoint); the socket filter is only loaded (the wire taps attach it to their own
    // sockets) and is not counted.
    let (linked, loaded) = bpftool::prog_ids_linked_and_loaded(agent.pid())?;
    ensure!(attached >= 1.0, "programs_attached = {attached}");
    ensure!(
        attached == linked.len() as f64,
        "programs_attached = {attached}, the agent's link fds name {} programs: {linked:?} \
         (program fds: {loaded:?})",
        linked.len()
    );
    let filters: Vec<&&bpftool::Prog> = mine.iter().filter(|p| !linked.contains(&p.id)).collect();
    ensure!(
        filters.iter().all(|p| p.kind == "socket_filter") && filters.len() <= 1,
        "programs held but not linked, other than the socket filter: {filters:#?}"
    );
    ensure!(
        mine.iter().any(|p| p.kind == "tracepoint"),
        "the agent loaded no tracepoint program: {mine:#?}"
    );

    agent.stop_ok()?;
    // Program release after the last fd closes is asynchronous in the kernel.
    let left = util::poll(Duration::from_secs(3), "agent programs to unload", || {
        let now: BTreeSet<u32> = bpftool::progs()?.iter().map(|p| p.id).collect();
        let left: Vec<u32> = ours.intersection(&now).copied().collect();
        Ok(left.is_empty().then_some(left))
    });
    ensure!(
        left.is_ok(),
        "programs still loaded 3 s after exit: {:?}\n{}",
        bpftool::progs()?
            .into_iter()
            .filter(|p| ours.contains(&p.id))
            .collect::<Vec<_>>(),
        agent.stderr()
    );
    Ok(())
}
