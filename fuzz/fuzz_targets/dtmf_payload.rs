//! RFC 4733 payloads: parsing never panics and round-trips; a detector fed
//! arbitrary (timestamp, payload) pairs never panics and stays bounded.
//!
//! The body lives in `switchboard_media::fuzzing::dtmf_payload`, so `cargo test`
//! (tests/fuzz_corpus.rs) compiles and runs it on stable over the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_media::fuzzing::dtmf_payload(data));
