//! `cargo xtask setup`: installs what the build, tests and demo need, idempotently.
//! Each step checks first and prints one line: `setup: <what> ... <result>`.

use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::util::{self, output, run_logged};

const APT_PACKAGES: &[&str] = &[
    // bpf-linker links against these
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // demo, integration tests and debugging
    "nginx-light",
    // tests/tests/haproxy.rs: a second gateway, single process and master-worker
    "haproxy",
    // real Caddy 2.6 (Go) in front of the upstream: tests/tests/caddy.rs
    "caddy",
    "curl",
    // certificates for the TLS tests, bench pairs and demo (`openssl req`)
    "openssl",
    // tests/tests/tls.rs: the client's TLS forwarder (python3's ssl module,
    // tests/src/tls_forwarder.py)
    "python3",
    "prometheus",
    "wrk",
    // HTTP/2 clients of tests/tests/h2.rs: h2load (and nghttp)
    "nghttp2-client",
    // the wire view's independent witness in tests
    "tcpdump",
    // tests/tests/status_page.rs: the status page in a headless browser
    "chromium",
    "bpftool",
    "iproute2",
    "procps",
    "util-linux",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_MAJOR: &str = "22";
const TRACEFS: &str = "/sys/kernel/tracing";
/// Validates deploy/kubernetes/ against Kubernetes' schemas (tests/tests/deploy.rs).
const KUBERNETES_VALIDATE: &str = "1.37.0";
const DISTRO_NGINX_PID: &str = "/run/nginx.pid";
/// The OTLP collector of the span tests (tests/tests/spans.rs): the PyPI
/// wheel ships rotel's Rust agent binary. Only pre-releases exist; pinned
/// (keep equal to `gatescope_tests::otlp::ROTEL_VERSION`).
const ROTEL: &str = "0.0.1a15";
/// HTTP/2 at the frame level for tests/tests/h2.rs (tests/src/h2_client.py).
const H2: &str = "4.4.1";
/// gRPC server and client of tests/tests/grpc.rs, and protoc for its service.
const GRPCIO: &str = "1.85.1";
/// The GenAI scene of tests/tests/genai.rs: the mock provider's server
/// (tests/src/genai_mock.py), the official SDKs as clients
/// (tests/src/genai_client.py) and LiteLLM's proxy as a gateway.
const AIOHTTP: &str = "3.14.5";
const OPENAI: &str = "3.57.0";
const ANTHROPIC: &str = "2.16.0";
/// The newest litellm whose `[proxy]` extra resolves on PyPI today (1.108.10
/// and later need litellm-enterprise/litellm-proxy releases PyPI lacks);
/// about 90 packages, 2 minutes on a fresh machine.
const LITELLM: &str = "1.108.5";
/// Every PyPI pin, passed as constraints to each install so that one
/// package's dependencies cannot move another's pin.
const PIP_PINS: &[(&str, &str)] = &[
    ("kubernetes-validate", KUBERNETES_VALIDATE),
    ("rotel", ROTEL),
    ("h2", H2),
    ("grpcio", GRPCIO),
    ("grpcio-tools", GRPCIO),
    ("aiohttp", AIOHTTP),
    ("openai", OPENAI),
    ("anthropic", ANTHROPIC),
    ("litellm", LITELLM),
];

pub fn setup() -> Result<()> {
    step("nightly toolchain with rust-src", nightly_rust_src)?;
    step("debian packages", debian_packages)?;
    step(
        &format!("bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR})"),
        bpf_linker,
    )?;
    step(&format!("tracefs at {TRACEFS}"), tracefs)?;
    step("distro nginx service", stop_distro_nginx)?;
    step("distro caddy service", stop_distro_caddy)?;
    step(
        &format!("kubernetes-validate {KUBERNETES_VALIDATE} (PyPI)"),
        || pip_install("kubernetes-validate", KUBERNETES_VALIDATE),
    )?;
    step(&format!("rotel {ROTEL} (PyPI, OTLP collector)"), || {
        pip_install("rotel", ROTEL)
    })?;
    step(&format!("h2 {H2} (PyPI, HTTP/2 frames)"), || {
        pip_install("h2", H2)
    })?;
    step(&format!("grpcio {GRPCIO} (PyPI)"), || {
        pip_install("grpcio", GRPCIO)
    })?;
    step(&format!("grpcio-tools {GRPCIO} (PyPI)"), || {
        pip_install("grpcio-tools", GRPCIO)
    })?;
    step(&format!("aiohttp {AIOHTTP} (PyPI, GenAI mock)"), || {
        pip_install("aiohttp", AIOHTTP)
    })?;
    step(&format!("openai {OPENAI} (PyPI, SDK)"), || {
        pip_install("openai", OPENAI)
    })?;
    step(&format!("anthropic {ANTHROPIC} (PyPI, SDK)"), || {
        pip_install("anthropic", ANTHROPIC)
    })?;
    step(
        &format!("litellm[proxy] {LITELLM} (PyPI, AI gateway)"),
        || pip_install_spec("litellm", &format!("litellm[proxy]=={LITELLM}"), LITELLM),
    )?;
    Ok(())
}

/// The installed version of the PyPI distribution `name`, if any.
fn pip_version(name: &str) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version('{name}'))"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Installs `name==version` from PyPI unless that version is installed.
fn pip_install(name: &str, version: &str) -> Result<String> {
    pip_install_spec(name, &format!("{name}=={version}"), version)
}

