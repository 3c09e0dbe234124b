//! 8 kHz ⇄ 16 kHz resampling: the call runs at 8 kHz, speech models (e.g.
//! Whisper) and some TTS voices want 16 kHz.
//!
//! Both directions use one 63-tap half-band FIR (Kaiser window, β = 7):
//! flat (±0.01 dB) up to 3.4 kHz, the top of the telephone band, and at least
//! ~70 dB down from 4.6 kHz, so what folds back when decimating lands above
//! 3.4 kHz and 70 dB down. Half-band because the cutoff is exactly a quarter
//! of 16 kHz, which makes every other tap zero and the polyphase split
//! trivial. At 2× and 8 kHz this is a few thousand multiply-adds per frame;
//! `rubato` would bring chunked buffers and its own allocation rules for a
//! fixed ratio we can serve in sixty lines. Group delay: 31 samples at
//! 16 kHz (≈ 2 ms).
//!
//! The resamplers are streaming: state carries across calls, so feeding a
//! signal frame by frame gives the same output as feeding it at once.

use crate::frame::saturate;

const TAPS: usize = 63;

/// 8 kHz → 16 kHz.
#[derive(Clone, Debug)]
pub struct Upsampler {
    /// Polyphase branches: `phases[p][j] = 2·h[2j + p]` (gain 2 makes up for
    /// the inserted zeros).
    phases: [Vec<f32>; 2],
    history: History,
}

/// 16 kHz → 8 kHz.
#[derive(Clone, Debug)]
pub struct Downsampler {
    taps: Vec<f32>,
    history: History,
    /// Whether the next input sample produces an output.
    emit: bool,
}

impl Default for Upsampler {
    fn default() -> Self {
        let h = halfband();
        let phase =
            |p: usize| -> Vec<f32> { h.iter().skip(p).step_by(2).map(|t| 2.0 * t).collect() };
        let phases = [phase(0), phase(1)];
        let len = phases[0].len();
        Upsampler {
            phases,
            history: History::new(len),
        }
    }
}

impl Upsampler {
    /// A resampler with empty (silent) history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends two output samples per input sample to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        out.reserve(input.len() * 2);
        for &x in input {
            self.history.push(f32::from(x));
            for phase in &self.phases {
                out.push(saturate(self.history.dot(phase)));
            }
        }
    }
}

impl Default for Downsampler {
    fn default() -> Self {
        Downsampler {
            taps: halfband(),
            history: History::new(TAPS),
            emit: true,
        }
    }
}

impl Downsampler {
    /// A resampler with empty (silent) history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one output sample per two input samples to `out` (an odd
    /// leftover is remembered for the next call).
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        out.reserve(input.len() / 2 + 1);
        for &x in input {
            self.history.push(f32::from(x));
            if self.emit {
                out.push(saturate(self.history.dot(&self.taps)));
            }
            self.emit = !self.emit;
        }
    }
}

/// The last `len` samples, newest first when read by [`History::dot`].
/// Stored twice so the window is always one contiguous slice.
#[derive(Clone, Debug)]
struct History {
    buf: Vec<f32>,
    len: usize,
    /// Where the next sample goes.
    pos: usize,
}

impl History {
    fn new(len: usize) -> Self {
        History {
            buf: vec![0.0; 2 * len],
            len,
            pos: 0,
        }
    }

    fn push(&mut self, x: f32) {
        self.buf[self.pos] = x;
        self.buf[self.pos + self.len] = x;
        self.pos = (self.pos + 1) % self.len;
    }

    /// Σ taps[k] · x[n − k], x[n] being the newest sample.
    fn dot(&self, taps: &[f32]) -> f32 {
        // buf[pos .. pos + len] is oldest → newest.
        let window = &self.buf[self.pos..self.pos + self.len];
        window.iter().rev().zip(taps).map(|(x, t)| x * t).sum()
    }
}

