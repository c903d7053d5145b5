//! nginx's own per-request account: the harness's `gs` log and the accuracy tests' `acc` log.

use anyhow::{ensure, Context, Result};
use std::net::SocketAddr;

/// `log_format gs ...;`, the harness's access log: `|`-separated `connection,
/// request_length, bytes_sent, upstream_bytes_sent, upstream_bytes_received, status`
/// (the upstream fields may hold ", "/" : " separated lists, never a `|`).
pub const GS_LOG_FORMAT: &str = "'$connection|$request_length|$bytes_sent|$upstream_bytes_sent|$upstream_bytes_received|$status'";

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub connection: u64,
    pub request_length: u64,
    pub bytes_sent: u64,
    /// Sum over all upstream attempts of the request ("-" counts as 0).
    pub upstream_bytes_sent: u64,
    pub upstream_bytes_received: u64,
    pub status: u16,
}

/// `$upstream_bytes_*` list one value per attempt ("1, 2" or "1 : 2"); "-" means none.
fn sum_upstream(field: &str) -> Result<u64> {
    let mut total = 0;
    for part in field.split([',', ':']) {
        let p = part.trim();
        if p.is_empty() || p == "-" {
            continue;
        }
        total += p
            .parse::<u64>()
            .with_context(|| format!("bad number {p:?}"))?;
    }
    Ok(total)
}

pub(crate) fn parse_access_line(line: &str) -> Result<AccessLogEntry> {
    let f: Vec<&str> = line.split('|').collect();
    ensure!(f.len() == 6, "bad access-log line {line:?}");
    let n = |s: &str| -> Result<u64> {
        s.parse::<u64>()
            .with_context(|| format!("bad number {s:?} in {line:?}"))
    };
    Ok(AccessLogEntry {
        connection: n(f[0])?,
        request_length: n(f[1])?,
        bytes_sent: n(f[2])?,
        upstream_bytes_sent: sum_upstream(f[3])?,
        upstream_bytes_received: sum_upstream(f[4])?,
        status: f[5]
            .parse()
            .with_context(|| format!("bad status in {line:?}"))?,
    })
}

/// `log_format acc ...;` (space separated; the four upstream fields may be lists,
/// "a, b : c", when nginx tried several servers). The times are nginx's: seconds with
/// millisecond resolution, differences of its cached clock.
pub const ACC_LOG_FORMAT: &str = "'$remote_addr:$remote_port $status $request_method $uri \
$request_length $bytes_sent $request_time $upstream_addr $upstream_status \
$upstream_response_time $upstream_header_time $connection $connection_requests'";

/// One line of the `acc` log.
#[derive(Debug, Clone, PartialEq)]
pub struct AccEntry {
    /// `$remote_addr:$remote_port`: the client's end of the connection.
    pub client: SocketAddr,
    pub status: u16,
    pub method: String,
    /// `$uri` (normalised, no query string).
    pub uri: String,
    pub request_length: u64,
    pub bytes_sent: u64,
    /// `$request_time` in seconds (millisecond resolution).
    pub request_time: f64,
    /// One entry per upstream attempt; empty when nginx did not go upstream.
    pub upstream: Vec<UpstreamAttempt>,
    /// `$connection`: nginx's connection serial number.
    pub connection: u64,
    /// `$connection_requests`: 1 for the first request on the connection.
    pub connection_requests: u64,
}

/// One element of `$upstream_addr`, `$upstream_status`, `$upstream_response_time`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamAttempt {
    pub addr: String,
    /// `None` for "-" (no status: e.g. the client aborted first).
    pub status: Option<u16>,
    /// Seconds; `None` for "-".
    pub response_time: Option<f64>,
    /// `$upstream_header_time`: seconds until the upstream's response head was
    /// read; `None` ("-") when no head came (e.g. nginx timed out: its
    /// `$upstream_status` is then 504, a status nginx made up, not the upstream's).
    pub header_time: Option<f64>,
}

impl UpstreamAttempt {
    /// The upstream answered: nginx read a response head from it, whose status
    /// `$upstream_status` holds.
    pub fn answered(&self) -> bool {
        self.status.is_some() && self.header_time.is_some()
    }
}

impl AccEntry {
    /// The last upstream attempt (the one whose outcome nginx acted on).
    pub fn last_upstream(&self) -> Option<&UpstreamAttempt> {
        self.upstream.last()
    }

    /// `$request_time` in milliseconds.
    pub fn request_ms(&self) -> f64 {
        self.request_time * 1000.0
    }
}

/// Parse a whole log (one entry per non-empty line).
pub fn parse_acc_log(text: &str) -> Result<Vec<AccEntry>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| parse_acc_line(l).with_context(|| format!("access log line {}", i + 1)))
        .collect()
}

