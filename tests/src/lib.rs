//! Test harness for gatescope: a real nginx in front of a counting upstream, a
//! byte-counting client, and the real agent binary.
//!
//! Run: `cargo test --release -p gatescope-tests -- --test-threads=1` as root.
//! The agent binary comes from `$GATESCOPE_BIN`, else `target/release/gatescope`.

pub mod agent;
pub mod bpftool;
pub mod client;
pub mod metrics;
pub mod nginx;
pub mod prom;
pub mod promtool;
pub mod upstream;
pub mod util;

use anyhow::Result;

/// A complete scene: counting upstream, nginx with `workers` workers in front of it.
pub struct Scene {
    pub upstream: upstream::Upstream,
    pub nginx: nginx::Nginx,
}

impl Scene {
    pub fn start(workers: u32) -> Result<Self> {
        let upstream = upstream::Upstream::start()?;
        let nginx = nginx::Nginx::start(&nginx::NginxConfig {
            workers,
            listen_port: util::free_port()?,
            upstream_port: upstream.port(),
        })?;
        Ok(Self { upstream, nginx })
    }

    pub fn client(&self) -> client::Client {
        client::Client::new(self.nginx.listen_port())
    }
}
