//! HTTP/2 for tests/tests/h2.rs: an nginx with an h2-over-TLS listener
//! (`listen ... ssl http2`, a self-signed certificate) and an h2c listener
//! (`listen ... http2`, prior knowledge), both in front of the counting
//! upstream (HTTP/1.1, keep-alive), with an access log of what nginx counts
//! per stream; and the clients: curl, h2load (nghttp2-client), and a Python
//! `h2` client with frame-level control (`h2_client.py` beside this file).

use crate::nginx::{conf_head, Nginx};
use crate::tls::SelfSigned;
use crate::upstream::Upstream;
use crate::util::{self, TempDir};
use anyhow::{bail, ensure, Context, Result};
use std::process::Command;

/// The frame-level client's source; written to a temp dir to run.
const H2_CLIENT_PY: &str = include_str!("h2_client.py");

/// One line of the `h2` log: what nginx counted for one request (stream).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct H2Entry {
    /// `$remote_addr:$remote_port`
    pub client: String,
    pub method: String,
    /// `$uri`: no query string.
    pub uri: String,
    pub status: u16,
    pub request_length: u64,
    pub bytes_sent: u64,
    /// `$server_protocol`: `HTTP/2.0` for every stream here.
    pub protocol: String,
}

pub struct H2Scene {
    pub upstream: Upstream,
    pub cert: SelfSigned,
    pub nginx: Nginx,
    pub tls_port: u16,
    pub h2c_port: u16,
}

impl H2Scene {
    /// nginx with `workers` workers: `location /` to the upstream,
    /// `location = /missing` answered 404 by nginx itself, headers up to
    /// 64 KiB (`large_client_header_buffers`, which HTTP/2 uses in 1.22).
    pub fn start(workers: u32) -> Result<Self> {
        let upstream = Upstream::start()?;
        let cert = SelfSigned::generate()?;
        let tls_port = util::free_port()?;
        let h2c_port = util::free_port()?;
        let (c, k) = (cert.cert(), cert.key());
        let up = upstream.port();
        let nginx = Nginx::start_conf(
            |d| {
                format!(
                    r#"{head}    log_format h2 '$remote_addr:$remote_port $request_method $uri $status $request_length $bytes_sent $server_protocol';

    upstream backend {{
        server 127.0.0.1:{up};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{tls_port} ssl http2;
        listen 127.0.0.1:{h2c_port} http2;
        ssl_certificate {c};
        ssl_certificate_key {k};
        access_log {d}/h2.log h2;
        large_client_header_buffers 4 64k;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location / {{
            proxy_pass http://backend;
        }}
        location = /missing {{
            return 404;
        }}
    }}
}}
"#,
                    head = conf_head(d, workers),
                    c = c.display(),
                    k = k.display(),
                )
            },
            workers,
            tls_port,
        )?;
        ensure!(
            util::is_listening_v4_loopback(h2c_port),
            "nginx does not listen on the h2c port {h2c_port}"
        );
        Ok(Self {
            upstream,
            cert,
            nginx,
            tls_port,
            h2c_port,
        })
    }

    /// `https://127.0.0.1:PORT` (TLS) or `http://...` (h2c).
    pub fn base(&self, tls: bool) -> String {
        if tls {
            format!("https://127.0.0.1:{}", self.tls_port)
        } else {
            format!("http://127.0.0.1:{}", self.h2c_port)
        }
    }

    pub fn listener(&self, tls: bool) -> String {
        let port = if tls { self.tls_port } else { self.h2c_port };
        format!("127.0.0.1:{port}")
    }

    /// The log's complete lines.
    pub fn log(&self) -> Result<Vec<H2Entry>> {
        let text =
            std::fs::read_to_string(self.nginx.dir_path().join("h2.log")).unwrap_or_default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        complete.lines().map(parse_line).collect()
    }

    /// The log once it has `n` lines.
    pub fn wait_log(&self, n: usize) -> Result<Vec<H2Entry>> {
        util::poll(std::time::Duration::from_secs(15), "the h2 log", || {
            let l = self.log()?;
            Ok((l.len() >= n).then_some(l))
        })
    }

    /// `curl --http2` (TLS, ALPN) for `paths`, all on one connection, in
    /// order, or `--http2-prior-knowledge` (h2c), one connection each
    /// (Debian's curl 7.88 fails a second request on a reused h2c
    /// connection: exit 16); each response's status.
    pub fn curl(&self, tls: bool, paths: &[&str]) -> Result<Vec<u16>> {
        if !tls && paths.len() > 1 {
            let mut codes = Vec::new();
            for p in paths {
                codes.extend(self.curl(tls, &[p])?);
            }
            return Ok(codes);
        }
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "20"]);
        if tls {
            // The certificate is self-signed; what is tested is nginx, not it.
            cmd.args(["--http2", "--insecure"]);
        } else {
            cmd.arg("--http2-prior-knowledge");
        }
        for p in paths {
            cmd.args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}\\n"]);
            cmd.arg(format!("{}{p}", self.base(tls)));
        }
        let out = cmd.output().context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut codes = Vec::new();
        for line in text.lines() {
            let Some(("2", code)) = line.split_once(' ') else {
                bail!("curl did not speak HTTP/2: {text}");
            };
            codes.push(code.parse()?);
        }
        ensure!(codes.len() == paths.len(), "curl answered {text}");
        Ok(codes)
    }

    /// h2load: `n` requests over `clients` connections, `streams` at once
    /// on each, round robin over `paths`; (done, 2xx, 4xx) as h2load
    /// counted them (it calls only 2xx and 3xx "succeeded").
    pub fn h2load(
        &self,
        tls: bool,
        n: u32,
        clients: u32,
        streams: u32,
        paths: &[&str],
    ) -> Result<(u64, u64, u64)> {
        let mut cmd = Command::new("h2load");
        cmd.args(["-n", &n.to_string(), "-c", &clients.to_string()])
            .args(["-m", &streams.to_string()]);
        for p in paths {
            cmd.arg(format!("{}{p}", self.base(tls)));
        }
        let out = cmd.output().context("running h2load (nghttp2-client)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |line: &str, name: &str| -> Option<u64> {
            let words: Vec<&str> = line.split_whitespace().collect();
            words
                .iter()
                .position(|w| w.trim_end_matches(',') == name)
                .and_then(|i| words.get(i.checked_sub(1)?)?.parse().ok())
        };
        let requests = text
            .lines()
            .find(|l| l.starts_with("requests:"))
            .with_context(|| format!("no requests line:\n{text}"))?;
        let codes = text
            .lines()
            .find(|l| l.starts_with("status codes:"))
            .with_context(|| format!("no status codes line:\n{text}"))?;
        let got = (
            field(requests, "done").context("done")?,
            field(codes, "2xx").context("2xx")?,
            field(codes, "4xx").context("4xx")?,
        );
        ensure!(
            text.contains("Application protocol: h2"),
            "h2load did not speak h2:\n{text}"
        );
        Ok(got)
    }

    /// The frame-level client's `scenario` (see h2_client.py): its
    /// requests as (method, path, status; 0 for one it reset).
    pub fn frames(&self, tls: bool, scenario: &str) -> Result<Vec<(String, String, u16)>> {
        let (_dir, mut cmd) = self.client_command(tls, scenario)?;
        let out = cmd
            .output()
            .context("running python3 h2_client.py (PyPI h2)")?;
        parse_client_output(scenario, &out)
    }

    /// The `hold` scenario: its first two requests made, the connection
    /// kept open until [`Held::finish`].
    pub fn hold(&self, tls: bool) -> Result<Held> {
        let (dir, mut cmd) = self.client_command(tls, "hold")?;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running python3 h2_client.py (PyPI h2)")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = std::io::BufReader::new(stdout);
        let mut first = String::new();
        std::io::BufRead::read_line(&mut lines, &mut first)?;
        ensure!(first.trim() == "READY", "h2_client.py hold said {first:?}");
        Ok(Held {
            child,
            lines,
            _dir: dir,
        })
    }

    fn client_command(&self, tls: bool, scenario: &str) -> Result<(TempDir, Command)> {
        let dir = TempDir::new("h2-client")?;
        let script = dir.path().join("h2_client.py");
        std::fs::write(&script, H2_CLIENT_PY)?;
        let port = if tls { self.tls_port } else { self.h2c_port };
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(["127.0.0.1", &port.to_string(), if tls { "1" } else { "0" }])
            .arg(self.cert.cert())
            .arg(scenario);
        Ok((dir, cmd))
    }
}

