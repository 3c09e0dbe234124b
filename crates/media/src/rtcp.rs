//! The RTCP a phone call needs (RFC 3550 §6): sender and receiver reports and
//! BYE, parsed out of compound packets and built one at a time.
//!
//! SDES, APP and feedback packets are skipped as [`RtcpPacket::Other`] so a
//! compound packet that carries them still yields its reports. Report block
//! lists are capped at 31 entries, the most the 5-bit count can say.

use crate::be::{u16_at, u32_at};
use crate::MediaError;

/// RTCP packet type of a sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// RTCP packet type of a BYE.
pub const PT_BYE: u8 = 203;

const MAX_COUNT: usize = 31;
const REPORT_BLOCK_LEN: usize = 24;

/// One packet of a compound RTCP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpPacket {
    /// Sender report.
    SenderReport(SenderReport),
    /// Receiver report.
    ReceiverReport(ReceiverReport),
    /// The sources are leaving.
    Bye(Bye),
    /// A well-formed packet of a type this crate does not interpret.
    Other {
        /// Its packet type (e.g. 202 for SDES).
        packet_type: u8,
    },
}

/// A sender report (RFC 3550 §6.4.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SenderReport {
    /// The sender.
    pub ssrc: u32,
    /// Wallclock of this report, 64-bit NTP format (seconds since 1900 in the
    /// high 32 bits, fraction in the low 32).
    pub ntp: u64,
    /// The RTP timestamp corresponding to `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
    /// Reception reports about the sources this sender hears.
    pub reports: Vec<ReportBlock>,
}

/// A receiver report (RFC 3550 §6.4.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverReport {
    /// The reporter.
    pub ssrc: u32,
    /// Reception reports.
    pub reports: Vec<ReportBlock>,
}

/// Reception statistics about one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction of packets lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the start (24-bit signed; duplicates can make it
    /// negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp (0 if none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// A BYE (RFC 3550 §6.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bye {
    /// The sources leaving.
    pub ssrcs: Vec<u32>,
    /// Optional reason, lossily decoded as UTF-8.
    pub reason: Option<String>,
}

/// Parses a compound RTCP datagram.
///
/// Fails on the first malformed packet: a compound packet whose length
/// fields disagree with the datagram cannot be trusted for the rest either.
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, MediaError> {
    let mut packets = Vec::new();
    let mut rest = buf;
    if rest.is_empty() {
        return Err(MediaError::Truncated {
            what: "rtcp packet",
            len: 0,
            need: 4,
        });
    }
    while !rest.is_empty() {
        let (packet, len) = parse_one(rest)?;
        packets.push(packet);
        rest = rest.get(len..).unwrap_or_default();
    }
    Ok(packets)
}

/// Parses the first packet of `buf`, returning it and its length in bytes.
fn parse_one(buf: &[u8]) -> Result<(RtcpPacket, usize), MediaError> {
    let b0 = *buf.first().ok_or(MediaError::Truncated {
        what: "rtcp header",
        len: 0,
        need: 4,
    })?;
    let version = b0 >> 6;
    if version != 2 {
        return Err(MediaError::Version(version));
    }
    let words = u16_at(buf, 2).ok_or(MediaError::Truncated {
        what: "rtcp header",
        len: buf.len(),
        need: 4,
    })?;
    let packet_type = buf.get(1).copied().unwrap_or_default();
    let len = (usize::from(words) + 1) * 4;
    let mut body = buf.get(4..len).ok_or(MediaError::Truncated {
        what: "rtcp packet",
        len: buf.len(),
        need: len,
    })?;
    if b0 & 0x20 != 0 {
        let padding = usize::from(body.last().copied().unwrap_or(0));
        if padding == 0 || padding > body.len() {
            return Err(MediaError::RtcpLength("padding"));
        }
        body = &body[..body.len() - padding];
    }
    let count = usize::from(b0 & 0x1F);

    let packet = match packet_type {
        PT_SR => {
            let field = |at| u32_at(body, at).ok_or(MediaError::RtcpLength("sender info"));
            let ntp = (u64::from(field(4)?) << 32) | u64::from(field(8)?);
            RtcpPacket::SenderReport(SenderReport {
                ssrc: field(0)?,
                ntp,
                rtp_timestamp: field(12)?,
                packet_count: field(16)?,
                octet_count: field(20)?,
                reports: parse_blocks(body.get(24..).unwrap_or_default(), count)?,
            })
        }
        PT_RR => RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: u32_at(body, 0).ok_or(MediaError::RtcpLength("receiver report"))?,
            reports: parse_blocks(body.get(4..).unwrap_or_default(), count)?,
        }),
        PT_BYE => {
            let ssrc_bytes = body
                .get(..4 * count)
                .ok_or(MediaError::RtcpLength("bye sources"))?;
            let ssrcs = ssrc_bytes
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let reason = match body.get(4 * count..) {
                Some([n, text @ ..]) if *n > 0 => {
                    let text = text
                        .get(..usize::from(*n))
                        .ok_or(MediaError::RtcpLength("bye reason"))?;
                    Some(String::from_utf8_lossy(text).into_owned())
                }
                _ => None,
            };
            RtcpPacket::Bye(Bye { ssrcs, reason })
        }
        other => RtcpPacket::Other { packet_type: other },
    };
    Ok((packet, len))
}

