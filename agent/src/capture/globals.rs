//! Values the agent patches into the programs' globals before load: where
//! this architecture keeps a syscall's number and arguments (and so where the
//! payload programs find buffers, `--payload-from`), and how often the
//! programs look at the ring buffer's fill.

use gatescope_common::{DataHeader, PtRegsArgs, DATA_TAIL_MAX};

/// Where this architecture's `struct pt_regs` keeps the syscall number and
/// the second and third arguments. On x86-64 (arch/x86/include/asm/ptrace.h:
/// r15 .. r8, ax, cx, dx, si, di, orig_ax, ip, cs, 8 bytes each) the
/// payload programs read them themselves (`from_regs`, patched in at load);
/// `cs` is `__USER_CS` (0x33) for a 64-bit syscall (measured, KERNEL.md).
#[cfg(target_arch = "x86_64")]
pub(super) const PT_REGS_ARGS: PtRegsArgs = PtRegsArgs {
    enabled: 1,
    arg1: 13 * 8,
    arg2: 12 * 8,
    nr: 15 * 8,
    mode: 17 * 8,
    mode_value: 0x33,
    ..PtRegsArgs::NONE
};
/// arm64 (arch/arm64/include/asm/ptrace.h): regs[1] and regs[2]. Reading
/// the registers from the payload programs is not verified on arm64 (its
/// compat check is a pstate bit, not a value), so there only the syscall
/// hook gives buffers.
#[cfg(target_arch = "aarch64")]
pub(super) const PT_REGS_ARGS: PtRegsArgs = PtRegsArgs {
    enabled: 1,
    arg1: 8,
    arg2: 16,
    ..PtRegsArgs::NONE
};
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) const PT_REGS_ARGS: PtRegsArgs = PtRegsArgs::NONE;
/// Whether the payload programs can read the saved registers on this
/// architecture.
pub(super) const REGS_KNOWN: bool = cfg!(target_arch = "x86_64");

/// Where the payload programs find a transfer's buffer (`--payload-from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadFrom {
    /// The saved registers where the host allows it, else the syscall hook.
    Auto,
    /// The saved registers of the syscall in progress, read in
    /// `sock_send_length`/`sock_recv_length`: no syscall hook at all.
    Regs,
    /// A `sys_enter` hook saving every send/recv-family buffer: costs every
    /// syscall of every process on the host (see BENCHMARKS.md).
    SyscallHook,
}

/// CPUs the kernel may run programs on (per-CPU maps have one slot each).
pub(crate) fn possible_cpus() -> u32 {
    aya::util::nr_cpus()
        .ok()
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
        .max(1)
}

/// The programs look at the ring's fill once per `mask + 1` records of a CPU
/// (ebpf/src/emit.rs). Between two looks all CPUs together add at most
/// `cpus * (mask + 1)` of the largest data record; that stays within an
/// eighth of the ring, so with the eighth that triggers a wake-up the ring
/// is at most a quarter full when the agent is woken. At most 256.
pub(super) fn wake_check_mask(ring_bytes: u32, capture_bytes: u32, cpus: u32) -> u32 {
    let record = (size_of::<DataHeader>() + DATA_TAIL_MAX) as u32 + capture_bytes;
    let per_cpu = ring_bytes / 8 / record.max(1) / cpus.max(1);
    let every = if per_cpu == 0 {
        1
    } else {
        1 << per_cpu.ilog2()
    };
    every.min(256) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_fill_is_looked_at_often_enough() {
        // Default ring (4 MiB) and capture (1 KiB), 2 CPUs: records up to
        // 1144 bytes, an eighth of the ring is 229 of them per CPU.
        assert_eq!(wake_check_mask(4 << 20, 1024, 2), 127);
        assert_eq!(wake_check_mask(1 << 30, 64, 1), 255, "at most 256");
        assert_eq!(
            wake_check_mask(4096, 4096, 64),
            0,
            "a tiny ring: every record"
        );
        for (ring, cap, cpus) in [(4 << 20, 4096, 2), (1 << 20, 1024, 16), (64 << 20, 512, 96)] {
            let every = wake_check_mask(ring, cap, cpus) + 1;
            assert!(every.is_power_of_two());
            let record = (size_of::<DataHeader>() + DATA_TAIL_MAX) as u32 + cap;
            assert!(
                every == 1 || cpus * every * record <= ring / 8,
                "{ring} {cap} {cpus}"
            );
        }
    }
}
