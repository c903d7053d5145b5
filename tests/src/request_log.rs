//! The agent's `--request-log` (one JSON object per line, per finished exchange),
//! with a small JSON reader so the harness needs no JSON dependency.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    pub fn parse(text: &str) -> Result<Json> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        ensure!(p.i == p.s.len(), "trailing characters at {}", p.i);
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(key),
            _ => None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        self.ws();
        ensure!(
            self.peek() == Some(c),
            "expected {:?} at {}",
            c as char,
            self.i
        );
        self.i += 1;
        Ok(())
    }

    fn lit(&mut self, word: &str, v: Json) -> Result<Json> {
        ensure!(
            self.s[self.i..].starts_with(word.as_bytes()),
            "bad literal at {}",
            self.i
        );
        self.i += word.len();
        Ok(v)
    }

    fn value(&mut self) -> Result<Json> {
        self.ws();
        match self.peek().context("unexpected end")? {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.expect(b':')?;
                    let v = self.value()?;
                    ensure!(m.insert(k.clone(), v).is_none(), "duplicate key {k:?}");
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => bail!("expected ',' or '}}' at {}", self.i),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(a));
                        }
                        _ => bail!("expected ',' or ']' at {}", self.i),
                    }
                }
            }
            b'"' => Ok(Json::Str(self.string()?)),
            b't' => self.lit("true", Json::Bool(true)),
            b'f' => self.lit("false", Json::Bool(false)),
            b'n' => self.lit("null", Json::Null),
            _ => {
                let start = self.i;
                while self.peek().is_some_and(|c| {
                    c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i])?;
                ensure!(!t.is_empty(), "unexpected character at {start}");
                Ok(Json::Num(
                    t.parse().with_context(|| format!("bad number {t:?}"))?,
                ))
            }
        }
    }

    fn string(&mut self) -> Result<String> {
        ensure!(self.peek() == Some(b'"'), "expected string at {}", self.i);
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek().context("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return Ok(String::from_utf8(out)?),
                b'\\' => {
                    let e = self.peek().context("unterminated escape")?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let h = self.s.get(self.i..self.i + 4).context("short \\u")?;
                            let cp = u32::from_str_radix(std::str::from_utf8(h)?, 16)?;
                            self.i += 4;
                            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                            let mut b = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        }
                        _ => bail!("bad escape \\{}", e as char),
                    }
                }
                _ => out.push(c),
            }
        }
    }
}

/// The upstream leg of a downstream line.
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    pub peer: String,
    pub status: u16,
    pub duration_ms: f64,
}

/// An upstream call (attempt) as the agent reports it: in a downstream line's
/// `attempts`, or on a line of its own when it was left unlinked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLine {
    /// The gateway's end of the upstream connection.
    pub local: String,
    pub peer: String,
    pub status: u16,
    /// "evidence", "inferred", "ambiguous" or "none".
    pub link: String,
    /// First request byte sent, CLOCK_MONOTONIC ns.
    pub first_ns: u64,
}

fn attempt_line(o: &Json) -> Result<AttemptLine> {
    Ok(AttemptLine {
        local: str_field(o, "local")?,
        peer: str_field(o, "peer")?,
        status: uint_field(o, "status")? as u16,
        link: str_field(o, "link")?,
        first_ns: uint_field(o, "first_ns")?,
    })
}

/// A gRPC call's `grpc` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcField {
    pub service: String,
    pub method: String,
    /// `grpc-status`; `None` when the agent saw none.
    pub status: Option<u16>,
}

fn grpc_field(o: &Json) -> Result<GrpcField> {
    Ok(GrpcField {
        service: str_field(o, "service")?,
        method: str_field(o, "method")?,
        status: match field(o, "status")? {
            Json::Null => None,
            _ => Some(uint_field(o, "status")? as u16),
        },
    })
}

