//! [`Frame`]: 20 ms of 8 kHz mono PCM, the unit every stage exchanges.

use std::time::Duration;

use crate::MediaError;

/// Samples per second of call audio (G.711 narrowband).
pub const SAMPLE_RATE: u32 = 8_000;
/// Samples in one [`Frame`].
pub const FRAME_SAMPLES: usize = 160;
/// Duration of one [`Frame`].
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// 20 ms of 8 kHz, 16-bit mono PCM.
///
/// A fixed-size array rather than a `Vec`: frames are copied through the
/// jitter buffer, the call machine and the recorder fifty times a second per
/// call, and the size is the invariant everything downstream relies on.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    samples: [i16; FRAME_SAMPLES],
}

impl Frame {
    /// A frame from exactly [`FRAME_SAMPLES`] samples.
    pub fn new(samples: [i16; FRAME_SAMPLES]) -> Self {
        Frame { samples }
    }

    /// A frame of digital silence.
    pub fn silence() -> Self {
        Frame {
            samples: [0; FRAME_SAMPLES],
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> &[i16; FRAME_SAMPLES] {
        &self.samples
    }

    /// The samples, for in-place processing.
    pub fn samples_mut(&mut self) -> &mut [i16; FRAME_SAMPLES] {
        &mut self.samples
    }

    /// Whether every sample is zero.
    pub fn is_silence(&self) -> bool {
        self.samples.iter().all(|&s| s == 0)
    }

    /// This frame scaled by `gain` (saturating), e.g. for loss concealment.
    pub fn scaled(&self, gain: f32) -> Frame {
        let mut out = self.clone();
        for s in out.samples.iter_mut() {
            *s = saturate(f32::from(*s) * gain);
        }
        out
    }

    /// The sum of two frames, saturating at full scale: mixing the two legs
    /// of a bridged call, or a prompt over hold music.
    pub fn mixed(&self, other: &Frame) -> Frame {
        let mut out = self.clone();
        for (s, o) in out.samples.iter_mut().zip(other.samples.iter()) {
            *s = s.saturating_add(*o);
        }
        out
    }
}

impl TryFrom<&[i16]> for Frame {
    type Error = MediaError;

    fn try_from(samples: &[i16]) -> Result<Self, Self::Error> {
        let samples: [i16; FRAME_SAMPLES] = samples
            .try_into()
            .map_err(|_| MediaError::FrameLength(samples.len()))?;
        Ok(Frame { samples })
    }
}

impl std::fmt::Debug for Frame {
    // 160 numbers in a log line help nobody; the energy does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({:.1} dBFS)", crate::Level::of(self).dbfs())
    }
}

pub(crate) fn saturate(x: f32) -> i16 {
    // `as` saturates float → int conversions (and maps NaN to 0).
    x.round() as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_from_requires_exactly_one_frame() {
        assert!(Frame::try_from(&[0i16; 160][..]).is_ok());
        assert!(matches!(
            Frame::try_from(&[0i16; 159][..]),
            Err(MediaError::FrameLength(159))
        ));
    }

    #[test]
    fn mixing_saturates_instead_of_wrapping() {
        let loud = Frame::new([30_000; FRAME_SAMPLES]);
        let mixed = loud.mixed(&loud);
        assert!(mixed.samples().iter().all(|&s| s == i16::MAX));
        let quiet = Frame::new([-30_000; FRAME_SAMPLES]).mixed(&Frame::new([-30_000; 160]));
        assert!(quiet.samples().iter().all(|&s| s == i16::MIN));
    }

    #[test]
    fn scaling_halves_and_saturates() {
        let f = Frame::new([1000; FRAME_SAMPLES]);
        assert!(f.scaled(0.5).samples().iter().all(|&s| s == 500));
        assert!(f.scaled(100.0).samples().iter().all(|&s| s == i16::MAX));
        assert!(f.scaled(0.0).is_silence());
    }
}
