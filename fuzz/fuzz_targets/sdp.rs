//! SDP parse and offer/answer: never panics; our answer to any offer we can
//! answer parses and reads back with the codec we chose.
//!
//! The body lives in `switchboard_rtp::fuzzing::sdp`, so `cargo test`
//! (crates/telephony/tests/fuzz_corpus.rs) compiles and runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_rtp::fuzzing::sdp(data));
