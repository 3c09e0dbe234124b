//! Frame energy, for decisions that need "how loud" rather than "is it
//! speech": the echo guard compares what the caller's side carries with what
//! we are playing, since speakerphone echo of our own TTS must not count as
//! barge-in. (Speech detection proper — webrtc-vad — plugs in next to this.)

use crate::Frame;

/// RMS level of a frame, in dB relative to full scale.
///
/// 0 dBFS is a full-scale square wave; a full-scale sine is about −3 dBFS.
/// Digital silence is floored at [`Level::FLOOR_DBFS`] so levels stay
/// finite and comparable.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Level {
    dbfs: f32,
}

impl Level {
    /// The level of digital silence (the dynamic range of 16-bit PCM).
    pub const FLOOR_DBFS: f32 = -96.0;

    /// The level of a frame.
    pub fn of(frame: &Frame) -> Level {
        Level::of_samples(frame.samples())
    }

    /// The level of any run of samples (silence if empty).
    pub fn of_samples(samples: &[i16]) -> Level {
        if samples.is_empty() {
            return Level {
                dbfs: Self::FLOOR_DBFS,
            };
        }
        let sum: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
        let rms = (sum / samples.len() as f64).sqrt() / 32_768.0;
        let dbfs = if rms > 0.0 {
            20.0 * rms.log10()
        } else {
            f64::MIN
        };
        Level {
            dbfs: (dbfs as f32).max(Self::FLOOR_DBFS),
        }
    }

    /// The level in dBFS (≤ 0, ≥ [`Level::FLOOR_DBFS`]).
    pub fn dbfs(self) -> f32 {
        self.dbfs
    }

    /// Whether this level is louder than `threshold_dbfs`.
    pub fn is_above(self, threshold_dbfs: f32) -> bool {
        self.dbfs > threshold_dbfs
    }

    /// Whether this level exceeds `reference` by more than `margin_db`: for
    /// the echo guard, caller-side audio counts as the caller talking only
    /// when it is clearly louder than the echo our own playback can cause.
    pub fn exceeds(self, reference: Level, margin_db: f32) -> bool {
        self.dbfs > reference.dbfs + margin_db
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FRAME_SAMPLES;

    fn sine(amplitude: f64) -> Frame {
        let mut f = Frame::silence();
        for (i, s) in f.samples_mut().iter_mut().enumerate() {
            let phase = 2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0;
            *s = (amplitude * phase.sin()).round() as i16;
        }
        f
    }

    #[test]
    fn known_levels() {
        assert_eq!(Level::of(&Frame::silence()).dbfs(), Level::FLOOR_DBFS);
        let square = Frame::new(std::array::from_fn(|i| {
            if i % 2 == 0 {
                i16::MAX
            } else {
                i16::MIN
            }
        }));
        assert!(Level::of(&square).dbfs().abs() < 0.01);
        let full_sine = Level::of(&sine(32_767.0)).dbfs();
        assert!((full_sine + 3.01).abs() < 0.05, "{full_sine}");
        let half_sine = Level::of(&sine(16_384.0)).dbfs();
        assert!((half_sine + 9.03).abs() < 0.05, "{half_sine}");
        assert_eq!(Level::of_samples(&[]).dbfs(), Level::FLOOR_DBFS);
        assert!(Level::of_samples(&[1; FRAME_SAMPLES]).dbfs() > Level::FLOOR_DBFS);
    }

    #[test]
    fn echo_guard_comparisons() {
        let ours = Level::of(&sine(8000.0)); // what we play
        let echo = Level::of(&sine(1000.0)); // ~18 dB quieter
        let caller = Level::of(&sine(20_000.0));
        assert!(!echo.exceeds(ours, 0.0));
        assert!(caller.exceeds(ours, 6.0));
        assert!(echo.is_above(-40.0));
        assert!(!Level::of(&Frame::silence()).is_above(-90.0));
    }
}
