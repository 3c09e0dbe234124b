//! Runs the SIP-glue and SDP fuzz target bodies over their checked-in seed
//! corpora (`fuzz/corpus/<target>/`) and a few thousand deterministic
//! mutations, so the targets compile and hold on stable, where `cargo fuzz`
//! does not run.

use std::path::PathBuf;

use switchboard_telephony::fuzzing;

/// Mutated inputs per target: enough to shake the parsers, bounded in time.
const ITERATIONS: usize = 3_000;

fn run(target: &str, max_len: usize, body: fn(&[u8])) {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let seeds = fuzzing::exercise(&corpus, ITERATIONS, max_len, body);
    assert!(seeds > 0, "no seed corpus for {target}");
}

#[test]
fn sip_message_target_holds_over_the_rfc4475_corpus() {
    run("sip_message", 8_192, fuzzing::sip_message);
}

#[test]
fn called_number_target_holds_over_its_corpus() {
    run("called_number", 256, fuzzing::called_number);
}

#[test]
fn digest_target_holds_over_its_corpus() {
    run("digest", 1_024, fuzzing::digest);
}

#[test]
fn sdp_target_holds_over_its_corpus() {
    run("sdp", 4_096, switchboard_rtp::fuzzing::sdp);
}
