//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): reading and
//! validating `traceparent` and `tracestate`, and deciding whose header is
//! believed (`--trust-traceparent`).

use std::{net::IpAddr, str::FromStr};

use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

/// A valid `traceparent`: the caller's trace and span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl Parent {
    pub fn sampled(self) -> bool {
        self.flags.is_sampled()
    }
}

/// Parses a `traceparent` header value by the spec's rules: version two
/// lowercase hex digits and not `ff`; for version 00 exactly 55 bytes; for a
/// later version at least 55 bytes, with a `-` after the flags when longer
/// (the spec lets a parser read the first four fields of a future version);
/// trace id 32 and parent id 16 lowercase hex digits, neither all zero;
/// flags two lowercase hex digits. Anything else is `None`: the request
/// then starts a new trace.
pub fn parse_traceparent(value: &str) -> Option<Parent> {
    let v = value.trim_matches([' ', '\t']).as_bytes();
    if v.len() < 55 {
        return None;
    }
    let version = hex_u8(&v[0..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let mut trace = [0u8; 16];
    for (i, b) in trace.iter_mut().enumerate() {
        *b = hex_u8(&v[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span = [0u8; 8];
    for (i, b) in span.iter_mut().enumerate() {
        *b = hex_u8(&v[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_u8(&v[53..55])?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id: TraceId::from_bytes(trace),
        span_id: SpanId::from_bytes(span),
        // Only the sampled bit is defined for version 00; unknown bits are
        // not propagated (the spec: "MUST NOT" forward them as set).
        flags: TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
    })
}

/// Two lowercase hex digits (the spec forbids upper case).
fn hex_u8(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

/// A `tracestate` value, validated by the spec's list rules (at most 32
/// members, keys and values of the allowed characters); an invalid one is
/// dropped as the spec asks, the `traceparent` still holds.
pub fn parse_tracestate(value: Option<&str>) -> TraceState {
    value
        .filter(|v| v.split(',').filter(|m| !m.trim().is_empty()).count() <= 32)
        .and_then(|v| TraceState::from_str(v.trim()).ok())
        .unwrap_or_default()
}

/// Whose `traceparent` is believed (`--trust-traceparent`): gateways' own
/// tracers believe every caller by default (Kong's OTel plugin, nginx-otel),
/// and ingress operators who must not let clients pick trace ids or force
/// sampling strip the header, or here name the networks they trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    All,
    None,
    Networks(Vec<Cidr>),
}

impl Trust {
    pub fn trusts(&self, client: IpAddr) -> bool {
        match self {
            Trust::All => true,
            Trust::None => false,
            Trust::Networks(nets) => nets.iter().any(|n| n.contains(client)),
        }
    }
}

impl FromStr for Trust {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(Trust::All),
            "none" => Ok(Trust::None),
            list => list
                .split(',')
                .map(|n| n.trim().parse())
                .collect::<Result<Vec<Cidr>, String>>()
                .map(Trust::Networks),
        }
    }
}

/// A network, `ADDR/PREFIX` (a bare address is one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    a[..full] == b[..full] && (rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0)
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not all, none, or a list of ADDR/PREFIX networks");
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { addr, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = parse_traceparent(VALID).unwrap();
        assert_eq!(
            p.trace_id,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(p.span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(p.sampled());
        assert!(!parse_traceparent(&VALID.replace("-01", "-00"))
            .unwrap()
            .sampled());
        // Unknown flag bits are not kept.
        assert_eq!(
            parse_traceparent(&VALID.replace("-01", "-ff"))
                .unwrap()
                .flags,
            TraceFlags::SAMPLED
        );
        // A future version may append fields after a dash.
        let future = format!("{}-extra", VALID.replacen("00", "01", 1));
        assert!(parse_traceparent(&future).is_some());
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            // Version ff is invalid; version 00 must be exactly 55 bytes.
            &VALID.replacen("00", "ff", 1),
            &format!("{VALID}-extra"),
            &format!("{VALID}0"),
            // Upper case hex, non-hex, all-zero ids.
            &VALID.to_uppercase(),
            &VALID.replace("4bf9", "4bg9"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Wrong separators or lengths.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            // A future version longer than 55 bytes needs a dash there.
            &format!("{}x", VALID.replacen("00", "01", 1)),
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn tracestate_is_kept_when_valid_and_dropped_otherwise() {
        assert_eq!(
            parse_tracestate(Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")).header(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
        assert_eq!(parse_tracestate(Some("no equals sign")).header(), "");
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(parse_tracestate(Some(&many.join(","))).header(), "");
        assert_eq!(parse_tracestate(None).header(), "");
    }

    #[test]
    fn trust_by_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let t: Trust = "10.0.0.0/8, 192.168.1.7,fd00::/8".parse().unwrap();
        assert!(t.trusts(ip("10.200.3.4")));
        assert!(t.trusts(ip("::ffff:10.1.1.1")));
        assert!(t.trusts(ip("192.168.1.7")));
        assert!(!t.trusts(ip("192.168.1.8")));
        assert!(t.trusts(ip("fd12::1")));
        assert!(!t.trusts(ip("fe80::1")));
        assert!(!t.trusts(ip("11.0.0.1")));
        let t: Trust = "10.1.2.0/23".parse().unwrap();
        assert!(t.trusts(ip("10.1.3.255")) && !t.trusts(ip("10.1.4.0")));
        assert_eq!("all".parse::<Trust>().unwrap(), Trust::All);
        assert!(!"none".parse::<Trust>().unwrap().trusts(ip("127.0.0.1")));
        assert!("10.0.0.0/33".parse::<Trust>().is_err());
        assert!("everyone".parse::<Trust>().is_err());
    }
}
