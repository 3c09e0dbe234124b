//! RTP parsing: never panics; whatever parses re-serialises to a packet
//! that parses to the same header and payload.
//!
//! The body lives in `switchboard_media::fuzzing::rtp_packet`, so `cargo test`
//! (tests/fuzz_corpus.rs) compiles and runs it on stable over the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_media::fuzzing::rtp_packet(data));
