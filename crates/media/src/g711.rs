//! G.711 µ-law (PCMU) and A-law (PCMA), ITU-T G.711.
//!
//! Encoding is the classic segment search on the linear sample (as in the
//! ITU/Sun reference `g711.c`); decoding is a 256-entry table built at compile
//! time from the same formula, so the two can never disagree. About fifty
//! lines do not justify a dependency.

use crate::{Frame, MediaError, FRAME_SAMPLES};

/// A G.711 variant negotiated for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// µ-law, RTP static payload type 0 (North America, Japan).
    Pcmu,
    /// A-law, RTP static payload type 8 (most of the rest of the world).
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The SDP encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Encodes one sample.
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => ulaw_encode(sample),
            Codec::Pcma => alaw_encode(sample),
        }
    }

    /// Decodes one sample.
    pub fn decode_sample(self, byte: u8) -> i16 {
        match self {
            Codec::Pcmu => ULAW_DECODE[usize::from(byte)],
            Codec::Pcma => ALAW_DECODE[usize::from(byte)],
        }
    }

    /// Encodes a frame into an RTP payload (one byte per sample).
    pub fn encode(self, frame: &Frame) -> [u8; FRAME_SAMPLES] {
        let mut out = [0u8; FRAME_SAMPLES];
        for (o, &s) in out.iter_mut().zip(frame.samples()) {
            *o = self.encode_sample(s);
        }
        out
    }

    /// Decodes an RTP payload that must hold exactly one 20 ms frame.
    pub fn decode(self, payload: &[u8]) -> Result<Frame, MediaError> {
        if payload.len() != FRAME_SAMPLES {
            return Err(MediaError::FrameSize { len: payload.len() });
        }
        let mut frame = Frame::silence();
        for (s, &b) in frame.samples_mut().iter_mut().zip(payload) {
            *s = self.decode_sample(b);
        }
        Ok(frame)
    }
}

/// Encodes a 16-bit linear sample as µ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 { 0x80 } else { 0 };
    if pcm < 0 {
        pcm = -pcm;
    }
    let pcm = pcm.min(CLIP) + BIAS;
    // The segment is the position of the highest set bit above bit 7.
    let exponent = (31 - pcm.leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes a µ-law byte to a 16-bit linear sample.
pub fn ulaw_decode(byte: u8) -> i16 {
    ULAW_DECODE[usize::from(byte)]
}

/// Encodes a 16-bit linear sample as A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 13-bit magnitudes.
    let mut pcm = i32::from(sample) >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    // Segment ends of the 13-bit magnitude.
    let seg = match pcm {
        0..=0x1F => 0,
        0x20..=0x3F => 1,
        0x40..=0x7F => 2,
        0x80..=0xFF => 3,
        0x100..=0x1FF => 4,
        0x200..=0x3FF => 5,
        0x400..=0x7FF => 6,
        0x800..=0xFFF => 7,
        _ => return (0x7F ^ mask) as u8,
    };
    let mantissa = if seg < 2 { pcm >> 1 } else { pcm >> seg } & 0x0F;
    (((seg << 4) | mantissa) ^ mask) as u8
}

/// Decodes an A-law byte to a 16-bit linear sample.
pub fn alaw_decode(byte: u8) -> i16 {
    ALAW_DECODE[usize::from(byte)]
}

static ULAW_DECODE: [i16; 256] = ulaw_table();
static ALAW_DECODE: [i16; 256] = alaw_table();

const fn ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let u = !(i as u8);
        let exponent = (u >> 4) & 0x07;
        let mantissa = (u & 0x0F) as i32;
        let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
        table[i] = if u & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        i += 1;
    }
    table
}

const fn alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        let a = (i as u8) ^ 0x55;
        let seg = (a & 0x70) >> 4;
        let mut t = ((a & 0x0F) as i32) << 4;
        t = match seg {
            0 => t + 8,
            1 => t + 0x108,
            _ => (t + 0x108) << (seg - 1),
        };
        table[i] = if a & 0x80 != 0 { t as i16 } else { -t as i16 };
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32_124);
        assert_eq!(ulaw_decode(0x00), -32_124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(-1), 0x7F);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32_256);
        assert_eq!(alaw_decode(0x2A), -32_256);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        // Each of the 256 code words decodes to a value that encodes back to
        // itself, except µ-law's negative zero (0x7F decodes to 0 = 0xFF).
        for b in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(b)), b, "alaw {b:#04x}");
            if b != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(b)), b, "ulaw {b:#04x}");
            }
        }
    }

    #[test]
    fn round_trip_error_is_within_the_segment_step() {
        // G.711 keeps about 13 bits: the error is at most half a quantisation
        // step of the segment, i.e. below 1/16 of the magnitude plus the
        // smallest step.
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for x in (i16::MIN..=i16::MAX).step_by(7) {
                let y = codec.decode_sample(codec.encode_sample(x));
                let err = (i32::from(x) - i32::from(y)).abs();
                let clip = (i32::from(x).abs() - 32_124).max(0);
                let bound = i32::from(x).abs() / 16 + 16 + clip;
                assert!(err <= bound, "{codec:?} {x} -> {y} (error {err})");
                assert!(x == 0 || y == 0 || (x > 0) == (y > 0), "sign of {x}");
            }
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut prev = i16::MIN;
        for x in (i16::MIN..=i16::MAX).step_by(3) {
            for codec in [Codec::Pcmu, Codec::Pcma] {
                assert!(
                    codec.decode_sample(codec.encode_sample(x))
                        >= codec.decode_sample(codec.encode_sample(prev))
                );
            }
            prev = x;
        }
    }

    #[test]
    fn frames_round_trip_and_size_is_checked() {
        let mut frame = Frame::silence();
        for (i, s) in frame.samples_mut().iter_mut().enumerate() {
            *s = (i as i16 - 80) * 200;
        }
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let payload = codec.encode(&frame);
            let back = codec.decode(&payload).expect("one frame");
            for (a, b) in frame.samples().iter().zip(back.samples()) {
                assert!((a - b).abs() <= a.abs() / 16 + 16);
            }
            assert!(matches!(
                codec.decode(&payload[..80]),
                Err(MediaError::FrameSize { len: 80 })
            ));
        }
    }
}
