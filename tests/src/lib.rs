//! Test harness for gatescope: a real nginx in front of a counting upstream, a
//! byte-counting client, and the real agent binary. `cargo xtask demo` and `bench`
//! use the same toolkit (upstream, HTTP, wrk, Prometheus text, processes).
//!
//! Run: `cargo test --release -p gatescope-tests -- --test-threads=1` as root.
//! The agent binary comes from `$GATESCOPE_BIN`, else `target/release/gatescope`.

pub mod access_log;
pub mod accuracy;
pub mod agent;
pub mod bpftool;
pub mod caddy;
pub mod client;
pub mod expect;
pub mod genai;
pub mod genai_nginx;
pub mod genai_scene;
pub mod grafana;
pub mod grpc;
pub mod h2;
pub mod haproxy;
pub mod holders;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod nginx;
pub mod otlp;
pub mod pcap;
pub mod prom;
pub mod prometheus;
pub mod promtool;
pub mod request_log;
pub mod span_scene;
pub mod tls;
pub mod tun;
pub mod upstream;
pub mod util;
pub mod witness;
pub mod workload;
pub mod wrk;

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

    /// [`Scene::start`] with nginx's process-level [`nginx::Tuning`].
    pub fn start_tuned(workers: u32, tuning: &nginx::Tuning) -> Result<Self> {
        let upstream = upstream::Upstream::start()?;
        let nginx = nginx::Nginx::start_tuned(
            &nginx::NginxConfig {
                workers,
                listen_port: util::free_port()?,
                upstream_port: upstream.port(),
            },
            tuning,
        )?;
        Ok(Self { upstream, nginx })
    }

    pub fn client(&self) -> client::Client {
        client::Client::new(self.nginx.listen_port())
    }
}

/// The accuracy tests' scene: the upstream, and nginx with the `acc` access log, a
/// `/slow/` location with a 500 ms read timeout, a `/down` location proxied to a
/// closed port and `location = /missing { return 404; }` (see
/// [`nginx::Nginx::start_accuracy`]); over HTTPS with [`AccuracyScene::start_tls`].
pub struct AccuracyScene {
    pub upstream: upstream::Upstream,
    pub nginx: nginx::Nginx,
    /// The closed port behind `/down`.
    pub down_port: u16,
    /// HTTPS: nginx's certificate and the client's TLS forwarder.
    pub tls: Option<tls::TlsSide>,
}

impl AccuracyScene {
    pub fn start(workers: u32) -> Result<Self> {
        Self::start_with(workers, false)
    }

    /// The same scene with `listen ... ssl` (a self-signed certificate for
    /// 127.0.0.1) and a [`tls::Forwarder`] for the client: connect through
    /// [`AccuracyScene::endpoint`].
    pub fn start_tls(workers: u32) -> Result<Self> {
        Self::start_with(workers, true)
    }

    fn start_with(workers: u32, https: bool) -> Result<Self> {
        let upstream = upstream::Upstream::start()?;
        let down_port = util::free_port()?;
        let cert = if https {
            Some(tls::SelfSigned::generate()?)
        } else {
            None
        };
        let nginx = nginx::Nginx::start_accuracy(&nginx::AccuracyConfig {
            workers,
            listen_port: util::free_port()?,
            upstream_port: upstream.port(),
            down_port,
            tls: cert.as_ref().map(tls::SelfSigned::listen_tls),
        })?;
        let tls = match cert {
            Some(cert) => {
                let forwarder = tls::Forwarder::start(nginx.listen_port(), &cert.cert())?;
                Some(tls::TlsSide { cert, forwarder })
            }
            None => None,
        };
        Ok(Self {
            upstream,
            nginx,
            down_port,
            tls,
        })
    }

    /// How the workload's client reaches nginx: directly, or over TLS through
    /// the forwarder.
    pub fn endpoint(&self) -> client::Endpoint {
        let server = self.nginx.listen_port();
        match &self.tls {
            Some(t) => client::Endpoint::Tls {
                forwarder: t.forwarder.port(),
                server,
            },
            None => client::Endpoint::Plain(server),
        }
    }
}
