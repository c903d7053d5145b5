//! The gatescope agent as a library: the stages the binary (`main.rs`) wires together.
//!
//! `capture` loads the kernel programs and decodes their records, `conntrack` keeps the
//! connection table, `sessions` feeds each connection's bytes to the HTTP core
//! ([`http`], crate `gatescope-http`), `correlate` and `routes` label the exchanges,
//! `metrics` and `requestlog` export them; `pipeline` drives those in order, `server`
//! serves `/metrics`, and `check` is `gatescope check`.

pub mod btf;
pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
mod conntrack;
mod correlate;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod pipeline;
pub mod preflight;
pub mod requestlog;
pub mod routes;
pub mod server;
mod sessions;
mod sweep;
pub mod target_set;
pub mod targets;

pub use gatescope_http as http;
