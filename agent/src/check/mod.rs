//! `gatescope check`: what this host allows, found by trying it. Loads the
//! agent's own object, loads and attaches one program of each hook type (each
//! attach is detached again at once), prints a table, says what gatescope
//! uses for each job, and exits non-zero when the core cannot run.
//!
//! Only `gatescope check` tries every hook type; the agent logs at start the
//! hooks it attached (capture/mod.rs). The tracepoint path is complete on
//! its own; the other hook types are optional accelerators or later
//! features.
//!
//! `hooks` tries each hook type, `host` reads what needs no eBPF
//! (capabilities, tracefs, libc), `findings` holds what was found, renders the table and the verdict;
//! this module holds the two entry points.

mod findings;
mod hooks;
mod host;
mod targets;

use std::{fs, path::Path, process::ExitCode};

use aya::EbpfLoader;
use gatescope_common::{EVENTS_DEFAULT_BYTES, MAP_EVENTS, MAP_SCRATCH};

use crate::{capture::OBJECT, identity};

use self::{findings::*, hooks::*, host::*};

/// `gatescope check`: probe, print, exit 0 only when the core can run.
/// With target processes (`pids`, `names` as `--discover` takes them), also
/// what the TLS capture would do for each.
pub fn run(pids: &[u32], names: &[String]) -> ExitCode {
    let report = probe_host();
    print!("{}", report.render());
    if !pids.is_empty() || !names.is_empty() {
        print!("{}", targets::render(&targets::probe_targets(pids, names)));
    }
    match report.verdict() {
        Ok(()) => ExitCode::SUCCESS,
        Err(reasons) => {
            eprintln!("error: the core cannot run here: {}", reasons.join("; "));
            ExitCode::FAILURE
        }
    }
}

/// Tries everything, in the order a user would want to fix it.
pub fn probe_host() -> Report {
    let caps = effective_caps(&fs::read_to_string("/proc/self/status").unwrap_or_default());
    let btf = if Path::new(BTF_PATH).exists() {
        Ok(())
    } else {
        Err(format!("{BTF_PATH} does not exist"))
    };
    let tracefs = ensure_tracefs();
    let loaded = EbpfLoader::new()
        .map_max_entries(MAP_EVENTS, EVENTS_DEFAULT_BYTES)
        .map_max_entries(MAP_SCRATCH, crate::capture::possible_cpus())
        .load(OBJECT);
    let (ring_buffer, hooks) = match loaded {
        Ok(mut ebpf) => {
            let ring_buffer = match ebpf.map(MAP_EVENTS) {
                Some(aya::maps::Map::RingBuf(_)) => Outcome::Yes,
                Some(_) => Outcome::No(format!("{MAP_EVENTS} is not a ring buffer")),
                None => Outcome::No(format!("{MAP_EVENTS} missing from the object")),
            };
            let hooks = probe_hooks(&mut ebpf, &Hook::ALL);
            (ring_buffer, hooks)
        }
        Err(e) => {
            let why = format!("the object did not load: {}", ebpf_reason(&e));
            let hooks = Hook::ALL
                .iter()
                .map(|&hook| HookResult {
                    hook,
                    loads: Outcome::No("the object did not load (see ring buffer)".into()),
                    attaches: Outcome::NotTried,
                })
                .collect();
            (Outcome::No(why), hooks)
        }
    };
    Report {
        kernel: identity::kernel_release(),
        caps,
        btf,
        tracefs,
        ring_buffer,
        hooks,
    }
}

#[cfg(test)]
mod tests {
    use std::{io, path::PathBuf};

    use super::*;

    fn all_caps() -> u64 {
        (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_RAW)
    }

    fn result(hook: Hook, loads: Outcome, attaches: Outcome) -> HookResult {
        HookResult {
            hook,
            loads,
            attaches,
        }
    }

    /// What our CI machines give: tracepoints, raw and BTF tracepoints,
    /// uprobes and socket filters; no kprobes; fentry refused.
    fn this_machine() -> Report {
        let yes = |hook| result(hook, Outcome::Yes, Outcome::Yes);
        Report {
            kernel: "6.18.0".into(),
            caps: all_caps(),
            btf: Ok(()),
            tracefs: Tracefs::Mounted,
            ring_buffer: Outcome::Yes,
            hooks: vec![
                yes(Hook::Tracepoint),
                yes(Hook::RawTracepoint),
                yes(Hook::BtfTracepoint),
                result(
                    Hook::Fentry,
                    Outcome::No("BPF_PROG_LOAD returned EPERM (Operation not permitted)".into()),
                    Outcome::NotTried,
                ),
                result(
                    Hook::Kprobe,
                    Outcome::Yes,
                    Outcome::No(format!("not built into this kernel (no {KPROBE_PMU})")),
                ),
                yes(Hook::Uprobe),
                yes(Hook::SocketFilter),
            ],
        }
    }

