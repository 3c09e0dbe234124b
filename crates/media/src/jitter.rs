//! An adaptive, bounded jitter buffer and simple packet loss concealment.
//!
//! Packets go in keyed by their 16-bit sequence number (extended to 64 bits
//! so wraparound is invisible); the driver pops one item per 20 ms tick.
//! Storage is a ring of `capacity` slots starting at the next sequence number
//! to play, so a flood of packets — or one packet claiming to be far in the
//! future — can never grow memory past `capacity` items.
//!
//! Delay adapts in both directions:
//! - **Grows** on underrun: when the buffer runs dry, playout pauses and
//!   re-buffers up to the target delay before resuming (the driver plays
//!   concealment meanwhile). This is also how a talkspurt after
//!   silence suppression starts. Sequence numbers missing in front of the
//!   first packet after an underrun (a key press sent as telephone-events, a
//!   burst loss) were concealed during the wait and are skipped, not played
//!   twice.
//! - **Shrinks** when the buffered depth exceeds the target by more than
//!   two frames: one frame is dropped per tick until it fits.
//!
//! The target is `3 × jitter` (the RFC 3550 interarrival estimate), raised by
//! one frame for every late packet and relaxed again after quiet periods,
//! clamped to `[min_delay, max_delay]`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::{Frame, FRAME_DURATION, SAMPLE_RATE};

/// Jitter buffer limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest target delay.
    pub min_delay: Duration,
    /// Largest target delay.
    pub max_delay: Duration,
    /// Hard bound on buffered packets (and on how far ahead of the playout
    /// point a packet may be before the stream is considered restarted).
    pub capacity: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            capacity: 50, // one second of 20 ms frames
        }
    }
}

/// What one playout tick yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout<T> {
    /// The packet due now.
    Frame(T),
    /// The packet due now is missing (lost, late, or the stream paused):
    /// conceal.
    Missing,
}

/// What happened to a pushed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Buffered for playout.
    Queued,
    /// Already buffered; dropped.
    Duplicate,
    /// Its playout time has passed; dropped.
    Late,
    /// So far from the playout point that the buffer restarted on it
    /// (a sender restart or a huge loss).
    Resync,
}

/// Counters for RTCP and the latency trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets queued.
    pub queued: u64,
    /// Packets dropped as duplicates.
    pub duplicate: u64,
    /// Packets dropped as late.
    pub late: u64,
    /// Frames dropped to shrink the delay.
    pub discarded: u64,
    /// Ticks that yielded [`Playout::Missing`].
    pub missing: u64,
    /// Times the buffer ran dry and re-buffered.
    pub underruns: u64,
    /// Restarts on a far-away sequence number.
    pub resyncs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting to hold the target delay; `since` is the first arrival.
    Buffering {
        since: Option<Instant>,
    },
    Playing,
}

/// An adaptive jitter buffer over items `T` (decoded frames, or payloads).
#[derive(Debug)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    /// `slots[0]` holds sequence number `next`.
    slots: VecDeque<Option<T>>,
    next: Option<u64>,
    state: State,
    ever_played: bool,
    estimator: JitterEstimator,
    late_boost: u32,
    ticks_since_late: u32,
    /// Frames one packet carries (a 60 ms packet fills three slots at once):
    /// the target never drops below it, or every packet would underrun.
    packet_frames: u32,
    stats: JitterStats,
}

/// Ticks without a late packet before the late boost relaxes by one frame.
const BOOST_DECAY_TICKS: u32 = 250;
/// Frames above the target tolerated before trimming.
const HYSTERESIS: usize = 2;

