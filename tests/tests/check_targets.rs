//! `gatescope check --pid` (issue 11): for each target process, where its
//! OpenSSL is and whether the TLS probes attach, on real gateways. nginx runs
//! with its own copy of libssl under a private prefix (`LD_LIBRARY_PATH`, as
//! Kong ships OpenSSL under its prefix); Caddy has none (Go's TLS). The
//! agent, too, attaches to the private copy and names it.

use anyhow::{ensure, Context, Result};
use gatescope_tests::agent::{gatescope_bin, Agent};
use gatescope_tests::caddy::Caddy;
use gatescope_tests::nginx::Tuning;
use gatescope_tests::upstream::Upstream;
use gatescope_tests::util::{self, free_port, TempDir};
use gatescope_tests::Scene;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Where the system's nginx finds libssl, from the maps of a process that
/// links it (this test's own `ldd` of nginx).
fn system_libssl() -> Result<PathBuf> {
    let out = Command::new("ldd").arg("/usr/sbin/nginx").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.trim_start().starts_with("libssl.so"))
        .find_map(|l| l.split("=>").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(PathBuf::from)
        .with_context(|| format!("no libssl in ldd /usr/sbin/nginx:\n{text}"))
}

#[test]
fn check_names_each_targets_openssl_and_whether_the_probes_attach() -> Result<()> {
    // nginx's own libssl copy, and a launcher that points the loader at it.
    let prefix = TempDir::new("private-openssl")?;
    let lib = prefix.path().join("lib");
    std::fs::create_dir(&lib)?;
    let system = system_libssl()?;
    let name = system.file_name().context("libssl file name")?;
    let private = lib.join(name);
    std::fs::copy(&system, &private)?;
    let launcher = prefix.path().join("nginx");
    std::fs::write(
        &launcher,
        format!(
            "#!/bin/sh\nLD_LIBRARY_PATH={} exec /usr/sbin/nginx \"$@\"\n",
            lib.display()
        ),
    )?;
    std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o755))?;
    let scene = Scene::start_tuned(
        2,
        &Tuning {
            bin: Some(launcher),
            ..Tuning::default()
        },
    )?;
    let upstream = Upstream::start()?;
    let caddy = Caddy::start(free_port()?, upstream.port(), free_port()?)?;

    let master = scene.nginx.master_pid();
    let out = Command::new(gatescope_bin()?)
        .args(["check", "--pid", &master.to_string()])
        .args(["--pid", &caddy.pid().to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "check failed:\n{text}");
    let section = text
        .split("TLS per target process")
        .nth(1)
        .with_context(|| format!("no per-target section:\n{text}"))?;
    let private = private.display().to_string();
    let mut pids = vec![master];
    pids.extend(scene.nginx.worker_pids());
    for pid in pids {
        // Blocks: "{pid} ({comm}): {verdict}" and a line per file.
        let head = format!("{pid} (nginx): TLS plaintext read at OpenSSL");
        let block: Vec<&str> = section
            .split("\n  pid ")
            .filter(|b| b.starts_with(&head))
            .collect();
        ensure!(block.len() == 1, "no `{head}` in:\n{section}");
        let want = format!("{private}: SSL_read/SSL_write found, 10 probes attach");
        ensure!(
            block[0].contains(&want),
            "no `{want}` for {pid} in:\n{section}"
        );
        ensure!(
            !block[0].contains(&system.display().to_string()),
            "{pid} maps the system libssl too:\n{section}"
        );
    }
    let caddy_head = format!("pid {} (caddy): TLS counted as bytes only", caddy.pid());
    ensure!(
        section.contains(&caddy_head),
        "no `{caddy_head}` in:\n{section}"
    );
    ensure!(section.contains("no libssl mapped"), "{section}");

    // The agent attaches to the private copy, found from the maps.
    let agent = Agent::start(&[master], &[])?;
    util::poll(Duration::from_secs(10), "the agent's TLS line", || {
        Ok(agent
            .stderr()
            .lines()
            .any(|l| l.contains("TLS: plaintext taken at OpenSSL") && l.contains(&private))
            .then_some(()))
    })?;
    Ok(())
}
