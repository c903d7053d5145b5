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

/// Exit code 1 and `want` as one whole line of stderr.
fn check_error_line(st: ExitStatus, stderr: &str, want: &str) -> Result<()> {
    ensure!(
        st.code() == Some(1),
        "exit status {st}, want 1; stderr:\n{stderr}"
    );
    ensure!(
        stderr.lines().any(|l| l == want),
        "no line {want:?} in stderr:\n{stderr}"
    );
    Ok(())
}

/// `unshare -m sh -c SCRIPT`, then exec the agent with its arguments: the agent
/// runs in a private mount namespace that `script` prepared, so what it does
/// there leaves the host's mounts alone.
fn in_mount_namespace(script: &str) -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &format!("set -e; {script}; exec \"$0\" \"$@\""),
    ]
    .map(String::from)
    .to_vec()
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// A tracepoint whose format differs from what the programs were built for:
/// in a private mount namespace, a copy of the kernel's own
/// `sock:inet_sock_set_state` format with `sport` two bytes later is
/// bind-mounted over the real one (the kernel is not changed).
#[test]
fn tracepoint_layout_mismatch() -> Result<()> {
    let target = Sleeper::start()?;
    let real = format!("{TRACEFS}/events/sock/inet_sock_set_state/format");
    let text = std::fs::read_to_string(&real).with_context(|| format!("reading {real}"))?;
    // The kernel's own layout of `sport` (which is what the programs expect,
    // on the kernel they run on), and the file with it moved.
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("field:") && l.contains(" sport;"))
        .with_context(|| format!("no sport field in {real}:\n{text}"))?;
    let num = |key: &str| -> Result<usize> {
        let v = line
            .split(';')
            .find_map(|p| p.trim().strip_prefix(key))
            .with_context(|| format!("no {key} in {line:?}"))?;
        Ok(v.parse()?)
    };
    let (offset, size) = (num("offset:")?, num("size:")?);
    let moved = line.replace(
        &format!("offset:{offset};"),
        &format!("offset:{};", offset + 2),
    );
    let dir = TempDir::new("tp-format")?;
    let fake = dir.path().join("format");
    std::fs::write(&fake, text.replace(line, &moved))?;
    let wrapper = in_mount_namespace(&format!("mount --bind {} {real}", fake.display()));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let (st, err) = run_to_exit(&wrapper, &args(target.pid(), &free_listen()?), EXIT_TIMEOUT)?;
    check_error_line(
        st,
        &err,
        &format!(
            "error: tracepoint sock:inet_sock_set_state: field `sport` is at offset {} size {size} \
             on this kernel, the programs expect offset {offset} size {size}; this kernel's \
             layout is not supported yet",
            offset + 2
        ),
    )
}

/// tracefs not mounted, and mounting refused: in a private mount namespace
/// with tracefs unmounted, the agent runs as root without CAP_SYS_ADMIN (it
/// keeps CAP_BPF and CAP_PERFMON, enough for everything else).
#[test]
fn tracefs_not_mountable() -> Result<()> {
    let target = Sleeper::start()?;
    let mut wrapper = in_mount_namespace(&format!(
        "while mountpoint -q {TRACEFS}; do umount {TRACEFS}; done; \
         test ! -e {TRACEFS}/events"
    ));
    wrapper.extend(
        [
            "setpriv",
            "--bounding-set=-sys_admin",
            "--inh-caps=-sys_admin",
        ]
        .map(String::from),
    );
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let (st, err) = run_to_exit(&wrapper, &args(target.pid(), &free_listen()?), EXIT_TIMEOUT)?;
    ensure!(
        !err.contains("unshare:") && !err.contains("setpriv:") && !err.contains("umount:"),
        "the wrapper itself failed ({st}):\n{err}"
    );
    check_error_line(
        st,
        &err,
        "error: tracefs is not mounted at /sys/kernel/tracing and mounting it failed: \
         Operation not permitted (os error 1); mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing` (needs CAP_SYS_ADMIN)",
    )?;
    // The host's tracefs is untouched.
    ensure!(
        std::path::Path::new(TRACEFS).join("events").is_dir(),
        "{TRACEFS} is no longer mounted on the host"
    );
    Ok(())
}

/// A config file that cannot be read, one with an unknown key, and one with
/// a negative GenAI price: the message names the file, the line (TOML
/// errors) and the problem.
#[test]
fn config_file_errors() -> Result<()> {
    let target = Sleeper::start()?;
    let dir = TempDir::new("config-errors")?;
    let missing = dir.path().join("missing.toml");
    let mut a = args(target.pid(), &free_listen()?);
    a.extend(["--config".into(), missing.display().to_string()]);
    let (st, err) = run_to_exit(&[], &a, EXIT_TIMEOUT)?;
    check_error_line(
        st,
        &err,
        &format!(
            "error: cannot read the config file {}: No such file or directory (os error 2)",
            missing.display()
        ),
    )?;

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[service]]\nname = \"api\"\nupstream = \"127.0.0.1:1\"\n\n  [[service.route]]\n  \
         name = \"r\"\n  path = [\"/x\"]\n",
    )?;
    let mut a = args(target.pid(), &free_listen()?);
    a.extend(["--config".into(), bad.display().to_string()]);
    let (st, err) = run_to_exit(&[], &a, EXIT_TIMEOUT)?;
    check_error_line(
        st,
        &err,
        &format!(
            "error: config file {}: line 7, column 3: unknown field `path`, expected one of \
             `name`, `paths`, `methods`, `hosts`",
            bad.display()
        ),
    )?;

    let price = dir.path().join("price.toml");
    std::fs::write(
        &price,
        "[[genai.provider]]\nname = \"openai\"\n  [genai.provider.models.\"gpt-4o\"]\n  \
         input_per_million = -2.5\n",
    )?;
    let mut a = args(target.pid(), &free_listen()?);
    a.extend(["--config".into(), price.display().to_string()]);
    let (st, err) = run_to_exit(&[], &a, EXIT_TIMEOUT)?;
    check_error_line(
        st,
        &err,
        &format!(
            "error: config file {}: genai.provider \"openai\", model \"gpt-4o\": \
             input_per_million = -2.5 is not a price (a number, 0 or more)",
            price.display()
        ),
    )
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
    // Held but not linked: the socket filter, and the piece programs, which
    // the length programs tail-call through a program array (one per
    // length program; ebpf/src/pieces.rs).
    let (pieces, filters): (Vec<&bpftool::Prog>, Vec<&bpftool::Prog>) = mine
        .iter()
        .copied()
        .filter(|p| !linked.contains(&p.id))
        .partition(|p| p.name.starts_with("pieces_"));
    ensure!(
        filters.iter().all(|p| p.kind == "socket_filter") && filters.len() <= 1,
        "programs held but not linked, other than the socket filter and the piece programs: \
         {filters:#?}"
    );
    ensure!(
        pieces.len() == 2,
        "want the 2 piece programs of the length programs loaded, not linked: {pieces:#?}"
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
