//! Streaming rate conversion for TTS output (22.05 kHz Piper/espeak-ng,
//! 24 kHz OpenAI PCM → 8 kHz) and STT input (8 kHz → 16 kHz), and the
//! [`FrameAssembler`] that cuts a sample stream into 20 ms [`Frame`]s.
//!
//! [`Resampler`] is a polyphase windowed-sinc filter for any rational ratio
//! `out/in = L/M` (reduced by their gcd: 22 050 → 8 000 is 160/441). Each of
//! the `L` phases holds [`TAPS`] coefficients of a Kaiser-windowed (β = 8)
//! low-pass at 0.45 × the lower rate, so everything that would fold back
//! into the 8 kHz band is ≥ 70 dB down and the telephone band (≤ 3.4 kHz) is
//! flat. `media::resample` already has a cheaper half-band 8 ⇄ 16 kHz pair;
//! this one exists because TTS engines do not speak at multiples of 8 kHz.
//!
//! State carries across [`Resampler::process`] calls, so feeding a signal in
//! arbitrary chunks (as a child process's pipe delivers it) gives the same
//! output as feeding it at once; [`Resampler::flush`] drains the filter's
//! look-ahead at the end of an utterance.

use switchboard_media::{Frame, FRAME_SAMPLES};

/// Coefficients per phase. Even, so the filter is centred between taps
/// `TAPS/2 - 1` and `TAPS/2`.
pub const TAPS: usize = 96;

/// A streaming rational-ratio resampler for mono i16 audio.
#[derive(Clone, Debug)]
pub struct Resampler {
    /// Output samples per `down` input samples (reduced ratio).
    up: u64,
    down: u64,
    /// `phases[p][j]` weights input sample `i + j - (TAPS/2 - 1)` for the
    /// output whose position is `i + p/up` input samples.
    phases: Vec<Vec<f32>>,
    /// Input not yet fully used; `buf[0]` is input sample number `base`.
    buf: Vec<f32>,
    base: i64,
    /// Position of the next output, in units of `1/up` input samples.
    next: u64,
    /// Input samples received.
    received: u64,
}

impl Resampler {
    /// A resampler from `from_hz` to `to_hz`. Both must be non-zero; a ratio
    /// whose reduced numerator exceeds 1 000 phases (e.g. 8 000 → 44 101) is
    /// refused rather than allocating a huge table.
    pub fn new(from_hz: u32, to_hz: u32) -> Option<Resampler> {
        if from_hz == 0 || to_hz == 0 {
            return None;
        }
        let g = gcd(u64::from(from_hz), u64::from(to_hz));
        let (up, down) = (u64::from(to_hz) / g, u64::from(from_hz) / g);
        if up > 1000 {
            return None;
        }
        // Cutoff as a fraction of the input rate.
        let cutoff = 0.45 * f64::from(from_hz.min(to_hz)) / f64::from(from_hz);
        let half = (TAPS / 2) as f64 - 1.0;
        let phases = (0..up)
            .map(|p| {
                let frac = p as f64 / up as f64;
                let mut taps: Vec<f64> = (0..TAPS)
                    .map(|j| {
                        let t = j as f64 - half - frac;
                        let sinc = if t.abs() < 1e-12 {
                            2.0 * cutoff
                        } else {
                            (2.0 * std::f64::consts::PI * cutoff * t).sin()
                                / (std::f64::consts::PI * t)
                        };
                        sinc * kaiser(t / (half + 1.0), 8.0)
                    })
                    .collect();
                // Unity DC gain per phase: no ripple at the phase rate.
                let sum: f64 = taps.iter().sum();
                for t in taps.iter_mut() {
                    *t /= sum;
                }
                taps.into_iter().map(|t| t as f32).collect()
            })
            .collect();
        Some(Resampler {
            up,
            down,
            phases,
            buf: vec![0.0; TAPS / 2 - 1],
            base: -((TAPS / 2 - 1) as i64),
            next: 0,
            received: 0,
        })
    }

