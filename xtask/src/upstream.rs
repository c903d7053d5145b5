//! The demo's upstream: a tiny keep-alive HTTP/1.1 server on a thread, answering every
//! request with a small JSON body. It counts what it sees so the demo can compare.

use std::{
    io::{self, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
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
        let body = format!("{{\"upstream\":\"gatescope-demo\",\"request\":{n}}}\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        writer.write_all(response.as_bytes())?;
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
    }
}
