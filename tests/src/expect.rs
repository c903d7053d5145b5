//! What the client's and the upstream's own counts say the metrics must show:
//! the traffic several tests drive, and the expected deltas from it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::agent::Expect;
use crate::client::{Client, Transfer};
use crate::metrics::*;
use crate::pcap::Wire;
use crate::prom::Scrape;
use crate::upstream::UpstreamStats;
use crate::{util, Scene};

/// A little of everything: one-shots with and without a body, keep-alive.
pub fn mixed_traffic(client: &mut Client) -> Result<()> {
    client.one_shot("/size/777")?;
    client.one_shot_post("/size/10", 2048)?;
    client.keep_alive(3, "/size/5000")?;
    client.keep_alive(2, "/size/1")?;
    Ok(())
}

/// Upstream counters once every request was answered and they held still for
/// 300 ms (exiting workers close their idle upstream connections).
pub fn settled_upstream(scene: &Scene, requests: u64) -> Result<UpstreamStats> {
    let mut last = None;
    util::poll(Duration::from_secs(10), "upstream to settle", || {
        let st = scene.upstream.stats();
        if st.requests != requests {
            return Ok(None);
        }
        if last == Some(st) {
            return Ok(Some(st));
        }
        last = Some(st);
        std::thread::sleep(Duration::from_millis(300));
        Ok(None)
    })
}

/// Every count that the client's totals `t` and the upstream's own counters
/// `up` determine, relative to `base`, with no client connection left open:
/// accepted, downstream bytes per `listener`, upstream bytes, connections
/// opened and open per `peer`, and active back to its base.
pub fn traffic_deltas(
    base: &Scrape,
    listener: &str,
    peer: &str,
    t: &Transfer,
    up: &UpstreamStats,
) -> Result<Vec<Expect>> {
    let plus = |name: &str, labels: &[(&str, &str)], n: u64| -> Result<Expect> {
        Ok(Expect::new(
            name,
            labels,
            base.get_or_zero(name, labels)? + n as f64,
        ))
    };
    Ok(vec![
        plus(ACCEPTED, &[], t.connections)?,
        plus(
            DOWN_BYTES,
            &[("listener", listener), ("direction", "ingress")],
            t.written,
        )?,
        plus(
            DOWN_BYTES,
            &[("listener", listener), ("direction", "egress")],
            t.read,
        )?,
        plus(
            UP_BYTES,
            &[("peer", peer), ("direction", "egress")],
            up.bytes_received,
        )?,
        plus(
            UP_BYTES,
            &[("peer", peer), ("direction", "ingress")],
            up.bytes_sent,
        )?,
        plus(UP_OPENED, &[("peer", peer)], up.accepted)?,
        Expect::new(UP_CONNS, &[("peer", peer)], up.open as f64),
        plus(DOWN_CONNS, &[("state", "active")], 0)?,
    ])
}

/// Every `gatescope_events_lost_total` series by reason: the kernel's and the
/// agent's own.
pub fn losses(s: &Scrape) -> BTreeMap<String, f64> {
    s.matching(EVENTS_LOST, &[])
        .filter_map(|x| Some((x.labels.get("reason")?.clone(), x.value)))
        .collect()
}

/// Every loss counter (all reasons, kernel and agent) is zero; at least the
/// kernel's reasons must be exported.
pub fn no_losses(s: &Scrape) -> Result<()> {
    let all = losses(s);
    for reason in LOST_REASONS {
        ensure!(
            all.contains_key(reason),
            "no {EVENTS_LOST}{{reason={reason:?}}}"
        );
    }
    for (reason, v) in &all {
        ensure!(*v == 0.0, "events lost ({reason}) = {v}\n{}", s.text);
    }
    Ok(())
}

/// Every loss counter at its value in `base`, plus `more` for the reasons named
/// there (each must be a reason `base` exports).
pub fn losses_from(base: &Scrape, more: &[(&str, u64)]) -> Result<Vec<Expect>> {
    let base = losses(base);
    ensure!(!base.is_empty(), "no {EVENTS_LOST} series");
    for (reason, _) in more {
        ensure!(
            base.contains_key(*reason),
            "no {EVENTS_LOST}{{reason={reason:?}}}"
        );
    }
    Ok(base
        .iter()
        .map(|(reason, v)| {
            let extra = more
                .iter()
                .filter(|(r, _)| r == reason)
                .map(|(_, n)| *n as f64)
                .sum::<f64>();
            Expect::new(EVENTS_LOST, &[("reason", reason)], v + extra)
        })
        .collect())
}

/// Every connection was opened after the agent started: nothing untracked.
pub fn nothing_untracked(base: &Scrape) -> Result<Vec<Expect>> {
    ["ingress", "egress"]
        .into_iter()
        .map(|dir| {
            let labels = [("direction", dir)];
            Ok(Expect::new(
                UNTRACKED_BYTES,
                &labels,
                base.get_or_zero(UNTRACKED_BYTES, &labels)?,
            ))
        })
        .collect()
}

/// Expectations that `side`'s families grew by exactly `ingress`/`egress`.
pub fn wire_deltas(
    base: &Scrape,
    families: [&str; 3],
    labels: &[(&str, &str)],
    ingress: Wire,
    egress: Wire,
) -> Result<Vec<Expect>> {
    let mut out = Vec::new();
    for (dir, w) in [("ingress", ingress), ("egress", egress)] {
        let mut l = labels.to_vec();
        l.push(("direction", dir));
        for (family, n) in families.iter().zip([w.packets, w.bytes, w.resets]) {
            out.push(Expect::new(
                family,
                &l,
                base.get_or_zero(family, &l)? + n as f64,
            ));
        }
    }
    Ok(out)
}

/// Expectations that the client SYNs on `down` (interface and listener
/// labels) grew by `syns` and the timed handshakes by `timed`.
pub fn client_handshakes(
    base: &Scrape,
    down: &[(&str, &str)],
    syns: u64,
    timed: u64,
) -> Result<Vec<Expect>> {
    let count = format!("{HANDSHAKE_SECONDS}_count");
    Ok(vec![
        Expect::new(
            DOWN_WIRE_SYNS,
            down,
            base.get_or_zero(DOWN_WIRE_SYNS, down)? + syns as f64,
        ),
        Expect::new(&count, down, base.get_or_zero(&count, down)? + timed as f64),
    ])
}
