//! `cargo xtask build`: the release agent (agent/build.rs builds the eBPF crate via aya-build).

use std::path::PathBuf;

use anyhow::{ensure, Result};

use crate::util::{cargo, run, target_dir};

pub fn build() -> Result<PathBuf> {
    // main() put ~/.cargo/bin on PATH, so aya-build finds bpf-linker.
    run(cargo().args(["build", "--release", "-p", "gatescope"]))?;
    let bin = target_dir().join("release/gatescope");
    ensure!(
        bin.is_file(),
        "cargo build succeeded but {} is missing",
        bin.display()
    );
    println!("built {}", bin.display());
    Ok(bin)
}
