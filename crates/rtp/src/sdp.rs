//! A small, strict reader for the SDP (RFC 8866) a G.711 phone call sees.
//!
//! Only what offer/answer needs is kept: the origin, connection addresses,
//! the media lines with their formats, `rtpmap`, `fmtp`, `ptime`, `rtcp` and
//! the direction attributes. Unknown line types and attributes are skipped;
//! anything malformed in the lines we interpret is an error naming the line,
//! never a panic, because the text comes straight from a carrier or a
//! softphone. Writing is done by [`crate::negotiate`], which only ever emits
//! the handful of lines we need.

use std::net::IpAddr;

use crate::RtpError;

/// Offers larger than this are refused before parsing (a real one is < 2 KiB).
const MAX_SDP_LEN: usize = 64 * 1024;
/// Media lines beyond this are refused: nobody offers 64 streams to a phone.
const MAX_MEDIA: usize = 64;
/// Formats on one media line beyond this are refused.
const MAX_FORMATS: usize = 128;

/// A media direction (RFC 3264 §5.1), from the point of view of the side
/// that wrote it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sends and receives (the default).
    #[default]
    SendRecv,
    /// Only sends (e.g. the holding side playing music).
    SendOnly,
    /// Only receives.
    RecvOnly,
    /// Neither (both sides on hold).
    Inactive,
}

impl Direction {
    /// The direction the other side answers with.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the side that wrote it sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote it wants to receive media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The attribute name (`sendrecv`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Direction> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// A parsed session description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The session-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// The session-level direction attribute, if any.
    pub direction: Option<Direction>,
    /// The `m=` sections, in order.
    pub media: Vec<MediaDescription>,
}

/// The `o=` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The user name (`-` when none).
    pub username: String,
    /// The session id (numeric string).
    pub session_id: String,
    /// The session version, incremented by the writer on every change.
    pub version: u64,
}

/// One `m=` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, …
    pub kind: String,
    /// The transport port; 0 means the stream is rejected or disabled.
    pub port: u16,
    /// The transport protocol, e.g. `RTP/AVP`.
    pub proto: String,
    /// The format tokens (payload types for RTP), in preference order.
    pub formats: Vec<String>,
    /// The media-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` entries.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=ptime`, in milliseconds.
    pub ptime: Option<u32>,
    /// `a=rtcp` port (RFC 3605), if given.
    pub rtcp_port: Option<u16>,
    /// The media-level direction attribute, if any.
    pub direction: Option<Direction>,
}

/// One `a=rtpmap:<pt> <encoding>/<rate>[/<channels>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type.
    pub payload_type: u8,
    /// The encoding name as written (compare case-insensitively).
    pub encoding: String,
    /// The clock rate in Hz.
    pub clock_rate: u32,
    /// The channel count, if given.
    pub channels: Option<u16>,
}

impl MediaDescription {
    /// The `rtpmap` for payload type `pt`, if any.
    pub fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == pt)
    }

    /// Whether this is an RTP stream over plain (unencrypted) UDP that we can
    /// carry: `RTP/AVP`, or `RTP/AVPF` whose feedback we may ignore.
    pub fn is_plain_rtp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/AVP") || self.proto.eq_ignore_ascii_case("RTP/AVPF")
    }
}

impl SessionDescription {
    /// Parses `text`. Lines may end in `\r\n` or `\n`.
    pub fn parse(text: &str) -> Result<SessionDescription, RtpError> {
        if text.len() > MAX_SDP_LEN {
            return Err(invalid(0, "description too large"));
        }
        let mut origin = None;
        let mut connection = None;
        let mut direction = None;
        let mut media: Vec<MediaDescription> = Vec::new();
        let mut saw_version = false;

        for (index, raw) in text.split('\n').enumerate() {
            let number = index + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let mut chars = line.chars();
            let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
                return Err(invalid(number, "expected <type>=<value>"));
            };
            if !kind.is_ascii_lowercase() {
                return Err(invalid(number, "line type must be a lowercase letter"));
            }
            let value = &line[2..];
            if !saw_version {
                if kind != 'v' {
                    return Err(invalid(number, "first line must be v="));
                }
                if value.trim() != "0" {
                    return Err(invalid(number, "unsupported sdp version"));
                }
                saw_version = true;
                continue;
            }
            match kind {
                'v' => return Err(invalid(number, "repeated v= line")),
                'o' => {
                    if origin.is_some() {
                        return Err(invalid(number, "repeated o= line"));
                    }
                    origin = Some(parse_origin(number, value)?);
                }
                'c' => {
                    let address = parse_connection(number, value)?;
                    match media.last_mut() {
                        Some(m) => m.connection = Some(address),
                        None => connection = Some(address),
                    }
                }
                'm' => {
                    if media.len() == MAX_MEDIA {
                        return Err(invalid(number, "too many media sections"));
                    }
                    media.push(parse_media(number, value)?);
                }
                'a' => {
                    let (name, arg) = match value.split_once(':') {
                        Some((n, a)) => (n, Some(a)),
                        None => (value, None),
                    };
                    match media.last_mut() {
                        Some(m) => parse_media_attribute(number, m, name, arg)?,
                        None => {
                            if let Some(d) = Direction::from_attribute(name) {
                                direction = Some(d);
                            }
                        }
                    }
                }
                // s=, t=, b=, i=, u=, e=, p=, z=, k=, r=: nothing we act on.
                _ => {}
            }
        }
        if !saw_version {
            return Err(invalid(0, "empty description"));
        }
        let origin = origin.ok_or_else(|| invalid(0, "missing o= line"))?;
        Ok(SessionDescription {
            origin,
            connection,
            direction,
            media,
        })
    }

    /// The direction of media section `m`: its own attribute, else the
    /// session's, else `sendrecv`.
    pub fn direction_of(&self, m: &MediaDescription) -> Direction {
        m.direction.or(self.direction).unwrap_or_default()
    }

    /// The connection address of media section `m`: its own, else the
    /// session's.
    pub fn connection_of(&self, m: &MediaDescription) -> Option<IpAddr> {
        m.connection.or(self.connection)
    }
}

