//! An OTLP/HTTP receiver the test controls: it accepts `POST /v1/traces`
//! with a protobuf `ExportTraceServiceRequest`, keeps every span it decoded,
//! and can be told to be down (nothing listens on its port), slow (answers
//! after a delay) or refusing (HTTP 503), then to come back on the same port.

use anyhow::{bail, Context, Result};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, KeyValue},
};
use prost::Message as _;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with an empty `ExportTraceServiceResponse`.
    Up,
    /// The same, after this delay.
    Slow(Duration),
    /// 503 Service Unavailable, the body unread by the decoder.
    Refusing,
}

/// `SpanKind` values of OTLP.
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;
/// `Status.code` values of OTLP.
pub const STATUS_UNSET: i32 = 0;
pub const STATUS_ERROR: i32 = 2;
/// `Span.flags`: the remote-parent bit is known / set.
pub const FLAG_HAS_IS_REMOTE: u32 = 0x100;
pub const FLAG_IS_REMOTE: u32 = 0x200;

/// One received span, flattened with its resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Lowercase hex, as in `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: BTreeMap<String, Attr>,
    pub status: i32,
    pub flags: u32,
    pub trace_state: String,
    pub resource: BTreeMap<String, Attr>,
}

/// An attribute value, as the tests compare them.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Other(String),
}

impl Attr {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Attr::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Attr::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attributes.get(key)
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Attr::as_str)
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Attr::as_int)
    }
    /// The parent is remote (the OTLP flags say so explicitly).
    pub fn parent_is_remote(&self) -> Option<bool> {
        (self.flags & FLAG_HAS_IS_REMOTE != 0).then_some(self.flags & FLAG_IS_REMOTE != 0)
    }
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
    pub fn duration_ms(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn attr(v: Option<&AnyValue>) -> Attr {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => Attr::Str(s.clone()),
        Some(Value::IntValue(i)) => Attr::Int(*i),
        other => Attr::Other(format!("{other:?}")),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, Attr> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), attr(kv.value.as_ref())))
        .collect()
}

/// Every span of a request, flattened.
pub fn flatten(req: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: s.kind,
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    attributes: attrs(&s.attributes),
                    status: s.status.as_ref().map_or(STATUS_UNSET, |st| st.code),
                    flags: s.flags,
                    trace_state: s.trace_state.clone(),
                    resource: resource.clone(),
                });
            }
        }
    }
    out
}

/// One trace as an indented tree, children under their parent in start
/// order; spans whose parent is not in the trace (a remote caller's, the
/// gateway's own) are listed at the top with their parent named.
pub fn render_tree(spans: &[Span], trace_id: &str) -> String {
    use std::fmt::Write as _;
    let mut mine: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    mine.sort_by_key(|s| s.start_ns);
    let ids: std::collections::BTreeSet<&str> = mine.iter().map(|s| s.span_id.as_str()).collect();
    let t0 = mine.first().map_or(0, |s| s.start_ns);
    let mut out = format!("trace {trace_id}\n");
    fn line(out: &mut String, s: &Span, t0: u64, prefix: &str, last: bool) {
        let kind = match s.kind {
            KIND_SERVER => "SERVER",
            KIND_CLIENT => "CLIENT",
            _ => "SPAN",
        };
        let status = s
            .int("http.response.status_code")
            .map_or("-".into(), |c| c.to_string());
        let mut extra = String::new();
        if let Some(n) = s.int("http.request.resend_count") {
            let _ = write!(extra, " resend {n}");
        }
        if let Some(e) = s.str("error.type") {
            let _ = write!(extra, " error.type {e}");
        }
        if s.status == STATUS_ERROR {
            extra.push_str(" ERROR");
        }
        let _ = writeln!(
            out,
            "{prefix}{} {kind} {:?} {} {status} +{:.3} ms {:.3} ms{extra} [{}]",
            if last { "└─" } else { "├─" },
            s.name,
            s.str("url.path").unwrap_or(""),
            s.start_ns.saturating_sub(t0) as f64 / 1e6,
            s.duration_ms(),
            s.span_id,
        );
    }
    fn children(out: &mut String, all: &[&Span], parent: &str, t0: u64, prefix: &str) {
        let kids: Vec<&&Span> = all.iter().filter(|s| s.parent_span_id == parent).collect();
        for (i, k) in kids.iter().enumerate() {
            let last = i + 1 == kids.len();
            line(out, k, t0, prefix, last);
            let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
            children(out, all, &k.span_id, t0, &deeper);
        }
    }
    let tops: Vec<&&Span> = mine
        .iter()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
        .collect();
    for (i, top) in tops.iter().enumerate() {
        if !top.is_root() {
            let remote = if top.parent_is_remote() == Some(true) {
                "remote "
            } else {
                ""
            };
            let _ = writeln!(out, "(parent {remote}span {})", top.parent_span_id);
        }
        line(&mut out, top, t0, "", i + 1 == tops.len());
        let deeper = if i + 1 == tops.len() { "   " } else { "│  " };
        children(&mut out, &mine, &top.span_id, t0, deeper);
    }
    out
}

