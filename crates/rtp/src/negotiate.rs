//! Offer/answer (RFC 3264) for one G.711 audio stream.
//!
//! We support PCMU and PCMA at 8 kHz, plus RFC 4733 telephone-events. We
//! send 20 ms packets and receive any whole number of 10 ms up to 120 ms
//! (the media session re-frames them). An offered `a=ptime` of 10, 20, 30,
//! 40 or 60 ms is echoed in our answer so the peer keeps its packetisation;
//! we still send 20 ms, which RFC 3264 §6.1 allows (ptime in an answer is
//! only what the answerer would like to *receive*, and RFC 4566 makes it a
//! hint). Any other offered ptime, or none, is answered with 20 ms.
//!
//! As answerer we take the first offered codec we support
//! (the offerer's preference), keep the offer's telephone-event payload type,
//! reject every other media section with port 0 in its original position,
//! and answer the reverse of the offered direction. As offerer we offer PCMU,
//! PCMA and telephone-event 101 and use the first codec of the answer.
//!
//! [`LocalDescription`] renders our side. Its origin keeps one session id
//! for the life of the endpoint and bumps the version whenever the text
//! changes (RFC 3264 §8: an unchanged re-answer keeps its version, so a
//! session-refresh re-INVITE is not mistaken for a change).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use switchboard_media::Codec;

use crate::sdp::{Direction, MediaDescription, SessionDescription};
use crate::RtpError;

/// The telephone-event payload type we offer.
pub(crate) const TELEPHONE_EVENT_PT: u8 = 101;

/// The agreed parameters of the audio stream, from our point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The codec and payload type we send.
    pub(crate) codec: Codec,
    pub(crate) payload_type: u8,
    /// Every audio payload type we accept from the peer.
    pub(crate) accepted: Vec<(u8, Codec)>,
    pub(crate) telephone_event: Option<u8>,
    /// Where the SDP says to send RTP; `None` when it says not to (port 0 or
    /// the RFC 2543 hold address 0.0.0.0).
    pub(crate) remote_rtp: Option<SocketAddr>,
    pub(crate) remote_rtcp: Option<SocketAddr>,
    /// Our direction.
    pub(crate) direction: Direction,
    /// The peer's connection address as written, for choosing our own.
    pub(crate) remote_ip: Option<IpAddr>,
    /// The packetisation time we ask the peer to send, in ms.
    pub(crate) ptime: u32,
}

/// Packetisation times carriers use that we echo back in an answer.
const ECHOED_PTIMES: [u32; 5] = [10, 20, 30, 40, 60];
/// What we send, and what we ask for when the offer names nothing usable.
pub(crate) const DEFAULT_PTIME: u32 = 20;

/// Negotiates an offer: the index of the media section we accept and what
/// was agreed.
pub(crate) fn answer(offer: &SessionDescription) -> Result<(usize, Negotiated), RtpError> {
    let audio = offer
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind == "audio" && m.port != 0 && is_answerable_proto(m));
    for (index, m) in audio {
        let Some((payload_type, codec)) = supported_codecs(m).into_iter().next() else {
            continue;
        };
        let remote_direction = offer.direction_of(m);
        let negotiated = agree(offer, m, (payload_type, codec), remote_direction)?;
        return Ok((index, negotiated));
    }
    Err(RtpError::NoCommonCodec)
}

/// Reads the answer to our offer.
pub(crate) fn accept(answer: &SessionDescription) -> Result<Negotiated, RtpError> {
    let m = answer
        .media
        .iter()
        // The first audio stream the answer accepted (port 0: rejected).
        .find(|m| m.kind == "audio" && m.port != 0)
        .ok_or(RtpError::NoCommonCodec)?;
    let codecs = supported_codecs(m);
    let first = codecs.first().copied().ok_or(RtpError::NoCommonCodec)?;
    let mut negotiated = agree(answer, m, first, answer.direction_of(m))?;
    negotiated.accepted = codecs;
    Ok(negotiated)
}