    /// The row of `program` in a rendered table, split at the header's columns.
    fn row<'a>(table: &'a str, program: &str) -> Vec<&'a str> {
        let header = table
            .lines()
            .find(|l| l.starts_with("program type"))
            .expect("header");
        let cols: Vec<usize> = ["hook", "loads", "attaches", "note"]
            .iter()
            .map(|c| header.find(c).expect("column"))
            .collect();
        let line = table
            .lines()
            .find(|l| l.get(..cols[0]).map(str::trim_end) == Some(program))
            .unwrap_or_else(|| panic!("no row {program} in\n{table}"));
        let mut cells = vec![line[..cols[0]].trim()];
        for (i, &start) in cols.iter().enumerate() {
            let end = cols
                .get(i + 1)
                .copied()
                .unwrap_or(line.len())
                .min(line.len());
            cells.push(line.get(start..end).unwrap_or("").trim());
        }
        cells
    }

    #[test]
    fn renders_every_program_type_with_its_verdicts() {
        let table = this_machine().render();
        for hook in Hook::ALL {
            row(&table, hook.name());
        }
        assert_eq!(
            row(&table, "tracepoint"),
            ["tracepoint", "sched:sched_process_fork", "yes", "yes", ""]
        );
        assert_eq!(
            row(&table, "fentry"),
            [
                "fentry",
                "tcp_sendmsg",
                "no",
                "-",
                "load: BPF_PROG_LOAD returned EPERM (Operation not permitted)"
            ]
        );
        let kprobe = row(&table, "kprobe");
        assert_eq!(kprobe[2..4], ["yes", "no"]);
        assert!(kprobe[4].starts_with("attach: not built into this kernel"));
        assert_eq!(row(&table, "uprobe")[2..4], ["yes", "yes"]);
        assert_eq!(row(&table, "socket filter")[2..4], ["yes", "yes"]);
        assert!(table.contains(
            "capabilities    CAP_BPF yes, CAP_PERFMON yes, CAP_SYS_ADMIN yes, CAP_NET_RAW yes"
        ));
        assert!(table.contains("tracefs         mounted at /sys/kernel/tracing"));
        assert!(table.contains("process tracking      tracepoints (sched:sched_process_fork"));
        assert!(table.contains(
            "TLS                   uprobes on OpenSSL's SSL_read/SSL_write in each libssl a \
             target maps (the agent's log names each file)"
        ));
        assert!(table.ends_with(
            "verdict: the core can run here (capabilities, tracefs, tracepoints, ring buffer)\n"
        ));
    }

    #[test]
    fn the_core_needs_capabilities_tracefs_tracepoints_and_a_ring_buffer() {
        assert_eq!(this_machine().verdict(), Ok(()));

        let mut r = this_machine();
        r.caps = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert_eq!(r.verdict(), Ok(()), "CAP_BPF + CAP_PERFMON suffice");
        r.caps = 1 << CAP_SYS_ADMIN;
        assert_eq!(r.verdict(), Ok(()), "CAP_SYS_ADMIN implies both");
        r.caps = 1 << CAP_BPF;
        let why = r.verdict().unwrap_err();
        assert_eq!(why.len(), 1);
        assert!(
            why[0].starts_with("missing capabilities CAP_PERFMON:"),
            "{why:?}"
        );

        let mut r = this_machine();
        r.caps = 0;
        r.tracefs = Tracefs::Unavailable("mounting it failed: EPERM".into());
        r.ring_buffer = Outcome::No("the object did not load: EPERM".into());
        r.hooks[0] = result(
            Hook::Tracepoint,
            Outcome::No("EPERM".into()),
            Outcome::NotTried,
        );
        let why = r.verdict().unwrap_err();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].starts_with("missing capabilities CAP_BPF and CAP_PERFMON"));
        assert!(why[1].starts_with("tracefs is not mounted"));
        assert!(why[2].starts_with("no ring buffer"));
        assert_eq!(why[3], "tracepoints do not attach (load: EPERM)");
        assert!(r
            .render()
            .contains("verdict: the core cannot run here: missing capabilities"));
        assert!(r
            .render()
            .contains("process tracking      nothing: tracepoints do not attach here"));

        // Optional hooks do not matter to the verdict.
        let mut r = this_machine();
        for h in &mut r.hooks[1..] {
            h.loads = Outcome::No("EPERM".into());
            h.attaches = Outcome::NotTried;
        }
        assert_eq!(r.verdict(), Ok(()));
        assert!(r
            .render()
            .contains("wire view             off: socket filters unavailable here: EPERM"));
    }

    #[test]
    fn reads_caps_mounts_and_libc() {
        assert_eq!(
            effective_caps("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            0x1ff_ffff_ffff
        );
        assert_eq!(effective_caps("CapEff:\t0000000000000000\n"), 0);
        assert_eq!(effective_caps(""), 0);
        assert!(tracefs_mounted(
            "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw,relatime 0 0\n"
        ));
        assert!(!tracefs_mounted(
            "tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n"
        ));
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 1 /usr/bin/gatescope
7f0000000000-7f0000028000 r--p 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libcap.so.2
7f0000100000-7f0000128000 r--p 00000000 08:01 3 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            libc_path(maps),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            libc_path("7f00-7f01 r--p 0 08:01 3 /lib/libc-2.31.so\n"),
            Some(PathBuf::from("/lib/libc-2.31.so"))
        );
        assert_eq!(libc_path("7ffd-7ffe rw-p 0 00:00 0 [stack]\n"), None);
    }

    #[test]
    fn errors_are_short_with_errno_names() {
        assert_eq!(
            errno(&io::Error::from_raw_os_error(libc::EPERM)),
            "EPERM (Operation not permitted)"
        );
        assert_eq!(
            errno(&io::Error::from_raw_os_error(libc::ENOENT)),
            "ENOENT (No such file or directory)"
        );
    }
}