/// The half-band low-pass, cutoff at a quarter of the (16 kHz) rate,
/// normalised to unity gain at DC.
fn halfband() -> Vec<f32> {
    const BETA: f64 = 7.0;
    let center = (TAPS / 2) as f64;
    let taps: Vec<f64> = (0..TAPS)
        .map(|n| {
            let t = n as f64 - center;
            let sinc = if t == 0.0 {
                0.5
            } else {
                (std::f64::consts::FRAC_PI_2 * t).sin() / (std::f64::consts::PI * t)
            };
            let ratio = t / center;
            let window = bessel_i0(BETA * (1.0 - ratio * ratio).max(0.0).sqrt()) / bessel_i0(BETA);
            sinc * window
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter().map(|t| (t / sum) as f32).collect()
}

/// Modified Bessel function of the first kind, order zero (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    for k in 1..50 {
        term *= (x / (2.0 * k as f64)).powi(2);
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: f64, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// Magnitude of `freq` in `x` (Goertzel), normalised to amplitude.
    fn magnitude(x: &[i16], freq: f64, rate: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / rate;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s = f64::from(v) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        2.0 * power.sqrt() / x.len() as f64
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    #[test]
    fn upsampling_keeps_a_1khz_tone_and_removes_its_image() {
        let input = tone(1000.0, 8000.0, 10_000.0, 8000);
        let mut out = Vec::new();
        let mut up = Upsampler::new();
        // Frame by frame, as a call feeds it.
        for chunk in input.chunks(160) {
            up.process(chunk, &mut out);
        }
        assert_eq!(out.len(), 16_000);
        let steady = &out[200..];
        assert!(db(rms(steady) / rms(&input)).abs() < 0.1);
        let tone_mag = magnitude(steady, 1000.0, 16_000.0);
        assert!((tone_mag - 10_000.0).abs() < 100.0, "{tone_mag}");
        let image = magnitude(steady, 7000.0, 16_000.0);
        assert!(
            db(image / tone_mag) < -60.0,
            "image at {:.1} dB",
            db(image / tone_mag)
        );
    }

    #[test]
    fn downsampling_keeps_the_band_and_blocks_aliases() {
        let run = |freq: f64| {
            let input = tone(freq, 16_000.0, 10_000.0, 16_000);
            let mut out = Vec::new();
            let mut down = Downsampler::new();
            for chunk in input.chunks(321) {
                // odd chunks: the phase must carry over
                down.process(chunk, &mut out);
            }
            assert_eq!(out.len(), 8000);
            rms(&out[100..]) / rms(&input)
        };
        assert!(db(run(1000.0)).abs() < 0.1);
        assert!(
            db(run(3400.0)).abs() < 0.1,
            "3.4 kHz: {:.2} dB",
            db(run(3400.0))
        );
        // 3.5 kHz is still in band at 8 kHz: kept, within the transition.
        assert!(db(run(3500.0)) > -1.0, "3.5 kHz: {:.2} dB", db(run(3500.0)));
        // Above 4 kHz a tone would fold back into the band (5 kHz → 3 kHz,
        // 4.6 kHz → 3.4 kHz): it must be gone instead.
        assert!(
            db(run(4600.0)) < -50.0,
            "4.6 kHz: {:.1} dB",
            db(run(4600.0))
        );
        assert!(db(run(5000.0)) < -60.0, "5 kHz: {:.1} dB", db(run(5000.0)));
        assert!(db(run(7000.0)) < -60.0);
    }

    #[test]
    fn round_trip_preserves_a_tone() {
        let input = tone(700.0, 8000.0, 12_000.0, 4000);
        let (mut up, mut down) = (Upsampler::new(), Downsampler::new());
        let (mut wide, mut back) = (Vec::new(), Vec::new());
        up.process(&input, &mut wide);
        down.process(&wide, &mut back);
        assert_eq!(back.len(), input.len());
        assert!(db(rms(&back[100..]) / rms(&input)).abs() < 0.1);
        let mag = magnitude(&back[100..], 700.0, 8000.0);
        assert!((mag - 12_000.0).abs() < 200.0, "{mag}");
    }

    #[test]
    fn full_scale_input_saturates_instead_of_wrapping() {
        let square: Vec<i16> = (0..800)
            .map(|i| if (i / 4) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let mut out = Vec::new();
        Upsampler::new().process(&square, &mut out);
        // Gibbs overshoot clips at full scale rather than wrapping: the
        // middle of every plateau keeps the input's sign (delay: 31 samples).
        assert!(out.contains(&i16::MAX) && out.contains(&i16::MIN));
        for m in 20..780 {
            if square[m - 1] == square[m] && square[m] == square[m + 1] {
                let y = out[2 * m + 31];
                assert_eq!(y > 0, square[m] > 0, "sample {m}: {y}");
            }
        }
    }

    #[test]
    fn filter_is_a_half_band() {
        let h = halfband();
        assert!((h.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        for (n, t) in h.iter().enumerate() {
            let offset = n as i32 - 31;
            if offset != 0 && offset % 2 == 0 {
                assert!(t.abs() < 1e-7, "tap {n} = {t}");
            }
            assert!((t - h[62 - n]).abs() < 1e-7, "symmetric");
        }
    }
}
