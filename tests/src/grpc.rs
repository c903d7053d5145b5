//! gRPC for tests/tests/grpc.rs: a grpcio server behind nginx's `grpc_pass`
//! and a grpcio client in front of it (`grpc_app.py` beside this file, on
//! the service [`PROTO`] compiled at run time with `python3 -m
//! grpc_tools.protoc`), and nginx's config and access log for them.
//! `cargo xtask setup` installs grpcio and grpcio-tools.

use crate::nginx::{conf_head, ListenTls};
use crate::request_log::Json;
use crate::util::{self, TempDir};
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const APP_PY: &str = include_str!("grpc_app.py");

/// The test service: unary calls answering OK, NOT_FOUND and UNAVAILABLE,
/// server-, client- and bidirectional streaming (see `grpc_app.py`).
pub const PROTO: &str = r#"syntax = "proto3";
package gs;
service Probe {
  rpc Echo(Msg) returns (Msg);
  rpc Find(Msg) returns (Msg);
  rpc Flaky(Msg) returns (Msg);
  rpc Stream(StreamReq) returns (stream Msg);
  rpc Collect(stream Msg) returns (Msg);
  rpc Chat(stream Msg) returns (stream Msg);
}
message Msg { bytes data = 1; int32 size = 2; }
message StreamReq { int32 count = 1; int32 size = 2; }
"#;

/// Each method's path and the status its server gives.
pub const METHODS: [(&str, u16); 6] = [
    ("/gs.Probe/Echo", 0),
    ("/gs.Probe/Find", 5),
    ("/gs.Probe/Flaky", 14),
    ("/gs.Probe/Stream", 0),
    ("/gs.Probe/Collect", 0),
    ("/gs.Probe/Chat", 0),
];

/// The compiled service and the script, in a temp dir.
pub struct GrpcApp {
    dir: TempDir,
}

/// One call as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCall {
    pub method: String,
    /// The numeric status the client got.
    pub code: u16,
    /// Messages sent and received.
    pub sent: u64,
    pub received: u64,
}

impl GrpcApp {
    /// Writes the proto and the script and compiles the proto.
    pub fn compile() -> Result<Self> {
        let dir = TempDir::new("grpc-app")?;
        std::fs::write(dir.path().join("probe.proto"), PROTO)?;
        std::fs::write(dir.path().join("grpc_app.py"), APP_PY)?;
        let out = Command::new("python3")
            .args(["-m", "grpc_tools.protoc", "-I."])
            .args(["--python_out=.", "--grpc_python_out=.", "probe.proto"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .context("python3 -m grpc_tools.protoc (cargo xtask setup installs grpcio-tools)")?;
        ensure!(
            out.status.success(),
            "protoc failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self { dir })
    }

    fn python(&self) -> Command {
        let mut c = Command::new("python3");
        c.arg(self.dir.path().join("grpc_app.py"))
            .env("PYTHONPATH", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Starts the server on a free port.
    pub fn server(&self) -> Result<GrpcServer> {
        let log = self.dir.path().join("server-calls.log");
        let err = self.dir.path().join("server-stderr.log");
        let mut child = self
            .python()
            .arg("server")
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .context("spawning the gRPC server")?;
        let stdout = child.stdout.take().context("server stdout")?;
        // Read on a thread, so that a server that hangs cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let mut server = GrpcServer {
            child,
            port: 0,
            log,
            err,
        };
        let Ok(Ok(line)) = rx.recv_timeout(Duration::from_secs(20)) else {
            bail!("the gRPC server did not start\n{}", server.diagnostics());
        };
        let Some(port) = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
        else {
            bail!("server said {line:?}\n{}", server.diagnostics());
        };
        server.port = port;
        Ok(server)
    }

    /// Runs the client against `target` (`host:port`; TLS trusting `ca`
    /// when given): `channels` channels, `rounds` rounds of every method
    /// each, `stream_n` messages per server stream. Its calls, in order.
    pub fn client(
        &self,
        target: &str,
        ca: Option<&Path>,
        channels: u32,
        rounds: u32,
        stream_n: u32,
    ) -> Result<Vec<ClientCall>> {
        let ca = ca.map_or_else(|| "-".to_owned(), |p| p.display().to_string());
        let out = self
            .python()
            .args(["client", target, &ca])
            .args([channels, rounds, stream_n].map(|n| n.to_string()))
            .output()
            .context("running the gRPC client")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "gRPC client failed ({}):\n{stderr}",
            out.status
        );
        let mut calls = Vec::new();
        for line in String::from_utf8(out.stdout)?.lines() {
            let o = Json::parse(line).with_context(|| format!("client line {line:?}"))?;
            let num = |k: &str| match o.get(k) {
                Some(Json::Num(n)) => Ok(*n as u64),
                v => bail!("{k:?} in {line:?}: {v:?}"),
            };
            let Some(Json::Str(method)) = o.get("method") else {
                bail!("no method in {line:?}");
            };
            calls.push(ClientCall {
                method: method.clone(),
                code: num("code")? as u16,
                sent: num("sent")?,
                received: num("received")?,
            });
        }
        Ok(calls)
    }
}

/// The running gRPC server (killed on drop).
pub struct GrpcServer {
    child: Child,
    port: u16,
    log: PathBuf,
    err: PathBuf,
}

impl GrpcServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every call it finished: (path, status).
    pub fn calls(&self) -> Result<Vec<(String, u16)>> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| {
                let (m, c) = l.split_once(' ').with_context(|| format!("{l:?}"))?;
                Ok((m.to_owned(), c.parse()?))
            })
            .collect()
    }

