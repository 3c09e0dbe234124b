//! The test caller's script: speak sentences into a call, wait for the
//! other side's reply between them, record both directions, and report what
//! happened. `switchboard call` runs it over a real SIP leg; tests run it
//! against the engine over an in-memory line.
//!
//! Its clock is the line itself: every 20 ms frame that arrives from the far
//! end is answered with one frame of ours (script audio or silence), so the
//! caller keeps real time without a timer of its own.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use switchboard_media::{Frame, Level, StereoRecorder, FRAME_DURATION};
use switchboard_speech::{SpeechToText, TextToSpeech};
use tokio::time::Instant;

use crate::line::{Line, LineEvent};

/// One thing the caller does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Wait until the far end has finished talking, then say this.
    Say(String),
    /// Say this while the far end is still talking (a barge-in), as soon as
    /// it has spoken for `after`.
    Interrupt { text: String, after: Duration },
    /// Wait for the far end to finish, then play these frames (from a WAV).
    Play(Vec<Frame>),
    /// Wait for the far end to finish, then press these keys.
    Keys(String),
}

/// Tuning of the caller.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    /// Far-end audio above this counts as speech.
    pub speech_dbfs: f32,
    /// Silence that ends the far end's reply.
    pub reply_silence: Duration,
    /// Longest wait for the far end to start replying.
    pub reply_start_timeout: Duration,
    /// The whole call, at most; then hang up.
    pub timeout: Duration,
    /// Stereo WAV of the call: far end left, us right.
    pub record: Option<PathBuf>,
    /// Hang up after the last reply (otherwise wait for the far end to).
    pub hang_up_at_end: bool,
}

impl Default for CallerConfig {
    fn default() -> Self {
        Self {
            speech_dbfs: -35.0,
            reply_silence: Duration::from_millis(1200),
            reply_start_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
            record: None,
            hang_up_at_end: true,
        }
    }
}

/// What the caller heard of the far end: one stretch of speech.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Heard {
    /// Milliseconds from the start of the call.
    pub at_ms: u64,
    pub duration_ms: u64,
    /// The transcript, when an STT was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The JSON summary `switchboard call` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallerReport {
    /// `completed` (the script ran to its end and we hung up), `hung_up`
    /// (the far end hung up; [`unsaid`](Self::unsaid) counts the steps left),
    /// or `timeout`.
    pub result: &'static str,
    /// Script steps not performed because the call ended first.
    pub unsaid: usize,
    pub duration_ms: u64,
    pub said: Vec<String>,
    pub heard: Vec<Heard>,
    /// Why the call ended, in words.
    pub end_reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
}

impl CallerReport {
    pub fn ok(&self) -> bool {
        matches!(self.result, "completed" | "hung_up")
    }
}

