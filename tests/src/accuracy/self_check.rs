//! The harness's self-test on a finished accuracy workload (clear text in
//! tests/tests/http_accuracy.rs, HTTPS in tests/tests/tls.rs), without an
//! agent: it must pass for the agent tests to mean anything.

use super::{
    agent_by_key, agent_upstream_vs_truth, agent_vs_nginx, client_vs_nginx, nginx_by_key,
    perfect_agent_lines, upstream_truth, Diffs, Report, LOG_TIMEOUT,
};
use crate::access_log::AccEntry;
use crate::client::{Sent, ABORTED};
use crate::request_log::ReqLine;
use crate::workload;
use crate::AccuracyScene;
use anyhow::{ensure, Result};
use std::collections::BTreeSet;

/// With the workload's record `sent` through `scene`:
/// - the client's own account against nginx's access log, request by request
///   (method, uri, status, `$request_length`, `$bytes_sent`, upstream);
/// - the kinds the agent tests depend on are all there (200, 404, 499, 502,
///   504, a pipelined request after the first, HEAD);
/// - nginx's upstream attempts against the upstream's own record;
/// - the comparison accepts a perfect synthetic agent (its lines made from
///   nginx's log and the upstream's record) and reports exactly what a faulty
///   one gets wrong.
///
/// Returns nginx's log.
pub fn harness_self_check(scene: &AccuracyScene, sent: &[Sent]) -> Result<Vec<AccEntry>> {
    workload::no_query(sent)?;
    let log = crate::util::poll(LOG_TIMEOUT, "the acc log", || {
        let l = scene.nginx.acc_log()?;
        Ok((l.len() >= sent.len()).then_some(l))
    })?;
    let mut report = Report::default();
    let nginx = nginx_by_key(&log, &mut report);
    let down = format!("127.0.0.1:{}", scene.down_port);
    client_vs_nginx(sent, &nginx, &scene.upstream.addr(), &down, &mut report);
    ensure!(
        !report.failed(),
        "{}\n--- acc log ---\n{}",
        report.render(),
        scene.nginx.acc_log_text()
    );
    let st = workload::status_counts(sent);
    for code in [200, 404, 499, 502, 504] {
        ensure!(st.contains_key(&code), "no {code} in the workload: {st:?}");
    }
    ensure!(sent.iter().any(|s| s.pipelined && s.seq > 1));
    ensure!(sent.iter().any(|s| s.method == "HEAD"));
    let truth = upstream_truth(scene, &log)?;
    let unanswered = truth.iter().filter(|t| t.status == 0).count();
    let gave_up = log
        .iter()
        .filter(|e| e.status == 504 || e.status == ABORTED)
        .count();
    ensure!(
        unanswered == gave_up,
        "upstream left {unanswered} unanswered, nginx gave up on {gave_up}"
    );
    let listener = scene.nginx.listen_addr();
    let backend = scene.upstream.addr();
    let mut perfect = perfect_agent_lines(&log, &truth, &listener, &backend);
    let compare = |lines: &[ReqLine]| {
        let mut r = Report::default();
        let a = agent_by_key(lines, &mut r);
        let (mut d, mut u) = (Diffs::default(), Diffs::default());
        agent_vs_nginx(
            &nginx,
            &a,
            &BTreeSet::new(),
            &listener,
            &backend,
            &mut r,
            &mut d,
            &mut u,
        );
        agent_upstream_vs_truth(lines, &truth, &backend, &mut r);
        r
    };
    let r = compare(&perfect);
    ensure!(!r.failed(), "a perfect agent fails:\n{}", r.render());
    // Fault: the last downstream line's response bytes are off by one, and an
    // upstream line is missing.
    let last_down = perfect
        .iter()
        .rposition(ReqLine::is_downstream)
        .expect("downstream lines");
    perfect[last_down].response_bytes += 1;
    let first_up = perfect
        .iter()
        .position(|l| !l.is_downstream())
        .expect("upstream lines");
    perfect.remove(first_up);
    let r = compare(&perfect);
    let failed: Vec<(&String, usize)> = r
        .checks
        .iter()
        .filter(|(_, (_, f))| !f.is_empty())
        .map(|(n, (_, f))| (n, f.len()))
        .collect();
    ensure!(
        failed.len() == 2
            && failed.iter().all(|(_, n)| *n == 1)
            && r.checks["agent: response_bytes"].1.len() == 1
            && r.checks["agent upstream lines = upstream's own record"]
                .1
                .len()
                == 1,
        "faults not reported as expected:\n{}",
        r.render()
    );
    Ok(log)
}