/// One line of the request log.
#[derive(Debug, Clone, PartialEq)]
pub struct ReqLine {
    /// "downstream" or "upstream".
    pub role: String,
    /// The client (downstream) or the upstream peer (upstream).
    pub remote: String,
    pub listener: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_ms: f64,
    pub upstream: Option<Leg>,
    /// Downstream: the upstream calls linked to it, in order.
    pub attempts: Vec<AttemptLine>,
    /// A gRPC call's service, method and status.
    pub grpc: Option<GrpcField>,
    /// The line as written, for failure messages.
    pub raw: String,
}

impl ReqLine {
    pub fn is_downstream(&self) -> bool {
        self.role == "downstream"
    }
}

fn field<'a>(o: &'a Json, k: &str) -> Result<&'a Json> {
    o.get(k).with_context(|| format!("no {k:?}"))
}

fn str_field(o: &Json, k: &str) -> Result<String> {
    match field(o, k)? {
        Json::Str(s) => Ok(s.clone()),
        v => bail!("{k:?} is not a string: {v:?}"),
    }
}

fn num_field(o: &Json, k: &str) -> Result<f64> {
    match field(o, k)? {
        Json::Num(n) => Ok(*n),
        v => bail!("{k:?} is not a number: {v:?}"),
    }
}

fn uint_field(o: &Json, k: &str) -> Result<u64> {
    let n = num_field(o, k)?;
    ensure!(
        n >= 0.0 && n.fract() == 0.0,
        "{k:?} is not a non-negative integer: {n}"
    );
    Ok(n as u64)
}

pub fn parse_req_line(line: &str) -> Result<ReqLine> {
    let inner = || -> Result<ReqLine> {
        let o = Json::parse(line)?;
        ensure!(matches!(o, Json::Obj(_)), "not an object");
        let upstream = match o.get("upstream") {
            None | Some(Json::Null) => None,
            Some(u) => Some(Leg {
                peer: str_field(u, "peer")?,
                status: uint_field(u, "status")? as u16,
                duration_ms: num_field(u, "duration_ms")?,
            }),
        };
        let attempts = match o.get("attempts") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Arr(a)) => a.iter().map(attempt_line).collect::<Result<_>>()?,
            Some(v) => bail!("\"attempts\" is not an array: {v:?}"),
        };
        let grpc = match o.get("grpc") {
            None | Some(Json::Null) => None,
            Some(g) => Some(grpc_field(g)?),
        };
        let listener = match o.get("listener") {
            None | Some(Json::Null) => None,
            Some(_) => Some(str_field(&o, "listener")?),
        };
        Ok(ReqLine {
            role: str_field(&o, "role")?,
            remote: str_field(&o, "remote")?,
            listener,
            method: str_field(&o, "method")?,
            path: str_field(&o, "path")?,
            status: uint_field(&o, "status")? as u16,
            request_bytes: uint_field(&o, "request_bytes")?,
            response_bytes: uint_field(&o, "response_bytes")?,
            duration_ms: num_field(&o, "duration_ms")?,
            upstream,
            attempts,
            grpc,
            raw: line.to_string(),
        })
    };
    inner().with_context(|| format!("request-log line {line:?}"))
}

/// The complete lines of a log still being written (a last line without its
/// newline is left out).
fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().filter(|l| !l.trim().is_empty())
}

const UNLINKED: &str = "\"role\":\"unlinked\"";

/// Parse a whole request log's exchange lines (downstream and upstream; the
/// unlinked calls' lines are [`parse_unlinked`]'s). A last line without its
/// newline is still being written and is left out.
pub fn parse_request_log(text: &str) -> Result<Vec<ReqLine>> {
    complete_lines(text)
        .filter(|l| !l.contains(UNLINKED))
        .map(parse_req_line)
        .collect()
}

