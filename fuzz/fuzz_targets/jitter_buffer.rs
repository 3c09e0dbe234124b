//! The jitter buffer fed arbitrary packets: bounded, one item per tick,
//! never an item twice.
//!
//! The body lives in `switchboard_media::fuzzing::jitter_buffer`, so `cargo test`
//! (tests/fuzz_corpus.rs) compiles and runs it on stable over the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_media::fuzzing::jitter_buffer(data));
