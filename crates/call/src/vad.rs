//! Voice activity detection from frame energy.
//!
//! A deliberately small, adaptive energy detector: it tracks the noise floor
//! (down at once, up slowly), calls a frame *voiced* when its level clears the
//! floor by a margin, declares speech after a run of voiced frames and keeps
//! it for a hangover so the pauses between words do not end it. The call
//! machine only sees [`VadFrame`], so a model-based detector (webrtc-vad) can
//! replace this one without touching turn-taking.

use switchboard_media::Level;

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

/// Adaptive energy voice activity detector; feed it every caller frame.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    floor_dbfs: f32,
    run: u32,
    hangover: u32,
    active: bool,
}

impl Vad {
    pub fn new(config: VadConfig) -> Self {
        Self {
            floor_dbfs: config.initial_floor_dbfs,
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

    /// Classify the next frame, given its level.
    pub fn process(&mut self, level: Level) -> VadFrame {
        let db = level.dbfs();
        let threshold = (self.floor_dbfs + self.config.margin_db).max(self.config.min_speech_dbfs);
        let voiced = db > threshold;
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
}
