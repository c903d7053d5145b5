//! The demo's client load: keep-alive connections plus one-shot connections of GETs, and
//! one keep-alive connection of mixed requests (POSTs with bodies, HEADs, 404s from the
//! upstream and from nginx itself). It counts bytes and, per route template and status,
//! requests, so the summary can compare them with gatescope's. [`answer`] is how the
//! demo's upstream answers them.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
};

use anyhow::{ensure, Context as _, Result};

use gatescope_tests::{
    http::{self, Counting},
    upstream::Reply,
};

/// Items `/api/items/{n}` with `n` below this exist; others are 404.
pub const ITEMS: u64 = 100;

/// The demo upstream's JSON answer to request number `n`: POST creates (201),
/// `GET|HEAD /api/items/{n}` is 404 unless `n < ITEMS`, anything else is 200.
pub fn answer(method: &str, path: &str, n: u64) -> Reply {
    let item = path
        .strip_prefix("/api/items/")
        .map(|id| id.parse::<u64>().is_ok_and(|id| id < ITEMS));
    let (status, reason, body) = match (method, item) {
        ("POST", _) => (
            201,
            "Created",
            format!("{{\"upstream\":\"gatescope-demo\",\"request\":{n},\"created\":true}}\n"),
        ),
        (_, Some(false)) => (
            404,
            "Not Found",
            format!(
                "{{\"upstream\":\"gatescope-demo\",\"request\":{n},\"error\":\"no such item\"}}\n"
            ),
        ),
        _ => (
            200,
            "OK",
            format!("{{\"upstream\":\"gatescope-demo\",\"request\":{n}}}\n"),
        ),
    };
    Reply {
        status,
        reason,
        content_type: "application/json",
        body: body.into_bytes(),
    }
}

pub const KEEPALIVE_CONNECTIONS: usize = 10;
pub const REQUESTS_PER_KEEPALIVE: usize = 5;
pub const ONE_SHOT_CONNECTIONS: usize = 20;

/// `source` of a request the upstream answered (gatescope's label value).
pub const SERVICE: &str = "service";
/// `source` of a request nginx answered itself (Kong's name for the gateway).
pub const GATEWAY: &str = "kong";

/// One request of the mixed connection.
struct Mixed {
    method: &'static str,
    path: &'static str,
    /// Bytes of JSON body (POST).
    body: Option<usize>,
    /// The path template gatescope should name the route.
    route: &'static str,
    status: u16,
    source: &'static str,
}

const fn mixed(
    method: &'static str,
    path: &'static str,
    body: Option<usize>,
    route: &'static str,
    status: u16,
    source: &'static str,
) -> Mixed {
    Mixed {
        method,
        path,
        body,
        route,
        status,
        source,
    }
}

/// The mixed connection, in order. The 3000-byte body is more than gatescope copies of a
/// send (1024 bytes by default): the rest is counted, not parsed. `/missing` is nginx's
/// `return 404`; `/api/items/{n}` with `n` >= [`ITEMS`] the upstream's 404.
const MIXED: &[Mixed] = &[
    mixed("POST", "/api/items", Some(48), "/api/items", 201, SERVICE),
    mixed(
        "HEAD",
        "/api/items/7",
        None,
        "/api/items/{id}",
        200,
        SERVICE,
    ),
    mixed("GET", "/missing", None, "/missing", 404, GATEWAY),
    mixed("POST", "/api/items", Some(3000), "/api/items", 201, SERVICE),
    mixed(
        "GET",
        "/api/items/4242",
        None,
        "/api/items/{id}",
        404,
        SERVICE,
    ),
    mixed(
        "HEAD",
        "/api/items/42",
        None,
        "/api/items/{id}",
        200,
        SERVICE,
    ),
    mixed("GET", "/missing?from=demo", None, "/missing", 404, GATEWAY),
    mixed("POST", "/api/items", Some(300), "/api/items", 201, SERVICE),
];

/// Requests of one route template, status and source, as the client sent and saw them.
#[derive(Default)]
pub struct RouteCount {
    pub requests: u64,
    pub methods: BTreeSet<&'static str>,
}

