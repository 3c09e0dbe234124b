//! A datagram through rsipstack's parser and then every helper we apply to
//! an INVITE (users, called number, credentials, digest, SDP body).
//!
//! The body lives in `switchboard_telephony::fuzzing::sip_message`, so `cargo test`
//! (crates/telephony/tests/fuzz_corpus.rs) compiles and runs it on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard_telephony::fuzzing::sip_message(data));
