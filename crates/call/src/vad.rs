//! Voice activity detection: is this caller frame speech?
//!
//! Two detectors behind one interface ([`Detector`]):
//!
//! - `Energy` (the default): a deliberately small, adaptive energy detector.
//!   It tracks the noise floor (down at once, up slowly) and calls a frame
//!   *voiced* when its level clears the floor by a margin.
//! - `Webrtc`: WebRTC's GMM detector (libfvad, mode 3, through
//!   `switchboard-fvad`) decides speech vs noise; a frame must also clear,
//!   by [`VadConfig::webrtc_margin_db`], the noise floor learnt from the
//!   frames it rejects, so speech ends as promptly as with energy (libfvad
//!   alone keeps calling 40–100 ms of the tail speech). Far better on noisy
//!   lines (docs/benchmarks.md, "Voice activity detection"), but a steady
//!   tone is not speech to it, which the tone-driven tests of the workspace
//!   rely on: hence not the default yet.
//!
//! Both then declare speech after a run of voiced frames and keep it for a
//! hangover so the pauses between words do not end it. The call machine only
//! sees [`VadFrame`].

use switchboard_fvad::{Mode, WebrtcVad};
use switchboard_media::{Frame, Level};

/// Which detector calls a frame voiced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Detector {
    /// Frame energy over an adaptive noise floor.
    #[default]
    Energy,
    /// libfvad (WebRTC VAD) mode 3, with an energy margin over the noise
    /// floor it learns.
    Webrtc,
}

/// Tuning of the [`Vad`].
#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// How far above the noise floor a frame must be to count as voiced.
    pub margin_db: f32,
    /// Frames quieter than this are never voiced, however low the floor.
    pub min_speech_dbfs: f32,
    /// The floor assumed before any audio arrived.
    pub initial_floor_dbfs: f32,
    /// The floor never drops below this (digital silence would otherwise make
    /// line hiss look like speech).
    pub lowest_floor_dbfs: f32,
    /// Consecutive voiced frames before speech starts.
    pub onset_frames: u32,
    /// Unvoiced frames speech survives (pauses between words).
    pub hangover_frames: u32,
    /// How fast the floor rises on unvoiced frames, dB per frame.
    pub floor_rise_db: f32,
    /// How fast the floor rises on voiced frames, dB per frame: lets the
    /// detector adapt to a steady loud noise instead of hearing speech forever.
    pub floor_rise_voiced_db: f32,
    pub detector: Detector,
    /// `Webrtc`: how far above the noise floor (learnt from the frames
    /// libfvad calls noise) a speech frame must be.
    pub webrtc_margin_db: f32,
    /// `Webrtc`: frames quieter than this are never voiced.
    pub webrtc_min_dbfs: f32,
}

impl VadConfig {
    /// The WebRTC detector with the measured defaults.
    pub fn webrtc() -> Self {
        Self {
            detector: Detector::Webrtc,
            ..Self::default()
        }
    }
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            margin_db: 12.0,
            min_speech_dbfs: -50.0,
            initial_floor_dbfs: -70.0,
            lowest_floor_dbfs: -80.0,
            onset_frames: 2,
            hangover_frames: 10,
            floor_rise_db: 0.1,
            floor_rise_voiced_db: 0.01,
            detector: Detector::Energy,
            webrtc_margin_db: 3.0,
            webrtc_min_dbfs: -55.0,
        }
    }
}

/// What the detector made of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VadFrame {
    /// This frame alone is loud enough to be speech.
    pub voiced: bool,
    /// Speech is under way (onset reached, hangover not yet run out).
    pub active: bool,
    /// Speech started with this frame.
    pub onset: bool,
}

/// Voice activity detector; feed it every caller frame.
#[derive(Debug)]
pub struct Vad {
    config: VadConfig,
    floor_dbfs: f32,
    run: u32,
    hangover: u32,
    active: bool,
    webrtc: Option<WebrtcVad>,
}

impl Vad {
    pub fn new(config: VadConfig) -> Self {
        Self {
            floor_dbfs: config.initial_floor_dbfs,
            webrtc: (config.detector == Detector::Webrtc)
                .then(|| WebrtcVad::new(Mode::VeryAggressive)),
            config,
            run: 0,
            hangover: 0,
            active: false,
        }
    }

    /// The current noise floor estimate.
    pub fn floor_dbfs(&self) -> f32 {
        self.floor_dbfs
    }

    /// Classify the next frame with the configured [`Detector`].
    pub fn process_frame(&mut self, frame: &Frame) -> VadFrame {
        let level = Level::of(frame);
        let Some(webrtc) = self.webrtc.as_mut() else {
            return self.process(level);
        };
        let db = level.dbfs();
        let speech = webrtc.is_speech(frame.samples());
        if !speech {
            // Learn the noise from what the model rejects: down at once,
            // up quickly (the model, not the level, tells noise from speech).
            self.floor_dbfs = if db < self.floor_dbfs {
                db.max(self.config.lowest_floor_dbfs)
            } else {
                self.floor_dbfs + 0.1 * (db - self.floor_dbfs)
            };
        }
        let voiced = speech
            && db > self.floor_dbfs + self.config.webrtc_margin_db
            && db > self.config.webrtc_min_dbfs;
        self.track(voiced)
    }