#[derive(Default)]
pub struct Counts {
    pub connections: u64,
    pub requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// By (route template, status, source).
    pub routes: BTreeMap<(String, u16, &'static str), RouteCount>,
}

/// The load in a few words, e.g. for "client sent N requests over M connections (...)".
pub fn describe() -> String {
    let mut methods: BTreeMap<&str, usize> = BTreeMap::new();
    for m in MIXED {
        *methods.entry(m.method).or_default() += 1;
    }
    let mixed = methods
        .iter()
        .map(|(m, n)| format!("{n} {m}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{KEEPALIVE_CONNECTIONS} keep-alive x {REQUESTS_PER_KEEPALIVE} GET, \
         {ONE_SHOT_CONNECTIONS} one-shot GET, 1 keep-alive with {mixed}"
    )
}

struct Conn {
    writer: TcpStream,
    reader: BufReader<Counting<TcpStream>>,
    sent: u64,
    routes: BTreeMap<(String, u16, &'static str), RouteCount>,
}

/// What a request should get back.
struct Expect<'a> {
    route: &'a str,
    status: u16,
    source: &'static str,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn> {
        let stream =
            http::connect(addr).with_context(|| format!("connecting to nginx at {addr}"))?;
        Ok(Conn {
            reader: BufReader::new(Counting::new(stream.try_clone()?)),
            writer: stream,
            sent: 0,
            routes: BTreeMap::new(),
        })
    }

    fn request(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<&str>,
        keep_alive: bool,
        expect: Expect,
    ) -> Result<()> {
        let host = self.writer.peer_addr()?.to_string();
        let req = http::request(method, path, &host, keep_alive, body);
        self.writer.write_all(req.as_bytes())?;
        self.sent += req.len() as u64;
        let resp = http::read_response_to(&mut self.reader, method)
            .with_context(|| format!("reading nginx's response to {method} {path}"))?;
        let text = String::from_utf8_lossy(&resp.body);
        ensure!(
            resp.status == expect.status
                && (method == "HEAD"
                    || expect.source == GATEWAY
                    || text.contains("gatescope-demo")),
            "{method} {path} through nginx: status {} (expected {}), body {text:?}",
            resp.status,
            expect.status,
        );
        let count = self
            .routes
            .entry((expect.route.to_string(), expect.status, expect.source))
            .or_default();
        count.requests += 1;
        count.methods.insert(method);
        Ok(())
    }

    fn get(&mut self, path: &str, route: &str, keep_alive: bool) -> Result<()> {
        let expect = Expect {
            route,
            status: 200,
            source: SERVICE,
        };
        self.request("GET", path, None, keep_alive, expect)
    }

    /// Closes the connection (after reading to EOF if nginx is closing it) and adds its counts.
    fn finish(mut self, drain: bool, counts: &mut Counts) -> Result<()> {
        if drain {
            self.reader.read_to_end(&mut Vec::new())?;
        }
        counts.connections += 1;
        counts.bytes_sent += self.sent;
        counts.bytes_received += self.reader.get_ref().bytes;
        for (key, c) in self.routes {
            counts.requests += c.requests;
            let total = counts.routes.entry(key).or_default();
            total.requests += c.requests;
            total.methods.extend(c.methods);
        }
        Ok(())
    }
}

/// A JSON text of exactly `len` bytes (at least 11).
fn json_body(len: usize) -> String {
    format!("{{\"note\":\"{}\"}}", "x".repeat(len.saturating_sub(11)))
}

/// All keep-alive connections are open at once and take turns; then the mixed one, then the
/// one-shot ones.
pub fn send(addr: SocketAddr) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut conns = (0..KEEPALIVE_CONNECTIONS)
        .map(|_| Conn::open(addr))
        .collect::<Result<Vec<_>>>()?;
    for round in 0..REQUESTS_PER_KEEPALIVE {
        for (i, conn) in conns.iter_mut().enumerate() {
            conn.get(
                &format!("/api/keepalive/{i}/{round}"),
                "/api/keepalive/{id}/{id}",
                true,
            )?;
        }
    }
    for conn in conns {
        conn.finish(false, &mut counts)?;
    }
    let mut conn = Conn::open(addr)?;
    for m in MIXED {
        let body = m.body.map(json_body);
        let expect = Expect {
            route: m.route,
            status: m.status,
            source: m.source,
        };
        conn.request(m.method, m.path, body.as_deref(), true, expect)?;
    }
    conn.finish(false, &mut counts)?;
    for i in 0..ONE_SHOT_CONNECTIONS {
        let mut conn = Conn::open(addr)?;
        conn.get(&format!("/api/oneshot/{i}"), "/api/oneshot/{id}", false)?;
        conn.finish(true, &mut counts)?;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_method_and_item() {
        assert_eq!(answer("POST", "/api/items", 1).status, 201);
        assert_eq!(answer("GET", "/api/items/7", 1).status, 200);
        assert_eq!(answer("HEAD", "/api/items/7", 1).status, 200);
        assert_eq!(answer("GET", &format!("/api/items/{ITEMS}"), 1).status, 404);
        assert_eq!(answer("GET", "/api/items/x", 1).status, 404);
        assert_eq!(answer("GET", "/api/keepalive/1/2", 1).status, 200);
        assert!(String::from_utf8_lossy(&answer("GET", "/", 3).body).contains("gatescope-demo"));
    }

    #[test]
    fn json_bodies_have_the_asked_length() {
        for len in [11, 48, 3000] {
            assert_eq!(json_body(len).len(), len);
        }
    }

    #[test]
    fn mixed_routes_are_templates_of_their_paths() {
        for m in MIXED {
            let path = m.path.split('?').next().unwrap();
            let template = path
                .split('/')
                .map(|s| {
                    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                        "{id}"
                    } else {
                        s
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            assert_eq!(template, m.route, "{}", m.path);
        }
    }
}