fn agree(
    sdp: &SessionDescription,
    m: &MediaDescription,
    (payload_type, codec): (u8, Codec),
    remote_direction: Direction,
) -> Result<Negotiated, RtpError> {
    let remote_ip = sdp.connection_of(m).ok_or(RtpError::InvalidSdp {
        line: 0,
        reason: "no c= address for the audio stream",
    })?;
    let remote_rtp =
        (!remote_ip.is_unspecified() && m.port != 0).then(|| SocketAddr::new(remote_ip, m.port));
    let remote_rtcp = remote_rtp.and_then(|rtp| {
        let port = m.rtcp_port.or_else(|| rtp.port().checked_add(1))?;
        Some(SocketAddr::new(rtp.ip(), port))
    });
    let mut direction = remote_direction.reversed();
    if remote_rtp.is_none() {
        // Nowhere to send to: the old-style hold of RFC 2543.
        direction = match direction {
            Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
            Direction::SendOnly | Direction::Inactive => Direction::Inactive,
        };
    }
    Ok(Negotiated {
        codec,
        payload_type,
        accepted: vec![(payload_type, codec)],
        telephone_event: telephone_event(m),
        remote_rtp,
        remote_rtcp,
        direction,
        remote_ip: Some(remote_ip),
        ptime: m
            .ptime
            .filter(|p| ECHOED_PTIMES.contains(p))
            .unwrap_or(DEFAULT_PTIME),
    })
}

fn is_answerable_proto(m: &MediaDescription) -> bool {
    m.is_plain_rtp()
}

/// The codecs of `m` we support, in its order.
fn supported_codecs(m: &MediaDescription) -> Vec<(u8, Codec)> {
    m.formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok().filter(|pt| *pt < 128))
        .filter_map(|pt| {
            let codec = match m.rtpmap(pt) {
                Some(map) => {
                    let mono = map.channels.is_none_or(|c| c == 1);
                    if map.clock_rate != 8000 || !mono {
                        return None;
                    }
                    [Codec::Pcmu, Codec::Pcma]
                        .into_iter()
                        .find(|c| map.encoding.eq_ignore_ascii_case(c.name()))?
                }
                None => match pt {
                    0 => Codec::Pcmu,
                    8 => Codec::Pcma,
                    _ => return None,
                },
            };
            Some((pt, codec))
        })
        .collect()
}

fn telephone_event(m: &MediaDescription) -> Option<u8> {
    m.formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .find(|&pt| {
            m.rtpmap(pt).is_some_and(|map| {
                map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == 8000
            })
        })
}

/// Our side of the session description.
#[derive(Debug)]
pub(crate) struct LocalDescription {
    session_id: u64,
    version: u64,
    ip: IpAddr,
    port: u16,
    last_body: Option<String>,
}

impl LocalDescription {
    pub(crate) fn new(ip: IpAddr, port: u16) -> Self {
        LocalDescription {
            // Below 2^62 so no peer's signed 64-bit parser chokes on it.
            session_id: rand::random::<u64>() >> 2,
            version: 1,
            ip,
            port,
            last_body: None,
        }
    }

