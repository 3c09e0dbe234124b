//! Called-number normalisation: never panics; results are E.164 and stable.
//!
//! The body lives in `switchboard_telephony::fuzzing::called_number`, so `cargo test`
//! (crates/telephony/tests/fuzz_corpus.rs) compiles and runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_telephony::fuzzing::called_number(data));