#[derive(Default)]
struct Shared {
    mode: Mutex<Option<Mode>>,
    spans: Mutex<Vec<Span>>,
    /// Export requests answered 200.
    accepted: AtomicU64,
    /// Export requests answered 503.
    refused: AtomicU64,
    conns: Mutex<Vec<TcpStream>>,
    /// Request lines answered 404 or 400 (for failure messages).
    rejected: Mutex<Vec<String>>,
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on 127.0.0.1:<free port>, up.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the OTLP receiver")?;
        let addr = listener.local_addr()?;
        let mut r = Receiver {
            addr,
            shared: Arc::new(Shared::default()),
            stop: Arc::new(AtomicBool::new(false)),
            acceptor: None,
        };
        r.listen(listener)?;
        Ok(r)
    }

    fn listen(&mut self, listener: TcpListener) -> Result<()> {
        *self.shared.mode.lock().unwrap() = Some(Mode::Up);
        listener.set_nonblocking(true)?;
        self.stop = Arc::new(AtomicBool::new(false));
        let (stop, shared) = (self.stop.clone(), self.shared.clone());
        self.acceptor = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        if let Ok(c) = conn.try_clone() {
                            shared.conns.lock().unwrap().push(c);
                        }
                        let shared = shared.clone();
                        std::thread::spawn(move || {
                            let _ = serve(conn, &shared);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The traces URL (`--otlp-endpoint`).
    pub fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = Some(mode);
    }

    /// Stops listening and closes every connection: nothing answers on the
    /// port (connections are refused) until [`Receiver::up`].
    pub fn down(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port, up.
    pub fn up(&mut self) -> Result<()> {
        let listener = TcpListener::bind(self.addr)
            .with_context(|| format!("binding the OTLP receiver again on {}", self.addr))?;
        self.listen(listener)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        self.shared.spans.lock().unwrap().clone()
    }

    pub fn span_count(&self) -> usize {
        self.shared.spans.lock().unwrap().len()
    }

    /// Export requests answered 200 and 503.
    pub fn requests(&self) -> (u64, u64) {
        (
            self.shared.accepted.load(Ordering::Relaxed),
            self.shared.refused.load(Ordering::Relaxed),
        )
    }

    /// Waits until at least `n` spans arrived.
    pub fn wait_spans(&self, n: usize, timeout: Duration) -> Result<Vec<Span>> {
        crate::util::poll(timeout, &format!("{n} spans at the OTLP receiver"), || {
            let spans = self.spans();
            Ok((spans.len() >= n).then_some(spans))
        })
        .with_context(|| {
            format!(
                "{} spans arrived; rejected requests: {:?}",
                self.span_count(),
                self.shared.rejected.lock().unwrap()
            )
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

/// Serves export requests on one connection until it closes.
fn serve(conn: TcpStream, shared: &Shared) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request_line = line.trim_end().to_owned();
        let mut length = 0usize;
        let mut gzip = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse().context("bad Content-Length")?;
                } else if k == "content-encoding" && v.eq_ignore_ascii_case("gzip") {
                    gzip = true;
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mode = shared.mode.lock().unwrap().unwrap_or(Mode::Up);
        if let Mode::Slow(d) = mode {
            std::thread::sleep(d);
        }
        let (status, reason) = if mode == Mode::Refusing {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            (503, "Service Unavailable")
        } else if !request_line.starts_with("POST /v1/traces ") {
            shared.rejected.lock().unwrap().push(request_line);
            (404, "Not Found")
        } else {
            if gzip {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut plain)?;
                body = plain;
            }
            match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(req) => {
                    shared.spans.lock().unwrap().extend(flatten(&req));
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    (200, "OK")
                }
                Err(e) => {
                    shared
                        .rejected
                        .lock()
                        .unwrap()
                        .push(format!("{request_line}: {e}"));
                    (400, "Bad Request")
                }
            }
        };
        write!(
            conn,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        )?;
        conn.flush()?;
    }
}

/// The rotel collector (PyPI `rotel`, installed by `cargo xtask setup`),
/// receiving OTLP/HTTP on a free port and forwarding to `to` over OTLP/HTTP.
pub struct Rotel {
    child: std::process::Child,
    pub http_port: u16,
    dir: crate::util::TempDir,
}

/// The PyPI package's version `cargo xtask setup` installs.
pub const ROTEL_VERSION: &str = "0.0.1a15";

/// The `rotel-agent` binary inside the installed `rotel` wheel.
pub fn rotel_bin() -> Result<std::path::PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .context("running python3")?;
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.exists() {
        bail!(
            "rotel is not installed (run `cargo xtask setup`, or pip install rotel=={ROTEL_VERSION}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(path)
}

impl Rotel {
    pub fn start(to: &Receiver) -> Result<Self> {
        let bin = rotel_bin()?;
        let dir = crate::util::TempDir::new("rotel")?;
        let http_port = crate::util::free_port()?;
        let grpc_port = crate::util::free_port()?;
        let log = std::fs::File::create(dir.path().join("rotel.log"))?;
        let child = std::process::Command::new(&bin)
            .args(["start", "--otlp-http-endpoint"])
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .args(["--exporter", "otlp", "--otlp-exporter-protocol", "http"])
            .arg("--otlp-exporter-endpoint")
            .arg(format!("http://{}", to.addr()))
            .args(["--otlp-exporter-compression", "none"])
            .args(["--batch-timeout", "200ms", "--pid-file"])
            .arg(dir.path().join("rotel.pid"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut r = Rotel {
            child,
            http_port,
            dir,
        };
        crate::util::poll(Duration::from_secs(10), "rotel listening", || {
            if let Some(st) = r.child.try_wait()? {
                bail!("rotel exited at start ({st}):\n{}", r.log());
            }
            Ok(crate::util::is_listening([127, 0, 0, 1].into(), http_port).then_some(()))
        })?;
        Ok(r)
    }

    /// The traces URL the agent sends to.
    pub fn traces_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.http_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rotel.log")).unwrap_or_default()
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan},
    };

    fn post(addr: SocketAddr, body: &[u8]) -> Result<u16> {
        let mut c = TcpStream::connect(addr)?;
        write!(
            c,
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        c.write_all(body)?;
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line)?;
        Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
    }

    fn request() -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue("nginx".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![PSpan {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "GET".into(),
                        kind: KIND_SERVER,
                        flags: FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE | 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_trace_renders_as_a_tree() {
        let span = |id: &str, parent: &str, kind: i32, start: u64, name: &str| Span {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: name.into(),
            kind,
            start_ns: start,
            end_ns: start + 1_000_000,
            attributes: BTreeMap::new(),
            status: STATUS_UNSET,
            flags: FLAG_HAS_IS_REMOTE,
            trace_state: String::new(),
            resource: BTreeMap::new(),
        };
        let spans = [
            span("c2", "s", KIND_CLIENT, 3, "GET"),
            span("s", "", KIND_SERVER, 0, "GET size"),
            span("c1", "s", KIND_CLIENT, 1, "GET"),
            span("x", "", KIND_SERVER, 0, "other trace"),
        ];
        let mut spans = spans.to_vec();
        spans[3].trace_id = "u".into();
        let tree = render_tree(&spans, "t");
        let lines: Vec<&str> = tree.lines().collect();
        assert_eq!(lines.len(), 4, "{tree}");
        assert!(lines[1].starts_with("└─ SERVER \"GET size\""), "{tree}");
        assert!(
            lines[2].starts_with("   ├─ CLIENT") && lines[2].ends_with("[c1]"),
            "{tree}"
        );
        assert!(
            lines[3].starts_with("   └─ CLIENT") && lines[3].ends_with("[c2]"),
            "{tree}"
        );
    }

    #[test]
    fn receives_refuses_goes_down_and_comes_back() -> Result<()> {
        let mut r = Receiver::start()?;
        assert_eq!(post(r.addr(), &request())?, 200);
        let s = &r.spans()[0];
        assert_eq!(s.trace_id, "01".repeat(16));
        assert_eq!((s.name.as_str(), s.kind), ("GET", KIND_SERVER));
        assert_eq!(s.parent_is_remote(), Some(true));
        assert!(s.is_root());
        assert_eq!(s.resource["service.name"], Attr::Str("nginx".into()));
        r.set_mode(Mode::Refusing);
        assert_eq!(post(r.addr(), &request())?, 503);
        assert_eq!((r.requests(), r.span_count()), ((1, 1), 1));
        r.down();
        assert!(TcpStream::connect(r.addr()).is_err());
        r.up()?;
        assert_eq!(post(r.addr(), &request())?, 200);
        assert_eq!(r.span_count(), 2);
        Ok(())
    }
}
