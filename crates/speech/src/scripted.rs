//! Test support: deterministic providers for the tests of other crates (the
//! call engine, the simulator), with no model, process or network.
//!
//! - [`ScriptedStt`] answers each stream with the next queued transcript,
//!   whatever audio it was sent, and remembers how many frames each stream
//!   received.
//! - [`ToneTts`] "speaks" a sine tone whose length is proportional to the
//!   text, and remembers what it was asked to say.
//!
//! Both are ordinary public types, behind no feature flag, so a dependent
//! crate's tests can use them without enabling anything.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::{
    runtime, Frame, SpeechError, SpeechToText, SttEvent, SttInput, SttStream, TextToSpeech,
    TtsStream, STT_CHANNEL_INPUTS, TTS_CHANNEL_FRAMES,
};
use switchboard_media::{FRAME_SAMPLES, SAMPLE_RATE};

/// Speech to text that replays queued transcripts, one per stream.
///
/// A stream emits `Final { text, confidence }` when it receives `Finish`;
/// with the queue empty the text is `""` and the confidence 0. Clones share
/// the queue.
#[derive(Debug, Clone, Default)]
pub struct ScriptedStt {
    inner: Arc<Mutex<Scripted>>,
}

#[derive(Debug, Default)]
struct Scripted {
    queue: VecDeque<(String, f32)>,
    /// Frames received by each finished stream, in order of finishing.
    heard: Vec<usize>,
}

impl ScriptedStt {
    /// A provider that will answer with `transcripts`, in order, at
    /// confidence 1.0.
    pub fn new<S: Into<String>>(transcripts: impl IntoIterator<Item = S>) -> Self {
        let stt = ScriptedStt::default();
        for t in transcripts {
            stt.push(t);
        }
        stt
    }

    /// Queues one more transcript at confidence 1.0.
    pub fn push(&self, text: impl Into<String>) {
        self.push_with_confidence(text, 1.0);
    }

    /// Queues one more transcript with the given confidence.
    pub fn push_with_confidence(&self, text: impl Into<String>, confidence: f32) {
        self.lock().queue.push_back((text.into(), confidence));
    }

    /// Transcripts not yet used.
    pub fn remaining(&self) -> usize {
        self.lock().queue.len()
    }

