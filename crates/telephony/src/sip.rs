//! Small helpers over rsipstack's message types: who sent a request, which
//! number it calls, digest challenges and checks. Nothing here panics on
//! what a peer sends.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rsipstack::dialog::authenticate::verify_digest;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::typed::Authorization;
use rsipstack::sip::{Header, Request, Response};
use rsipstack::transport::SipConnection;

/// The address the request came from (Via `received`, else the Via host,
/// which the transport set from the socket's peer address).
pub(crate) fn source_ip(req: &Request) -> Option<IpAddr> {
    let via = req.via_header().ok()?;
    let (_, host_with_port) = SipConnection::parse_target_from_via(via).ok()?;
    host_with_port
        .host
        .to_string()
        .trim_matches(['[', ']'])
        .parse()
        .ok()
}

/// The user part of the Request-URI.
pub(crate) fn request_user(req: &Request) -> Option<String> {
    req.uri.auth.as_ref().map(|a| a.user.clone())
}

pub(crate) fn to_user(req: &Request) -> Option<String> {
    req.to_header().ok()?.uri().ok()?.auth.map(|a| a.user)
}

pub(crate) fn from_user(req: &Request) -> Option<String> {
    req.from_header().ok()?.uri().ok()?.auth.map(|a| a.user)
}

/// The caller's SIP identity, `user@host`, for the session's `from` when the
/// caller id is not a phone number.
pub(crate) fn from_identity(req: &Request) -> String {
    match req.from_header().ok().and_then(|h| h.uri().ok()) {
        Some(uri) => {
            let host = uri.host_with_port.host.to_string();
            match uri.auth {
                Some(a) => format!("{}@{host}", a.user),
                None => host,
            }
        }
        None => "unknown".into(),
    }
}

/// Whether the CSeq header names the request's own method (RFC 3261
/// §8.1.1.5; RFC 4475 `mismatch01`). A request that fails this is
/// malformed: 400.
pub(crate) fn cseq_matches(req: &Request) -> bool {
    req.cseq_header()
        .ok()
        .and_then(|c| c.method().ok())
        .is_some_and(|m| m == req.method)
}

/// The raw Proxy-Authorization (or Authorization) value, if any.
pub(crate) fn authorization(req: &Request) -> Option<String> {
    req.headers.iter().find_map(|h| match h {
        Header::ProxyAuthorization(v) => Some(v.value().to_string()),
        Header::Authorization(v) => Some(v.value().to_string()),
        _ => None,
    })
}

/// The digest username the request claims, if its credentials parse.
pub(crate) fn authorization_user(raw: &str) -> Option<String> {
    Authorization::parse(raw).ok().map(|a| a.username)
}

/// How long a nonce we issued stays valid.
const NONCE_TTL_SECS: u64 = 300;

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A fresh nonce: issue time plus a keyed tag, so we can check it later
/// without keeping per-caller state.
pub(crate) fn make_nonce(secret: u64) -> String {
    let ts = unix_secs();
    format!("{ts:x}.{:016x}", nonce_tag(ts, secret))
}

fn nonce_tag(ts: u64, secret: u64) -> u64 {
    // Not a MAC in the cryptographic sense; it only stops a caller from
    // inventing fresh-looking nonces. The digest response still needs the
    // password.
    let mut x = ts ^ secret.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ secret;
    }
    x
}

pub(crate) fn nonce_fresh(nonce: &str, secret: u64) -> bool {
    let Some((ts, tag)) = nonce.split_once('.') else {
        return false;
    };
    let (Ok(ts), Ok(tag)) = (u64::from_str_radix(ts, 16), u64::from_str_radix(tag, 16)) else {
        return false;
    };
    nonce_tag(ts, secret) == tag && unix_secs().saturating_sub(ts) <= NONCE_TTL_SECS
}

/// The 407 challenge header.
pub(crate) fn challenge(realm: &str, secret: u64) -> Header {
    Header::ProxyAuthenticate(rsipstack::sip::ProxyAuthenticate::new(format!(
        "Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5",
        make_nonce(secret)
    )))
}

/// Whether `raw` is a valid digest response for `username`/`password` on
/// one of our fresh nonces.
pub(crate) fn digest_ok(
    raw: &str,
    req: &Request,
    username: &str,
    password: &str,
    secret: u64,
) -> bool {
    let Ok(auth) = Authorization::parse(raw) else {
        return false;
    };
    auth.username == username
        && nonce_fresh(&auth.nonce, secret)
        && verify_digest(&auth, password, &req.method, raw)
}

/// The values of every `name` header (compact forms included, as the
/// parser maps them), joined with ", "; `None` when there is none.
pub(crate) fn header_value(req: &Request, name: &str) -> Option<String> {
    joined_values(&req.headers, name)
}

/// As [`header_value`], for a response (the 2xx or 422 to our INVITE).
pub(crate) fn response_header_value(resp: &Response, name: &str) -> Option<String> {
    joined_values(&resp.headers, name)
}

fn joined_values(headers: &rsipstack::sip::Headers, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

pub(crate) fn sdp_header() -> Header {
    Header::ContentType("application/sdp".into())
}

pub(crate) fn body_text(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq_must_name_the_request_method() {
        let parse = |cseq: &str| {
            let text = format!(
                "OPTIONS sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bKx\r\nTo: <sip:user@example.com>\r\nFrom: <sip:c@example.net>;tag=1\r\nCall-ID: m1\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
            );
            match rsipstack::sip::SipMessage::try_from(text.as_bytes()) {
                Ok(rsipstack::sip::SipMessage::Request(r)) => Some(r),
                _ => None,
            }
        };
        assert!(parse("8 OPTIONS").is_some_and(|r| cseq_matches(&r)));
        assert!(parse("8 INVITE").is_some_and(|r| !cseq_matches(&r)));
    }

    #[test]
    fn nonces_round_trip_and_forgeries_fail() {
        let n = make_nonce(42);
        assert!(nonce_fresh(&n, 42));
        assert!(!nonce_fresh(&n, 43));
        assert!(!nonce_fresh("abc", 42));
        assert!(!nonce_fresh("zz.zz", 42));
        let old = 1u64;
        assert!(!nonce_fresh(
            &format!("{old:x}.{:016x}", nonce_tag(old, 42)),
            42
        ));
    }
}
