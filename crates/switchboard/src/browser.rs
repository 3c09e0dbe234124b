//! Browser test calls on the voice engine: the dashboard's microphone
//! becomes an engine [`Line`], exactly like an answered SIP call, with a
//! session row and a stereo recording (caller left, agent right).
//!
//! The browser's frames arrive in bursts over a WebSocket; a pump task turns
//! them into the steady 20 ms clock the engine expects (a small
//! [`PlayoutBuffer`] absorbs the jitter), and takes one frame of the agent's
//! voice per tick towards the browser, as an RTP leg would.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_media::{Frame, StereoRecorder};
use switchboard_model::{AgentId, Clock, Direction, NewSession, SystemClock};
use switchboard_voice::{CallSetup, Line, LineControl, LineEvent, TransferResult};
use switchboard_web::test_call::{
    BrowserCallError, BrowserCallFuture, BrowserCalls, BrowserInput, BrowserLine, PcmFrame,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// Frames held before playout starts (and again after an underrun): 60 ms
/// absorbs WebSocket and worklet jitter without a noticeable delay.
const PREBUFFER: usize = 3;
/// More than this queued (the browser ran ahead, or a stall released a
/// burst) and the oldest frames are dropped to keep the delay bounded.
const MAX_QUEUED: usize = 15;
/// How often the recording's WAV header is rewritten.
const CHECKPOINT_EVERY_MS: u64 = 10_000;

/// Starts browser calls; shared by every dashboard user.
pub(crate) struct BrowserPhone {
    pub(crate) engines: crate::providers::CallEngines,
    pub(crate) recordings_dir: PathBuf,
    /// Browser calls in progress on this server.
    pub(crate) live: Arc<AtomicUsize>,
    /// At most this many at once (they share the server's speech models).
    pub(crate) max_live: usize,
}

impl BrowserCalls for BrowserPhone {
    fn start(&self, agent: AgentId, user: String) -> BrowserCallFuture {
        let engines = self.engines.clone();
        let dir = self.recordings_dir.clone();
        let live = self.live.clone();
        let max_live = self.max_live;
        Box::pin(async move {
            let store = engines.store.clone();
            let agent = store
                .agent(agent)
                .await
                .map_err(|e| BrowserCallError(format!("cannot load the agent: {e}")))?;
            if live.fetch_add(1, Ordering::SeqCst) >= max_live {
                live.fetch_sub(1, Ordering::SeqCst);
                return Err(BrowserCallError(format!(
                    "{max_live} browser test calls are already in progress on this server; try again when one ends"
                )));
            }
            let guard = LiveGuard(live);
            let now = SystemClock.now();
            let session = store
                .create_session(&NewSession {
                    agent_id: Some(agent.id),
                    direction: Direction::Inbound,
                    from: format!("browser:{user}"),
                    to: "browser test call".into(),
                    contact_id: None,
                    started_at: now,
                })
                .await
                .map_err(|e| BrowserCallError(format!("cannot record the session: {e}")))?;
            if let Err(e) = store.mark_answered(session.id, now).await {
                warn!(error = %e, "browser call: cannot mark the session answered");
            }
            let recorder = open_recording(&dir, &session.id.to_string());
            if recorder.is_some() {
                if let Err(e) = store
                    .set_recording(session.id, &format!("{}.wav", session.id))
                    .await
                {
                    warn!(error = %e, "browser call: cannot link the recording");
                }
            }
            info!(session = %session.id, agent = %agent.spec.name, %user, "browser test call started");

            let (input_tx, input_rx) = mpsc::channel(64);
            let (output_tx, output_rx) = mpsc::channel(4);
            let (ended_tx, ended_rx) = oneshot::channel();
            let (events_tx, events_rx) = mpsc::channel(64);
            let (audio_out_tx, audio_out_rx) = mpsc::channel(2);
            let (hangup_tx, hangup_rx) = watch::channel(None);
            let line = Line {
                events: events_rx,
                audio_out: audio_out_tx,
                control: Arc::new(BrowserControl { hangup: hangup_tx }),
            };
            tokio::spawn(pump(Pump {
                input: input_rx,
                output: output_tx,
                events: events_tx,
                agent_audio: audio_out_rx,
                hangup: hangup_rx,
                recorder,
            }));
            let session_id = session.id;
            let engine = engines.engine_for(&agent, session.id).await;
            let setup = CallSetup {
                session,
                agent,
                caller_id: None,
            };
            tokio::spawn(async move {
                let _guard = guard;
                let report = engine.run(setup, line).await;
                let _ = ended_tx.send(report.end_reason);
            });
            Ok(BrowserLine {
                session_id,
                input: input_tx,
                output: output_rx,
                ended: ended_rx,
            })
        })
    }
}

/// Counts a browser call as live until dropped.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn open_recording(
    dir: &std::path::Path,
    id: &str,
) -> Option<StereoRecorder<std::io::BufWriter<std::fs::File>>> {
    let path = dir.join(format!("{id}.wav"));
    let opened = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::File::create(&path))
        .map_err(switchboard_media::MediaError::from)
        .and_then(|f| StereoRecorder::new(std::io::BufWriter::new(f)));
    match opened {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "browser call: not recorded (fix the recordings directory)");
            None
        }
    }
}

struct BrowserControl {
    hangup: watch::Sender<Option<String>>,
}

impl LineControl for BrowserControl {
    fn hangup(&self, reason: &str) {
        self.hangup.send_replace(Some(reason.to_string()));
    }