    pub fn diagnostics(&self) -> String {
        format!(
            "--- gRPC server stderr ---\n{}",
            util::tail(&std::fs::read_to_string(&self.err).unwrap_or_default(), 30)
        )
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx's access log for the gRPC scene, in its directory.
pub const LOG: &str = "grpc.log";

/// nginx in directory `d`: `workers` workers, h2c on 127.0.0.1:`port`, h2
/// over TLS on `tls` when given, every location `grpc_pass`ed to the server
/// on `upstream` over h2c (keep-alive, so upstream connections carry many
/// streams), the [`LogLine`] format in [`LOG`].
pub fn nginx_conf(
    d: &str,
    workers: u32,
    port: u16,
    tls: Option<(u16, &ListenTls)>,
    upstream: u16,
) -> String {
    let tls = tls.map_or_else(String::new, |(p, t)| {
        format!(
            "        listen 127.0.0.1:{p} ssl http2;
        ssl_certificate {};
        ssl_certificate_key {};
        ssl_protocols TLSv1.2 TLSv1.3;
",
            t.certificate.display(),
            t.key.display()
        )
    });
    format!(
        "{head}    log_format grpc '$remote_addr:$remote_port $request_method $uri $status $request_length $bytes_sent $server_protocol $server_port $upstream_status h=$upstream_http_grpc_status t=$upstream_trailer_grpc_status';

    upstream grpc_backend {{
        server 127.0.0.1:{upstream};
        keepalive 8;
    }}

    server {{
        listen 127.0.0.1:{port} http2;
{tls}        access_log {d}/{LOG} grpc;
        location / {{
            grpc_pass grpc://grpc_backend;
        }}
    }}
}}
",
        head = conf_head(d, workers)
    )
}

/// One line of [`LOG`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub remote: String,
    pub method: String,
    pub uri: String,
    pub status: u16,
    pub request_length: u64,
    pub bytes_sent: u64,
    pub protocol: String,
    pub server_port: u16,
    pub upstream_status: String,
    /// grpc-status from the upstream's response headers (Trailers-Only)
    /// or its trailers.
    pub grpc_status: Option<u16>,
}

/// The complete lines of [`LOG`] in nginx's directory `dir`.
pub fn read_log(dir: &Path) -> Result<Vec<LogLine>> {
    let text = std::fs::read_to_string(dir.join(LOG)).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete.lines().map(parse_line).collect()
}

fn parse_line(l: &str) -> Result<LogLine> {
    let f: Vec<&str> = l.split(' ').collect();
    ensure!(f.len() == 11, "{} fields in {l:?}", f.len());
    let grpc = |field: &str, prefix: &str| -> Result<Option<u16>> {
        let v = field
            .strip_prefix(prefix)
            .with_context(|| format!("{l:?}"))?;
        Ok(if v == "-" { None } else { Some(v.parse()?) })
    };
    let header = grpc(f[9], "h=")?;
    let trailer = grpc(f[10], "t=")?;
    Ok(LogLine {
        remote: f[0].to_owned(),
        method: f[1].to_owned(),
        uri: f[2].to_owned(),
        status: f[3].parse()?,
        request_length: f[4].parse()?,
        bytes_sent: f[5].parse()?,
        protocol: f[6].to_owned(),
        server_port: f[7].parse()?,
        upstream_status: f[8].to_owned(),
        grpc_status: trailer.or(header),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines() {
        let l =
            parse_line("127.0.0.1:5000 POST /gs.Probe/Find 200 90 120 HTTP/2.0 8080 200 h=5 t=-")
                .unwrap();
        assert_eq!(
            (l.status, l.grpc_status, l.server_port),
            (200, Some(5), 8080)
        );
        let l =
            parse_line("127.0.0.1:5000 POST /gs.Probe/Echo 200 90 120 HTTP/2.0 8080 200 h=- t=0")
                .unwrap();
        assert_eq!(l.grpc_status, Some(0));
        assert!(parse_line("127.0.0.1:5000 POST /x 200").is_err());
    }
}
