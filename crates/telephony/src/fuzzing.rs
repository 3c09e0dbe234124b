//! Fuzz target bodies for our SIP glue: what `sip.rs` and `control.rs` read
//! from a carrier's messages. rsipstack parses the SIP grammar; these feed
//! whatever it accepts through our helpers. Shared by
//! `fuzz/fuzz_targets/sip_*.rs` (libFuzzer, nightly) and
//! `tests/fuzz_corpus.rs` (stable), like `switchboard_media::fuzzing`.

use rsipstack::sip::SipMessage;
use switchboard_model::Region;

use crate::{control, sip};

pub use switchboard_rtp::fuzzing::exercise;

/// A whole datagram as the transport sees it: if rsipstack parses it as a
/// request, every helper we apply to an INVITE runs on it without panicking
/// — source address, users, the called number, credentials, the digest
/// check, the SDP body through offer/answer.
pub fn sip_message(data: &[u8]) {
    let Ok(SipMessage::Request(req)) = SipMessage::try_from(data) else {
        return;
    };
    let _ = sip::source_ip(&req);
    let request_user = sip::request_user(&req);
    let to_user = sip::to_user(&req);
    let _ = sip::from_user(&req);
    let _ = sip::from_identity(&req);
    let called = control::called_number(
        request_user.as_deref(),
        to_user.as_deref(),
        Region::default(),
    );
    if let Some(number) = called {
        assert!(number.as_str().starts_with('+'), "{number:?}");
    }
    if let Some(raw) = sip::authorization(&req) {
        let _ = sip::authorization_user(&raw);
        assert!(
            !sip::digest_ok(&raw, &req, "user", "secret", 42),
            "a fuzzed request passed digest with a nonce we never issued"
        );
    }
    if let Some(text) = sip::body_text(&req.body) {
        switchboard_rtp::fuzzing::sdp(text.as_bytes());
    }
}

/// Called-number normalisation over any user part: never panics; a result
/// is E.164 (`+` and 8–15 digits) and normalising it again is stable.
pub fn called_number(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for region in [Region::default()] {
        let Some(number) = control::normalise_user(&text, region) else {
            continue;
        };
        let s = number.as_str();
        assert!(s.starts_with('+'), "{s}");
        assert!(s[1..].chars().all(|c| c.is_ascii_digit()), "{s}");
        let again = control::normalise_user(s, region);
        assert_eq!(again.as_ref().map(|n| n.as_str()), Some(s));
    }
}

/// Digest credentials and our nonces: parsing any `Authorization` value
/// never panics, and no input is taken for a fresh nonce of ours unless it
/// is one (the nonce is checked before the password).
pub fn digest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = sip::authorization_user(&text);
    assert!(!sip::nonce_fresh(&text, 42) || text == sip::make_nonce(42));
    let (secret, nonce) = (7, sip::make_nonce(7));
    assert!(sip::nonce_fresh(&nonce, secret));
}