impl<T> JitterBuffer<T> {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        let capacity = config.capacity.max(1);
        JitterBuffer {
            config: JitterConfig { capacity, ..config },
            slots: VecDeque::with_capacity(capacity),
            next: None,
            state: State::Buffering { since: None },
            ever_played: false,
            estimator: JitterEstimator::default(),
            late_boost: 0,
            ticks_since_late: 0,
            packet_frames: 1,
            stats: JitterStats::default(),
        }
    }

    /// Buffers the packet with `sequence` and RTP `timestamp`, arrived `now`.
    pub fn push(&mut self, now: Instant, sequence: u16, timestamp: u32, item: T) -> Push {
        let outcome = self.insert(now, sequence, item, |_, _| false);
        if outcome != Push::Duplicate {
            // Late packets are real arrivals and say the most about jitter.
            self.estimator.update(now, timestamp);
        }
        outcome
    }

    /// Buffers one part of the frame in slot `sequence`: the re-framing
    /// path for packets that are not one 20 ms frame. Slots are then 20 ms
    /// frame numbers derived from RTP timestamps, not RTP sequence numbers;
    /// a 60 ms packet is three calls, two 10 ms packets merge into one slot.
    ///
    /// `merge(buffered, part)` folds a part into a slot that already holds
    /// one and returns false when it adds nothing (a duplicate). Unlike
    /// [`Self::push`] this does not update the jitter estimate: call
    /// [`Self::observe_arrival`] once per packet.
    pub fn push_part(
        &mut self,
        now: Instant,
        sequence: u16,
        part: T,
        merge: impl FnOnce(&mut T, T) -> bool,
    ) -> Push {
        self.insert(now, sequence, part, merge)
    }

    /// Feeds one packet's arrival to the jitter estimate (see
    /// [`Self::push_part`]).
    pub fn observe_arrival(&mut self, now: Instant, timestamp: u32) {
        self.estimator.update(now, timestamp);
    }

    /// Tells the buffer how many frames each packet carries, so the target
    /// delay covers at least one packet (clamped to the maximum delay).
    pub fn set_packet_frames(&mut self, frames: usize) {
        self.packet_frames = frames.clamp(1, self.config.capacity) as u32;
    }

    /// The item for this 20 ms tick. `None` until the first playout starts
    /// (there is nothing to conceal yet); afterwards always `Some`.
    pub fn pop(&mut self, now: Instant) -> Option<Playout<T>> {
        self.ticks_since_late = self.ticks_since_late.saturating_add(1);
        if self.ticks_since_late >= BOOST_DECAY_TICKS {
            self.late_boost = self.late_boost.saturating_sub(1);
            self.ticks_since_late = 0;
        }
        if let State::Buffering { since } = self.state {
            if self.ever_played {
                // Resuming after an underrun: the slots before the first
                // packet that arrived were concealed while we waited (a key
                // press, a lost burst); playing them again would only add
                // delay.
                while let Some(None) = self.slots.front() {
                    self.slots.pop_front();
                    self.advance();
                }
            }
            let ready = since
                .is_some_and(|s| now.saturating_duration_since(s) >= self.target_delay())
                || self.slots.len() >= self.target_frames();
            if !ready {
                return self.ever_played.then(|| self.missing());
            }
            self.state = State::Playing;
            self.ever_played = true;
        }
        if self.slots.is_empty() {
            self.stats.underruns += 1;
            self.state = State::Buffering { since: None };
            return Some(self.missing());
        }
        if self.slots.len() > self.target_frames() + HYSTERESIS {
            if let Some(Some(_)) = self.slots.pop_front() {
                self.stats.discarded += 1;
            }
            self.advance();
        }
        let item = self.slots.pop_front().flatten();
        self.advance();
        Some(match item {
            Some(item) => Playout::Frame(item),
            None => self.missing(),
        })
    }

    /// The current target delay.
    pub fn target_delay(&self) -> Duration {
        FRAME_DURATION * self.target_frames() as u32
    }

    /// Packets currently buffered, counting gaps between them.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// The configured hard bound on [`Self::depth`].
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// The RFC 3550 interarrival jitter estimate.
    pub fn jitter(&self) -> &JitterEstimator {
        &self.estimator
    }

    /// Counters since the start.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Drops everything buffered and starts over, keeping statistics; for a
    /// new SSRC, whose sequence numbers are unrelated to the old ones.
    pub fn reset(&mut self) {
        self.slots.clear();
        self.next = None;
        self.state = State::Buffering { since: None };
        self.estimator = JitterEstimator::default();
    }

    fn insert(
        &mut self,
        now: Instant,
        sequence: u16,
        item: T,
        merge: impl FnOnce(&mut T, T) -> bool,
    ) -> Push {
        let Some(next) = self.next else {
            self.restart(now, extend(sequence, 1 << 16), item);
            return Push::Queued;
        };
        let highest = next + self.slots.len().saturating_sub(1) as u64;
        let ext = extend(sequence, highest);
        let capacity = self.config.capacity as u64;

        if ext < next {
            let behind = (next - ext) as usize;
            let fits = behind + self.slots.len() <= self.config.capacity;
            if !self.ever_played && fits {
                // Reordered packets before the first one: move the start back.
                for _ in 0..behind {
                    self.slots.push_front(None);
                }
                self.next = Some(ext);
                self.slots[0] = Some(item);
                self.stats.queued += 1;
                return Push::Queued;
            }
            self.stats.late += 1;
            self.late_boost = (self.late_boost + 1).min(self.max_frames());
            self.ticks_since_late = 0;
            return Push::Late;
        }
        let offset = ext - next;
        if offset >= capacity {
            self.stats.resyncs += 1;
            self.restart(now, ext, item);
            return Push::Resync;
        }
        let offset = offset as usize;
        if offset >= self.slots.len() {
            self.slots.resize_with(offset + 1, || None);
        }
        match &mut self.slots[offset] {
            Some(buffered) => {
                if merge(buffered, item) {
                    Push::Queued
                } else {
                    self.stats.duplicate += 1;
                    Push::Duplicate
                }
            }
            slot => {
                *slot = Some(item);
                self.stats.queued += 1;
                if let State::Buffering {
                    since: since @ None,
                } = &mut self.state
                {
                    *since = Some(now);
                }
                Push::Queued
            }
        }
    }

    fn restart(&mut self, now: Instant, ext: u64, item: T) {
        self.slots.clear();
        self.slots.push_back(Some(item));
        self.next = Some(ext);
        self.state = State::Buffering { since: Some(now) };
        self.stats.queued += 1;
    }

    fn advance(&mut self) {
        self.next = self.next.map(|n| n + 1);
    }

    fn missing(&mut self) -> Playout<T> {
        self.stats.missing += 1;
        Playout::Missing
    }

    fn target_frames(&self) -> usize {
        let frame_ms = FRAME_DURATION.as_secs_f64() * 1000.0;
        let from_jitter = (3.0 * self.estimator.millis() / frame_ms).ceil() as u32;
        let frames = from_jitter
            .saturating_add(self.late_boost)
            .max(self.packet_frames);
        frames.clamp(self.min_frames(), self.max_frames()) as usize
    }

    fn min_frames(&self) -> u32 {
        frames_in(self.config.min_delay).max(1)
    }

    fn max_frames(&self) -> u32 {
        frames_in(self.config.max_delay)
            .max(self.min_frames())
            .min(self.config.capacity as u32)
    }
}

