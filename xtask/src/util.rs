//! Small helpers shared by every subcommand: paths, running commands, child guards.

use std::{
    env,
    ffi::OsString,
    fmt::Write as _,
    fs,
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// The workspace root (xtask lives in `<root>/xtask`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a workspace member")
        .to_path_buf()
}

/// Cargo's target directory, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`): where rustup's proxies and `cargo install` live.
pub fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Puts `~/.cargo/bin` first on our own PATH so every child (cargo, aya-build) finds bpf-linker.
pub fn ensure_cargo_bin_on_path() {
    let bin = cargo_bin_dir();
    let old = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&old).any(|p| p == bin) {
        return;
    }
    let new: OsString = env::join_paths(std::iter::once(bin).chain(env::split_paths(&old)))
        .expect("PATH entries contain no ':'");
    // Edition 2021, called first thing in main before any thread exists.
    env::set_var("PATH", new);
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cargo` in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// How a command reads in logs: `ENV=v program arg ...`.
pub fn describe(cmd: &Command) -> String {
    let mut out = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(
                out,
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            );
        }
    }
    out.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Prints the command, runs it with inherited stdout/stderr, fails on non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let text = describe(cmd);
    println!("$ {text}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{text}`"))?;
    if !status.success() {
        bail!("`{text}` failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout; `None` if it cannot start or exits non-zero.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first line a command prints on stdout or stderr, whatever its exit code (`nginx -v`
/// writes to stderr; `wrk --version` exits 1); `None` if it cannot start or prints nothing.
pub fn banner(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    [out.stdout, out.stderr].iter().find_map(|bytes| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string)
    })
}

/// Runs a long command with its output in `log` (so a setup step stays one line), printing a
/// dot every 30 s while it waits. On failure the error carries the log's tail.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let text = describe(cmd);
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("could not start `{text}`"))?;
    let mut last_dot = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if last_dot.elapsed() >= Duration::from_secs(30) {
            print!(".");
            let _ = std::io::stdout().flush();
            last_dot = Instant::now();
        }
        thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!(
            "`{text}` failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail(log, 30)
        );
    }
    Ok(())
}

/// The last `lines` lines of a file (for error messages).
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = gatescope_tests::util::tail(&String::from_utf8_lossy(&bytes), lines);
            if text.is_empty() {
                "    (empty)".to_string()
            } else {
                text.lines()
                    .fold(String::new(), |out, l| out + "    " + l + "\n")
            }
        }
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C (and SIGTERM/SIGHUP) only set a flag: the task then stops its children in order.
pub fn catch_signals() {
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

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Polls until `ready` (failing if `proc` exits or Ctrl-C arrives); returns how long it took.
pub fn wait_for(
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
        tail(&proc.log, 30)
    )
}

/// A child process that is terminated (SIGTERM, then SIGKILL after 5 s) when dropped.
/// Its stdout/stderr go to `log`. It runs in its own process group, so a Ctrl-C reaches only
/// xtask, which then stops the children in order; it also gets SIGTERM if xtask dies.
pub struct Guard {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Guard> {
        let text = describe(cmd);
        let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        println!("$ {text}    (output: {})", log.display());
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {name} (`{text}`)"))?;
        Ok(Guard {
            name: name.to_string(),
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("{} was already stopped", self.name),
        }
    }

    /// Error for "exited when it should be running", with the tail of its output.
    pub fn died(&self, status: ExitStatus) -> anyhow::Error {
        anyhow::anyhow!(
            "{} exited unexpectedly ({status}); last lines of {}:\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, 30)
        )
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already stopped", self.name);
        };
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // Our own child, not yet waited for: the pid is still its own.
        let _ = gatescope_tests::util::signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "xtask: {} ignored SIGTERM for {grace:?}; killing it",
            self.name
        );
        let _ = child.kill();
        Ok(child.wait()?)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Duration::from_secs(5));
        }
    }
}