    /// Appends the output that `input` makes available to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.buf.extend(input.iter().map(|&s| f32::from(s)));
        self.received += input.len() as u64;
        self.drain(out);
    }

    /// Ends the stream: pads with silence so every input sample has been
    /// fully used, appending the remaining output (≈ `TAPS/2` input samples'
    /// worth).
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        let wanted = (self.received * self.up).div_ceil(self.down);
        let pad = TAPS / 2 + 1;
        self.buf.extend(std::iter::repeat_n(0.0, pad));
        let before = out.len();
        self.drain(out);
        // The padding may yield a few outputs past the end of the signal.
        let produced = self.next / self.down; // outputs emitted so far
        let extra = produced.saturating_sub(wanted) as usize;
        out.truncate((out.len() - extra).max(before));
    }

    fn drain(&mut self, out: &mut Vec<i16>) {
        let available_end = self.base + self.buf.len() as i64; // exclusive
        loop {
            let pos = self.next;
            let i = (pos / self.up) as i64;
            let p = (pos % self.up) as usize;
            let start = i - (TAPS / 2 - 1) as i64;
            if start + TAPS as i64 > available_end {
                break;
            }
            let offset = (start - self.base) as usize;
            let window = &self.buf[offset..offset + TAPS];
            let y: f32 = window.iter().zip(&self.phases[p]).map(|(x, h)| x * h).sum();
            out.push(y.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16);
            self.next += self.down;
        }
        // Drop input no future output can reach.
        let i = (self.next / self.up) as i64;
        let keep_from = i - (TAPS / 2 - 1) as i64;
        let drop = (keep_from - self.base).clamp(0, self.buf.len() as i64) as usize;
        if drop > 0 {
            self.buf.drain(..drop);
            self.base += drop as i64;
        }
    }
}

/// Cuts a stream of 8 kHz samples into [`Frame`]s.
#[derive(Clone, Debug, Default)]
pub struct FrameAssembler {
    pending: Vec<i16>,
}

impl FrameAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples; returns every complete frame.
    pub fn push(&mut self, samples: &[i16]) -> Vec<Frame> {
        self.pending.extend_from_slice(samples);
        let whole = self.pending.len() / FRAME_SAMPLES * FRAME_SAMPLES;
        let frames = self.pending[..whole]
            .chunks_exact(FRAME_SAMPLES)
            .filter_map(|c| Frame::try_from(c).ok())
            .collect();
        self.pending.drain(..whole);
        frames
    }

    /// The last partial frame padded with silence, if any samples are left.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending.resize(FRAME_SAMPLES, 0);
        let frame = Frame::try_from(&self.pending[..]).ok();
        self.pending.clear();
        frame
    }
}

/// Decodes little-endian s16 bytes, carrying an odd trailing byte over to
/// the next call.
#[derive(Clone, Debug, Default)]
pub(crate) struct PcmDecoder {
    odd: Option<u8>,
}

impl PcmDecoder {
    pub(crate) fn decode(&mut self, bytes: &[u8], out: &mut Vec<i16>) {
        let mut bytes = bytes;
        if let (Some(lo), Some((&hi, rest))) = (self.odd, bytes.split_first()) {
            out.push(i16::from_le_bytes([lo, hi]));
            self.odd = None;
            bytes = rest;
        }
        let pairs = bytes.chunks_exact(2);
        self.odd = pairs.remainder().first().copied().or(self.odd);
        out.extend(pairs.map(|p| i16::from_le_bytes([p[0], p[1]])));
    }
}

/// Resampler to 8 kHz plus framing: what every TTS provider runs its PCM
/// through.
#[derive(Debug)]
pub(crate) struct ToFrames {
    resampler: Option<Resampler>,
    frames: FrameAssembler,
    scratch: Vec<i16>,
}

