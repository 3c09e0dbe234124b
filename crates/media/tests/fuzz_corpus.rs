//! Runs every media fuzz target body over its checked-in seed corpus
//! (`fuzz/corpus/<target>/`) and a few thousand deterministic mutations, so
//! the targets compile and hold on stable, where `cargo fuzz` does not run.

use std::path::PathBuf;

use switchboard_media::fuzzing;

/// Mutated inputs per target: enough to shake the parsers, bounded in time.
const ITERATIONS: usize = 5_000;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn run(target: &str, body: fn(&[u8])) {
    let seeds = fuzzing::exercise(&corpus(target), ITERATIONS, 1_500, body);
    assert!(seeds > 0, "no seed corpus for {target}");
}

#[test]
fn rtp_packet_target_holds_over_its_corpus() {
    run("rtp_packet", fuzzing::rtp_packet);
}

#[test]
fn rtcp_packet_target_holds_over_its_corpus() {
    run("rtcp_packet", fuzzing::rtcp_packet);
}

#[test]
fn dtmf_payload_target_holds_over_its_corpus() {
    run("dtmf_payload", fuzzing::dtmf_payload);
}

#[test]
fn rtp_session_target_holds_over_its_corpus() {
    run("rtp_session", fuzzing::rtp_session);
}

#[test]
fn jitter_buffer_target_holds_over_its_corpus() {
    run("jitter_buffer", fuzzing::jitter_buffer);
}
