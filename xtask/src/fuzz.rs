//! `cargo xtask fuzz`: runs a cargo-fuzz target of http/fuzz for a bounded time (not part of
//! `cargo xtask test` or CI). Installs cargo-fuzz when it is missing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};

use crate::util::{describe, output, run, workspace_root};

pub struct FuzzArgs {
    pub target: String,
    pub seconds: u64,
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    ensure_cargo_fuzz()?;
    let crate_dir = workspace_root().join("http");
    let fuzz_dir = crate_dir.join("fuzz");
    let seeds = fuzz_dir.join("corpus").join(&args.target);
    // New inputs go to a working corpus under fuzz/target, so the checked-in seeds stay as
    // they are; libFuzzer reads both and writes only to the first.
    let work = fuzz_dir.join("target").join("corpus").join(&args.target);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let artifacts = fuzz_dir.join("artifacts").join(&args.target);
    let started = SystemTime::now();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&crate_dir)
        .args(["+nightly", "fuzz", "run", &args.target])
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds));
    println!(
        "xtask: fuzzing {} for {} s (seeds: {})",
        args.target,
        args.seconds,
        seeds.display()
    );
    let result = run(&mut cmd);
    let crashes = new_artifacts(&artifacts, started);
    if result.is_ok() && crashes.is_empty() {
        println!(
            "xtask: fuzz: no crash in {} s; the working corpus is in {}",
            args.seconds,
            work.display()
        );
        return Ok(());
    }
    let Some(example) = crashes.first() else {
        // cargo fuzz failed before libFuzzer wrote anything (build error, unknown target)
        return result;
    };
    for crash in &crashes {
        println!("xtask: fuzz: crashing input: {}", crash.display());
    }
    let example = example.display();
    println!(
        "xtask: fuzz: to reproduce: (cd http && cargo +nightly fuzz run {target} {example})\n\
         xtask: fuzz: to minimise:  (cd http && cargo +nightly fuzz tmin {target} {example})\n\
         xtask: fuzz: then make it a regression test: in http/src/regress.rs, a #[test] \
         calling script::replay(&[..]) with the input's bytes (e.g. from `od -An -tu1 -v \
         {example}`); it replays through the same decoding and invariants. Fix the parser \
         until `cargo test -p gatescope-http` passes.",
        target = args.target,
    );
    match result {
        Err(e) => Err(e.context(format!("fuzz target {} found a crash", args.target))),
        Ok(()) => bail!("fuzz target {} left new artifacts", args.target),
    }
}

/// cargo-fuzz, installed with `cargo install` when `cargo fuzz` does not run.
fn ensure_cargo_fuzz() -> Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_some() {
        return Ok(());
    }
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "cargo-fuzz", "--locked"]);
    println!(
        "xtask: cargo-fuzz is missing; waiting for `{}` (a few minutes)",
        describe(&cmd)
    );
    let start = Instant::now();
    run(cmd.stdout(Stdio::inherit())).context(
        "could not install cargo-fuzz: check network access to crates.io, or install it yourself",
    )?;
    println!(
        "xtask: installed cargo-fuzz in {} s",
        start.elapsed().as_secs()
    );
    Ok(())
}

/// Files libFuzzer wrote to `dir` since `since` (crash-*, leak-*, timeout-*, oom-*).
fn new_artifacts(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(std::result::Result::ok)
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}
