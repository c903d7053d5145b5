//! A real Caddy 2 (one Go process, many threads) as a reverse proxy in front
//! of one upstream, with its own JSON access log as the oracle.

use crate::request_log::Json;
use crate::util::{self, TempDir};
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CADDY_BIN: &str = "/usr/bin/caddy";

/// One `handled request` line of Caddy's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaddyLogEntry {
    /// The client's address (`remote_ip`, `remote_port`).
    pub client: SocketAddr,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub proto: String,
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// Response body bytes written (`size`).
    pub size: u64,
}

pub struct Caddy {
    child: Child,
    dir: TempDir,
    listen_port: u16,
}

impl Caddy {
    /// `caddy run` on a Caddyfile (no admin endpoint, no automatic HTTPS)
    /// listening on 127.0.0.1:`listen_port`, access log in JSON:
    /// - `/down*`: `down_port`, where nothing listens (-> 502);
    /// - everything else: the upstream on `upstream_port` (Caddy's own
    ///   HTTP/1.1 keep-alive pool).
    pub fn start(listen_port: u16, upstream_port: u16, down_port: u16) -> Result<Self> {
        Self::start_with(listen_port, upstream_port, down_port, None)
    }

    /// The same over HTTPS with `cert` (Go's own TLS: no OpenSSL in Caddy).
    pub fn start_tls(
        listen_port: u16,
        upstream_port: u16,
        down_port: u16,
        cert: &crate::tls::SelfSigned,
    ) -> Result<Self> {
        Self::start_with(listen_port, upstream_port, down_port, Some(cert))
    }

    fn start_with(
        listen_port: u16,
        upstream_port: u16,
        down_port: u16,
        cert: Option<&crate::tls::SelfSigned>,
    ) -> Result<Self> {
        ensure!(
            Path::new(CADDY_BIN).exists(),
            "{CADDY_BIN} not found (apt-get install caddy)"
        );
        let dir = TempDir::new("caddy")?;
        let d = dir.path().display().to_string();
        // Over TLS any server name the client sends gets the certificate.
        let (site, tls) = match cert {
            Some(c) => (
                format!("https://:{listen_port}"),
                format!("\ttls {} {}\n", c.cert().display(), c.key().display()),
            ),
            None => (format!("http://127.0.0.1:{listen_port}"), String::new()),
        };
        let conf = format!(
            r"{{
	admin off
	auto_https off
}}
{site} {{
	bind 127.0.0.1
{tls}	log {{
		output file {d}/access.log
		format json
	}}
	handle /down* {{
		reverse_proxy 127.0.0.1:{down_port}
	}}
	handle {{
		reverse_proxy 127.0.0.1:{upstream_port}
	}}
}}
"
        );
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, conf)?;
        // Caddy keeps state under $XDG_DATA_HOME / $XDG_CONFIG_HOME (else
        // $HOME): all of it in the temp dir.
        let child = Command::new(CADDY_BIN)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log"))?)
            .stderr(File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .with_context(|| format!("spawning {CADDY_BIN}"))?;
        let mut c = Self {
            child,
            dir,
            listen_port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.child.try_wait()? {
                bail!("caddy exited during start-up ({st}):\n{}", c.diagnostics());
            }
            if util::is_listening_v4_loopback(listen_port) {
                return Ok(c);
            }
            if Instant::now() >= deadline {
                bail!(
                    "caddy did not listen on 127.0.0.1:{listen_port} within 10 s:\n{}",
                    c.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// "127.0.0.1:<port>", as the agent labels the listener.
    pub fn listen_addr(&self) -> String {
        format!("127.0.0.1:{}", self.listen_port)
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The access log's complete `handled request` lines (Caddy writes its
    /// error log lines for the site to the same file: left out).
    pub fn access_log(&self) -> Result<Vec<CaddyLogEntry>> {
        let text = std::fs::read_to_string(self.access_log_path()).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete
            .lines()
            .filter(|l| l.contains("\"msg\":\"handled request\""))
            .map(parse_line)
            .collect()
    }

    /// Wait until the access log holds at least `n` entries and return them.
    pub fn wait_access_log(&self, n: usize, timeout: Duration) -> Result<Vec<CaddyLogEntry>> {
        util::poll(timeout, &format!("{n} caddy access-log lines"), || {
            let l = self.access_log()?;
            Ok((l.len() >= n).then_some(l))
        })
        .with_context(|| self.diagnostics())
    }

    /// Caddy's stderr (its own log), for failure messages.
    pub fn diagnostics(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- caddy stderr (tail) ---\n{}",
            util::tail(&read("stderr.log"), 40)
        )
    }

    /// SIGTERM (Caddy shuts down gracefully), SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = util::signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn str_of<'a>(o: &'a Json, k: &str) -> Result<&'a str> {
    match o.get(k) {
        Some(Json::Str(s)) => Ok(s),
        v => bail!("{k:?} is not a string: {v:?}"),
    }
}

fn uint_of(o: &Json, k: &str) -> Result<u64> {
    match o.get(k) {
        Some(Json::Num(n)) if *n >= 0.0 && n.fract() == 0.0 => Ok(*n as u64),
        v => bail!("{k:?} is not a non-negative integer: {v:?}"),
    }
}

/// One `handled request` line of Caddy's JSON access log.
pub fn parse_line(line: &str) -> Result<CaddyLogEntry> {
    let inner = || -> Result<CaddyLogEntry> {
        let o = Json::parse(line)?;
        let r = o.get("request").context("no \"request\"")?;
        let ip: std::net::IpAddr = str_of(r, "remote_ip")?.parse()?;
        let port: u16 = str_of(r, "remote_port")?.parse()?;
        Ok(CaddyLogEntry {
            client: SocketAddr::new(ip, port),
            proto: str_of(r, "proto")?.to_owned(),
            method: str_of(r, "method")?.to_owned(),
            uri: str_of(r, "uri")?.to_owned(),
            status: u16::try_from(uint_of(&o, "status")?)?,
            size: uint_of(&o, "size")?,
        })
    };
    inner().with_context(|| format!("caddy access-log line {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_caddy_2_6_access_line() {
        let line = r#"{"level":"error","ts":1796193685.4855542,"logger":"http.log.access.log0","msg":"handled request","request":{"remote_ip":"127.0.0.1","remote_port":"52546","proto":"HTTP/1.1","method":"GET","host":"127.0.0.1:18080","uri":"/down","headers":{"User-Agent":["curl/7.88.1"],"Accept":["*/*"]}},"user_id":"","duration":0.000465125,"size":0,"status":502,"resp_headers":{"Server":["Caddy"]}}"#;
        let e = parse_line(line).unwrap();
        assert_eq!(e.client, "127.0.0.1:52546".parse().unwrap());
        assert_eq!(
            (e.proto.as_str(), e.method.as_str(), e.uri.as_str()),
            ("HTTP/1.1", "GET", "/down")
        );
        assert_eq!((e.status, e.size), (502, 0));
    }
}
