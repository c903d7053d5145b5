//! What the benchmark reads from /proc: CPU time of processes and of the machine, peak RSS,
//! load, and the machine's description.

use std::{fs, thread};

use anyhow::{Context as _, Result};

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in /proc/<pid>/stat and /proc/stat.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The fields of /proc/<pid>/stat after the command name (which may hold spaces and
/// parentheses): index 0 is field 3 (`state`) of proc(5).
fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let f = stat_fields(stat)?;
    // utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds (user + system) a live process has used.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_cpu_ticks(&text).with_context(|| format!("parsing {path}"))?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// The processes whose command name (`/proc/<pid>/comm`) starts with `prefix`.
pub fn processes_named(prefix: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .collect()
}

/// CPU seconds of `pid` and its live children (an nginx master and its workers).
pub fn family_cpu_seconds(pid: u32) -> Result<f64> {
    let mut total = cpu_seconds(pid)?;
    for child in gatescope_tests::util::children_of(pid) {
        // A child that exited between the listing and the read has no time to add.
        total += cpu_seconds(child).unwrap_or(0.0);
    }
    Ok(total)
}

/// CPU seconds of this process's children that have been waited for (`wrk`, once reaped).
pub fn reaped_children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds the whole machine spent running processes (user + nice + system, all CPUs),
/// from the first line of /proc/stat. Interrupt and steal time are left out.
pub fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some(f.first()? + f.get(1)? + f.get(2)?)
}

pub fn machine_busy_seconds() -> Result<f64> {
    let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks = parse_machine_busy_ticks(&text).context("parsing /proc/stat")?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// The peak resident set (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    Ok(gatescope_tests::util::status_kib(pid, "VmHWM")? * 1024)
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut f = text.split_whitespace().map(|v| v.parse().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// nproc, the CPU model and the kernel release.
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string());
    Machine {
        cpus: thread::available_parallelism().map_or(0, usize::from),
        model,
        kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_status_and_machine_lines() {
        let stat = "1234 (nginx: worker (x) ) S 1200 1200 1200 0 -1 4194368 100 0 0 0 250 75 0 0 20 0 1 0 500 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(stat_fields(stat).unwrap()[1], "1200");
        let proc_stat = "cpu  100 5 50 1000 3 0 7 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_machine_busy_ticks(proc_stat), Some(155));
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(peak_rss_bytes(me).unwrap() > 0);
        assert!(loadavg().is_some());
        assert!(machine().cpus > 0);
    }
}
