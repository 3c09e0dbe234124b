//! Resilience wrappers: [`FallbackStt`] and [`FallbackTts`] put a chain of
//! providers behind the same traits.
//!
//! Policy, for every request (one STT turn, one TTS utterance):
//!
//! 1. try the first provider;
//! 2. if it fails with an error that [`SpeechError::is_retryable`], wait
//!    [`FallbackConfig::retry_delay`] and try it once more;
//! 3. otherwise, or if the retry fails too, hand the request to the next
//!    provider (same rule), and so on; the last error is reported when
//!    every provider failed.
//!
//! A provider that does not answer in time counts as failed: the wrapper
//! enforces its own first-result deadlines ([`FallbackConfig::stt_final_timeout`]
//! after `Finish`, [`FallbackConfig::tts_first_frame_timeout`] after the
//! request), so a hanging provider costs a bounded delay, never dead air.
//! A provider that hit such a deadline is not retried: it would likely hang
//! again and the caller is already waiting.
//!
//! STT: the wrapper keeps the turn's audio (at most
//! [`FallbackConfig::max_replay`], 60 s by default) and replays it, plus
//! `Finish` if it was already sent, into the retry or the next provider.
//! Partials are forwarded from whichever provider is current. Past the
//! replay bound the audio is no longer kept and a failure is final.
//!
//! TTS: a retry or fallback is only possible before the first frame was
//! delivered; once the caller has heard audio, an error ends the utterance
//! (replaying would repeat words). After the first frame the same timeout
//! bounds every gap between frames.
//!
//! [`FallbackStats`] counts retries, fallbacks and which provider served;
//! each fallback is also a `tracing` warning naming both providers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{
    runtime, Frame, SpeechError, SpeechToText, SttEvent, SttInput, SttStream, TextToSpeech,
    TtsStream, STT_CHANNEL_INPUTS, TTS_CHANNEL_FRAMES,
};

/// Timeouts and bounds of the fallback wrappers.
#[derive(Clone, Debug)]
pub struct FallbackConfig {
    /// Pause before retrying the same provider.
    pub retry_delay: Duration,
    /// How long after `Finish` a provider has to deliver the final
    /// transcript.
    pub stt_final_timeout: Duration,
    /// How long a TTS provider has to deliver its first frame (and, after
    /// that, each next one).
    pub tts_first_frame_timeout: Duration,
    /// Audio kept per turn for replay into another provider.
    pub max_replay: Duration,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            retry_delay: Duration::from_millis(200),
            stt_final_timeout: Duration::from_secs(5),
            tts_first_frame_timeout: Duration::from_secs(3),
            max_replay: Duration::from_secs(60),
        }
    }
}

/// What the wrapper did so far, summed over every request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FallbackStats {
    /// Requests retried on the same provider.
    pub retries: u64,
    /// Requests handed to the next provider.
    pub fallbacks: u64,
    /// Requests every provider failed.
    pub failures: u64,
    /// Requests served, per provider in chain order: `(name, count)`.
    pub served: Vec<(String, u64)>,
}

/// Shared counters behind [`FallbackStats`].
#[derive(Debug)]
struct Counters {
    retries: AtomicU64,
    fallbacks: AtomicU64,
    failures: AtomicU64,
    served: Vec<AtomicU64>,
}

