//! Times getppid(2) in a loop: the cost the agent's syscall entry hook adds to
//! every system call on the host (README, "How it works", `syscalls.rs`;
//! BENCHMARKS.md). A syscall that does almost nothing, so the hook's share
//! shows. Run it with no agent, then with one attached to anything (the hook
//! runs for every process), e.g. `--wire=false` to leave the packet filter out.
//!
//! usage: getppid_loop [CALLS [ROUNDS]]   (default 5000000 calls, 3 rounds)
//!
//! Prints one line per round: `getppid: CALLS calls, NS ns per call`.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..calls {
            // SAFETY: getppid has no preconditions and cannot fail; glibc
            // does not cache it, so each call is a system call.
            std::hint::black_box(unsafe { libc::getppid() });
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(calls);
        println!("getppid: {calls} calls, {ns:.1} ns per call");
    }
}