    /// How many audio frames each finished stream received, in order.
    pub fn heard(&self) -> Vec<usize> {
        self.lock().heard.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scripted> {
        // A poisoned lock only means another test thread panicked; the data
        // (a queue of strings) is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SpeechToText for ScriptedStt {
    fn name(&self) -> &str {
        "scripted"
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let rt = runtime()?;
        let (audio_tx, mut audio_rx) = mpsc::channel(STT_CHANNEL_INPUTS);
        let (events_tx, events_rx) = mpsc::channel(4);
        let this = self.clone();
        rt.spawn(async move {
            let mut frames = 0usize;
            while let Some(input) = audio_rx.recv().await {
                match input {
                    SttInput::Audio(_) => frames += 1,
                    SttInput::Finish => {
                        let (text, confidence) = {
                            let mut s = this.lock();
                            s.heard.push(frames);
                            s.queue.pop_front().unwrap_or_default()
                        };
                        let _ = events_tx
                            .send(Ok(SttEvent::Final { text, confidence }))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(SttStream {
            audio: audio_tx,
            events: events_rx,
        })
    }
}

/// Text to speech that plays a tone: [`ToneTts::ms_per_char`] milliseconds
/// per character of text (at least one frame), at [`ToneTts::frequency`].
/// Deterministic: the same text always gives the same frames.
#[derive(Debug, Clone)]
pub struct ToneTts {
    frequency: f32,
    amplitude: i16,
    ms_per_char: u32,
    spoken: Arc<Mutex<Vec<String>>>,
}

impl Default for ToneTts {
    fn default() -> Self {
        ToneTts {
            frequency: 440.0,
            amplitude: 8_000,
            ms_per_char: 60,
            spoken: Arc::default(),
        }
    }
}

impl ToneTts {
    /// 440 Hz at about −12 dBFS, 60 ms per character (≈ normal speech).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the tone frequency in Hz.
    pub fn with_frequency(mut self, hz: f32) -> Self {
        self.frequency = hz;
        self
    }

    /// Sets the duration per character of text.
    pub fn with_ms_per_char(mut self, ms: u32) -> Self {
        self.ms_per_char = ms;
        self
    }

    /// The tone frequency in Hz.
    pub fn frequency(&self) -> f32 {
        self.frequency
    }

    /// Milliseconds of tone per character.
    pub fn ms_per_char(&self) -> u32 {
        self.ms_per_char
    }

    /// Every text synthesised so far, in order (clones share the log).
    pub fn spoken(&self) -> Vec<String> {
        self.spoken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The frames `synthesize(text)` yields.
    pub fn frames_for(&self, text: &str) -> Vec<Frame> {
        let chars = text.chars().count() as u64;
        let total_ms = (chars * u64::from(self.ms_per_char)).max(20);
        let count = total_ms.div_ceil(20) as usize;
        let step = 2.0 * std::f32::consts::PI * self.frequency / SAMPLE_RATE as f32;
        (0..count)
            .map(|f| {
                let mut samples = [0i16; FRAME_SAMPLES];
                for (i, s) in samples.iter_mut().enumerate() {
                    let n = (f * FRAME_SAMPLES + i) as f32;
                    *s = (f32::from(self.amplitude) * (step * n).sin()) as i16;
                }
                Frame::new(samples)
            })
            .collect()
    }
}

impl TextToSpeech for ToneTts {
    fn name(&self) -> &str {
        "tone"
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return TtsStream::failed(e),
        };
        self.spoken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text.to_owned());
        let frames = self.frames_for(text);
        let (tx, rx) = mpsc::channel(TTS_CHANNEL_FRAMES);
        rt.spawn(async move {
            for frame in frames {
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        });
        TtsStream { frames: rx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn scripted_stt_answers_in_order_and_counts_frames() {
        let stt = ScriptedStt::new(["hello", "I need a person"]);
        let first = stt.open().expect("runtime");
        let (text, conf) = first
            .transcribe(vec![Frame::silence(); 3], Duration::from_secs(1))
            .await
            .expect("final");
        assert_eq!((text.as_str(), conf), ("hello", 1.0));
        let second = stt.open().expect("runtime");
        let (text, _) = second
            .transcribe(vec![Frame::silence(); 5], Duration::from_secs(1))
            .await
            .expect("final");
        assert_eq!(text, "I need a person");
        let third = stt.open().expect("runtime");
        let (text, conf) = third
            .transcribe(Vec::new(), Duration::from_secs(1))
            .await
            .expect("final");
        assert_eq!((text.as_str(), conf), ("", 0.0));
        assert_eq!(stt.heard(), vec![3, 5, 0]);
    }

    #[tokio::test]
    async fn tone_length_is_proportional_to_text() {
        let tts = ToneTts::new();
        let short = tts
            .synthesize("hi")
            .collect(Duration::from_secs(1))
            .await
            .expect("frames");
        let long = tts
            .synthesize("hello, how can I help you today?")
            .collect(Duration::from_secs(1))
            .await
            .expect("frames");
        assert_eq!(short.len(), 6); // 2 chars × 60 ms = 120 ms
        assert_eq!(long.len(), 96); // 32 chars × 60 ms
        assert!(long.iter().all(|f| !f.is_silence()));
        assert_eq!(long, tts.frames_for("hello, how can I help you today?"));
        assert_eq!(tts.spoken(), vec!["hi", "hello, how can I help you today?"]);
    }

    #[test]
    fn outside_a_runtime_the_error_says_so() {
        assert!(matches!(
            ScriptedStt::new(["x"]).open(),
            Err(SpeechError::NoRuntime)
        ));
    }
}