    /// Our offer: PCMU, PCMA and telephone-event.
    pub(crate) fn render_offer(&mut self, direction: Direction) -> String {
        let te = TELEPHONE_EVENT_PT;
        let mut media = format!("m=audio {} RTP/AVP 0 8 {te}\r\n", self.port);
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let pt = codec.static_payload_type();
            let _ = write!(media, "a=rtpmap:{pt} {}/8000\r\n", codec.name());
        }
        let _ = write!(
            media,
            "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\na=ptime:20\r\na={}\r\n",
            direction.as_str()
        );
        self.render(&media)
    }

    /// Our answer to `offer`, accepting media section `index` as `agreed`.
    pub(crate) fn render_answer(
        &mut self,
        offer: &SessionDescription,
        index: usize,
        agreed: &Negotiated,
    ) -> String {
        let mut media = String::new();
        for (i, m) in offer.media.iter().enumerate() {
            if i != index {
                let _ = write!(
                    media,
                    "m={} 0 {} {}\r\n",
                    m.kind,
                    m.proto,
                    m.formats.join(" ")
                );
                continue;
            }
            let pt = agreed.payload_type;
            let _ = write!(media, "m=audio {} {} {pt}", self.port, m.proto);
            if let Some(te) = agreed.telephone_event {
                let _ = write!(media, " {te}");
            }
            let _ = write!(media, "\r\na=rtpmap:{pt} {}/8000\r\n", agreed.codec.name());
            if let Some(te) = agreed.telephone_event {
                let _ = write!(
                    media,
                    "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
                );
            }
            let _ = write!(
                media,
                "a=ptime:{}\r\na={}\r\n",
                agreed.ptime,
                agreed.direction.as_str()
            );
        }
        self.render(&media)
    }

    fn render(&mut self, media: &str) -> String {
        let ip = self.ip;
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let body = format!("s=switchboard\r\nc=IN {family} {ip}\r\nt=0 0\r\n{media}");
        if self.last_body.as_ref().is_some_and(|last| *last != body) {
            self.version += 1;
        }
        let sdp = format!(
            "v=0\r\no=switchboard {} {} IN {family} {ip}\r\n{body}",
            self.session_id, self.version
        );
        self.last_body = Some(body);
        sdp
    }
}

