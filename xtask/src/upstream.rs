//! The demo's upstream: a tiny keep-alive HTTP/1.1 server on a thread, answering with small
//! JSON bodies (see [`answer`]). It counts what it sees so the demo can compare.

use std::{
    collections::BTreeMap,
    io::{self, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread,
};

use crate::http::{self, Counting};

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub open: AtomicU64,
    pub requests: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Responses sent, by status code.
    pub codes: Mutex<BTreeMap<u16, u64>>,
}

impl Stats {
    pub fn codes(&self) -> BTreeMap<u16, u64> {
        self.codes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Items `/api/items/{n}` with `n` below this exist; others are 404.
pub const ITEMS: u64 = 100;

/// Status, reason and body for a request: POST creates (201), `GET|HEAD /api/items/{n}`
/// is 404 unless `n < ITEMS`, anything else is 200. HEAD gets the head only.
pub fn answer(method: &str, path: &str, n: u64) -> (u16, &'static str, String) {
    let item = path
        .strip_prefix("/api/items/")
        .map(|id| id.parse::<u64>().is_ok_and(|id| id < ITEMS));
    match (method, item) {
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
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

/// Binds 127.0.0.1 on a free port and serves until the process exits.
pub fn start() -> io::Result<Upstream> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    thread::Builder::new()
        .name("upstream".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let stats = shared.clone();
                let _ = thread::Builder::new()
                    .name("upstream-conn".into())
                    .spawn(move || {
                        stats.connections.fetch_add(1, Relaxed);
                        stats.open.fetch_add(1, Relaxed);
                        let _ = serve(stream, &stats);
                        stats.open.fetch_sub(1, Relaxed);
                    });
            }
        })?;
    Ok(Upstream { addr, stats })
}

fn serve(stream: TcpStream, stats: &Stats) -> io::Result<()> {
    let mut reader = BufReader::new(Counting::new(stream.try_clone()?));
    let mut writer = stream;
    let mut counted_in = 0;
    let result: io::Result<()> = (|| loop {
        let Some(head) = http::read_head(&mut reader)? else {
            return Ok(());
        };
        let body_len = head.content_length()?.unwrap_or(0);
        io::copy(&mut (&mut reader).take(body_len), &mut io::sink())?;
        let keep_alive = head.keep_alive() && head.header("transfer-encoding").is_none();
        let n = stats.requests.fetch_add(1, Relaxed) + 1;
        let mut start = head.start.split_whitespace();
        let (method, path) = (start.next().unwrap_or(""), start.next().unwrap_or(""));
        let (status, reason, body) = answer(method, path, n);
        let mut response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        if method != "HEAD" {
            response.push_str(&body);
        }
        writer.write_all(response.as_bytes())?;
        *stats
            .codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_default() += 1;
        stats.bytes_out.fetch_add(response.len() as u64, Relaxed);
        let read = reader.get_ref().bytes;
        stats.bytes_in.fetch_add(read - counted_in, Relaxed);
        counted_in = read;
        if !keep_alive {
            return Ok(());
        }
    })();
    stats
        .bytes_in
        .fetch_add(reader.get_ref().bytes - counted_in, Relaxed);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_alive_requests() {
        let up = start().unwrap();
        let stream = http::connect(up.addr).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        for keep_alive in [true, true, false] {
            let req = http::get_request("/x", "test", keep_alive);
            writer.write_all(req.as_bytes()).unwrap();
            let resp = http::read_response(&mut reader).unwrap();
            assert_eq!(resp.status, 200);
            assert!(String::from_utf8_lossy(&resp.body).contains("gatescope-demo"));
        }
        assert_eq!(
            reader.read(&mut [0u8; 8]).unwrap(),
            0,
            "closed after Connection: close"
        );
        assert_eq!(up.stats.requests.load(Relaxed), 3);
        assert_eq!(up.stats.connections.load(Relaxed), 1);
        assert_eq!(up.stats.codes(), BTreeMap::from([(200, 3)]));
    }

    #[test]
    fn reads_bodies_and_answers_head_without_one() {
        let up = start().unwrap();
        let stream = http::connect(up.addr).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        for (method, path, body, status) in [
            ("POST", "/api/items", Some("{\"a\":1}"), 201),
            ("HEAD", "/api/items/1", None, 200),
            ("GET", &format!("/api/items/{ITEMS}"), None, 404),
        ] {
            let req = http::request(method, path, "test", true, body);
            writer.write_all(req.as_bytes()).unwrap();
            let resp = http::read_response_to(&mut reader, method).unwrap();
            assert_eq!(resp.status, status, "{method} {path}");
            assert_eq!(resp.body.is_empty(), method == "HEAD", "{method} {path}");
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(
            reader.read(&mut [0u8; 8]).unwrap(),
            0,
            "closed after the client"
        );
        assert_eq!(
            up.stats.codes(),
            BTreeMap::from([(200, 1), (201, 1), (404, 1)])
        );
    }

    #[test]
    fn answers_by_method_and_item() {
        assert_eq!(answer("POST", "/api/items", 1).0, 201);
        assert_eq!(answer("GET", "/api/items/7", 1).0, 200);
        assert_eq!(answer("HEAD", "/api/items/7", 1).0, 200);
        assert_eq!(answer("GET", &format!("/api/items/{ITEMS}"), 1).0, 404);
        assert_eq!(answer("GET", "/api/items/x", 1).0, 404);
        assert_eq!(answer("GET", "/api/keepalive/1/2", 1).0, 200);
    }
}
