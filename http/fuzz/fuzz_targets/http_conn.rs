//! Stream reassembly and HTTP/1.x parsing (`HttpConn`) on scripted sparse captures: see
//! gatescope-http's `src/script.rs` for the input format and the invariants checked.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gatescope_http::script::replay(data);
});