/// Split an upstream list field's tokens ("a," "b" ":" "c") into its values.
fn list_values(tokens: &[&str]) -> Vec<String> {
    tokens
        .iter()
        .map(|t| t.trim_end_matches(','))
        .filter(|t| *t != ":" && !t.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn parse_acc_line(line: &str) -> Result<AccEntry> {
    let t: Vec<&str> = line.split_whitespace().collect();
    // 7 fixed fields in front, 2 at the back, four equally long lists between.
    ensure!(t.len() >= 13, "too few fields in {line:?}");
    let mid = &t[7..t.len() - 2];
    ensure!(
        mid.len().is_multiple_of(4),
        "uneven upstream fields in {line:?}"
    );
    let k = mid.len() / 4;
    let (addrs, statuses, times, heads) = (
        list_values(&mid[..k]),
        list_values(&mid[k..2 * k]),
        list_values(&mid[2 * k..3 * k]),
        list_values(&mid[3 * k..]),
    );
    ensure!(
        addrs.len() == statuses.len() && addrs.len() == times.len() && addrs.len() == heads.len(),
        "upstream lists of different lengths in {line:?}"
    );
    let num = |s: &str| -> Result<u64> {
        s.parse()
            .with_context(|| format!("bad number {s:?} in {line:?}"))
    };
    let secs = |s: &str| -> Result<Option<f64>> {
        if s == "-" {
            return Ok(None);
        }
        Ok(Some(
            s.parse()
                .with_context(|| format!("bad time {s:?} in {line:?}"))?,
        ))
    };
    let mut upstream = Vec::new();
    if !(addrs.len() == 1 && addrs[0] == "-") {
        for (((a, s), tm), h) in addrs.iter().zip(&statuses).zip(&times).zip(&heads) {
            upstream.push(UpstreamAttempt {
                addr: a.clone(),
                status: if s == "-" {
                    None
                } else {
                    Some(
                        s.parse()
                            .with_context(|| format!("bad upstream status {s:?} in {line:?}"))?,
                    )
                },
                response_time: secs(tm)?,
                header_time: secs(h)?,
            });
        }
    }
    Ok(AccEntry {
        client: t[0]
            .parse()
            .with_context(|| format!("bad client address in {line:?}"))?,
        status: t[1]
            .parse()
            .with_context(|| format!("bad status in {line:?}"))?,
        method: t[2].to_string(),
        uri: t[3].to_string(),
        request_length: num(t[4])?,
        bytes_sent: num(t[5])?,
        request_time: secs(t[6])?.context("request_time is \"-\"")?,
        upstream,
        connection: num(t[t.len() - 2])?,
        connection_requests: num(t[t.len() - 1])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_line() {
        let e = parse_acc_line(
            "127.0.0.1:50312 200 GET /size/100 95 343 0.002 127.0.0.1:9000 200 0.001 0.001 17 3",
        )
        .unwrap();
        assert_eq!(e.client, "127.0.0.1:50312".parse().unwrap());
        assert_eq!(e.status, 200);
        assert_eq!(e.method, "GET");
        assert_eq!(e.uri, "/size/100");
        assert_eq!((e.request_length, e.bytes_sent), (95, 343));
        assert!((e.request_ms() - 2.0).abs() < 1e-9);
        assert_eq!(
            e.upstream,
            vec![UpstreamAttempt {
                addr: "127.0.0.1:9000".into(),
                status: Some(200),
                response_time: Some(0.001),
                header_time: Some(0.001),
            }]
        );
        assert!(e.last_upstream().unwrap().answered());
        assert_eq!((e.connection, e.connection_requests), (17, 3));
    }

    #[test]
    fn no_upstream_and_dash_fields() {
        let e = parse_acc_line("127.0.0.1:1 404 GET /missing 80 300 0.000 - - - - 5 1").unwrap();
        assert!(e.upstream.is_empty());
        assert_eq!(e.last_upstream(), None);
        // Client abort while waiting for the upstream: no status, a time.
        let e =
            parse_acc_line("127.0.0.1:2 499 GET /slow/300 80 0 0.101 127.0.0.1:9000 - 0.100 - 6 1")
                .unwrap();
        assert_eq!(e.status, 499);
        let u = e.last_upstream().unwrap();
        assert_eq!((u.status, u.response_time), (None, Some(0.1)));
        assert!(!u.answered());
        // nginx timed out: a status of its own, no head from the upstream.
        let e = parse_acc_line(
            "127.0.0.1:2 504 GET /slow/900 80 0 0.451 127.0.0.1:9000 504 0.450 - 6 1",
        )
        .unwrap();
        let u = e.last_upstream().unwrap();
        assert_eq!(u.status, Some(504));
        assert!(!u.answered());
    }

    #[test]
    fn several_attempts() {
        let e = parse_acc_line(
            "127.0.0.1:3 502 GET /x 80 300 0.004 127.0.0.1:1, 127.0.0.1:2 : up 502, 504 : 502 \
             0.001, 0.002 : 0.000 -, - : - 9 2",
        )
        .unwrap();
        let addrs: Vec<&str> = e.upstream.iter().map(|u| u.addr.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1:1", "127.0.0.1:2", "up"]);
        let st: Vec<Option<u16>> = e.upstream.iter().map(|u| u.status).collect();
        assert_eq!(st, [Some(502), Some(504), Some(502)]);
        assert_eq!(e.connection_requests, 2);
        assert!(parse_acc_line("127.0.0.1:3 200 GET /x 1 2 0.1 a b c 3 4").is_err());
        assert!(parse_acc_line("nonsense").is_err());
        assert_eq!(
            parse_acc_log("\n127.0.0.1:1 404 GET /m 1 2 0.000 - - - - 5 1\n")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn access_line() {
        let e = parse_access_line("7|83|1456|90|1300|200").unwrap();
        assert_eq!(
            e,
            AccessLogEntry {
                connection: 7,
                request_length: 83,
                bytes_sent: 1456,
                upstream_bytes_sent: 90,
                upstream_bytes_received: 1300,
                status: 200
            }
        );
        assert_eq!(sum_upstream("-").unwrap(), 0);
        assert_eq!(sum_upstream("1, 2 : 3").unwrap(), 6);
    }
}
