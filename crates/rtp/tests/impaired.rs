//! Calls through a lossy, jittery, reordering network: the userspace
//! impairment of `common::impair` (netem's `loss 5% delay 40ms 40ms
//! duplicate 1%`) between two media legs, and between a caller and a
//! bridge.
//!
//! Each side plays a labelled signal: frame `i` is two tones whose DFT bins
//! spell `i` (four bits each), so the receiver can tell, frame by frame,
//! which frame it played, whether it came at full level (real audio) or as
//! a faded repeat or silence (concealment), and whether frames came out in
//! sending order. Run with `--nocapture` to see the numbers.

mod common;

use std::collections::HashSet;
use std::f64::consts::PI;
use std::path::Path;
use std::time::Duration;

use common::impair::{through, DirectionStats, ImpairedLink, Impairment};
use common::*;
use switchboard_media::{Frame, FRAME_SAMPLES};
use switchboard_rtp::{bridge, BridgeEnd, BridgeSide, MediaEvent, MediaHandle, MediaLeg};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// Frames of signal each side plays: 5 s.
const SIGNAL_FRAMES: usize = 250;
/// Silence before the signal: the jitter buffers adapt to the jitter on the
/// legs' silence packets first, as they would on a ringing call.
const SETTLE: Duration = Duration::from_secs(1);
/// After the signal: the longest delay (80 ms) plus the deepest jitter
/// buffer (200 ms), and some.
const TAIL: Duration = Duration::from_millis(600);
/// A leg must stop within this (generous under load).
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// Share of the signal the receiver must play at full level, and share of
/// its ticks during the signal that must be real audio, not concealment.
const MIN_HEARD: f64 = 0.85;