fn frames_in(d: Duration) -> u32 {
    d.as_millis().div_ceil(FRAME_DURATION.as_millis()) as u32
}

/// Extends a 16-bit sequence number to the 64-bit value closest to
/// `reference` (within ±2^15).
pub(crate) fn extend(sequence: u16, reference: u64) -> u64 {
    let delta = i64::from(sequence.wrapping_sub(reference as u16) as i16);
    reference.saturating_add_signed(delta)
}

/// The interarrival jitter estimate of RFC 3550 §6.4.1 / A.8, in RTP clock
/// units at 8 kHz.
#[derive(Clone, Copy, Debug, Default)]
pub struct JitterEstimator {
    epoch: Option<Instant>,
    last: Option<(i64, u32)>,
    jitter: f64,
}

impl JitterEstimator {
    /// A single bad timestamp must not blow the estimate up: cap one
    /// transit difference at one second.
    const MAX_D: f64 = SAMPLE_RATE as f64;

    /// Feeds the arrival of a packet with RTP `timestamp`.
    pub fn update(&mut self, now: Instant, timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.saturating_duration_since(epoch).as_micros() * u128::from(SAMPLE_RATE)
            / 1_000_000) as i64;
        if let Some((prev_arrival, prev_ts)) = self.last {
            let sent = i64::from(timestamp.wrapping_sub(prev_ts) as i32);
            let d = ((arrival - prev_arrival) - sent).unsigned_abs() as f64;
            self.jitter += (d.min(Self::MAX_D) - self.jitter) / 16.0;
        }
        self.last = Some((arrival, timestamp));
    }

    /// The estimate in RTP clock units, as reported in RTCP.
    pub fn rtp_units(&self) -> u32 {
        self.jitter as u32
    }

    /// The estimate in milliseconds.
    pub fn millis(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(SAMPLE_RATE)
    }
}

