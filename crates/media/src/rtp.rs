//! RTP packets (RFC 3550 §5.1): a borrowed, bounds-checked view for parsing
//! and a small header type for building.
//!
//! Parsing never copies the payload and never trusts a length field: every
//! count (CSRCs, extension words, padding) is checked against the datagram
//! before it is used. Building covers what a call sends — no CSRCs, no
//! header extension — because we are an end point, not a mixer.

use crate::be::{u16_at, u32_at};
use crate::MediaError;

/// Size of the fixed RTP header.
pub const HEADER_LEN: usize = 12;

/// A parsed RTP packet borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Marker bit: for audio, the first packet of a talkspurt.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp in the payload's clock (8 kHz for G.711).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    csrc: &'a [u8],
    extension: Option<Extension<'a>>,
    payload: &'a [u8],
}

/// A header extension (RFC 3550 §5.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The profile-defined 16 bits (e.g. 0xBEDE for RFC 8285 one-byte).
    pub profile: u16,
    /// The extension body (a whole number of 32-bit words).
    pub data: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram as RTP version 2.
    pub fn parse(buf: &'a [u8]) -> Result<Self, MediaError> {
        let truncated = |need| MediaError::Truncated {
            what: "rtp packet",
            len: buf.len(),
            need,
        };
        if buf.len() < HEADER_LEN {
            return Err(truncated(HEADER_LEN));
        }
        let b0 = buf[0];
        let b1 = buf[1];
        let version = b0 >> 6;
        if version != 2 {
            return Err(MediaError::Version(version));
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = usize::from(b0 & 0x0F);

        let mut at = HEADER_LEN;
        let csrc_end = at + 4 * csrc_count;
        let csrc = buf.get(at..csrc_end).ok_or_else(|| truncated(csrc_end))?;
        at = csrc_end;

        let extension = if has_extension {
            let profile = u16_at(buf, at).ok_or_else(|| truncated(at + 4))?;
            let words = u16_at(buf, at + 2).ok_or_else(|| truncated(at + 4))?;
            let start = at + 4;
            let end = start + 4 * usize::from(words);
            let data = buf.get(start..end).ok_or_else(|| truncated(end))?;
            at = end;
            Some(Extension { profile, data })
        } else {
            None
        };

        let mut payload = buf.get(at..).ok_or_else(|| truncated(at))?;
        if has_padding {
            let padding = payload.last().copied().unwrap_or(0);
            if padding == 0 || usize::from(padding) > payload.len() {
                return Err(MediaError::Padding {
                    padding,
                    len: payload.len(),
                });
            }
            payload = &payload[..payload.len() - usize::from(padding)];
        }

        // The fixed header is present (checked above), so these reads succeed.
        let sequence = u16_at(buf, 2).ok_or_else(|| truncated(HEADER_LEN))?;
        let timestamp = u32_at(buf, 4).ok_or_else(|| truncated(HEADER_LEN))?;
        let ssrc = u32_at(buf, 8).ok_or_else(|| truncated(HEADER_LEN))?;
        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7F,
            sequence,
            timestamp,
            ssrc,
            csrc,
            extension,
            payload,
        })
    }

    /// The payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The header extension, if any.
    pub fn extension(&self) -> Option<Extension<'a>> {
        self.extension
    }

    /// The contributing sources (set by mixers).
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrc
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The header fields needed to answer or re-send this packet.
    pub fn header(&self) -> RtpHeader {
        RtpHeader {
            marker: self.marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        }
    }
}

/// The fields of an RTP header we send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type; only the low 7 bits are written.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Appends the header and `payload` to `out` as one packet.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + payload.len());
        out.push(0x80); // version 2, no padding, no extension, no CSRC
        out.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// The header and `payload` as a new packet.
    pub fn to_packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        self.write(payload, &mut out);
        out
    }
}

