//! Compound RTCP parsing: never panics; parsed reports re-serialise to
//! packets that parse to the same values.
//!
//! The body lives in `switchboard_media::fuzzing::rtcp_packet`, so `cargo test`
//! (tests/fuzz_corpus.rs) compiles and runs it on stable over the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_media::fuzzing::rtcp_packet(data));
