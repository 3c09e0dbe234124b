//! A whole receive session fed a stream of datagrams: never panics, the
//! jitter buffer never exceeds its capacity.
//!
//! The body lives in `switchboard_media::fuzzing::rtp_session`, so `cargo test`
//! (tests/fuzz_corpus.rs) compiles and runs it on stable over the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_media::fuzzing::rtp_session(data));