fn invalid(line: usize, reason: &'static str) -> RtpError {
    RtpError::InvalidSdp { line, reason }
}

fn parse_origin(number: usize, value: &str) -> Result<Origin, RtpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [username, session_id, version, _net, _addrtype, _addr] = fields[..] else {
        return Err(invalid(number, "o= needs six fields"));
    };
    if session_id.is_empty() || !session_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(number, "o= session id must be numeric"));
    }
    let version = version
        .parse()
        .map_err(|_| invalid(number, "o= session version must be a 64-bit number"))?;
    Ok(Origin {
        username: username.to_owned(),
        session_id: session_id.to_owned(),
        version,
    })
}

fn parse_connection(number: usize, value: &str) -> Result<IpAddr, RtpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [net, addrtype, address] = fields[..] else {
        return Err(invalid(number, "c= needs three fields"));
    };
    if net != "IN" {
        return Err(invalid(number, "c= network type must be IN"));
    }
    // Multicast addresses carry /ttl[/count]; we only keep the address.
    let address = address.split('/').next().unwrap_or(address);
    let ip: IpAddr = address
        .parse()
        .map_err(|_| invalid(number, "c= address is not an ip address"))?;
    match (addrtype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(invalid(
            number,
            "c= address type does not match the address",
        )),
    }
}

fn parse_media(number: usize, value: &str) -> Result<MediaDescription, RtpError> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(invalid(number, "m= needs media, port, proto and formats"));
    };
    // `<port>/<count>` is for hierarchical multicast; a count other than 1
    // makes no sense for a call.
    let port = match port.split_once('/') {
        Some((p, "1")) => p,
        Some(_) => return Err(invalid(number, "m= port count is not supported")),
        None => port,
    };
    let port = port
        .parse()
        .map_err(|_| invalid(number, "m= port is not a number"))?;
    let formats: Vec<String> = fields.map(str::to_owned).collect();
    if formats.is_empty() {
        return Err(invalid(number, "m= has no formats"));
    }
    if formats.len() > MAX_FORMATS {
        return Err(invalid(number, "m= has too many formats"));
    }
    Ok(MediaDescription {
        kind: kind.to_owned(),
        port,
        proto: proto.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        ptime: None,
        rtcp_port: None,
        direction: None,
    })
}

fn parse_media_attribute(
    number: usize,
    m: &mut MediaDescription,
    name: &str,
    arg: Option<&str>,
) -> Result<(), RtpError> {
    if let Some(d) = Direction::from_attribute(name) {
        m.direction = Some(d);
        return Ok(());
    }
    match (name, arg) {
        ("rtpmap", Some(arg)) => {
            if m.rtpmaps.len() >= MAX_FORMATS {
                return Err(invalid(number, "too many rtpmap attributes"));
            }
            m.rtpmaps.push(parse_rtpmap(number, arg)?);
        }
        ("ptime", Some(arg)) => {
            let ms = arg
                .trim()
                .parse()
                .map_err(|_| invalid(number, "a=ptime is not a number"))?;
            m.ptime = Some(ms);
        }
        ("rtcp", Some(arg)) => {
            let port = arg.split_ascii_whitespace().next().unwrap_or_default();
            let port = port
                .parse()
                .map_err(|_| invalid(number, "a=rtcp port is not a number"))?;
            m.rtcp_port = Some(port);
        }
        _ => {}
    }
    Ok(())
}

