//! The gatescope agent as a library: the stages the binary (`main.rs`) wires together.
//!
//! In the order a record flows: `capture` loads the kernel programs and decodes their
//! records; `conntrack` keeps one entry per connection (facts, lifecycle, protocol state,
//! parsed by the HTTP core [`http`], crate `gatescope-http`); `correlate` joins each
//! client request with its upstream call; `label` names service, route and upstream leg;
//! `sinks` (metrics, request log) consume the labelled records. `pipeline` drives those in
//! order, `kernel_targets` and `procfs` keep the gateway's processes and listeners,
//! `server` serves `/metrics`, and `check` is `gatescope check`. See ARCHITECTURE.md.

pub mod btf;
pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
mod conntrack;
mod correlate;
pub mod error;
pub mod identity;
pub mod kernel_targets;
pub mod label;
pub mod metrics;
pub mod pipeline;
pub mod pods;
pub mod preflight;
pub mod procfs;
pub mod server;
pub mod sinks;
mod sock_diag;
pub mod spans;

pub use gatescope_http as http;
