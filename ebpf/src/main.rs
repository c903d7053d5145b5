//! gatescope's kernel programs.
//!
//! Everything stands on tracepoints (our kernels have no kprobe PMU and
//! refuse fentry programs: `gatescope check` shows it), and on values that need no kernel struct offsets:
//! tracepoint records and the current task's pid/tgid.
//!
//! - `process`: keeps the TARGETS set current across fork and exit.
//! - `conn`: TCP connection lifecycle of target sockets.
//! - `bytes`: bytes per socket moved by target threads.
//! - `payload`: the head and tail of those transfers, for HTTP parsing.
//! - `genai_mark`: whether a transfer starts a GenAI API request (wide capture).
//! - `pieces`: the rest of a transfer on an HTTP/2 socket, past its head.
//! - `regs`: where those transfers' buffers are, from the saved registers.
//! - `seen`: per-socket memory of the BTF path (one lookup per transfer).
//! - `splice`: bytes spliced from a socket, which pass no length tracepoint.
//! - `syscalls`: the fallback syscall entry hook saving buffers (not
//!   attached by default: it taxes every syscall of the host).
//! - `found`: connections open before gatescope started, claimed on first use.
//! - `tcp`: retransmissions and resets on tracked connections.
//! - `wire`: the socket filter counting packets and timing handshakes.
//! - `tls`: plaintext at OpenSSL (uprobes), tied to its socket.
#![no_std]
#![no_main]

mod bytes;
mod conn;
mod emit;
mod found;
mod genai_mark;
mod maps;
mod payload;
mod pieces;
mod probe;
mod process;
mod regs;
mod seen;
mod sock;
mod splice;
mod syscalls;
mod tcp;
mod tls;
mod wire;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves no panic path is reachable; this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
