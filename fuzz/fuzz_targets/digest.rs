//! Digest credentials and our nonces: no panic, no forged fresh nonce.
//!
//! The body lives in `switchboard_telephony::fuzzing::digest`, so `cargo test`
//! (crates/telephony/tests/fuzz_corpus.rs) compiles and runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_telephony::fuzzing::digest(data));