/// First DFT bin of the low tone (400 Hz) and of the high tone (1300 Hz);
/// each tone takes one of 16 bins 50 Hz apart, a whole number of cycles per
/// 20 ms, so the 16 candidates are orthogonal over one frame.
const LOW_BIN: usize = 8;
const HIGH_BIN: usize = 26;
const TONE_AMPLITUDE: f64 = 6000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_loss_jitter_and_reordering_completes_and_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_wav, b_wav) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let engine = engine(24_000, 4);
    let link = ImpairedLink::bind(Impairment::netem_like(1), Impairment::netem_like(2)).await;

    // A offers, B answers; each SDP is rewritten to the proxy's face on
    // the way, as an SBC in the media path would.
    let (pending, offer) = engine.offer().await.expect("offer");
    let (b_end, answer) = engine
        .answer(&through(&offer, link.b_side()))
        .await
        .expect("answer");
    let a_end = pending
        .accept_answer(&through(&answer, link.a_side()))
        .expect("accept");
    let link = link.start(a_end.local_addr(), b_end.local_addr());

    let started = Instant::now();
    let a = Call::start(a_end.start(Some(a_wav.clone())));
    let b = Call::start(b_end.start(Some(b_wav.clone())));
    let (a_played, b_played) = tokio::join!(a.play(), b.play());
    assert_eq!((a_played, b_played), (SIGNAL_FRAMES, SIGNAL_FRAMES));
    tokio::time::sleep(TAIL).await;

    // Both hang up: each leg ends, its recording finalised.
    let (a_handle, b_handle) = (a.handle.clone(), b.handle.clone());
    a_handle.stop();
    b_handle.stop();
    let (a_frames, b_frames) = tokio::join!(a.finish(), b.finish());
    let elapsed = started.elapsed();
    let network = link.stop().await;
    assert_eq!(engine.ports_in_use(), 0);

    for (name, net) in [("a → b", network.a_to_b), ("b → a", network.b_to_a)] {
        report_network(name, &net);
        assert_impaired(name, &net);
    }
    let a_gaps = check_recording("a", &a_wav, &a_handle, elapsed, a_frames.len());
    let b_gaps = check_recording("b", &b_wav, &b_handle, elapsed, b_frames.len());
    check_receiver("b hears a", &b_handle, &b_frames, elapsed, a_gaps);
    check_receiver("a hears b", &a_handle, &a_frames, elapsed, b_gaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_call_through_loss_and_jitter_completes_and_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = |name: &str| dir.path().join(name);
    let (a_wav, x_wav, c_wav) = (wav("a.wav"), wav("x.wav"), wav("c.wav"));
    let engine = engine(24_100, 8);
    let link = ImpairedLink::bind(Impairment::netem_like(3), Impairment::netem_like(4)).await;

    // The caller A reaches our leg X through the impaired network; our leg
    // Y reaches the rep C directly. X and Y are then bridged.
    let (pending_a, offer) = engine.offer().await.expect("offer");
    let (x_end, answer) = engine
        .answer(&through(&offer, link.b_side()))
        .await
        .expect("answer");
    let a_end = pending_a
        .accept_answer(&through(&answer, link.a_side()))
        .expect("accept");
    let link = link.start(a_end.local_addr(), x_end.local_addr());
    let (pending_y, offer) = engine.offer().await.expect("offer");
    let (c_end, answer) = engine.answer(&offer).await.expect("answer");
    let y_end = pending_y.accept_answer(&answer).expect("accept");

    let started = Instant::now();
    let a = Call::start(a_end.start(Some(a_wav.clone())));
    let c = Call::start(c_end.start(Some(c_wav.clone())));
    let bridged = bridge(x_end.start(Some(x_wav.clone())), y_end.start(None));
    bridged.running().await;
    let (a_played, c_played) = tokio::join!(a.play(), c.play());
    assert_eq!((a_played, c_played), (SIGNAL_FRAMES, SIGNAL_FRAMES));
    tokio::time::sleep(TAIL).await;

    // The rep hangs up: Y stops, which ends the bridge and X with it; then
    // the caller's side ends.
    let (x_handle, y_handle) = bridged.legs();
    let (a_handle, c_handle) = (a.handle.clone(), c.handle.clone());
    c_handle.stop();
    y_handle.stop();
    let end = timeout(STOP_WITHIN, bridged.wait())
        .await
        .expect("the bridge ends");
    assert_eq!(end, BridgeEnd::Stopped(BridgeSide::B));
    let bridge_elapsed = started.elapsed();
    assert!(x_handle.is_closed() && y_handle.is_closed());
    a_handle.stop();
    let (a_frames, c_frames) = tokio::join!(a.finish(), c.finish());
    let elapsed = started.elapsed();
    let network = link.stop().await;
    assert_eq!(engine.ports_in_use(), 0);

    for (name, net) in [("a → x", network.a_to_b), ("x → a", network.b_to_a)] {
        report_network(name, &net);
        assert_impaired(name, &net);
    }
    // Each end's jitter buffer puts right what the network and the
    // (bufferless) bridge let through.
    let a_gaps = check_recording("a (bridged)", &a_wav, &a_handle, elapsed, a_frames.len());
    let c_gaps = check_recording("c (bridged)", &c_wav, &c_handle, elapsed, c_frames.len());
    // What C heard of A is what reached X through the network: the
    // bridge forwards every packet it accepts, and X to C is lossless.
    let c_heard_a = check_receiver(
        "c hears a over the bridge",
        &c_handle,
        &c_frames,
        elapsed,
        a_gaps,
    );
    check_receiver(
        "a hears c over the bridge",
        &a_handle,
        &a_frames,
        elapsed,
        c_gaps,
    );

    // The bridged leg's recording spans the call: the caller as it arrived
    // (left), the rep as forwarded to the caller (right).
    let x = x_handle.stats();
    assert!(
        x.ended && !x.recording && x.recording_error.is_none(),
        "{x:?}"
    );
    let (left, right) = read_wav(&x_wav);
    let secs = left.len() as f64 / 8000.0;
    let (from_a, from_c) = (hear_unaligned(&left), hear_unaligned(&right));
    eprintln!(
        "bridge leg x: {secs:.2} s recorded of {:.2} s bridged; caller (left) {} of {SIGNAL_FRAMES} frames \
         ({:.1} % of the {c_heard_a} c heard) in order {}, rep (right) {} in order {}; x lost {} jitter {:.1} ms",
        bridge_elapsed.as_secs_f64(),
        from_a.distinct,
        100.0 * from_a.distinct as f64 / c_heard_a.max(1) as f64,
        from_a.backwards == 0,
        from_c.distinct,
        from_c.backwards == 0,
        x.lost,
        x.jitter_ms,
    );
    let expected = bridge_elapsed.as_secs_f64();
    assert!(
        secs > expected * 0.9 - 0.5 && secs < expected + 0.5,
        "x recorded {secs:.2} s of {expected:.2} s"
    );
    // The recorder's reorder window puts overtaken packets back in their
    // slots: the caller's side keeps nearly all that reached X (runs show
    // 237 of 250, all that C heard), only the network's loss missing.
    assert!(
        from_a.distinct as f64 >= MIN_HEARD * SIGNAL_FRAMES as f64,
        "caller on x's left: {from_a:?}"
    );
    assert!(
        from_a.distinct as f64 >= 0.9 * c_heard_a as f64,
        "caller on x's left: {from_a:?}, c heard {c_heard_a}"
    );
    assert_eq!(from_a.backwards, 0, "caller on x's left: {from_a:?}");
    assert!(
        from_c.distinct as f64 >= MIN_HEARD * SIGNAL_FRAMES as f64,
        "rep on x's right: {from_c:?}"
    );
}