/// Runs `steps` over `line` and reports. Never panics on what the far end
/// sends; a recording that cannot be written is reported, not fatal.
pub async fn run_script(
    mut line: Line,
    steps: Vec<Step>,
    tts: Arc<dyn TextToSpeech>,
    stt: Option<Arc<dyn SpeechToText>>,
    config: CallerConfig,
) -> CallerReport {
    let start = Instant::now();
    let mut recorder = config
        .record
        .as_ref()
        .and_then(|p| std::fs::File::create(p).ok())
        .and_then(|f| StereoRecorder::new(std::io::BufWriter::new(f)).ok());
    let mut steps: VecDeque<Step> = steps.into();
    let mut said = Vec::new();
    let mut heard: Vec<Heard> = Vec::new();
    let mut outgoing: VecDeque<Frame> = VecDeque::new();
    let mut listener = Listener::new(&config);
    let mut current: Option<Vec<Frame>> = None; // far-end speech being captured
    let mut pending_stt = Vec::new();
    let mut last_reply_started = start;
    let mut result = "completed";
    let mut end_reason = String::from("script finished; we hung up");
    let mut elapsed_frames: u64 = 0;
    let mut waiting_since = start;
    let mut speaking_ours = false;
    let mut replies_at_action = 0usize;

    loop {
        let remaining = config.timeout.saturating_sub(start.elapsed());
        let event = match tokio::time::timeout(remaining, line.events.recv()).await {
            Err(_) => {
                result = "timeout";
                end_reason = format!("no end within {} s", config.timeout.as_secs());
                line.control.hangup("test caller timeout");
                break;
            }
            Ok(None) => {
                result = "hung_up";
                end_reason = "the far end hung up".into();
                break;
            }
            Ok(Some(ev)) => ev,
        };
        let frame = match event {
            LineEvent::Audio(frame) => frame,
            LineEvent::Dtmf(_) => continue,
            LineEvent::Hangup { reason } => {
                result = "hung_up";
                end_reason = format!("the far end hung up ({reason})");
                break;
            }
        };
        elapsed_frames += 1;
        let now_ms = elapsed_frames * FRAME_DURATION.as_millis() as u64;

        // Listen: segment the far end's speech.
        match listener.push(&frame) {
            Segment::Started => {
                last_reply_started = Instant::now();
                current = Some(vec![frame.clone()]);
            }
            Segment::Continues => {
                if let Some(c) = current.as_mut() {
                    c.push(frame.clone());
                }
            }
            Segment::Ended { frames } => {
                let audio = current.take().unwrap_or_default();
                let duration_ms = frames as u64 * FRAME_DURATION.as_millis() as u64;
                heard.push(Heard {
                    at_ms: now_ms
                        .saturating_sub(duration_ms + config.reply_silence.as_millis() as u64),
                    duration_ms,
                    text: None,
                });
                if let Some(stt) = &stt {
                    pending_stt.push((heard.len() - 1, audio, stt.clone()));
                }
            }
            Segment::Silence => {}
        }

        // Speak: one frame out per frame in.
        let ours = outgoing.pop_front().unwrap_or_else(Frame::silence);
        if let Some(rec) = recorder.as_mut() {
            let ts = now_ms;
            if rec
                .push_caller(ts, &frame)
                .and(rec.push_agent(ts, &ours))
                .is_err()
            {
                recorder = None;
            }
        }
        if ours.is_silence() {
            // Silence may be dropped when the queue is full (we are catching
            // up after synthesising); speech must not be.
            let _ = line.audio_out.try_send(ours);
        } else if line.audio_out.send(ours).await.is_err() {
            result = "hung_up";
            end_reason = "the far end hung up".into();
            break;
        }

        // Next step, when it is time: after our own audio has gone out and
        // the far end has answered it (or stayed silent too long).
        if !outgoing.is_empty() {
            continue;
        }
        if speaking_ours {
            speaking_ours = false;
            waiting_since = Instant::now();
        }
        let far_end_done = !listener.speaking()
            && (listener.replies > replies_at_action
                || waiting_since.elapsed() >= config.reply_start_timeout);
        match steps.front() {
            Some(Step::Interrupt { after, .. }) => {
                if listener.speaking() && last_reply_started.elapsed() >= *after {
                    if let Some(Step::Interrupt { text, .. }) = steps.pop_front() {
                        outgoing.extend(synth(&tts, &text).await);
                        said.push(text);
                        speaking_ours = true;
                        replies_at_action = listener.replies + 1;
                    }
                } else if far_end_done {
                    // Nothing to interrupt: say it anyway.
                    if let Some(Step::Interrupt { text, .. }) = steps.pop_front() {
                        outgoing.extend(synth(&tts, &text).await);
                        said.push(text);
                        speaking_ours = true;
                        replies_at_action = listener.replies;
                    }
                }
            }
            Some(_) if far_end_done => {
                match steps.pop_front() {
                    Some(Step::Say(text)) => {
                        outgoing.extend(synth(&tts, &text).await);
                        said.push(text);
                    }
                    Some(Step::Play(frames)) => {
                        outgoing.extend(frames);
                        said.push("(audio file)".into());
                    }
                    Some(Step::Keys(keys)) => {
                        said.push(format!("(keys {keys})"));
                        line.control.send_dtmf(&keys);
                    }
                    _ => {}
                }
                speaking_ours = true;
                replies_at_action = listener.replies;
            }
            None if far_end_done && config.hang_up_at_end => {
                line.control.hangup("test caller finished its script");
                break;
            }
            _ => {}
        }
    }

    for (i, audio, stt) in pending_stt {
        if let Ok(stream) = stt.open() {
            if let Ok((text, _)) = stream.transcribe(audio, Duration::from_secs(30)).await {
                heard[i].text = Some(text);
            }
        }
    }
    let recording = match recorder {
        Some(rec) => match rec.finalize() {
            Ok(_) => config.record.as_ref().map(|p| p.display().to_string()),
            Err(_) => None,
        },
        None => None,
    };
    CallerReport {
        result,
        unsaid: steps.len(),
        duration_ms: start.elapsed().as_millis() as u64,
        said,
        heard,
        end_reason,
        recording,
    }
}

async fn synth(tts: &Arc<dyn TextToSpeech>, text: &str) -> Vec<Frame> {
    tts.synthesize(text)
        .collect(Duration::from_secs(30))
        .await
        .unwrap_or_default()
}

enum Segment {
    Silence,
    Started,
    Continues,
    Ended { frames: usize },
}

/// Energy segmentation of the far end's audio into replies.
struct Listener {
    threshold_dbfs: f32,
    hangover: usize,
    speaking: bool,
    quiet: usize,
    frames: usize,
    /// Replies heard so far.
    replies: usize,
}

impl Listener {
    fn new(config: &CallerConfig) -> Self {
        Self {
            threshold_dbfs: config.speech_dbfs,
            hangover: (config.reply_silence.as_millis() / FRAME_DURATION.as_millis()) as usize,
            speaking: false,
            quiet: 0,
            frames: 0,
            replies: 0,
        }
    }

    fn speaking(&self) -> bool {
        self.speaking
    }

    fn push(&mut self, frame: &Frame) -> Segment {
        let loud = Level::of(frame).is_above(self.threshold_dbfs);
        if !self.speaking {
            if loud {
                self.speaking = true;
                self.quiet = 0;
                self.frames = 1;
                return Segment::Started;
            }
            return Segment::Silence;
        }
        self.frames += 1;
        if loud {
            self.quiet = 0;
            return Segment::Continues;
        }
        self.quiet += 1;
        if self.quiet >= self.hangover {
            self.speaking = false;
            self.replies += 1;
            return Segment::Ended {
                frames: self.frames - self.quiet,
            };
        }
        Segment::Continues
    }
}
