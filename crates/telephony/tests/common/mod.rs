//! A `Telephony` on an ephemeral port with a temp SQLite store (one agent,
//! its number, a loopback trunk), and a `CallHandler` that reports what it
//! heard and can play a tone back. Shared by the robustness, softphone and
//! netem tests.

#![allow(dead_code)] // reason: each test binary uses part of the harness

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use switchboard_model::{AgentInput, Region, Session, SessionStatus, TrunkInput, E164};
use switchboard_rtp::{Frame, MediaConfig, MediaEvent, PortRange};
use switchboard_store::{testing::sqlite_store, SessionFilter, Store};
use switchboard_telephony::{ActiveCall, CallHandler, SipConfig, Telephony};
use tokio::sync::mpsc;

pub(crate) const NUMBER: &str = "+14155550100";

/// What the handler saw of one call.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) frames: u64,
    /// Frames louder than -40 dBFS.
    pub(crate) loud_frames: u64,
    pub(crate) packets_in: u64,
    pub(crate) packets_out: u64,
    pub(crate) rejected: u64,
    pub(crate) concealed: u64,
    pub(crate) lost: i64,
    pub(crate) ended: Option<String>,
    pub(crate) recording: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Behaviour {
    /// Hang up after this long (else listen until the caller hangs up).
    pub(crate) hangup_after: Option<Duration>,
    /// Play a 1 kHz tone to the caller.
    pub(crate) play_tone: bool,
}

struct Handler {
    behaviour: Behaviour,
    reports: mpsc::UnboundedSender<Report>,
}

/// 20 ms of a 1 kHz tone at about -12 dBFS, phase-continuous.
pub(crate) fn tone_frame(n: u64) -> Frame {
    let mut f = Frame::silence();
    for (i, s) in f.samples_mut().iter_mut().enumerate() {
        let t = (n * 160 + i as u64) as f64 / 8000.0;
        *s = ((t * 1000.0 * 2.0 * std::f64::consts::PI).sin() * 8000.0) as i16;
    }
    f
}

impl CallHandler for Handler {
    fn handle(
        &self,
        mut call: ActiveCall,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let b = self.behaviour;
        let reports = self.reports.clone();
        Box::pin(async move {
            let media = call.media.handle();
            let mut ended = call.control.ended();
            let start = tokio::time::Instant::now();
            let hangup_at = start + b.hangup_after.unwrap_or(Duration::from_secs(3600));
            let give_up = start + Duration::from_secs(60);
            let mut report = Report {
                recording: call.info.recording.clone(),
                ..Report::default()
            };
            let mut hung_up = false;
            let mut sent = 0u64;
            loop {
                tokio::select! {
                    ev = call.media.events.recv() => match ev {
                        Some(MediaEvent::Audio(frame)) => {
                            report.frames += 1;
                            if switchboard_media::Level::of(&frame).is_above(-40.0) {
                                report.loud_frames += 1;
                            }
                            // One frame out per frame in keeps the queue short.
                            if b.play_tone && call.media.audio_out.try_send(tone_frame(sent)).is_ok() {
                                sent += 1;
                            }
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = tokio::time::sleep_until(hangup_at), if !hung_up => {
                        hung_up = true;
                        call.control.hangup("agent hung up");
                    }
                    r = ended.changed() => {
                        if r.is_err() || ended.borrow().is_some() { break }
                    }
                    _ = tokio::time::sleep_until(give_up) => break,
                }
            }
            let stats = media.stats();
            report.packets_in = stats.packets_in;
            report.packets_out = stats.packets_out;
            report.rejected = stats.rejected;
            report.concealed = stats.concealed;
            report.lost = stats.lost;
            report.ended = call.control.ended().borrow().clone();
            reports.send(report).ok();
        })
    }
}

pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: Store,
    pub(crate) tel: Telephony,
    pub(crate) reports: mpsc::UnboundedReceiver<Report>,
}

/// A server on `ip:0` whose trunk admits `trunk_cidr`.
pub(crate) async fn harness(ip: IpAddr, trunk_cidr: &str, behaviour: Behaviour) -> Result<Harness> {
    harness_with(ip, trunk_cidr, behaviour, |_| {}).await
}

/// As [`harness`], with the configuration adjusted by `tweak`.
pub(crate) async fn harness_with(
    ip: IpAddr,
    trunk_cidr: &str,
    behaviour: Behaviour,
    tweak: impl FnOnce(&mut SipConfig),
) -> Result<Harness> {
    let dir = tempfile::tempdir()?;
    let store = sqlite_store(dir.path()).await?;
    let agent = store
        .create_agent(
            &AgentInput {
                name: "Support".into(),
                max_concurrent_calls: Some(50),
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    store
        .add_number(&E164::parse_strict(NUMBER)?, Some(agent.id), "main")
        .await?;
    store
        .create_trunk(
            &TrunkInput {
                name: "local".into(),
                host: ip.to_string(),
                allowed_cidrs: vec![trunk_cidr.into()],
                ..Default::default()
            }
            .validate(Region::default())?,
        )
        .await?;
    let mut cfg = SipConfig {
        listen: SocketAddr::new(ip, 0),
        media: MediaConfig {
            bind_ip: ip,
            ports: PortRange::new(30_000, 39_999),
            ..Default::default()
        },
        recordings_dir: dir.path().join("recordings"),
        ..Default::default()
    };
    tweak(&mut cfg);
    let (tx, reports) = mpsc::unbounded_channel();
    let handler = Arc::new(Handler {
        behaviour,
        reports: tx,
    });
    let tel = Telephony::start(store.clone(), cfg, handler).await?;
    Ok(Harness {
        dir,
        store,
        tel,
        reports,
    })
}

impl Harness {
    pub(crate) async fn next_report(&mut self, within: Duration) -> Result<Report> {
        tokio::time::timeout(within, self.reports.recv())
            .await
            .context("no call reached the handler")?
            .context("handler channel closed")
    }

    /// Waits (bounded) until `expected` sessions exist and all have ended.
    pub(crate) async fn ended_sessions(&self, expected: usize) -> Result<Vec<Session>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let all = self
                .store
                .list_sessions(&SessionFilter {
                    limit: 100,
                    ..Default::default()
                })
                .await?;
            if all.len() >= expected && all.iter().all(|s| s.status == SessionStatus::Ended) {
                return Ok(all);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("sessions did not end: {all:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The WAV file's peak absolute sample per channel (left, right).
pub(crate) fn wav_peaks(path: &std::path::Path) -> Result<(i16, i16, u32)> {
    let mut reader = hound::WavReader::open(path)?;
    let channels = reader.spec().channels;
    let mut peaks = (0i16, 0i16);
    let mut frames = 0u32;
    for (i, s) in reader.samples::<i16>().enumerate() {
        let s = s?.saturating_abs();
        if i % usize::from(channels) == 0 {
            peaks.0 = peaks.0.max(s);
            frames += 1;
        } else {
            peaks.1 = peaks.1.max(s);
        }
    }
    Ok((peaks.0, peaks.1, frames))
}