fn parse_blocks(buf: &[u8], count: usize) -> Result<Vec<ReportBlock>, MediaError> {
    let bytes = buf
        .get(..count * REPORT_BLOCK_LEN)
        .ok_or(MediaError::RtcpLength("report blocks"))?;
    Ok(bytes
        .chunks_exact(REPORT_BLOCK_LEN)
        .map(|b| {
            let word = |at| u32_at(b, at).unwrap_or_default(); // in bounds: 24-byte chunk
            let lost = word(4);
            // Sign-extend the 24-bit cumulative loss.
            let cumulative_lost = ((lost << 8) as i32) >> 8;
            ReportBlock {
                ssrc: word(0),
                fraction_lost: (lost >> 24) as u8,
                cumulative_lost,
                highest_sequence: word(8),
                jitter: word(12),
                last_sr: word(16),
                delay_since_last_sr: word(20),
            }
        })
        .collect())
}

impl SenderReport {
    /// Appends this report to `out` (at most 31 report blocks).
    pub fn write(&self, out: &mut Vec<u8>) {
        let reports = &self.reports[..self.reports.len().min(MAX_COUNT)];
        write_header(
            out,
            reports.len(),
            PT_SR,
            24 + REPORT_BLOCK_LEN * reports.len(),
        );
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&self.ntp.to_be_bytes());
        out.extend_from_slice(&self.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&self.packet_count.to_be_bytes());
        out.extend_from_slice(&self.octet_count.to_be_bytes());
        reports.iter().for_each(|r| r.write(out));
    }
}

impl ReceiverReport {
    /// Appends this report to `out` (at most 31 report blocks).
    pub fn write(&self, out: &mut Vec<u8>) {
        let reports = &self.reports[..self.reports.len().min(MAX_COUNT)];
        write_header(
            out,
            reports.len(),
            PT_RR,
            4 + REPORT_BLOCK_LEN * reports.len(),
        );
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        reports.iter().for_each(|r| r.write(out));
    }
}

impl Bye {
    /// Appends this BYE to `out` (at most 31 sources, reason cut to 255
    /// bytes).
    pub fn write(&self, out: &mut Vec<u8>) {
        let ssrcs = &self.ssrcs[..self.ssrcs.len().min(MAX_COUNT)];
        let reason = self
            .reason
            .as_deref()
            .map(|r| &r.as_bytes()[..r.len().min(255)]);
        let reason_len = reason.map_or(0, |r| (1 + r.len()).div_ceil(4) * 4);
        write_header(out, ssrcs.len(), PT_BYE, 4 * ssrcs.len() + reason_len);
        ssrcs
            .iter()
            .for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
        if let Some(reason) = reason {
            out.push(reason.len() as u8);
            out.extend_from_slice(reason);
            // Pad the reason to a 32-bit boundary with zeros.
            out.resize(out.len() + (reason_len - 1 - reason.len()), 0);
        }
    }
}