/// Installs the requirement `spec` (e.g. with extras) unless `name` is
/// installed at `version`, under the constraints of [`PIP_PINS`].
fn pip_install_spec(name: &str, spec: &str, version: &str) -> Result<String> {
    if pip_version(name).as_deref() == Some(version) {
        return Ok("ok (already installed)".into());
    }
    let start = Instant::now();
    let log = log_path(&format!("pip-{name}"));
    let constraints = log_path("pip-constraints").with_extension("txt");
    let mut pins = String::new();
    for (n, v) in PIP_PINS {
        let _ = writeln!(pins, "{n}=={v}");
    }
    fs::create_dir_all(constraints.parent().context("log dir")?)?;
    fs::write(&constraints, pins).with_context(|| format!("writing {}", constraints.display()))?;
    waiting(&format!("installing with pip (logs in {})", log.display()));
    run_logged(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-c",
            ])
            .arg(&constraints)
            .arg(spec),
        &log,
    )
    .context("pip install failed: check network access to PyPI (pypi.org)")?;
    match pip_version(name) {
        Some(v) if v == version => Ok(format!("ok (installed in {})", elapsed(start))),
        other => bail!(
            "pip finished but the installed {name} is {other:?} (see {})",
            log.display()
        ),
    }
}

/// Prints `setup: NAME ... `, runs the step (which may print more on the same line while it
/// works), then its result or `FAILED`.
fn step(name: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    print!("setup: {name} ... ");
    let _ = std::io::stdout().flush();
    match f() {
        Ok(result) => {
            println!("{result}");
            Ok(())
        }
        Err(e) => {
            println!("FAILED");
            Err(e.context(format!("setup step `{name}` failed")))
        }
    }
}

/// Printed on the step's line before a long wait.
fn waiting(what: &str) {
    print!("{what} ");
    let _ = std::io::stdout().flush();
}

fn log_path(name: &str) -> PathBuf {
    util::target_dir()
        .join("xtask")
        .join(format!("setup-{name}.log"))
}

fn elapsed(start: Instant) -> String {
    format!("{} s", start.elapsed().as_secs())
}

