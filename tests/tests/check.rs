//! `gatescope check` on the real kernel: as root it exits 0 and reports what
//! this kernel allows, as probes independent of gatescope's tell it (bpftool's
//! feature probe, the kprobe and uprobe PMUs, CapEff), so the test holds on any
//! kernel; without capabilities it exits non-zero naming the missing one.

use anyhow::{bail, ensure, Context, Result};
use gatescope_tests::agent::gatescope_bin;
use gatescope_tests::bpftool;
use gatescope_tests::util::TempDir;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const BTF: &str = "/sys/kernel/btf/vmlinux";

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `[wrapper...] bin check`, killing it after [`EXIT_TIMEOUT`].
fn run_check(bin: &Path, wrapper: &[&str]) -> Result<Output> {
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .arg("check")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("gatescope check did not exit within {EXIT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    })
}

/// The cells of the program-type row `name`, cut at the header's columns:
/// [program type, hook, loads, attaches, note].
fn row(table: &str, name: &str) -> Result<Vec<String>> {
    let header = table
        .lines()
        .find(|l| l.starts_with("program type"))
        .with_context(|| format!("no program-type header in:\n{table}"))?;
    let cols = ["hook", "loads", "attaches", "note"]
        .iter()
        .map(|c| header.find(c).with_context(|| format!("no column {c}")))
        .collect::<Result<Vec<usize>>>()?;
    let line = table
        .lines()
        .find(|l| l.get(..cols[0]).map(str::trim_end) == Some(name))
        .with_context(|| format!("no row `{name}` in:\n{table}"))?;
    let mut cells = vec![line[..cols[0]].trim().to_string()];
    for (i, &start) in cols.iter().enumerate() {
        let end = cols
            .get(i + 1)
            .copied()
            .unwrap_or(line.len())
            .min(line.len());
        cells.push(line.get(start..end).unwrap_or("").trim().to_string());
    }
    Ok(cells)
}

/// loads and attaches of `name`, and its note.
fn verdicts(table: &str, name: &str) -> Result<(String, String, String)> {
    let r = row(table, name)?;
    Ok((r[2].clone(), r[3].clone(), r[4].clone()))
}

#[test]
fn check_as_root_reports_what_this_machine_allows() -> Result<()> {
    let out = run_check(&gatescope_bin()?, &[])?;
    let t = &out.stdout;
    ensure!(
        out.status.code() == Some(0),
        "exit status {}, want 0\nstdout:\n{t}\nstderr:\n{}",
        out.status,
        out.stderr
    );
    let host = |what: &str| -> Result<&str> {
        t.lines()
            .find_map(|l| l.strip_prefix(what).filter(|v| v.starts_with("  ")))
            .map(str::trim)
            .with_context(|| format!("no `{what}` line in:\n{t}"))
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    ensure!(host("kernel")? == release.trim(), "kernel line:\n{t}");
    // The capabilities, from this process's CapEff (the check runs with the same).
    let status = std::fs::read_to_string("/proc/self/status")?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff in /proc/self/status")?;
    let cap_eff = u64::from_str_radix(cap_eff.trim(), 16).context("CapEff")?;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let caps = [
        ("CAP_BPF", 39),
        ("CAP_PERFMON", 38),
        ("CAP_SYS_ADMIN", 21),
        ("CAP_NET_RAW", 13),
    ]
    .iter()
    .map(|&(name, bit)| format!("{name} {}", yes_no(cap_eff >> bit & 1 == 1)))
    .collect::<Vec<_>>()
    .join(", ");
    ensure!(
        host("capabilities")? == caps,
        "capabilities, want {caps}:\n{t}"
    );
    ensure!(Path::new(BTF).exists(), "no {BTF}");
    ensure!(host("BTF")? == format!("yes ({BTF})"), "BTF:\n{t}");
    let tracefs = host("tracefs")?;
    ensure!(
        tracefs == "mounted at /sys/kernel/tracing"
            || tracefs == "was not mounted; mounted it at /sys/kernel/tracing",
        "tracefs:\n{t}"
    );
    ensure!(
        host("ring buffer")?.starts_with("yes (EVENTS, "),
        "ring buffer:\n{t}"
    );

    // What each row should say, from probes independent of gatescope's: the kernel's
    // program types as bpftool's feature probe loads them, the perf event sources
    // (PMUs) kprobes and uprobes attach through, and the tracepoint in tracefs.
    let types = bpftool::program_types()?;
    let has = |ty: &str| -> Result<bool> {
        types
            .get(ty)
            .copied()
            .with_context(|| format!("bpftool feature probe says nothing of {ty}: {types:?}"))
    };
    let pmu = |name: &str| {
        Path::new("/sys/bus/event_source/devices")
            .join(name)
            .exists()
    };
    let fork_tp = Path::new("/sys/kernel/tracing/events/sched/sched_process_fork").exists();
    // (row, loads, attaches); attaches is "-" when it does not load
    let want = [
        ("tracepoint", has("tracepoint")?, fork_tp),
        ("raw tracepoint", has("raw_tracepoint")?, true),
        // tp_btf is a `tracing` program with the raw-tracepoint attach type, which
        // bpftool does not probe (its `tracing` probe is fentry's): it needs BTF and
        // raw tracepoints
        ("BTF tracepoint", has("raw_tracepoint")?, true),
        // bpftool probes `tracing` as fentry
        ("fentry", has("tracing")?, true),
        ("kprobe", has("kprobe")?, pmu("kprobe")),
        ("uprobe", has("kprobe")?, pmu("uprobe")),
        ("socket filter", has("socket_filter")?, true),
    ];
    let mut works = std::collections::BTreeMap::new();
    for (name, loads, attaches) in want {
        let (got_loads, got_attaches, note) = verdicts(t, name)?;
        let want_attaches = match (loads, attaches) {
            (false, _) => "-",
            (true, a) => yes_no(a),
        };
        ensure!(
            (got_loads.as_str(), got_attaches.as_str()) == (yes_no(loads), want_attaches),
            "{name}: loads {got_loads}, attaches {got_attaches} ({note}); the independent \
             probes say loads {}, attaches {want_attaches}:\n{t}",
            yes_no(loads)
        );
        ensure!(
            note.is_empty() == (loads && attaches),
            "{name}: a note exactly when it does not work, got {note:?}:\n{t}"
        );
        works.insert(name, loads && attaches);
    }
    if has("kprobe")? && !pmu("kprobe") {
        let (.., note) = verdicts(t, "kprobe")?;
        ensure!(
            note.contains("not built into this kernel"),
            "kprobe without its PMU: note {note:?}:\n{t}"
        );
    }
    ensure!(row(t, "tracepoint")?[1] == "sched:sched_process_fork");
    ensure!(row(t, "fentry")?[1] == "tcp_sendmsg" && row(t, "kprobe")?[1] == "tcp_sendmsg");

    let bytes = if works["raw tracepoint"] {
        "tracepoints (sock:sock_send_length/recv_length, buffers from the saved registers \
         (fallback: raw tracepoint sys_enter))"
    } else {
        "tracepoints (sock:sock_send_length/recv_length, buffers from the saved registers \
         (fallback: raw_syscalls:sys_enter))"
    };
    let tls = if works["uprobe"] {
        "uprobes on OpenSSL's SSL_read/SSL_write in each libssl a target maps"
    } else {
        "off: uprobes unavailable here"
    };
    let wire = if works["socket filter"] {
        "socket filter on AF_PACKET sockets"
    } else {
        "off: socket filters unavailable here"
    };
    for (job, uses) in [
        ("process tracking", "tracepoints (sched:sched_process_fork"),
        (
            "connection lifecycle",
            "tracepoints (sock:inet_sock_set_state",
        ),
        ("bytes and payload", bytes),
        ("TLS", tls),
        ("wire view", wire),
    ] {
        ensure!(
            host(job)?.starts_with(uses),
            "job `{job}` should use `{uses}...`:\n{t}"
        );
    }
    ensure!(
        t.lines().last()
            == Some(
                "verdict: the core can run here (capabilities, tracefs, tracepoints, ring buffer)"
            ),
        "verdict:\n{t}"
    );
    ensure!(
        !out.stderr.contains("error"),
        "stderr has an error:\n{}",
        out.stderr
    );
    Ok(())
}

#[test]
fn check_without_capabilities_fails_naming_them() -> Result<()> {
    // A world-readable copy, so uid 65534 can run it wherever the original lives.
    let dir = TempDir::new("check-unpriv")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("gatescope");
    std::fs::copy(gatescope_bin()?, &bin).context("copying the binary")?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let out = run_check(
        &bin,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ],
    )?;
    ensure!(
        !out.stderr.contains("setpriv:"),
        "setpriv itself failed ({}):\n{}",
        out.status,
        out.stderr
    );
    ensure!(
        out.status.code() == Some(1),
        "exit status {}, want 1\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    ensure!(
        out.stderr.lines().any(|l| l.starts_with(
            "error: the core cannot run here: missing capabilities CAP_BPF and CAP_PERFMON"
        )),
        "no `error: ... missing capabilities CAP_BPF and CAP_PERFMON` line in stderr:\n{}",
        out.stderr
    );
    let t = &out.stdout;
    ensure!(
        t.contains("capabilities    CAP_BPF no, CAP_PERFMON no, CAP_SYS_ADMIN no, CAP_NET_RAW no"),
        "capabilities line:\n{t}"
    );
    // Still a full table: every program type, none of them loaded.
    for name in [
        "tracepoint",
        "raw tracepoint",
        "BTF tracepoint",
        "fentry",
        "kprobe",
        "uprobe",
        "socket filter",
    ] {
        let (loads, attaches, _) = verdicts(t, name)?;
        ensure!(
            loads == "no" && attaches == "-",
            "{name} as nobody: loads {loads}, attaches {attaches}:\n{t}"
        );
    }
    ensure!(
        t.contains(
            "verdict: the core cannot run here: missing capabilities CAP_BPF and CAP_PERFMON"
        ),
        "verdict:\n{t}"
    );
    Ok(())
}