impl ReportBlock {
    fn write(&self, out: &mut Vec<u8>) {
        let lost = (u32::from(self.fraction_lost) << 24)
            | (self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0x00FF_FFFF);
        for word in [
            self.ssrc,
            lost,
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }
}

/// The middle 32 bits of an NTP timestamp, as echoed in `last_sr`.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

fn write_header(out: &mut Vec<u8>, count: usize, packet_type: u8, body_len: usize) {
    out.push(0x80 | (count as u8 & 0x1F));
    out.push(packet_type);
    let words = (4 + body_len) / 4 - 1;
    out.extend_from_slice(&(words as u16).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32, lost: i32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 25,
            cumulative_lost: lost,
            highest_sequence: 0x0001_0005,
            jitter: 40,
            last_sr: 0xAABB_CCDD,
            delay_since_last_sr: 65_536,
        }
    }

    #[test]
    fn compound_sr_rr_bye_round_trip() {
        let sr = SenderReport {
            ssrc: 1,
            ntp: 0xE000_0000_8000_0000,
            rtp_timestamp: 160,
            packet_count: 50,
            octet_count: 8000,
            reports: vec![block(2, 3)],
        };
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![block(2, -2), block(3, 0)],
        };
        let bye = Bye {
            ssrcs: vec![1],
            reason: Some("hangup".into()),
        };
        let mut buf = Vec::new();
        sr.write(&mut buf);
        rr.write(&mut buf);
        bye.write(&mut buf);
        assert_eq!(buf.len() % 4, 0);
        let parsed = parse_compound(&buf).expect("valid compound");
        assert_eq!(
            parsed,
            vec![
                RtcpPacket::SenderReport(sr),
                RtcpPacket::ReceiverReport(rr),
                RtcpPacket::Bye(bye)
            ]
        );
    }

    #[test]
    fn unknown_packets_are_skipped_not_fatal() {
        // SDES with one empty chunk, then an RR.
        let mut buf = vec![0x81, 202, 0, 1, 0, 0, 0, 9];
        ReceiverReport {
            ssrc: 9,
            reports: vec![],
        }
        .write(&mut buf);
        let parsed = parse_compound(&buf).expect("valid");
        assert_eq!(parsed[0], RtcpPacket::Other { packet_type: 202 });
        assert!(matches!(parsed[1], RtcpPacket::ReceiverReport(_)));
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut buf = Vec::new();
        SenderReport {
            reports: vec![block(2, 3)],
            ..SenderReport::default()
        }
        .write(&mut buf);
        for n in 0..buf.len() {
            assert!(parse_compound(&buf[..n]).is_err(), "prefix {n}");
        }
        // Report count larger than the packet.
        let mut lie = buf.clone();
        lie[0] = 0x80 | 5;
        assert!(matches!(
            parse_compound(&lie),
            Err(MediaError::RtcpLength("report blocks"))
        ));
        // Version 0.
        lie[0] = 0x00;
        assert!(matches!(parse_compound(&lie), Err(MediaError::Version(0))));
    }

    #[test]
    fn cumulative_loss_is_clamped_to_24_bits() {
        let mut buf = Vec::new();
        ReceiverReport {
            ssrc: 1,
            reports: vec![block(2, i32::MAX), block(3, i32::MIN)],
        }
        .write(&mut buf);
        let Ok(parsed) = parse_compound(&buf) else {
            panic!("valid")
        };
        let RtcpPacket::ReceiverReport(rr) = &parsed[0] else {
            panic!("rr")
        };
        assert_eq!(rr.reports[0].cumulative_lost, 0x7F_FFFF);
        assert_eq!(rr.reports[1].cumulative_lost, -0x80_0000);
    }

    #[test]
    fn ntp_middle_bits() {
        assert_eq!(ntp_middle(0x1122_3344_5566_7788), 0x3344_5566);
    }
}