fn nightly_rust_src() -> Result<String> {
    if output(Command::new("rustup").arg("--version")).is_none() {
        bail!("rustup not found on PATH or in ~/.cargo/bin: install it from https://rustup.rs (with the stable and nightly toolchains)");
    }
    let start = Instant::now();
    let result = match output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ])) {
        None => {
            waiting(
                "installing the nightly toolchain (waiting for `rustup toolchain install nightly`)",
            );
            run_logged(
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]),
                &log_path("rustup"),
            )
            .context(
                "rustup could not install nightly: check network access to static.rust-lang.org",
            )?;
            format!("ok (installed nightly + rust-src in {})", elapsed(start))
        }
        Some(list) if list.lines().any(|l| l.trim() == "rust-src") => {
            "ok (already installed)".to_string()
        }
        Some(_) => {
            waiting("installing rust-src (waiting for `rustup component add`)");
            run_logged(
                Command::new("rustup").args([
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    "nightly",
                ]),
                &log_path("rustup"),
            )
            .context(
                "rustup could not add rust-src: check network access to static.rust-lang.org",
            )?;
            format!("ok (installed in {})", elapsed(start))
        }
    };
    Ok(format!("{result}; {}", nightly_llvm_note()))
}

/// bpf-linker is built for LLVM 22; a nightly with another LLVM major emits bitcode it may
/// not read, so say which LLVM the nightly has.
fn nightly_llvm_note() -> String {
    let Some(info) = output(Command::new("rustc").args(["+nightly", "-vV"])) else {
        return "WARNING: `rustc +nightly -vV` failed".to_string();
    };
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    let (release, llvm) = (field("release:"), field("LLVM version:"));
    if llvm.split('.').next() == Some(LLVM_MAJOR) {
        format!("rustc {release}, LLVM {llvm}")
    } else {
        format!("rustc {release}, LLVM {llvm}: WARNING, bpf-linker is built for LLVM {LLVM_MAJOR}; eBPF builds may fail with this nightly")
    }
}

fn dpkg_installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .context("dpkg-query not found: gatescope's setup needs Debian bookworm (dpkg/apt)")?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

fn missing_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &package in APT_PACKAGES {
        if !dpkg_installed(package)? {
            missing.push(package);
        }
    }
    Ok(missing)
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    // A fresh VM may still be running unattended-upgrades: wait for the dpkg lock.
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=600"]);
    cmd
}

fn debian_packages() -> Result<String> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(format!(
            "ok (already installed: {} packages)",
            APT_PACKAGES.len()
        ));
    }
    let list = missing.join(" ");
    if !util::is_root() {
        bail!("missing {list}: run as root (apt-get needs root), or install them yourself");
    }
    let start = Instant::now();
    waiting(&format!(
        "installing {list} (waiting for apt-get update, then apt-get install; logs in {})",
        util::target_dir().join("xtask").display()
    ));
    run_logged(apt_get().arg("update"), &log_path("apt-update"))
        .context("apt-get update failed: check network access to the Debian mirrors (deb.debian.org) and /etc/apt/sources.list*")?;
    run_logged(
        apt_get()
            .args(["install", "-y"])
            .args(&missing),
        &log_path("apt"),
    )
    .context("apt-get install failed: check network access to the Debian mirrors; llvm-22-dev comes from bookworm-security, which must be in /etc/apt/sources.list*")?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!(
            "apt-get finished but {} still not installed (see {})",
            still.join(" "),
            log_path("apt").display()
        );
    }
    Ok(format!("ok (installed in {})", elapsed(start)))
}

/// `bpf-linker --version` of the binary PATH finds (PATH already has ~/.cargo/bin).
fn bpf_linker_version() -> Option<(PathBuf, String)> {
    let path = util::which("bpf-linker")?;
    let out = output(Command::new(&path).arg("--version"))?;
    let version = out.split_whitespace().nth(1)?.to_string();
    Some((path, version))
}