fn parse_rtpmap(number: usize, arg: &str) -> Result<RtpMap, RtpError> {
    let Some((pt, encoding)) = arg.trim().split_once(' ') else {
        return Err(invalid(
            number,
            "a=rtpmap needs a payload type and an encoding",
        ));
    };
    let payload_type: u8 = pt
        .parse()
        .ok()
        .filter(|pt| *pt < 128)
        .ok_or_else(|| invalid(number, "a=rtpmap payload type must be 0-127"))?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid(number, "a=rtpmap encoding name is empty"));
    }
    let clock_rate = parts
        .next()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| invalid(number, "a=rtpmap clock rate is missing or not a number"))?;
    let channels = match parts.next() {
        Some(c) => Some(
            c.parse()
                .map_err(|_| invalid(number, "a=rtpmap channel count is not a number"))?,
        ),
        None => None,
    };
    if parts.next().is_some() {
        return Err(invalid(number, "a=rtpmap has trailing fields"));
    }
    Ok(RtpMap {
        payload_type,
        encoding: name.to_owned(),
        clock_rate,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=alice 2890844526 2890844526 IN IP4 198.51.100.1\r\n\
        s=-\r\n\
        c=IN IP4 198.51.100.1\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/AVP 8 0 101\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=sendonly\r\n\
        m=video 51372 RTP/AVP 31\r\n\
        c=IN IP6 2001:db8::1\r\n";

    #[test]
    fn parses_a_typical_offer() {
        let sdp = SessionDescription::parse(OFFER).expect("valid");
        assert_eq!(sdp.origin.version, 2_890_844_526);
        assert_eq!(sdp.media.len(), 2);
        let audio = &sdp.media[0];
        assert_eq!(audio.port, 49170);
        assert_eq!(audio.formats, ["8", "0", "101"]);
        assert_eq!(
            audio.rtpmap(101).map(|m| m.encoding.as_str()),
            Some("telephone-event")
        );
        assert_eq!(audio.ptime, Some(20));
        assert_eq!(sdp.direction_of(audio), Direction::SendOnly);
        assert_eq!(sdp.connection_of(audio), "198.51.100.1".parse().ok());
        let video = &sdp.media[1];
        assert_eq!(sdp.direction_of(video), Direction::SendRecv);
        assert_eq!(sdp.connection_of(video), "2001:db8::1".parse().ok());
    }

    #[test]
    fn accepts_bare_newlines_and_session_level_direction() {
        let text = "v=0\no=- 1 2 IN IP4 10.0.0.1\ns=x\nc=IN IP4 10.0.0.1\nt=0 0\na=inactive\nm=audio 4000 RTP/AVP 0\n";
        let sdp = SessionDescription::parse(text).expect("valid");
        assert_eq!(sdp.direction_of(&sdp.media[0]), Direction::Inactive);
    }

    #[test]
    fn rejects_malformed_lines_with_their_number() {
        let cases: &[(&str, usize)] = &[
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n",
                3,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP\r\n",
                3,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 example.com\r\n",
                3,
            ),
            ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP6 1.2.3.4\r\n", 3),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:300 X/8000\r\n",
                4,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
                4,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=ptime:abc\r\n",
                4,
            ),
            ("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n", 2),
            ("v=0\r\no=- 1 1 IN IP4\r\n", 2),
            ("v=0\r\nthis is not sdp\r\n", 2),
            ("o=- 1 1 IN IP4 1.2.3.4\r\n", 1),
            ("v=1\r\n", 1),
        ];
        for (text, line) in cases {
            match SessionDescription::parse(text) {
                Err(RtpError::InvalidSdp { line: got, .. }) => {
                    assert_eq!(got, *line, "wrong line for {text:?}")
                }
                other => panic!("{text:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn missing_origin_or_empty_input_is_an_error() {
        for text in ["", "\r\n\r\n", "v=0\r\ns=-\r\n"] {
            assert!(SessionDescription::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random walk over bytes that matter to the
        // parser, plus slices of a valid offer cut at every byte.
        let alphabet = b"vocmat=:/ \r\n0123456789INP4RTAVPpcmu.-";
        let mut state = 0x2545_f491_u32;
        for _ in 0..5_000 {
            let len = (state % 200) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                bytes.push(alphabet[(state as usize) % alphabet.len()]);
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = SessionDescription::parse(&text);
            let _ = SessionDescription::parse(&format!("v=0\r\n{text}"));
        }
        for cut in 0..OFFER.len() {
            if OFFER.is_char_boundary(cut) {
                let _ = SessionDescription::parse(&OFFER[..cut]);
            }
        }
        let huge = "a=x\r\n".repeat(20_000);
        assert!(SessionDescription::parse(&format!("v=0\r\n{huge}")).is_err());
        // Multi-byte characters right after the type letter.
        assert!(SessionDescription::parse("v=0\r\né=1\r\n").is_err());
        assert!(SessionDescription::parse("vé\r\n").is_err());
    }
}
