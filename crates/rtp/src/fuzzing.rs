//! Fuzz target bodies for what this crate parses from a peer: SDP offers and
//! answers. Shared by `fuzz/fuzz_targets/sdp.rs` (libFuzzer, nightly) and
//! `tests/fuzz_corpus.rs` (stable), like `switchboard_media::fuzzing`.

use std::net::{IpAddr, Ipv4Addr};

use crate::negotiate::{self, LocalDescription};
use crate::sdp::SessionDescription;

pub use switchboard_media::fuzzing::exercise;

/// SDP parse and offer/answer: never panics; when we can answer an offer,
/// our answer parses, keeps one media line per offered one, and reads back
/// (as an answer to our own offer would) with the codec we chose.
pub fn sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = SessionDescription::parse(text) else {
        return;
    };
    // Whatever a peer answers to our offer: no panic.
    let _ = negotiate::accept(&offer);
    let Ok((index, agreed)) = negotiate::answer(&offer) else {
        return;
    };
    let mut local = LocalDescription::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 20_000);
    let ours = local.render_answer(&offer, index, &agreed);
    let parsed = SessionDescription::parse(&ours);
    assert!(parsed.is_ok(), "our answer does not parse: {ours:?}");
    let Ok(parsed) = parsed else { return };
    assert_eq!(parsed.media.len(), offer.media.len(), "{ours:?}");
    let back = negotiate::accept(&parsed);
    assert!(back.is_ok(), "our answer is not acceptable: {ours:?}");
    if let Ok(back) = back {
        assert_eq!(back.codec, agreed.codec, "{ours:?}");
    }
}
