//! The agent's request log against nginx's `acc` log, request by request:
//! what http_accuracy.rs (clear text) and tls.rs (HTTPS) both check.

use super::{
    agent_by_key, agent_upstream_vs_truth, agent_vs_nginx, client_vs_nginx, nginx_by_key, Diffs,
    Key, Report, MEDIAN_MS, STALE_MS, STALE_SHARE, WITHIN_RESOLUTION_MS, WITHIN_RESOLUTION_SHARE,
};
use crate::access_log::AccEntry;
use crate::client::Sent;
use crate::request_log::ReqLine;
use crate::upstream::UpstreamExchange;
use std::collections::{BTreeMap, BTreeSet};

/// Where the requests went: nginx's listener, the live upstream and the
/// closed port behind `/down`.
pub struct Addrs<'a> {
    pub listener: &'a str,
    pub backend: &'a str,
    pub down: &'a str,
}

/// The shares of requests held to a bound on their durations.
#[derive(Clone, Copy, Debug)]
pub struct Shares {
    /// At least this share within nginx's 1 ms resolution.
    pub within_resolution: f64,
    /// At most this share (and at least one request) beyond [`STALE_MS`].
    pub stale: f64,
}

impl Shares {
    /// Clear text: [`WITHIN_RESOLUTION_SHARE`], [`STALE_SHARE`].
    pub const CLEAR_TEXT: Shares = Shares {
        within_resolution: WITHIN_RESOLUTION_SHARE,
        stale: STALE_SHARE,
    };
}

/// Checks into `report`: the line counts (downstream against the log,
/// upstream against the upstream's own `truth`), the client's account
/// against the log first (a failure there is the harness's), each request
/// and upstream leg against the log, and the durations: within nginx's 1 ms
/// resolution for at least `shares.within_resolution` of requests, at most
/// `shares.stale` beyond [`STALE_MS`], medians within [`MEDIAN_MS`]. Returns the agent's lines by request, and the duration
/// differences, downstream and upstream, for the summary.
pub fn request_log_vs_nginx(
    lines: &[ReqLine],
    log: &[AccEntry],
    sent: &[Sent],
    truth: &[UpstreamExchange],
    at: &Addrs<'_>,
    shares: Shares,
    report: &mut Report,
) -> (BTreeMap<Key, ReqLine>, Diffs, Diffs) {
    let down_n = lines.iter().filter(|x| x.is_downstream()).count();
    report.check(
        "agent: downstream line count",
        down_n == log.len(),
        "(all)",
        format!("{} nginx lines", log.len()),
        format!("{down_n} downstream lines"),
    );
    report.check(
        "agent: upstream line count",
        lines.len() - down_n == truth.len(),
        "(all)",
        format!("{} upstream exchanges", truth.len()),
        format!("{} upstream lines", lines.len() - down_n),
    );
    let nginx = nginx_by_key(log, report);
    client_vs_nginx(sent, &nginx, at.backend, at.down, report);
    let agent = agent_by_key(lines, report);
    let pipelined: BTreeSet<Key> = sent
        .iter()
        .filter(|s| s.pipelined)
        .map(|s| (s.client, s.seq))
        .collect();
    let (mut diffs, mut up_diffs) = (Diffs::default(), Diffs::default());
    agent_vs_nginx(
        &nginx,
        &agent,
        &pipelined,
        at.listener,
        at.backend,
        report,
        &mut diffs,
        &mut up_diffs,
    );
    agent_upstream_vs_truth(lines, truth, at.backend, report);
    for (what, d) in [("duration", &diffs), ("upstream duration", &up_diffs)] {
        let (within, all) = d.share_within(WITHIN_RESOLUTION_MS);
        report.check(
            &format!(
                "agent: {what} within 1 ms for >= {:.0}% of requests",
                shares.within_resolution * 100.0
            ),
            within as f64 >= shares.within_resolution * all as f64,
            "all requests",
            format!("{all} requests"),
            format!("{within} within 1 ms"),
        );
        // At least one request may be stale: 3% of a run's ~90 is 2.7.
        let stale_max = ((shares.stale * all as f64).ceil() as usize).max(1);
        let (within_stale, _) = d.share_within(STALE_MS);
        report.check(
            &format!(
                "agent: {what} beyond {STALE_MS} ms for <= {:.0}% of requests",
                shares.stale * 100.0
            ),
            all - within_stale <= stale_max,
            "all requests",
            format!("at most {stale_max} of {all}"),
            format!("{} beyond {STALE_MS} ms", all - within_stale),
        );
        let median = d.median();
        let worst = d.0.values().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
        report.notes.push(format!(
            "{what}: worst |agent - nginx| {worst:.3} ms, {within}/{all} within 1 ms, \
             median {median:+.3} ms"
        ));
        report.check(
            &format!("agent: {what} median difference within 0.5 ms"),
            median.abs() <= MEDIAN_MS,
            "all requests",
            "0".into(),
            format!("{median:+.3} ms"),
        );
    }
    (agent, diffs, up_diffs)
}
