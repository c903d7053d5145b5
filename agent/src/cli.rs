//! Command line. Every flag can also be set with a `GATESCOPE_*` variable, as
//! a DaemonSet would.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "gatescope",
    version,
    about = "See what an API gateway is doing, from the kernel."
)]
pub struct Args {
    /// PID of a gateway process to observe; it and all its descendants
    /// (workers, reloaded workers) are followed. Repeatable.
    #[arg(
        long = "pid",
        env = "GATESCOPE_PID",
        value_delimiter = ',',
        required = true
    )]
    pub pids: Vec<u32>,

    /// Address to serve Prometheus metrics on (`/metrics`).
    #[arg(long, env = "GATESCOPE_LISTEN", default_value = "0.0.0.0:9542")]
    pub listen: SocketAddr,

    /// `kong` renders the families that have a Kong Prometheus plugin
    /// equivalent under Kong's exact names, so existing dashboards work.
    #[arg(long, env = "GATESCOPE_METRICS_COMPAT", value_enum, default_value_t = Compat::None)]
    pub metrics_compat: Compat,

    /// Node identity for Kong's `node_id` label; defaults to /etc/machine-id
    /// written as a UUID, or the host name.
    #[arg(long, env = "GATESCOPE_NODE_ID")]
    pub node_id: Option<String>,

    /// Size of the kernel-to-agent ring buffer in bytes (a power of two, at
    /// least one page).
    #[arg(long, env = "GATESCOPE_RING_BUFFER_BYTES", default_value_t = gatescope_common::EVENTS_DEFAULT_BYTES)]
    pub ring_buffer_bytes: u32,

    /// Log filter (tracing's env-filter syntax).
    #[arg(long, env = "GATESCOPE_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// gatescope's own names, following Prometheus conventions.
    None,
    /// Kong Prometheus plugin names and labels.
    Kong,
}