/// One running leg as a user of the crate drives it: a task consuming its
/// events (as the voice engine would) and its audio input.
struct Call {
    handle: MediaHandle,
    audio_out: mpsc::Sender<Frame>,
    listener: JoinHandle<Vec<Frame>>,
}

impl Call {
    fn start(mut leg: MediaLeg) -> Call {
        let handle = leg.handle();
        let audio_out = leg.audio_out.clone();
        let listener = tokio::spawn(async move {
            let mut frames = Vec::with_capacity(512);
            // Ends when the leg's task ends and drops the sender.
            while let Some(event) = leg.events.recv().await {
                if let MediaEvent::Audio(frame) = event {
                    frames.push(frame);
                }
            }
            frames
        });
        Call {
            handle,
            audio_out,
            listener,
        }
    }

    /// Silence for [`SETTLE`], then the labelled signal, paced by the leg
    /// (its queue holds two frames). Returns the frames handed over.
    async fn play(&self) -> usize {
        tokio::time::sleep(SETTLE).await;
        let mut played = 0;
        for i in 0..SIGNAL_FRAMES {
            if self.audio_out.send(labelled(i)).await.is_err() {
                break;
            }
            played += 1;
        }
        played
    }

    /// Waits for the (stopped) leg to end; returns every frame it delivered.
    async fn finish(self) -> Vec<Frame> {
        timeout(STOP_WITHIN, self.handle.closed())
            .await
            .expect("the leg ends cleanly");
        timeout(STOP_WITHIN, self.listener)
            .await
            .expect("events end with the leg")
            .expect("listener task")
    }
}

/// What the impairment did to one direction.
fn report_network(name: &str, net: &DirectionStats) {
    eprintln!(
        "network {name}: {} rtp in, {} dropped ({:.1} %), {} duplicated, {} reordered ({:.1} %), \
         max delay {} ms, {} rtcp in / {} out",
        net.rtp_in,
        net.rtp_dropped,
        percent(net.rtp_dropped, net.rtp_in),
        net.rtp_duplicated,
        net.rtp_reordered,
        percent(net.rtp_reordered, net.rtp_out),
        net.max_delay.as_millis(),
        net.rtcp_in,
        net.rtcp_out,
    );
}

/// The impairment really happened: the rest of the test means something.
fn assert_impaired(name: &str, net: &DirectionStats) {
    // ~6.6 s of 50 packets a second.
    assert!(net.rtp_in >= 250, "{name}: {net:?}");
    assert!(net.rtp_dropped >= 5, "{name}: loss applied: {net:?}");
    assert!(net.rtp_reordered >= 20, "{name}: reordering: {net:?}");
    assert!(
        net.max_delay >= Duration::from_millis(60),
        "{name}: {net:?}"
    );
    assert_eq!((net.overflow, net.foreign), (0, 0), "{name}: {net:?}");
}

