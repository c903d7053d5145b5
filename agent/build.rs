//! Builds the kernel programs (`ebpf/`) with aya-build so that a plain
//! `cargo build` produces an agent with its eBPF object embedded.
use std::path::PathBuf;

use aya_build::{Package, Toolchain};

fn main() -> aya_build::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root_dir = manifest_dir.join("../ebpf").canonicalize()?;
    let root_dir = root_dir.to_str().expect("workspace path is UTF-8");
    // aya-build watches ebpf/ only; the programs also compile common/'s
    // shared structs, whose layout must match the agent's.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../common/src").display()
    );
    aya_build::build_ebpf(
        [Package {
            name: "gatescope-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