/// Packet loss concealment: a missing frame is replaced by the last good one
/// at half the level, then a quarter, then an eighth, then silence. Crude,
/// but it hides single losses without the clicks of inserted silence and
/// never invents more than 60 ms of sound.
#[derive(Clone, Debug, Default)]
pub struct Concealer {
    last: Option<Frame>,
    missing_run: u32,
}

impl Concealer {
    /// Frames repeated before falling back to silence.
    pub const MAX_REPEATS: u32 = 3;

    /// The frame to play for this tick.
    pub fn conceal(&mut self, playout: Playout<Frame>) -> Frame {
        match playout {
            Playout::Frame(frame) => {
                self.missing_run = 0;
                self.last = Some(frame.clone());
                frame
            }
            Playout::Missing => {
                self.missing_run = self.missing_run.saturating_add(1);
                match &self.last {
                    Some(last) if self.missing_run <= Self::MAX_REPEATS => {
                        last.scaled(0.5f32.powi(self.missing_run as i32))
                    }
                    _ => Frame::silence(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = FRAME_DURATION;

    fn buffer() -> JitterBuffer<u16> {
        JitterBuffer::new(JitterConfig::default())
    }

    fn deep_buffer() -> JitterBuffer<u16> {
        JitterBuffer::new(JitterConfig {
            min_delay: Duration::from_millis(100),
            ..JitterConfig::default()
        })
    }

    /// Pops until playout starts, returning the first item.
    fn start(jb: &mut JitterBuffer<u16>, now: &mut Instant) -> Playout<u16> {
        for _ in 0..100 {
            if let Some(p) = jb.pop(*now) {
                return p;
            }
            *now += TICK;
        }
        panic!("playout never started");
    }

    #[test]
    fn reorders_across_the_sequence_wrap() {
        let mut jb = deep_buffer();
        let t0 = Instant::now();
        let seqs = [65_534u16, 0, 65_535, 1, 2];
        for (i, s) in seqs.iter().enumerate() {
            let ts = u32::from(s.wrapping_sub(65_534)) * 160;
            assert_eq!(jb.push(t0 + TICK * i as u32, *s, ts, *s), Push::Queued);
        }
        let mut now = t0 + TICK * 5;
        let mut out = vec![start(&mut jb, &mut now)];
        for _ in 0..4 {
            now += TICK;
            out.push(jb.pop(now).expect("playing"));
        }
        let expected: Vec<_> = [65_534u16, 65_535, 0, 1, 2]
            .into_iter()
            .map(Playout::Frame)
            .collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn reordering_before_the_first_packet_is_kept() {
        let mut jb = buffer();
        let now = Instant::now();
        assert_eq!(jb.push(now, 11, 1760, 11), Push::Queued);
        assert_eq!(jb.push(now, 10, 1600, 10), Push::Queued);
        let mut now = now;
        assert_eq!(start(&mut jb, &mut now), Playout::Frame(10));
    }

    #[test]
    fn duplicates_late_and_loss() {
        let mut jb = buffer();
        let mut now = Instant::now();
        jb.push(now, 100, 0, 100);
        assert_eq!(jb.push(now, 100, 0, 100), Push::Duplicate);
        jb.push(now, 102, 320, 102); // 101 lost (for now)
        assert_eq!(start(&mut jb, &mut now), Playout::Frame(100));
        now += TICK;
        assert_eq!(jb.pop(now), Some(Playout::Missing));
        // 101 shows up after its slot was played: late.
        assert_eq!(jb.push(now, 101, 160, 101), Push::Late);
        now += TICK;
        assert_eq!(jb.pop(now), Some(Playout::Frame(102)));
        let s = jb.stats();
        assert_eq!((s.duplicate, s.late, s.missing), (1, 1, 1));
    }

    #[test]
    fn underrun_rebuffers_and_keeps_sequence() {
        let mut jb = buffer();
        let mut now = Instant::now();
        jb.push(now, 1, 0, 1);
        assert_eq!(start(&mut jb, &mut now), Playout::Frame(1));
        // The sender pauses (silence suppression): missing, not skipped.
        for _ in 0..5 {
            now += TICK;
            assert_eq!(jb.pop(now), Some(Playout::Missing));
        }
        assert_eq!(jb.stats().underruns, 1);
        // It resumes with the next sequence number and a later timestamp.
        jb.push(now, 2, 160 * 7, 2);
        let mut got = None;
        for _ in 0..20 {
            now += TICK;
            if let Some(Playout::Frame(x)) = jb.pop(now) {
                got = Some(x);
                break;
            }
        }
        assert_eq!(got, Some(2));
    }

    #[test]
    fn a_flood_never_exceeds_capacity() {
        let mut jb = JitterBuffer::new(JitterConfig {
            capacity: 16,
            ..JitterConfig::default()
        });
        let now = Instant::now();
        let mut seq = 0u16;
        for i in 0..100_000u32 {
            seq = seq.wrapping_add((i % 7) as u16 * 1000 + 1);
            jb.push(now, seq, i, 0u8);
            assert!(jb.depth() <= 16);
        }
        assert!(jb.stats().resyncs > 0);
    }

    #[test]
    fn far_jump_resyncs() {
        let mut jb = buffer();
        let mut now = Instant::now();
        jb.push(now, 10, 0, 10);
        assert_eq!(start(&mut jb, &mut now), Playout::Frame(10));
        assert_eq!(jb.push(now, 30_000, 0, 30_000), Push::Resync);
        let mut out = None;
        for _ in 0..20 {
            now += TICK;
            if let Some(Playout::Frame(x)) = jb.pop(now) {
                out = Some(x);
                break;
            }
        }
        assert_eq!(out, Some(30_000));
    }

    #[test]
    fn target_adapts_to_jitter_within_bounds() {
        // Steady arrivals: the target stays at the minimum.
        let mut steady = JitterBuffer::new(JitterConfig::default());
        let t0 = Instant::now();
        for i in 0..200u32 {
            steady.push(t0 + TICK * i, i as u16, i * 160, ());
        }
        assert_eq!(steady.target_delay(), Duration::from_millis(20));
        assert!(steady.jitter().millis() < 0.5);

        // ±30 ms of arrival jitter: the target grows, but stays ≤ max.
        let mut jittery = JitterBuffer::new(JitterConfig::default());
        for i in 0..200u32 {
            let wobble = Duration::from_millis(if i % 2 == 0 { 0 } else { 30 });
            jittery.push(t0 + TICK * i + wobble, i as u16, i * 160, ());
        }
        let target = jittery.target_delay();
        assert!(target >= Duration::from_millis(60), "target {target:?}");
        assert!(target <= Duration::from_millis(200));
        // Estimate ≈ 30 ms (|D| is 30 ms on every packet).
        assert!((jittery.jitter().millis() - 30.0).abs() < 3.0);

        // Huge jitter is clamped at the maximum.
        let mut wild = JitterBuffer::new(JitterConfig::default());
        for i in 0..200u32 {
            let wobble = Duration::from_millis(u64::from(i % 2) * 900);
            wild.push(t0 + TICK * i + wobble, i as u16, i * 160, ());
        }
        assert_eq!(wild.target_delay(), Duration::from_millis(200));
    }

    #[test]
    fn excess_depth_is_trimmed() {
        let mut jb = buffer();
        let mut now = Instant::now();
        // A burst of 20 packets at once after a stall.
        for i in 0..20u16 {
            jb.push(now, i, u32::from(i) * 160, i);
        }
        start(&mut jb, &mut now);
        for _ in 0..20 {
            now += TICK;
            jb.pop(now);
        }
        assert!(jb.stats().discarded > 0);
        assert!(jb.depth() <= 3);
    }

    #[test]
    fn concealment_fades_then_silences() {
        let mut plc = Concealer::default();
        let loud = Frame::new([8000; 160]);
        assert_eq!(plc.conceal(Playout::Frame(loud.clone())), loud);
        let levels: Vec<i16> = (0..5)
            .map(|_| plc.conceal(Playout::Missing).samples()[0])
            .collect();
        assert_eq!(levels, vec![4000, 2000, 1000, 0, 0]);
        // Nothing to repeat at the start of a call: silence.
        assert!(Concealer::default().conceal(Playout::Missing).is_silence());
    }
}