/// The address to put in our `c=` line: the configured public address,
/// else the bind address, else (bound to the unspecified address) the one
/// the routing table picks towards the peer — loopback for a loopback peer.
/// Never the unspecified address itself.
pub(crate) fn sdp_address(bind: IpAddr, public: Option<IpAddr>, remote: Option<IpAddr>) -> IpAddr {
    if let Some(public) = public {
        return public;
    }
    if !bind.is_unspecified() {
        return bind;
    }
    let loopback = if bind.is_ipv4() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    let remote = remote.filter(|r| !r.is_unspecified() && r.is_ipv4() == bind.is_ipv4());
    if remote.is_some_and(|r| r.is_loopback()) {
        return loopback;
    }
    // A documentation address stands in for "the internet" when we do not
    // know the peer yet; connecting a UDP socket sends nothing.
    let probe = remote.unwrap_or(if bind.is_ipv4() {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    });
    let routed = UdpSocket::bind(SocketAddr::new(bind, 0))
        .and_then(|s| {
            s.connect(SocketAddr::new(probe, 9))?;
            s.local_addr()
        })
        .map(|a| a.ip());
    match routed {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => loopback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(media: &str) -> SessionDescription {
        let text = format!("v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n{media}");
        SessionDescription::parse(&text).expect("valid offer")
    }

    #[test]
    fn first_supported_codec_wins_and_telephone_event_is_kept() {
        let o = offer("m=audio 5000 RTP/AVP 9 8 0 96\r\na=rtpmap:9 G722/8000\r\na=rtpmap:96 telephone-event/8000\r\n");
        let (index, n) = answer(&o).expect("common codec");
        assert_eq!(index, 0);
        assert_eq!((n.payload_type, n.codec), (8, Codec::Pcma));
        assert_eq!(n.telephone_event, Some(96));
        assert_eq!(n.direction, Direction::SendRecv);
        assert_eq!(n.remote_rtp, "198.51.100.7:5000".parse().ok());
        assert_eq!(n.remote_rtcp, "198.51.100.7:5001".parse().ok());
    }

    #[test]
    fn dynamic_pcmu_and_no_common_codec() {
        let o = offer("m=audio 5000 RTP/AVP 112\r\na=rtpmap:112 pcmu/8000/1\r\n");
        assert_eq!(answer(&o).expect("pcmu").1.codec, Codec::Pcmu);
        let o = offer("m=audio 5000 RTP/AVP 9 18\r\n");
        assert!(matches!(answer(&o), Err(RtpError::NoCommonCodec)));
        let o = offer("m=audio 5000 RTP/SAVP 0\r\n");
        assert!(matches!(answer(&o), Err(RtpError::NoCommonCodec)));
        let o = offer("m=video 5000 RTP/AVP 31\r\n");
        assert!(matches!(answer(&o), Err(RtpError::NoCommonCodec)));
        // A wideband PCMU is not our PCMU.
        let o = offer("m=audio 5000 RTP/AVP 100\r\na=rtpmap:100 PCMU/16000\r\n");
        assert!(matches!(answer(&o), Err(RtpError::NoCommonCodec)));
    }

    #[test]
    fn directions_are_reversed_and_old_hold_sends_nothing() {
        for (offered, ours) in [
            ("sendrecv", Direction::SendRecv),
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
        ] {
            let o = offer(&format!("m=audio 5000 RTP/AVP 0\r\na={offered}\r\n"));
            assert_eq!(answer(&o).expect("ok").1.direction, ours, "{offered}");
        }
        let text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
        let n = answer(&SessionDescription::parse(text).expect("valid"))
            .expect("ok")
            .1;
        assert_eq!((n.remote_rtp, n.direction), (None, Direction::RecvOnly));
    }

    #[test]
    fn answer_keeps_media_order_and_bumps_version_on_change() {
        let o = offer("m=video 6000 RTP/AVP 31\r\nm=audio 5000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        let (index, mut n) = answer(&o).expect("ok");
        assert_eq!(index, 1);
        let mut local = LocalDescription::new("203.0.113.9".parse().expect("ip"), 20_000);
        let first = local.render_answer(&o, index, &n);
        let parsed = SessionDescription::parse(&first).expect("our answer parses");
        assert_eq!(parsed.media[0].port, 0);
        assert_eq!(parsed.media[1].port, 20_000);
        assert_eq!(parsed.media[1].formats, ["0", "101"]);
        assert_eq!(parsed.media[1].ptime, Some(20));
        assert_eq!(parsed.connection, "203.0.113.9".parse().ok());
        let v1 = parsed.origin.version;
        let same = SessionDescription::parse(&local.render_answer(&o, index, &n)).expect("ok");
        assert_eq!(same.origin.version, v1);
        n.direction = Direction::RecvOnly;
        let held = SessionDescription::parse(&local.render_answer(&o, index, &n)).expect("ok");
        assert_eq!(held.origin.version, v1 + 1);
        assert_eq!(held.origin.session_id, parsed.origin.session_id);
        assert_eq!(held.direction_of(&held.media[1]), Direction::RecvOnly);
    }

    #[test]
    fn our_offer_round_trips_through_accept() {
        let mut local = LocalDescription::new("192.0.2.10".parse().expect("ip"), 10_000);
        let text = local.render_offer(Direction::SendRecv);
        let parsed = SessionDescription::parse(&text).expect("our offer parses");
        let n = accept(&parsed).expect("we accept our own offer as an answer");
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 0));
        assert_eq!(n.accepted, [(0, Codec::Pcmu), (8, Codec::Pcma)]);
        assert_eq!(n.telephone_event, Some(TELEPHONE_EVENT_PT));
    }

    #[test]
    fn offered_ptime_is_echoed_when_carriers_use_it() {
        for (offered, answered) in [
            ("a=ptime:10\r\n", 10),
            ("a=ptime:30\r\n", 30),
            ("a=ptime:60\r\n", 60),
            ("a=ptime:25\r\n", 20),
            ("a=ptime:200\r\n", 20),
            ("", 20),
        ] {
            let o = offer(&format!("m=audio 5000 RTP/AVP 8\r\n{offered}"));
            let (index, n) = answer(&o).expect("ok");
            let mut local = LocalDescription::new("203.0.113.9".parse().expect("ip"), 20_000);
            let text = local.render_answer(&o, index, &n);
            let parsed = SessionDescription::parse(&text).expect("our answer parses");
            assert_eq!(parsed.media[0].ptime, Some(answered), "{offered:?}");
        }
    }

    #[test]
    fn sdp_address_is_never_unspecified() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let public: IpAddr = "203.0.113.1".parse().expect("ip");
        let bind: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(sdp_address(any, Some(public), None), public);
        assert_eq!(sdp_address(bind, None, None), bind);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(sdp_address(any, None, Some(lo)), lo);
        assert!(!sdp_address(any, None, None).is_unspecified());
        assert!(!sdp_address(any, None, Some(public)).is_unspecified());
    }
}
