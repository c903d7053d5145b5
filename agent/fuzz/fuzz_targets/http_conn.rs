//! Stream reassembly and HTTP/1.x parsing (`HttpConn`) on scripted sparse captures: see
//! `src/script.rs` for the input format and the invariants checked.

#![no_main]

// The agent is a binary crate: compile its HTTP stage's sources here directly. They use only
// std, httparse and their own submodules; the test-only ones are cfg(test).
#[allow(dead_code)]
#[path = "../../src/http/mod.rs"]
mod http;

#[path = "../src/script.rs"]
mod script;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    script::replay(data);
});