    /// Classify the next frame from its level alone (the energy detector,
    /// whatever the configured [`Detector`]).
    pub fn process(&mut self, level: Level) -> VadFrame {
        let db = level.dbfs();
        let threshold = (self.floor_dbfs + self.config.margin_db).max(self.config.min_speech_dbfs);
        let voiced = db > threshold;
        if db < self.floor_dbfs {
            self.floor_dbfs = db.max(self.config.lowest_floor_dbfs);
        } else {
            let rise = if voiced {
                self.config.floor_rise_voiced_db
            } else {
                self.config.floor_rise_db
            };
            self.floor_dbfs = (self.floor_dbfs + rise).min(db);
        }
        self.track(voiced)
    }

    /// Onset and hangover over the voiced decisions.
    fn track(&mut self, voiced: bool) -> VadFrame {
        self.run = if voiced { self.run + 1 } else { 0 };

        let mut onset = false;
        if self.run >= self.config.onset_frames {
            onset = !self.active;
            self.active = true;
            self.hangover = self.config.hangover_frames;
        } else if self.active && !voiced {
            if self.hangover == 0 {
                self.active = false;
            } else {
                self.hangover -= 1;
            }
        }
        VadFrame {
            voiced,
            active: self.active,
            onset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_media::Frame;

    fn tone(amplitude: i16) -> Level {
        Level::of(&Frame::new(std::array::from_fn(|i| {
            if i % 2 == 0 {
                amplitude
            } else {
                -amplitude
            }
        })))
    }

    #[test]
    fn speech_needs_two_frames_and_survives_short_pauses() {
        let mut vad = Vad::new(VadConfig::default());
        let silence = Level::of(&Frame::silence());
        for _ in 0..10 {
            assert!(!vad.process(silence).active);
        }
        let first = vad.process(tone(8000));
        assert!(
            first.voiced && !first.active,
            "one loud frame is not speech"
        );
        let second = vad.process(tone(8000));
        assert!(second.onset && second.active);
        // A 100 ms pause between words keeps speech going.
        for _ in 0..5 {
            let f = vad.process(silence);
            assert!(f.active && !f.voiced);
        }
        assert!(!vad.process(tone(8000)).onset);
        // The hangover runs out after a long silence.
        let ended = (0..20).any(|_| !vad.process(silence).active);
        assert!(ended);
    }

    #[test]
    fn floor_adapts_to_steady_noise() {
        let mut vad = Vad::new(VadConfig::default());
        // Quiet hiss at about -40 dBFS: above the initial floor by > 12 dB,
        // but the floor climbs and the hiss stops counting as speech.
        let hiss = tone(330);
        let heard = (0..5000).map(|_| vad.process(hiss)).last();
        assert_eq!(heard.map(|f| f.voiced), Some(false));
        assert!(vad.floor_dbfs() > -45.0, "{}", vad.floor_dbfs());
        // Speech well above the hiss is still heard.
        vad.process(tone(8000));
        assert!(vad.process(tone(8000)).onset);
    }

    /// Speech-like test audio: a 200 Hz square wave whose loudness follows
    /// syllables (steady tones are noise to the WebRTC model).
    fn syllables(n: usize, amplitude: f32) -> Vec<Frame> {
        (0..n)
            .map(|f| {
                let envelope = 0.4 + 0.6 * ((f % 10) as f32 / 9.0);
                Frame::new(std::array::from_fn(|i| {
                    let s = if (i / 20) % 2 == 0 { 1.0 } else { -1.0 };
                    (s * amplitude * envelope) as i16
                }))
            })
            .collect()
    }

    /// Deterministic white noise at about `dbfs`.
    fn noise(n: usize, dbfs: f32, seed: &mut u32) -> Vec<Frame> {
        let rms = 32768.0 * 10f32.powf(dbfs / 20.0);
        (0..n)
            .map(|_| {
                Frame::new(std::array::from_fn(|_| {
                    // Sum of four uniforms: close enough to Gaussian.
                    let mut sum = 0.0;
                    for _ in 0..4 {
                        *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        sum += (*seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                    }
                    (sum * rms * 1.7) as i16
                }))
            })
            .collect()
    }

    #[test]
    fn webrtc_ignores_steady_noise_from_the_first_frame_and_hears_speech_in_it() {
        let mut seed = 7;
        let hiss = noise(150, -40.0, &mut seed);
        let mut energy = Vad::new(VadConfig::default());
        let mut webrtc = Vad::new(VadConfig::webrtc());
        let energy_voiced = hiss
            .iter()
            .filter(|f| energy.process_frame(f).voiced)
            .count();
        let webrtc_voiced = hiss
            .iter()
            .filter(|f| webrtc.process_frame(f).voiced)
            .count();
        // Noise 30 dB over the initial floor: the energy detector takes it
        // for speech until its floor has crept up; the model does not.
        assert!(energy_voiced > 100, "{energy_voiced}");
        assert!(webrtc_voiced <= 3, "{webrtc_voiced}");
        // Speech 20 dB over that noise is heard.
        let mut heard = 0;
        for (speech, hiss) in syllables(50, 8000.0)
            .iter()
            .zip(noise(50, -40.0, &mut seed))
        {
            let mixed = Frame::new(std::array::from_fn(|i| {
                speech.samples()[i].saturating_add(hiss.samples()[i])
            }));
            if webrtc.process_frame(&mixed).voiced {
                heard += 1;
            }
        }
        assert!(heard >= 40, "{heard}");
    }
}