impl ToFrames {
    /// `None` when `from_hz` cannot be converted (zero or absurd).
    pub(crate) fn new(from_hz: u32) -> Option<ToFrames> {
        let resampler = if from_hz == switchboard_media::SAMPLE_RATE {
            None
        } else {
            Some(Resampler::new(from_hz, switchboard_media::SAMPLE_RATE)?)
        };
        Some(ToFrames {
            resampler,
            frames: FrameAssembler::new(),
            scratch: Vec::new(),
        })
    }

    pub(crate) fn push(&mut self, samples: &[i16]) -> Vec<Frame> {
        match &mut self.resampler {
            None => self.frames.push(samples),
            Some(r) => {
                self.scratch.clear();
                r.process(samples, &mut self.scratch);
                self.frames.push(&self.scratch)
            }
        }
    }

    pub(crate) fn finish(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        if let Some(r) = &mut self.resampler {
            self.scratch.clear();
            r.flush(&mut self.scratch);
            frames = self.frames.push(&self.scratch);
        }
        frames.extend(self.frames.finish());
        frames
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Kaiser window at `x` ∈ [-1, 1].
fn kaiser(x: f64, beta: f64) -> f64 {
    if x.abs() > 1.0 {
        return 0.0;
    }
    bessel_i0(beta * (1.0 - x * x).sqrt()) / bessel_i0(beta)
}

fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    for k in 1..60 {
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

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    fn convert(from: u32, to: u32, input: &[i16], chunk: usize) -> Vec<i16> {
        let mut r = Resampler::new(from, to).expect("valid ratio");
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            r.process(c, &mut out);
        }
        r.flush(&mut out);
        out
    }

    #[test]
    fn output_length_follows_the_ratio() {
        let input = vec![0i16; 22_050];
        assert_eq!(convert(22_050, 8_000, &input, 1000).len(), 8_000);
        assert_eq!(convert(24_000, 8_000, &vec![0; 24_000], 333).len(), 8_000);
        assert_eq!(convert(8_000, 16_000, &vec![0; 800], 160).len(), 1_600);
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input = tone(440.0, 22_050.0, 8_000.0, 5_000);
        assert_eq!(
            convert(22_050, 8_000, &input, 7),
            convert(22_050, 8_000, &input, 5_000)
        );
    }

    #[test]
    fn in_band_tones_pass_and_aliases_are_removed() {
        for (freq, pass) in [
            (300.0, true),
            (1_000.0, true),
            (3_000.0, true),
            (6_000.0, false),
            (9_000.0, false),
        ] {
            let input = tone(freq, 22_050.0, 10_000.0, 22_050);
            let out = convert(22_050, 8_000, &input, 441);
            let gain = db(rms(&out[200..7_800]) / rms(&input));
            if pass {
                assert!(gain.abs() < 0.2, "{freq} Hz: {gain:.2} dB");
            } else {
                assert!(gain < -60.0, "{freq} Hz folds back at {gain:.1} dB");
            }
        }
    }

    #[test]
    fn frames_are_cut_and_the_tail_is_padded() {
        let mut asm = FrameAssembler::new();
        assert!(asm.push(&[1; 100]).is_empty());
        let frames = asm.push(&[2; 300]);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].samples()[99], 1);
        assert_eq!(frames[0].samples()[100], 2);
        let last = asm.finish().expect("80 samples left");
        assert_eq!(last.samples()[79], 2);
        assert_eq!(last.samples()[80], 0);
        assert!(asm.finish().is_none());
    }

    #[test]
    fn pcm_decoder_carries_odd_bytes() {
        let mut d = PcmDecoder::default();
        let mut out = Vec::new();
        d.decode(&[0x01], &mut out);
        d.decode(&[0x02, 0x03], &mut out);
        d.decode(&[0x04], &mut out);
        assert_eq!(out, vec![0x0201, 0x0403]);
    }

    #[test]
    fn silly_ratios_are_refused() {
        assert!(Resampler::new(0, 8_000).is_none());
        assert!(Resampler::new(8_000, 44_101).is_none());
    }
}