/// The receiving leg played one frame per 20 ms, and the signal came out
/// whole enough and in order. `sender_gaps`: silent ticks the sender put
/// into its signal (its player fell behind), which no receiver can fill.
/// Returns the signal frames played at full level.
fn check_receiver(
    name: &str,
    handle: &MediaHandle,
    frames: &[Frame],
    elapsed: Duration,
    sender_gaps: usize,
) -> usize {
    let stats = handle.stats();
    let ticks = frames.len();
    let expected = elapsed.as_secs_f64() / 0.020;
    let heard = hear(frames.iter().map(|f| &f.samples()[..]));
    let window = heard.window().saturating_sub(sender_gaps);
    eprintln!(
        "{name}: {ticks} frames delivered in {:.2} s ({expected:.0} ticks due); signal: {} of {SIGNAL_FRAMES} \
         frames played ({:.1} %), {} of {window} ticks real audio ({:.1} %, {sender_gaps} gaps sent), {} out of order; \
         leg: {} packets in, {} lost, {} rejected, {} concealed ticks, jitter {:.1} ms, \
         peer reports {:?} lost / {:?} ms jitter, {} events dropped, {} ticks skipped",
        elapsed.as_secs_f64(),
        heard.distinct,
        100.0 * heard.distinct as f64 / SIGNAL_FRAMES as f64,
        heard.labelled,
        100.0 * heard.labelled as f64 / window.max(1) as f64,
        heard.backwards,
        stats.packets_in,
        stats.lost,
        stats.rejected,
        stats.concealed,
        stats.jitter_ms,
        stats.remote_fraction_lost,
        stats.remote_jitter_ms,
        stats.events_dropped,
        stats.ticks_skipped,
    );
    assert!(stats.ended && !stats.recording, "{name}: {stats:?}");
    assert!(stats.recording_error.is_none(), "{name}: {stats:?}");
    // A frame every 20 ms: generous bounds for a loaded machine, whose
    // stalls the leg catches up or skips (and counts).
    let accounted = (ticks as u64 + stats.ticks_skipped + stats.events_dropped) as f64;
    assert!(
        accounted >= expected * 0.9 - 10.0 && ticks as f64 <= expected + 5.0,
        "{name}: {ticks} frames, {expected:.0} due: {stats:?}"
    );
    // The loss reached the receiver, and was concealed.
    assert!(stats.lost > 0 && stats.concealed > 0, "{name}: {stats:?}");
    assert!(
        heard.distinct as f64 >= MIN_HEARD * SIGNAL_FRAMES as f64,
        "{name}: {heard:?}"
    );
    assert!(
        heard.labelled as f64 >= MIN_HEARD * window as f64,
        "{name}: {heard:?}"
    );
    // The network swapped packets; the jitter buffer put them back.
    assert_eq!(heard.backwards, 0, "{name}: {heard:?}");
    heard.distinct
}

/// The leg's recording covers the whole call, the peer's signal (as played)
/// on the left and the leg's own, complete, on the right. Returns the
/// silent ticks within the leg's own signal (see [`check_receiver`]).
fn check_recording(
    name: &str,
    path: &Path,
    handle: &MediaHandle,
    elapsed: Duration,
    ticks: usize,
) -> usize {
    let stats = handle.stats();
    let (left, right) = read_wav(path);
    let secs = left.len() as f64 / 8000.0;
    let recorded_ticks = left.len() / FRAME_SAMPLES;
    let peer = hear(left.chunks(FRAME_SAMPLES));
    let ours = hear(right.chunks(FRAME_SAMPLES));
    eprintln!(
        "{name}: recording {secs:.2} s of {:.2} s; peer (left) {} of {SIGNAL_FRAMES} frames, \
         ours (right) {} in {} ticks",
        elapsed.as_secs_f64(),
        peer.distinct,
        ours.distinct,
        ours.window(),
    );
    // Ticks skipped after a stall are recorded as silence, not delivered.
    let skipped = stats.ticks_skipped as usize;
    assert!(
        recorded_ticks.abs_diff(ticks + skipped) <= 5,
        "{name}: {recorded_ticks} frames recorded, {ticks} delivered, {skipped} skipped"
    );
    assert!(
        secs > elapsed.as_secs_f64() * 0.9 - 0.5,
        "{name}: {secs:.2} s recorded"
    );
    assert!(
        peer.distinct as f64 >= MIN_HEARD * SIGNAL_FRAMES as f64 && peer.backwards == 0,
        "{name}: left {peer:?}"
    );
    assert_eq!(
        (ours.distinct, ours.backwards),
        (SIGNAL_FRAMES, 0),
        "{name}: right {ours:?}"
    );
    ours.window() - ours.labelled
}