/// The upstream calls the agent left unlinked (`"role":"unlinked"` lines).
pub fn parse_unlinked(text: &str) -> Result<Vec<AttemptLine>> {
    complete_lines(text)
        .filter(|l| l.contains(UNLINKED))
        .map(|l| {
            let o = Json::parse(l)?;
            ensure!(
                matches!(o.get("role"), Some(Json::Str(r)) if r == "unlinked"),
                "not an unlinked line"
            );
            attempt_line(&o).with_context(|| format!("request-log line {l:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: &str = r#"{"role":"downstream","remote":"127.0.0.1:50000","listener":"127.0.0.1:8080","method":"GET","path":"/x","status":200,"request_bytes":80,"response_bytes":168,"duration_ms":0.41,"upstream":{"peer":"127.0.0.1:9000","status":200,"duration_ms":0.2}}"#;
    const UP: &str = r#"{"role":"upstream","remote":"127.0.0.1:9000","method":"GET","path":"/x","status":200,"request_bytes":72,"response_bytes":168,"duration_ms":0.2}"#;

    #[test]
    fn lines_of_both_roles() {
        let d = parse_req_line(DOWN).unwrap();
        assert!(d.is_downstream());
        assert_eq!(d.remote, "127.0.0.1:50000");
        assert_eq!(d.listener.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!((d.method.as_str(), d.path.as_str()), ("GET", "/x"));
        assert_eq!(
            (d.status, d.request_bytes, d.response_bytes),
            (200, 80, 168)
        );
        assert_eq!(d.duration_ms, 0.41);
        assert_eq!(
            d.upstream,
            Some(Leg {
                peer: "127.0.0.1:9000".into(),
                status: 200,
                duration_ms: 0.2
            })
        );
        let u = parse_req_line(UP).unwrap();
        assert!(!u.is_downstream());
        assert_eq!((u.listener, u.upstream), (None, None));
        assert_eq!(u.request_bytes, 72);
    }

    #[test]
    fn json_details() {
        let v = Json::parse(r#" {"a":[1,-2.5e3,true,false,null],"b":"x\"\\\/\n\u00e9"} "#).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Json::Arr(vec![
                Json::Num(1.0),
                Json::Num(-2500.0),
                Json::Bool(true),
                Json::Bool(false),
                Json::Null
            ]))
        );
        assert_eq!(v.get("b"), Some(&Json::Str("x\"\\/\n\u{e9}".into())));
        for bad in [
            "{",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1}x",
            "\"abc",
            "{\"a\":1,\"a\":2}",
        ] {
            assert!(Json::parse(bad).is_err(), "accepted {bad:?}");
        }
        // Wrong types and missing fields are errors, never defaults.
        assert!(
            parse_req_line(&DOWN.replace("\"status\":200,\"req", "\"status\":\"200\",\"req"))
                .is_err()
        );
        assert!(parse_req_line(&UP.replace("\"method\":\"GET\",", "")).is_err());
        assert!(parse_req_line(&UP.replace("72", "72.5")).is_err());
    }

    #[test]
    fn attempts_and_unlinked_calls() {
        let attempt = r#"{"local":"127.0.0.1:51000","peer":"127.0.0.1:9000","status":200,"link":"inferred","first_ns":1005}"#;
        let down = DOWN.replace("}}", &format!("}},\"attempts\":[{attempt}]}}"));
        let d = parse_req_line(&down).unwrap();
        assert_eq!(
            d.attempts,
            [AttemptLine {
                local: "127.0.0.1:51000".into(),
                peer: "127.0.0.1:9000".into(),
                status: 200,
                link: "inferred".into(),
                first_ns: 1005,
            }]
        );
        let unlinked = r#"{"role":"unlinked","method":"GET","path":"/a","local":"127.0.0.1:51001","peer":"127.0.0.1:9000","status":502,"link":"ambiguous","first_ns":7}"#;
        let text = format!("{down}\n{unlinked}\n{UP}\n");
        assert_eq!(parse_request_log(&text).unwrap().len(), 2);
        let u = parse_unlinked(&text).unwrap();
        assert_eq!(
            (u.len(), u[0].link.as_str(), u[0].first_ns),
            (1, "ambiguous", 7)
        );
    }

    #[test]
    fn partial_last_line_is_left_out() {
        let text = format!("{DOWN}\n{UP}\n{}", &UP[..20]);
        assert_eq!(parse_request_log(&text).unwrap().len(), 2);
        assert_eq!(parse_request_log(&UP[..20]).unwrap().len(), 0);
    }
}

/// The agent's links checked against the upstream's own record of which
/// path arrived on which connection, in which order.
#[derive(Debug, Default)]
pub struct LinkCheck {
    /// Calls linked to the request that carried them.
    pub right: u64,
    pub unlinked: u64,
    /// One line per call linked to another request.
    pub wrong: Vec<String>,
    /// Calls by link result.
    pub results: BTreeMap<String, u64>,
    /// The paths of the calls left unlinked, with their result.
    pub unlinked_paths: Vec<String>,
}

impl LinkCheck {
    pub fn calls(&self) -> u64 {
        self.right + self.unlinked + self.wrong.len() as u64
    }

    /// "R of N calls linked right (P%), U unlinked [...], W wrong; by result {...}".
    pub fn summary(&self) -> String {
        format!(
            "{} of {} calls linked right ({:.0}%), {} unlinked {:?}, {} wrong; by result {:?}",
            self.right,
            self.calls(),
            100.0 * self.right as f64 / self.calls().max(1) as f64,
            self.unlinked,
            self.unlinked_paths,
            self.wrong.len(),
            self.results
        )
    }
}

/// Every upstream call of the request log `text` (in a downstream line's
/// attempts, or unlinked on its own), named by (gateway local port, rank of
/// its first byte on that connection), against the upstream's `exchanges`
/// named by (`peer_port`, `conn_seq`). A call is linked right when its
/// downstream line's path is the path the upstream received: with requests
/// of distinct paths that is the request that carried it (with repeated
/// paths a swap between equal paths goes unseen).
pub fn check_links(
    text: &str,
    exchanges: &[crate::upstream::UpstreamExchange],
) -> Result<LinkCheck> {
    let port_of = |addr: &str| -> Result<u16> {
        Ok(addr
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("address {addr:?}"))?
            .port())
    };
    let mut calls: Vec<(AttemptLine, Option<String>)> = Vec::new();
    for l in parse_request_log(text)?
        .iter()
        .filter(|l| l.is_downstream())
    {
        calls.extend(l.attempts.iter().map(|a| (a.clone(), Some(l.path.clone()))));
    }
    calls.extend(parse_unlinked(text)?.into_iter().map(|a| (a, None)));
    ensure!(
        calls.len() == exchanges.len(),
        "{} calls in the request log, the upstream answered {}",
        calls.len(),
        exchanges.len()
    );
    let mut by_port: std::collections::HashMap<u16, Vec<u64>> = std::collections::HashMap::new();
    for (a, _) in &calls {
        by_port
            .entry(port_of(&a.local)?)
            .or_default()
            .push(a.first_ns);
    }
    for v in by_port.values_mut() {
        v.sort_unstable();
    }
    let truth: std::collections::HashMap<(u16, u64), &str> = exchanges
        .iter()
        .map(|e| ((e.peer_port, e.conn_seq), e.path.as_str()))
        .collect();
    let mut check = LinkCheck::default();
    for (a, owner) in &calls {
        *check.results.entry(a.link.clone()).or_default() += 1;
        let port = port_of(&a.local)?;
        let rank = by_port[&port]
            .iter()
            .position(|ns| *ns == a.first_ns)
            .context("ranked above")? as u64;
        let arrived = truth
            .get(&(port, rank))
            .with_context(|| format!("the upstream has no call {rank} on port {port}: {a:?}"))?;
        match owner {
            Some(path) if path == arrived => check.right += 1,
            Some(path) => check
                .wrong
                .push(format!("{a:?} linked to {path}, carried {arrived}")),
            None => {
                check.unlinked += 1;
                check.unlinked_paths.push(format!("{arrived} ({})", a.link));
            }
        }
    }
    Ok(check)
}