fn bpf_linker() -> Result<String> {
    let found = bpf_linker_version();
    if let Some((path, version)) = &found {
        if version == BPF_LINKER_VERSION {
            return Ok(format!("ok (already installed: {})", path.display()));
        }
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        bail!("{LLVM_PREFIX}/bin/llvm-config missing: install llvm-22-dev (run `cargo xtask setup` as root)");
    }
    let start = Instant::now();
    let replacing = found.map_or(String::new(), |(path, version)| {
        format!("replacing {version} at {}; ", path.display())
    });
    waiting(&format!(
        "installing ({replacing}waiting for `cargo install bpf-linker@{BPF_LINKER_VERSION}`, about 4 minutes; log {})",
        log_path("bpf-linker").display()
    ));
    run_logged(
        Command::new("cargo")
            // Outside the workspace so its .cargo/config.toml and toolchain do not apply.
            .current_dir("/")
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .args([
                "install",
                "--force",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ]),
        &log_path("bpf-linker"),
    )
    .context("cargo install bpf-linker failed: check network access to crates.io and that llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev are installed")?;
    match bpf_linker_version() {
        Some((path, version)) if version == BPF_LINKER_VERSION => Ok(format!(
            "ok (installed {} in {})",
            path.display(),
            elapsed(start)
        )),
        other => bail!(
            "cargo install finished but `bpf-linker --version` reports {other:?}; is {} on PATH?",
            util::cargo_bin_dir().display()
        ),
    }
}

fn tracefs() -> Result<String> {
    let events = Path::new(TRACEFS).join("events");
    if events.exists() {
        return Ok("ok (already mounted)".to_string());
    }
    if !util::is_root() {
        bail!("tracefs is not mounted: run as root (setup mounts it with `mount -t tracefs nodev {TRACEFS}`)");
    }
    let out = Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .output()
        .context("could not run `mount`: install util-linux")?;
    if !out.status.success() || !events.exists() {
        bail!(
            "`mount -t tracefs nodev {TRACEFS}` failed ({}): {}; the kernel needs CONFIG_TRACING and we need CAP_SYS_ADMIN",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok("ok (mounted)".to_string())
}

/// Debian's caddy package enables `caddy.service` (port 80); stop it, or
/// `--discover caddy` in tests/tests/caddy.rs finds it beside the test's own.
fn stop_distro_caddy() -> Result<String> {
    if !Path::new("/run/systemd/system").exists() || util::which("systemctl").is_none() {
        return Ok("ok (no systemd)".to_string());
    }
    let active = || {
        Command::new("systemctl")
            .args(["is-active", "--quiet", "caddy"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !active() {
        return Ok("ok (not running)".to_string());
    }
    if !util::is_root() {
        bail!("the distro's caddy service is running: run as root so setup can stop it, or `systemctl stop caddy`");
    }
    let _ = output(Command::new("systemctl").args(["stop", "caddy"]));
    if active() {
        bail!("could not stop the distro's caddy service: `systemctl stop caddy` yourself");
    }
    Ok("stopped (the distro's caddy, with `systemctl stop caddy`)".to_string())
}

/// Debian's nginx postinst starts the distro service (port 80, /run/nginx.pid); stop it so it
/// does not get in the way of the demo's and the tests' own nginx instances.
fn stop_distro_nginx() -> Result<String> {
    let Ok(text) = fs::read_to_string(DISTRO_NGINX_PID) else {
        return Ok("ok (not running)".to_string());
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(format!("ok (not running; unreadable {DISTRO_NGINX_PID})"));
    };
    let alive =
        || fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "nginx");
    if !alive() {
        return Ok(format!("ok (not running; stale {DISTRO_NGINX_PID})"));
    }
    if !util::is_root() {
        bail!("the distro's nginx (pid {pid}) is running: run as root so setup can stop it, or stop it yourself");
    }
    let how = if Path::new("/run/systemd/system").exists() && util::which("systemctl").is_some() {
        let _ = output(Command::new("systemctl").args(["stop", "nginx"]));
        "systemctl stop nginx"
    } else {
        let _ = output(Command::new("nginx").args(["-s", "quit"]));
        "nginx -s quit"
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    if alive() {
        let _ = gatescope_tests::util::signal(pid, libc::SIGTERM);
        thread::sleep(Duration::from_secs(1));
    }
    if alive() {
        bail!("could not stop the distro's nginx (pid {pid}): stop it yourself (`systemctl stop nginx` or `kill {pid}`)");
    }
    Ok(format!(
        "stopped (the distro's nginx, master pid {pid} from {DISTRO_NGINX_PID}, with `{how}`)"
    ))
}