/// A `hold` client between its two halves.
pub struct Held {
    child: std::process::Child,
    lines: std::io::BufReader<std::process::ChildStdout>,
    _dir: TempDir,
}

impl Held {
    /// Lets it make its last two requests; all four, as `frames` gives them.
    pub fn finish(mut self) -> Result<Vec<(String, String, u16)>> {
        use std::io::{Read, Write};
        let mut stdin = self.child.stdin.take().context("stdin")?;
        stdin.write_all(b"go\n")?;
        drop(stdin);
        let mut rest = String::new();
        self.lines.read_to_string(&mut rest)?;
        let out = self.child.wait_with_output()?;
        let out = std::process::Output {
            status: out.status,
            stdout: rest.into_bytes(),
            stderr: out.stderr,
        };
        parse_client_output("hold", &out)
    }
}

/// The client's lines: `METHOD PATH STATUS` per request.
fn parse_client_output(
    scenario: &str,
    out: &std::process::Output,
) -> Result<Vec<(String, String, u16)>> {
    ensure!(
        out.status.success(),
        "h2_client.py {scenario} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut done = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [method, path, status] = f[..] else {
            bail!("h2_client.py said {line:?}");
        };
        done.push((method.to_owned(), path.to_owned(), status.parse()?));
    }
    Ok(done)
}

fn parse_line(line: &str) -> Result<H2Entry> {
    let f: Vec<&str> = line.split(' ').collect();
    let [client, method, uri, status, request_length, bytes_sent, protocol] = f[..] else {
        bail!("h2 log line {line:?}");
    };
    Ok(H2Entry {
        client: client.to_owned(),
        method: method.to_owned(),
        uri: uri.to_owned(),
        status: status.parse()?,
        request_length: request_length.parse()?,
        bytes_sent: bytes_sent.parse()?,
        protocol: protocol.to_owned(),
    })
}