fn read_wav(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).expect("a valid wav");
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let left = samples.iter().step_by(2).copied().collect();
    let right = samples.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// Frame `i` of the labelled signal: one tone for the low four bits of `i`,
/// one for the high four.
fn labelled(i: usize) -> Frame {
    let label = i % 256;
    let (low, high) = (LOW_BIN + label % 16, HIGH_BIN + label / 16);
    let mut samples = [0i16; FRAME_SAMPLES];
    for (n, s) in samples.iter_mut().enumerate() {
        let t = 2.0 * PI * n as f64 / FRAME_SAMPLES as f64;
        *s = (TONE_AMPLITUDE * ((low as f64 * t).sin() + (high as f64 * t).sin())) as i16;
    }
    Frame::new(samples)
}

/// The label of a full-level signal frame; `None` for silence, a faded
/// repeat (concealment) or anything else.
fn label(samples: &[i16]) -> Option<u8> {
    if samples.len() != FRAME_SAMPLES {
        return None;
    }
    // The DFT magnitude of a sine of amplitude A on bin k is A·N/2.
    let full = TONE_AMPLITUDE * FRAME_SAMPLES as f64 / 2.0;
    let strongest = |first: usize| {
        let magnitudes: Vec<f64> = (first..first + 16).map(|k| dft_bin(samples, k)).collect();
        let (best, top) = magnitudes
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let runner_up = magnitudes
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != best)
            .map(|(_, &m)| m)
            .fold(0.0, f64::max);
        (top > 0.75 * full && runner_up < 0.25 * full).then_some(best)
    };
    Some((strongest(LOW_BIN)? + 16 * strongest(HIGH_BIN)?) as u8)
}

fn dft_bin(samples: &[i16], k: usize) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &x) in samples.iter().enumerate() {
        let t = 2.0 * PI * (k * n) as f64 / samples.len() as f64;
        re += f64::from(x) * t.cos();
        im += f64::from(x) * t.sin();
    }
    re.hypot(im)
}

/// What a receiver played of the signal.
#[derive(Debug, Default)]
struct Heard {
    /// Ticks carrying a full-level signal frame.
    labelled: usize,
    /// Different signal frames among them.
    distinct: usize,
    /// Signal frames that came no later than the one before them (out of
    /// order, or played twice).
    backwards: usize,
    /// Positions of the first and last signal frame.
    first: Option<usize>,
    last: Option<usize>,
}

impl Heard {
    /// Ticks from the first signal frame to the last.
    fn window(&self) -> usize {
        match (self.first, self.last) {
            (Some(first), Some(last)) => last - first + 1,
            _ => 0,
        }
    }
}

fn hear<'a>(frames: impl IntoIterator<Item = &'a [i16]>) -> Heard {
    let mut heard = Heard::default();
    let mut seen = HashSet::new();
    let mut previous: Option<u8> = None;
    for (position, frame) in frames.into_iter().enumerate() {
        let Some(label) = label(frame).filter(|&l| usize::from(l) < SIGNAL_FRAMES) else {
            continue;
        };
        heard.labelled += 1;
        heard.first.get_or_insert(position);
        heard.last = Some(position);
        seen.insert(label);
        if previous.is_some_and(|p| label <= p) {
            heard.backwards += 1;
        }
        previous = Some(label);
    }
    heard.distinct = seen.len();
    heard
}

/// [`hear`] on a channel whose frames need not start on a multiple of
/// 160 samples (a bridged leg records packets where their timestamps put
/// them, to the millisecond): the best of the 1 ms alignments.
fn hear_unaligned(channel: &[i16]) -> Heard {
    (0..FRAME_SAMPLES)
        .step_by(8)
        .map(|offset| {
            hear(
                channel
                    .get(offset..)
                    .unwrap_or_default()
                    .chunks(FRAME_SAMPLES),
            )
        })
        .max_by_key(|h| h.distinct)
        .unwrap_or_default()
}
