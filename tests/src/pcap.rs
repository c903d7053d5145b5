//! An independent witness for the wire view: tcpdump (libpcap) captures the
//! packets of chosen ports, and the capture is read back here and counted
//! the way gatescope's wire metrics count (IP bytes per direction, RSTs,
//! client SYNs).

use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::util::{self, TempDir};

/// Counts for one side of one port, from the gateway's point of view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wire {
    pub packets: u64,
    pub bytes: u64,
    pub resets: u64,
}

/// One TCP/IP packet of a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    /// IP total length (headers included; for a GSO/GRO packet, of all its
    /// segments' payload under one set of headers).
    pub ip_len: u64,
    /// IP and TCP header bytes.
    pub headers: u64,
}

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// A running `tcpdump -w`.
pub struct Capture {
    child: Option<Child>,
    _dir: TempDir,
    file: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts capturing TCP packets of `ports` on `interface`; returns once
    /// tcpdump says it is listening.
    pub fn start(interface: &str, ports: &[u16]) -> Result<Self> {
        let dir = TempDir::new("pcap")?;
        let file = dir.path().join("capture.pcap");
        let filter = ports
            .iter()
            .map(|p| format!("tcp port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut child = Command::new("tcpdump")
            .args([
                "-i",
                interface,
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "128",
                "-w",
            ])
            .arg(&file)
            .arg(&filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (apt-get install tcpdump; cargo xtask setup does)")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    bail!("tcpdump did not start listening: {seen:?}");
                }
            }
        }
        Ok(Capture {
            child: Some(child),
            _dir: dir,
            file,
            stderr: rx,
        })
    }

    /// Stops tcpdump and returns every TCP packet it captured. Fails when
    /// tcpdump says it dropped any (then the counts would not be exact).
    pub fn finish(mut self) -> Result<Vec<Packet>> {
        let mut child = self.child.take().expect("finished once");
        let stopped = util::signal(child.id(), libc::SIGINT);
        if stopped.is_err() {
            let _ = child.kill();
        }
        let status = child.wait()?;
        stopped?;
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            lines.push(line);
        }
        ensure!(status.success(), "tcpdump failed: {status}: {lines:?}");
        for line in &lines {
            if let Some(n) = line.strip_suffix(" packets dropped by kernel") {
                ensure!(n.trim() == "0", "tcpdump dropped packets: {lines:?}");
            }
        }
        let mut raw = Vec::new();
        std::fs::File::open(&self.file)?.read_to_end(&mut raw)?;
        parse(&raw)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Counts `packets` for `port` seen from the gateway: (ingress, egress),
/// where ingress is towards `port` when `port_is_gateway`, else from it.
pub fn count(packets: &[Packet], port: u16, port_is_gateway: bool) -> (Wire, Wire) {
    let (mut to, mut from) = (Wire::default(), Wire::default());
    for p in packets {
        let side = if p.dport == port {
            &mut to
        } else if p.sport == port {
            &mut from
        } else {
            continue;
        };
        side.packets += 1;
        side.bytes += p.ip_len;
        side.resets += u64::from(p.flags & RST != 0);
    }
    if port_is_gateway {
        (to, from)
    } else {
        (from, to)
    }
}

/// Client connection attempts to `port`: SYN without ACK.
pub fn syns_to(packets: &[Packet], port: u16) -> u64 {
    packets
        .iter()
        .filter(|p| p.dport == port && p.flags & (SYN | ACK) == SYN)
        .count() as u64
}

/// The TCP/IP packets of a classic pcap file (any byte order, micro- or
/// nanosecond stamps; Ethernet, Linux cooked or raw IP link types).
pub fn parse(raw: &[u8]) -> Result<Vec<Packet>> {
    ensure!(raw.len() >= 24, "pcap file too short: {} bytes", raw.len());
    let magic = u32::from_le_bytes(raw[0..4].try_into()?);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => bail!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |b: &[u8], at: usize| -> u32 {
        let w: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(raw, 20);
    let l2 = match link {
        1 => 14,       // Ethernet (loopback is shown as Ethernet)
        12 | 101 => 0, // raw IP
        113 => 16,     // Linux cooked v1
        276 => 20,     // Linux cooked v2
        other => bail!("unsupported pcap link type {other}"),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= raw.len() {
        let incl = u32_at(raw, at + 8) as usize;
        let data = raw
            .get(at + 16..at + 16 + incl)
            .context("truncated pcap record")?;
        at += 16 + incl;
        if let Some(p) = tcp_ip(data.get(l2..).unwrap_or_default()) {
            out.push(p);
        }
    }
    Ok(out)
}

fn tcp_ip(ip: &[u8]) -> Option<Packet> {
    let version = ip.first()? >> 4;
    let (proto, header, ip_len) = match version {
        4 => (
            *ip.get(9)?,
            usize::from(ip[0] & 0x0f) * 4,
            u64::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?])),
        ),
        6 => (
            *ip.get(6)?,
            40,
            40 + u64::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?])),
        ),
        _ => return None,
    };
    if proto != 6 {
        return None;
    }
    let tcp = ip.get(header..header + 14)?;
    Some(Packet {
        sport: u16::from_be_bytes([tcp[0], tcp[1]]),
        dport: u16::from_be_bytes([tcp[2], tcp[3]]),
        flags: tcp[13],
        ip_len,
        headers: (header + usize::from(tcp[12] >> 4) * 4) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(data);
        r
    }

    #[test]
    fn parses_an_ethernet_capture() {
        let mut file = Vec::new();
        file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        file.extend_from_slice(&[2, 0, 4, 0]);
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&128u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        let mut frame = vec![0u8; 14];
        let mut ip = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        let mut tcp = vec![0u8; 20];
        tcp[12] = 5 << 4;
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&8080u16.to_be_bytes());
        tcp[13] = SYN;
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        file.extend_from_slice(&record(&frame));
        let packets = parse(&file).unwrap();
        assert_eq!(
            packets,
            vec![Packet {
                sport: 40000,
                dport: 8080,
                flags: SYN,
                ip_len: 60,
                headers: 40
            }]
        );
        let (ingress, egress) = count(&packets, 8080, true);
        assert_eq!((ingress.packets, ingress.bytes, egress.packets), (1, 60, 0));
        assert_eq!(syns_to(&packets, 8080), 1);
    }
}