impl Counters {
    fn new(providers: usize) -> Self {
        Counters {
            retries: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            served: (0..providers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn snapshot(&self, names: impl Iterator<Item = String>) -> FallbackStats {
        FallbackStats {
            retries: self.retries.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            served: names
                .zip(&self.served)
                .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// Which provider to try next, given how the current attempt failed.
#[derive(Debug)]
struct Plan {
    providers: usize,
    index: usize,
    retried: bool,
}

/// The next step after a failure.
#[derive(Debug, PartialEq)]
enum Next {
    Retry,
    Fallback(usize),
    GiveUp,
}

impl Plan {
    fn new(providers: usize) -> Self {
        Plan {
            providers,
            index: 0,
            retried: false,
        }
    }

    /// `may_retry`: the error is retryable and not a missed deadline.
    fn after_failure(&mut self, may_retry: bool) -> Next {
        if may_retry && !self.retried {
            self.retried = true;
            return Next::Retry;
        }
        if self.index + 1 < self.providers {
            self.index += 1;
            self.retried = false;
            return Next::Fallback(self.index);
        }
        Next::GiveUp
    }
}

/// A chain of providers used as one: [`FallbackStt`] or [`FallbackTts`].
pub struct Fallback<P: ?Sized> {
    providers: Vec<Arc<P>>,
    name: String,
    config: FallbackConfig,
    counters: Arc<Counters>,
}

/// A chain of speech-to-text providers used as one.
pub type FallbackStt = Fallback<dyn SpeechToText>;
/// A chain of text-to-speech providers used as one.
pub type FallbackTts = Fallback<dyn TextToSpeech>;

/// A provider a [`Fallback`] chain can hold: it has a name.
pub trait ChainLink {
    /// The provider's short name.
    fn link_name(&self) -> &str;
}

impl ChainLink for dyn SpeechToText {
    fn link_name(&self) -> &str {
        self.name()
    }
}

impl ChainLink for dyn TextToSpeech {
    fn link_name(&self) -> &str {
        self.name()
    }
}

impl<P: ?Sized + ChainLink> Fallback<P> {
    /// A chain trying `providers` in order, with default timeouts.
    pub fn new(providers: Vec<Arc<P>>) -> Self {
        Self::with_config(providers, FallbackConfig::default())
    }

    /// A chain with explicit timeouts.
    pub fn with_config(providers: Vec<Arc<P>>, config: FallbackConfig) -> Self {
        let name = providers
            .iter()
            .map(|p| p.link_name())
            .collect::<Vec<_>>()
            .join(">");
        Fallback {
            counters: Arc::new(Counters::new(providers.len())),
            providers,
            name,
            config,
        }
    }

    /// Retries, fallbacks and who served, so far.
    pub fn stats(&self) -> FallbackStats {
        self.counters
            .snapshot(self.providers.iter().map(|p| p.link_name().to_owned()))
    }
}

// By hand: a derive would ask `P: Clone`, which no `dyn` provider is.
impl<P: ?Sized> Clone for Fallback<P> {
    fn clone(&self) -> Self {
        Fallback {
            providers: self.providers.clone(),
            name: self.name.clone(),
            config: self.config.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<P: ?Sized> std::fmt::Debug for Fallback<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl SpeechToText for FallbackStt {
    /// The chain, e.g. `deepgram>whisper`.
    fn name(&self) -> &str {
        &self.name
    }

    fn open(&self) -> Result<SttStream, SpeechError> {
        let rt = runtime()?;
        let (audio_tx, audio_rx) = mpsc::channel(STT_CHANNEL_INPUTS);
        let (events_tx, events_rx) = mpsc::channel(16);
        let this = self.clone();
        rt.spawn(async move { this.run(audio_rx, events_tx).await });
        Ok(SttStream {
            audio: audio_tx,
            events: events_rx,
        })
    }
}

impl FallbackStt {
    async fn run(
        &self,
        mut audio: mpsc::Receiver<SttInput>,
        events: mpsc::Sender<Result<SttEvent, SpeechError>>,
    ) {
        let max_frames = (self.config.max_replay.as_millis()
            / switchboard_media::FRAME_DURATION.as_millis().max(1))
            as usize;
        let mut kept: Vec<Frame> = Vec::new();
        let mut replayable = true;
        let mut finished = false;
        let mut plan = Plan::new(self.providers.len());
        if self.providers.is_empty() {
            let _ = events.send(Err(SpeechError::Closed)).await;
            return;
        }
        let mut attempt = self.attempt(plan.index, &kept, finished);
        loop {
            let failure = match &mut attempt {
                Err(e) => Some(std::mem::replace(e, SpeechError::Closed)),
                Ok(current) => {
                    let deadline = current
                        .deadline
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3_600));
                    tokio::select! {
                        biased;
                        _ = events.closed() => return,
                        event = current.stream.events.recv() => match event {
                            Some(Ok(SttEvent::Partial { text })) => {
                                if events.send(Ok(SttEvent::Partial { text })).await.is_err() {
                                    return;
                                }
                                None
                            }
                            Some(Ok(fin @ SttEvent::Final { .. })) => {
                                if let Some(n) = self.counters.served.get(plan.index) {
                                    n.fetch_add(1, Ordering::Relaxed);
                                }
                                let _ = events.send(Ok(fin)).await;
                                return;
                            }
                            Some(Err(e)) => Some(e),
                            None => Some(SpeechError::Closed),
                        },
                        _ = tokio::time::sleep_until(deadline), if current.deadline.is_some() => {
                            current.timed_out = true;
                            Some(SpeechError::Timeout { provider: "stt fallback" })
                        }
                        permit = current.stream.audio.reserve(), if !current.pending.is_empty() && !current.gone => {
                            match (permit, current.pending.pop_front()) {
                                (Ok(permit), Some(input)) => permit.send(input),
                                // The provider stopped reading: it fails (or
                                // finishes) through its events.
                                _ => {
                                    current.gone = true;
                                    current.pending.clear();
                                }
                            }
                            None
                        }
                        input = audio.recv(), if !finished && current.pending.len() < max_frames + STT_CHANNEL_INPUTS => {
                            match input {
                                None => return, // the caller abandoned the turn
                                Some(SttInput::Audio(frame)) => {
                                    if replayable {
                                        if kept.len() < max_frames {
                                            kept.push(frame.clone());
                                        } else {
                                            replayable = false;
                                            kept = Vec::new();
                                        }
                                    }
                                    if !current.gone {
                                        current.pending.push_back(SttInput::Audio(frame));
                                    }
                                }
                                Some(SttInput::Finish) => {
                                    finished = true;
                                    // Counted from the caller's Finish, not
                                    // from its hand-over: a provider that
                                    // stopped reading audio must time out too.
                                    current.deadline =
                                        Some(Instant::now() + self.config.stt_final_timeout);
                                    if !current.gone {
                                        current.pending.push_back(SttInput::Finish);
                                    }
                                }
                            }
                            None
                        }
                    }
                }
            };
            let Some(error) = failure else { continue };
            let timed_out = matches!(&attempt, Ok(a) if a.timed_out);
            let failed = self.providers[plan.index].name().to_owned();
            let next = if replayable {
                plan.after_failure(error.is_retryable() && !timed_out)
            } else {
                Next::GiveUp
            };
            match next {
                Next::Retry => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(provider = %failed, error = %error, "stt failed, retrying once");
                    drop(attempt);
                    tokio::select! {
                        _ = events.closed() => return,
                        _ = tokio::time::sleep(self.config.retry_delay) => {}
                    }
                }
                Next::Fallback(index) => {
                    self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        failed = %failed,
                        next = %self.providers[index].name(),
                        error = %error,
                        "stt provider failed, falling back"
                    );
                    drop(attempt);
                }
                Next::GiveUp => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    let _ = events.send(Err(error)).await;
                    return;
                }
            }
            attempt = self.attempt(plan.index, &kept, finished);
        }
    }

    /// Opens provider `index` and queues the turn so far for it.
    fn attempt(
        &self,
        index: usize,
        kept: &[Frame],
        finished: bool,
    ) -> Result<Attempt, SpeechError> {
        let stream = self.providers[index].open()?;
        let mut pending: VecDeque<SttInput> = kept.iter().cloned().map(SttInput::Audio).collect();
        if finished {
            pending.push_back(SttInput::Finish);
        }
        let deadline = finished.then(|| Instant::now() + self.config.stt_final_timeout);
        Ok(Attempt {
            stream,
            pending,
            deadline,
            timed_out: false,
            gone: false,
        })
    }
}

/// One provider's try at the turn.
#[derive(Debug)]
struct Attempt {
    stream: SttStream,
    /// Inputs not yet handed to the provider (a replay, then live audio).
    pending: VecDeque<SttInput>,
    /// When the final transcript is due: set once the caller has finished.
    deadline: Option<Instant>,
    timed_out: bool,
    /// The provider dropped its audio receiver.
    gone: bool,
}

impl TextToSpeech for FallbackTts {
    /// The chain, e.g. `elevenlabs>piper`.
    fn name(&self) -> &str {
        &self.name
    }

    fn synthesize(&self, text: &str) -> TtsStream {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return TtsStream::failed(e),
        };
        let (tx, rx) = mpsc::channel(TTS_CHANNEL_FRAMES);
        let this = self.clone();
        let text = text.to_owned();
        rt.spawn(async move {
            tokio::select! {
                _ = tx.closed() => {} // cancelled: dropping the provider's stream cancels it
                _ = this.run(&text, &tx) => {}
            }
        });
        TtsStream { frames: rx }
    }
}

impl FallbackTts {
    async fn run(&self, text: &str, tx: &mpsc::Sender<Result<Frame, SpeechError>>) {
        let limit = self.config.tts_first_frame_timeout;
        let mut plan = Plan::new(self.providers.len());
        if self.providers.is_empty() {
            let _ = tx.send(Err(SpeechError::Closed)).await;
            return;
        }
        loop {
            let mut stream = self.providers[plan.index].synthesize(text);
            let error = match tokio::time::timeout(limit, stream.frames.recv()).await {
                Ok(Some(Ok(first))) => {
                    if let Some(n) = self.counters.served.get(plan.index) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    if tx.send(Ok(first)).await.is_err() {
                        return;
                    }
                    // Delivered: from here on an error ends the utterance.
                    loop {
                        match tokio::time::timeout(limit, stream.frames.recv()).await {
                            Ok(Some(Ok(frame))) => {
                                if tx.send(Ok(frame)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(Some(Err(e))) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                            Ok(None) => return,
                            Err(_) => {
                                let _ = tx
                                    .send(Err(SpeechError::Timeout {
                                        provider: "tts fallback",
                                    }))
                                    .await;
                                return;
                            }
                        }
                    }
                }
                // Nothing to say (empty text): a success.
                Ok(None) => {
                    if let Some(n) = self.counters.served.get(plan.index) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Ok(Some(Err(e))) => (e, false),
                Err(_) => (
                    SpeechError::Timeout {
                        provider: "tts fallback",
                    },
                    true,
                ),
            };
            drop(stream);
            let (error, timed_out) = error;
            let failed = self.providers[plan.index].name().to_owned();
            match plan.after_failure(error.is_retryable() && !timed_out) {
                Next::Retry => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(provider = %failed, error = %error, "tts failed, retrying once");
                    tokio::time::sleep(self.config.retry_delay).await;
                }
                Next::Fallback(index) => {
                    self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        failed = %failed,
                        next = %self.providers[index].name(),
                        error = %error,
                        "tts provider failed, falling back"
                    );
                }
                Next::GiveUp => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(Err(error)).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_retries_once_then_moves_on() {
        let mut plan = Plan::new(2);
        assert_eq!(plan.after_failure(true), Next::Retry);
        assert_eq!(plan.after_failure(true), Next::Fallback(1));
        assert_eq!(plan.after_failure(false), Next::GiveUp);

        let mut plan = Plan::new(3);
        assert_eq!(plan.after_failure(false), Next::Fallback(1));
        assert_eq!(plan.after_failure(true), Next::Retry);
        assert_eq!(plan.after_failure(true), Next::Fallback(2));
        assert_eq!(plan.after_failure(true), Next::Retry);
        assert_eq!(plan.after_failure(true), Next::GiveUp);
    }
}