    fn transfer(&self, _target: &str) -> switchboard_voice::TransferFuture {
        // There is no phone leg to bridge: the engine falls back to logged
        // escalation, and the handoff still reaches Salesforce.
        Box::pin(async {
            TransferResult::Failed {
                reason: "a browser test call cannot be bridged to a phone".into(),
            }
        })
    }
}

/// Turns bursty browser frames into a steady 20 ms playout, without sleeping:
/// [`PlayoutBuffer::push`] on arrival, [`PlayoutBuffer::tick`] every 20 ms.
#[derive(Debug, Default)]
pub(crate) struct PlayoutBuffer {
    queue: VecDeque<PcmFrame>,
    buffering: bool,
    /// Frames dropped because too many were queued.
    pub(crate) dropped: u64,
    /// Ticks that found nothing to play (silence was played).
    pub(crate) underruns: u64,
}

impl PlayoutBuffer {
    pub(crate) fn new() -> Self {
        Self {
            buffering: true,
            ..Self::default()
        }
    }

    pub(crate) fn push(&mut self, frame: PcmFrame) {
        self.queue.push_back(frame);
        while self.queue.len() > MAX_QUEUED {
            self.queue.pop_front();
            self.dropped += 1;
        }
    }

    /// The frame to play now: silence while (re)filling the prebuffer.
    pub(crate) fn tick(&mut self) -> Frame {
        if self.buffering {
            if self.queue.len() < PREBUFFER {
                return Frame::silence();
            }
            self.buffering = false;
        }
        match self.queue.pop_front() {
            Some(samples) => Frame::new(samples),
            None => {
                self.underruns += 1;
                self.buffering = true;
                Frame::silence()
            }
        }
    }
}

struct Pump {
    input: mpsc::Receiver<BrowserInput>,
    output: mpsc::Sender<PcmFrame>,
    events: mpsc::Sender<LineEvent>,
    agent_audio: mpsc::Receiver<Frame>,
    hangup: watch::Receiver<Option<String>>,
    recorder: Option<StereoRecorder<std::io::BufWriter<std::fs::File>>>,
}

async fn pump(mut p: Pump) {
    let mut buffer = PlayoutBuffer::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut ts_ms = 0u64;
    let mut last_checkpoint = 0u64;
    let end = loop {
        tokio::select! {
            input = p.input.recv() => match input {
                Some(BrowserInput::Audio(frame)) => buffer.push(frame),
                Some(BrowserInput::Dtmf(d)) => {
                    if p.events.send(LineEvent::Dtmf(d)).await.is_err() { break None; }
                }
                Some(BrowserInput::Hangup) | None => break Some("caller hung up".to_string()),
            },
            changed = p.hangup.changed() => {
                if changed.is_err() { break None; }
                if p.hangup.borrow().is_some() { break None; }
            }
            _ = tick.tick() => {
                let caller = buffer.tick();
                let agent = p.agent_audio.try_recv().ok();
                if let Some(rec) = &mut p.recorder {
                    let ours = agent.clone().unwrap_or_else(Frame::silence);
                    let ok = rec.push_caller(ts_ms, &caller).and_then(|_| rec.push_agent(ts_ms, &ours));
                    let ok = ok.and_then(|_| {
                        if ts_ms - last_checkpoint >= CHECKPOINT_EVERY_MS {
                            last_checkpoint = ts_ms;
                            rec.checkpoint()
                        } else {
                            Ok(())
                        }
                    });
                    if let Err(e) = ok {
                        warn!(error = %e, "browser call: recording stopped (disk full?)");
                        p.recorder = None;
                    }
                }
                ts_ms += 20;
                if let Some(frame) = agent {
                    // A slow browser loses audio rather than delaying the call.
                    let _ = p.output.try_send(*frame.samples());
                }
                if p.events.send(LineEvent::Audio(caller)).await.is_err() { break None; }
            }
        }
    };
    if let Some(reason) = end {
        let _ = p.events.send(LineEvent::Hangup { reason }).await;
    }
    if let Some(rec) = p.recorder.take() {
        if let Err(e) = rec.finalize() {
            warn!(error = %e, "browser call: the recording could not be finalised");
        }
    }
    if buffer.dropped > 0 || buffer.underruns > 0 {
        info!(
            dropped = buffer.dropped,
            underruns = buffer.underruns,
            "browser call: microphone jitter"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> PcmFrame {
        [v; 160]
    }

    #[test]
    fn playout_waits_for_the_prebuffer_then_plays_in_order() {
        let mut b = PlayoutBuffer::new();
        b.push(frame(1));
        b.push(frame(2));
        assert_eq!(b.tick(), Frame::silence(), "still filling");
        b.push(frame(3));
        assert_eq!(b.tick().samples()[0], 1);
        assert_eq!(b.tick().samples()[0], 2);
        assert_eq!(b.tick().samples()[0], 3);
        assert_eq!(b.underruns, 0);
        // Empty: silence, counted once, and it refills before playing again.
        assert_eq!(b.tick(), Frame::silence());
        assert_eq!(b.underruns, 1);
        b.push(frame(4));
        assert_eq!(b.tick(), Frame::silence());
        assert_eq!(b.underruns, 1, "refilling is not an underrun");
        b.push(frame(5));
        b.push(frame(6));
        assert_eq!(b.tick().samples()[0], 4);
    }

    #[test]
    fn a_burst_is_capped_by_dropping_the_oldest() {
        let mut b = PlayoutBuffer::new();
        for i in 0..(MAX_QUEUED as i16 + 5) {
            b.push(frame(i));
        }
        assert_eq!(b.dropped, 5);
        assert_eq!(b.tick().samples()[0], 5, "the oldest five went");
    }
}
