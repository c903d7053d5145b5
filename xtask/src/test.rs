//! `cargo xtask test`: formatting and lints, unit tests, then the integration tests against
//! the release agent. Every step runs; the end names the ones that failed.

use std::path::Path;

use anyhow::{bail, Result};

use crate::util::{cargo, run, workspace_root};

/// The eBPF crate's target, as agent/build.rs (aya-build) builds it.
const BPF_TARGET: &str = "bpfel-unknown-none";

/// Integration tests run a second time on the fallback payload path
/// (`--payload-from syscall-hook`, through the variable every agent the tests
/// start reads): the ones whose numbers depend on the captured payload, over
/// every gateway. The rest (process tracking, connections, the wire view,
/// TCP events) do not touch the payload programs' buffer source.
const FALLBACK_TESTS: &[&str] = &[
    "http_accuracy",
    "connections_and_bytes",
    "active_connections",
    "preexisting_connections",
    "trace_links",
    "haproxy",
    "caddy",
    "tls",
    "tls_upstream",
    "tls_lifecycle",
    "h2",
];

pub fn test(agent: &Path) -> Result<()> {
    let steps: [(&str, &dyn Fn() -> Result<()>); 6] = [
        ("format", &|| run(cargo().args(["fmt", "--all", "--check"]))),
        ("clippy (agent, xtask, tests)", &|| {
            run(cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "gatescope-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        }),
        ("clippy (eBPF, bpfel-unknown-none)", &clippy_ebpf),
        ("unit tests", &|| {
            // gatescope-tests holds only the integration tests, run below with the agent.
            run(cargo().args([
                "test",
                "--workspace",
                "--exclude",
                "gatescope-ebpf",
                "--exclude",
                "gatescope-tests",
            ]))
        }),
        // RUST_LIB_BACKTRACE=0: a failing test's anyhow error without its
        // backtrace (panics keep theirs), so that a long CI log cut in the
        // middle still shows the error above the failures list.
        ("integration tests", &|| {
            run(cargo()
                .args([
                    "test",
                    "--release",
                    "-p",
                    "gatescope-tests",
                    "--no-fail-fast",
                    "--",
                    "--test-threads=1",
                ])
                .env("GATESCOPE_BIN", agent)
                .env("RUST_LIB_BACKTRACE", "0"))
        }),
        ("integration tests, fallback payload path", &|| {
            let mut cmd = cargo();
            cmd.args([
                "test",
                "--release",
                "-p",
                "gatescope-tests",
                "--no-fail-fast",
            ]);
            for name in FALLBACK_TESTS {
                cmd.args(["--test", name]);
            }
            run(cmd
                .args(["--", "--test-threads=1"])
                .env("GATESCOPE_BIN", agent)
                .env("GATESCOPE_PAYLOAD_FROM", "syscall-hook")
                .env("RUST_LIB_BACKTRACE", "0"))
        }),
    ];
    let mut failed = Vec::new();
    for (name, step) in steps {
        println!("xtask: step `{name}`");
        if let Err(e) = step() {
            eprintln!("xtask: step `{name}` failed: {e:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} steps failed: {}",
            failed.len(),
            steps.len(),
            failed.join(", ")
        );
    }
    println!("xtask: all steps passed");
    Ok(())
}

/// Clippy on the kernel programs for their own target, as aya-build compiles them: nightly,
/// `core` built from source, and the `bpf_target_arch` cfg aya-ebpf reads.
fn clippy_ebpf() -> Result<()> {
    let arch = std::env::consts::ARCH;
    run(cargo()
        .current_dir(workspace_root().join("ebpf"))
        .args([
            "+nightly",
            "clippy",
            "--package",
            "gatescope-ebpf",
            "--bins",
            "--release",
            "--target",
            BPF_TARGET,
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\""),
        )
        // As aya-build does: a RUSTC from the caller's toolchain must not replace nightly's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER"))
}
