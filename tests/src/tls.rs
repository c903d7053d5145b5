//! HTTPS for the accuracy tests (tests/tests/tls.rs): a self-signed
//! certificate for 127.0.0.1 and localhost made with the `openssl` CLI, and the
//! client side of TLS: [`Forwarder`], a Python 3 helper (`tls_forwarder.py`
//! beside this file, standard library only) that holds one TLS connection to
//! the gateway per plain connection of the Rust client ([`crate::client::Conn`]
//! through [`crate::client::Endpoint::Tls`]) and moves plaintext verbatim. The
//! client's byte counts are so the plaintext of each request and response:
//! nginx's `$request_length` and `$bytes_sent`.

use crate::nginx::ListenTls;
use crate::util::{self, TempDir};
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The helper's source; written next to its log at start.
const FORWARDER_PY: &str = include_str!("tls_forwarder.py");
/// The name the certificate is checked for (also in its subjectAltName).
pub const SERVER_NAME: &str = "localhost";

/// Writes a self-signed certificate (`cert`) and its unencrypted RSA key
/// (`key`) made by `openssl req`: `CN=localhost`,
/// `subjectAltName=IP:127.0.0.1,DNS:localhost`, valid for 2 days. Also used by
/// the bench's and the demo's TLS listeners.
pub fn write_self_signed(cert: &Path, key: &Path) -> Result<()> {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdin(Stdio::null())
        .output()
        .context("running `openssl req` (cargo xtask setup installs openssl)")?;
    ensure!(
        out.status.success() && cert.exists() && key.exists(),
        "openssl req failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A self-signed certificate and its unencrypted RSA key in a temp dir (removed
/// on drop): `CN=localhost`, `subjectAltName=IP:127.0.0.1,DNS:localhost`,
/// valid for 2 days. The certificate is its own CA for the client.
pub struct SelfSigned {
    dir: TempDir,
}

impl SelfSigned {
    pub fn generate() -> Result<Self> {
        let dir = TempDir::new("tls-cert")?;
        write_self_signed(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))?;
        Ok(Self { dir })
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// nginx's `ssl_certificate` and `ssl_certificate_key` for this pair.
    pub fn listen_tls(&self) -> ListenTls {
        ListenTls {
            certificate: self.cert(),
            key: self.key(),
        }
    }
}

/// The Python TLS forwarder (see the module doc and `tls_forwarder.py`):
/// listens on 127.0.0.1:[`Forwarder::port`]; each connection made there is a
/// TLS connection to the server it was started for. Killed on drop.
pub struct Forwarder {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Forwarder {
    /// Start it for `127.0.0.1:server_port`, trusting `ca` for [`SERVER_NAME`].
    pub fn start(server_port: u16, ca: &Path) -> Result<Self> {
        let dir = TempDir::new("tls-forwarder")?;
        let script = dir.path().join("tls_forwarder.py");
        std::fs::write(&script, FORWARDER_PY)?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("127.0.0.1")
            .arg(server_port.to_string())
            .arg(ca)
            .arg(SERVER_NAME)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("spawning python3 (the TLS forwarder)")?;
        let stdout = child.stdout.take().context("forwarder stdout")?;
        // The first line, read on a thread so that a helper that hangs cannot.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let mut f = Self {
            child,
            port: 0,
            dir,
        };
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => bail!("reading the forwarder's port: {e}\n{}", f.diagnostics()),
            Err(_) => bail!("the forwarder did not start in 10 s\n{}", f.diagnostics()),
        };
        let Some(port) = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
        else {
            bail!(
                "forwarder said {line:?} instead of `PORT n`\n{}",
                f.diagnostics()
            );
        };
        f.port = port;
        ensure!(
            util::is_listening_v4_loopback(port),
            "the forwarder does not listen on {port}"
        );
        Ok(f)
    }

    /// Where the Rust client connects (plain TCP on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The helper's stderr (its connection errors), for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- TLS forwarder stderr ---\n{}",
            std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
        )
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server side and the client side of TLS for one scene: the certificate
/// nginx serves and the forwarder that trusts it.
pub struct TlsSide {
    pub cert: SelfSigned,
    pub forwarder: Forwarder,
}

/// The forwarder's status line (`OK <addr> <version> <cipher>` once its TLS
/// connection is up): the TLS connection's client address, and its version
/// and cipher. Read byte by byte so that nothing after it is consumed.
pub(crate) fn forwarder_status(s: &mut std::net::TcpStream) -> Result<(SocketAddr, String)> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        ensure!(
            s.read(&mut b)? == 1,
            "the TLS forwarder closed before its status line ({:?})",
            String::from_utf8_lossy(&line)
        );
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        ensure!(
            line.len() < 4096,
            "the TLS forwarder's status line is too long"
        );
    }
    let line = String::from_utf8(line).context("status line not UTF-8")?;
    match line.split_once(' ') {
        Some(("OK", rest)) => {
            let (addr, tls) = rest.split_once(' ').unwrap_or((rest, ""));
            let addr = addr
                .parse()
                .with_context(|| format!("bad address in the forwarder's {line:?}"))?;
            Ok((addr, tls.to_string()))
        }
        _ => bail!("the TLS forwarder failed: {line}"),
    }
}