/// Whether sequence number `a` comes after `b`, modulo 2^16 (RFC 1982 serial
/// arithmetic: "after" means less than half the space ahead).
pub fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Whether RTP timestamp `a` comes after `b`, modulo 2^32.
pub fn ts_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 0,
            sequence: 0xFFFE,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x1234_5678,
        }
    }

    #[test]
    fn build_then_parse_round_trips() {
        let pkt = header().to_packet(&[1, 2, 3]);
        assert_eq!(pkt.len(), 15);
        let parsed = RtpPacket::parse(&pkt).expect("valid");
        assert_eq!(parsed.header(), header());
        assert_eq!(parsed.payload(), &[1, 2, 3]);
        assert_eq!(parsed.csrcs().count(), 0);
        assert!(parsed.extension().is_none());
    }

    #[test]
    fn parses_csrc_extension_and_padding() {
        let mut pkt = vec![0x80 | 0x20 | 0x10 | 2, 0x08];
        pkt.extend_from_slice(&[0, 1, 0, 0, 0, 160, 0, 0, 0, 7]); // seq, ts, ssrc
        pkt.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // 2 CSRCs
        pkt.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // 1-word extension
        pkt.extend_from_slice(&[9, 9, 9]); // payload
        pkt.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let p = RtpPacket::parse(&pkt).expect("valid");
        assert_eq!(p.payload_type, 8);
        assert_eq!(p.sequence, 1);
        assert_eq!(p.timestamp, 160);
        assert_eq!(p.ssrc, 7);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![1, 2]);
        let ext = p.extension().expect("extension");
        assert_eq!(ext.profile, 0xBEDE);
        assert_eq!(ext.data, &[0x10, 0xAA, 0, 0]);
        assert_eq!(p.payload(), &[9, 9, 9]);
    }

    #[test]
    fn rejects_every_kind_of_lie() {
        let good = header().to_packet(&[1, 2, 3, 4]);
        // Every truncation of the fixed header.
        for n in 0..HEADER_LEN {
            assert!(matches!(
                RtpPacket::parse(&good[..n]),
                Err(MediaError::Truncated { .. })
            ));
        }
        // Version 1 / 3.
        let mut v = good.clone();
        v[0] = 0x40;
        assert!(matches!(RtpPacket::parse(&v), Err(MediaError::Version(1))));
        // 15 CSRCs announced, none present.
        let mut c = good.clone();
        c[0] |= 0x0F;
        assert!(matches!(
            RtpPacket::parse(&c),
            Err(MediaError::Truncated { .. })
        ));
        // Extension announcing 0xFFFF words.
        let mut e = good[..HEADER_LEN].to_vec();
        e[0] |= 0x10;
        e.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
        assert!(matches!(
            RtpPacket::parse(&e),
            Err(MediaError::Truncated { .. })
        ));
        // Padding larger than the payload, and zero padding.
        let mut p = good.clone();
        p[0] |= 0x20;
        *p.last_mut().expect("non-empty") = 200;
        assert!(matches!(
            RtpPacket::parse(&p),
            Err(MediaError::Padding { padding: 200, .. })
        ));
        *p.last_mut().expect("non-empty") = 0;
        assert!(matches!(
            RtpPacket::parse(&p),
            Err(MediaError::Padding { padding: 0, .. })
        ));
        // Padding flag with no payload at all.
        let mut q = good[..HEADER_LEN].to_vec();
        q[0] |= 0x20;
        assert!(RtpPacket::parse(&q).is_err());
    }

    #[test]
    fn padding_can_eat_the_whole_payload() {
        let mut p = header().to_packet(&[0, 0, 0, 4]);
        p[0] |= 0x20;
        assert_eq!(RtpPacket::parse(&p).expect("valid").payload(), &[] as &[u8]);
    }

    #[test]
    fn serial_comparisons_wrap() {
        assert!(seq_after(0, 0xFFFF));
        assert!(seq_after(10, 0xFFF0));
        assert!(!seq_after(0xFFFF, 0));
        assert!(!seq_after(5, 5));
        assert!(ts_after(80, u32::MAX - 80));
        assert!(!ts_after(u32::MAX - 80, 80));
    }
}
