//! The call recording: a stereo 8 kHz 16-bit WAV, caller on the left, the
//! agent (AI or human rep) on the right, written to any `Write + Seek` sink
//! the store hands us.
//!
//! Both directions are pushed as frames stamped with the driver's clock in
//! milliseconds since the call started. The recorder keeps the two channels
//! on that common timeline: a gap in one channel (the agent not speaking,
//! lost packets) becomes silence, and a channel that falls more than
//! [`MAX_SKEW`] behind the other is filled with silence, so memory stays
//! bounded however long one side is quiet. A frame stamped earlier than the
//! end of its channel (clock jitter) is appended, never dropped or mixed.
//!
//! We write the 44-byte header ourselves rather than through `hound`: it is
//! twenty lines, lets [`StereoRecorder::finalize`] hand the sink back, and
//! keeps errors as `Result`s instead of a finalize-on-drop. Tests read the
//! output back with `hound`.

use std::collections::VecDeque;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use crate::{Frame, MediaError, FRAME_SAMPLES, SAMPLE_RATE};

/// How far one channel may run ahead of the other before the lagging one
/// is filled with silence.
pub const MAX_SKEW: Duration = Duration::from_millis(500);

const HEADER_LEN: u64 = 44;
const CHANNELS: u16 = 2;
const BYTES_PER_FRAME: u64 = 4; // two 16-bit samples
const CHUNK: usize = 1024;

/// A stereo recorder over `W`.
#[derive(Debug)]
pub struct StereoRecorder<W: Write + Seek> {
    sink: W,
    /// Sample frames (one sample per channel) written so far.
    written: u64,
    caller: Channel,
    agent: Channel,
    scratch: Vec<u8>,
}

#[derive(Debug, Default)]
struct Channel {
    /// Samples not yet written; `pending[0]` belongs at `start`.
    pending: VecDeque<i16>,
    start: u64,
}

impl Channel {
    fn end(&self) -> u64 {
        self.start + self.pending.len() as u64
    }

    /// Writes this channel's samples for the positions `base..` that `out`
    /// (interleaved frames of four bytes) covers, at byte `offset` of each
    /// frame: silence before `start` and after the pending samples run out.
    fn drain_into(&mut self, base: u64, out: &mut [u8], offset: usize) {
        let frames = out.len() / BYTES_PER_FRAME as usize;
        let lead = usize::try_from(self.start.saturating_sub(base))
            .unwrap_or(usize::MAX)
            .min(frames);
        let count = self.pending.len().min(frames - lead);
        if count == 0 {
            return;
        }
        let at = out
            .chunks_exact_mut(BYTES_PER_FRAME as usize)
            .skip(lead)
            .map(|frame| &mut frame[offset..offset + 2]);
        for (slot, sample) in at.zip(self.pending.drain(..count)) {
            slot.copy_from_slice(&sample.to_le_bytes());
        }
        self.start = base + (lead + count) as u64;
    }
}

impl<W: Write + Seek> StereoRecorder<W> {
    /// Starts a recording at the beginning of `sink` (written at offset 0).
    pub fn new(mut sink: W) -> Result<Self, MediaError> {
        sink.seek(SeekFrom::Start(0))?;
        sink.write_all(&header(0))?;
        Ok(StereoRecorder {
            sink,
            written: 0,
            caller: Channel::default(),
            agent: Channel::default(),
            scratch: Vec::with_capacity(CHUNK * BYTES_PER_FRAME as usize),
        })
    }

    /// Records a caller frame heard at `ts_ms` since the start of the call.
    pub fn push_caller(&mut self, ts_ms: u64, frame: &Frame) -> Result<(), MediaError> {
        self.push(Side::Caller, ts_ms, frame)
    }

    /// Records an agent frame played at `ts_ms` since the start of the call.
    pub fn push_agent(&mut self, ts_ms: u64, frame: &Frame) -> Result<(), MediaError> {
        self.push(Side::Agent, ts_ms, frame)
    }

    /// Length of the recording so far (written and pending).
    pub fn duration(&self) -> Duration {
        let samples = self.caller.end().max(self.agent.end()).max(self.written);
        Duration::from_micros(samples * 1_000_000 / u64::from(SAMPLE_RATE))
    }

    /// Samples held in memory, per channel; bounded by [`MAX_SKEW`] plus a
    /// frame.
    pub fn pending(&self) -> (usize, usize) {
        (self.caller.pending.len(), self.agent.pending.len())
    }

    /// Updates the header so the file is valid up to here if the process
    /// dies, and carries on.
    pub fn checkpoint(&mut self) -> Result<(), MediaError> {
        self.write_header()?;
        self.sink.flush()?;
        Ok(())
    }

    /// Writes what is pending (padding the shorter channel with silence),
    /// fixes the header sizes and returns the sink.
    pub fn finalize(mut self) -> Result<W, MediaError> {
        let end = self.caller.end().max(self.agent.end());
        self.write_until(end)?;
        self.write_header()?;
        self.sink.flush()?;
        Ok(self.sink)
    }

    fn push(&mut self, side: Side, ts_ms: u64, frame: &Frame) -> Result<(), MediaError> {
        let skew = MAX_SKEW.as_millis() as u64 * u64::from(SAMPLE_RATE) / 1000;
        let requested = ts_ms.saturating_mul(u64::from(SAMPLE_RATE) / 1000);
        let own_end = self.channel(side).end().max(self.written);
        let pos = requested.max(own_end);
        let head = self
            .caller
            .end()
            .max(self.agent.end())
            .max(pos + FRAME_SAMPLES as u64);
        // Everything older than the skew window is final: write it (with
        // silence where a channel has nothing) before placing the frame.
        self.write_until(head.saturating_sub(skew))?;

        let written = self.written;
        let channel = self.channel(side);
        let pos = pos.max(written);
        if channel.pending.is_empty() {
            channel.start = pos;
        } else {
            // Bounded by the skew: anything older was just written.
            let gap = pos.saturating_sub(channel.end()) as usize;
            channel.pending.extend(std::iter::repeat_n(0, gap));
        }
        channel.pending.extend(frame.samples().iter().copied());

        // Write where both channels are known.
        let known = self.caller.end().min(self.agent.end());
        self.write_until(known)
    }

    fn channel(&mut self, side: Side) -> &mut Channel {
        match side {
            Side::Caller => &mut self.caller,
            Side::Agent => &mut self.agent,
        }
    }

    fn write_until(&mut self, target: u64) -> Result<(), MediaError> {
        while self.written < target {
            let n = (target - self.written).min(CHUNK as u64) as usize;
            self.scratch.clear();
            self.scratch.resize(n * BYTES_PER_FRAME as usize, 0);
            self.caller.drain_into(self.written, &mut self.scratch, 0);
            self.agent.drain_into(self.written, &mut self.scratch, 2);
            self.sink.write_all(&self.scratch)?;
            self.written += n as u64;
        }
        for channel in [&mut self.caller, &mut self.agent] {
            if channel.pending.is_empty() {
                channel.start = channel.start.max(self.written);
            }
        }
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), MediaError> {
        let data_len = self.written * BYTES_PER_FRAME;
        self.sink.seek(SeekFrom::Start(0))?;
        self.sink.write_all(&header(data_len))?;
        self.sink.seek(SeekFrom::Start(HEADER_LEN + data_len))?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Side {
    Caller,
    Agent,
}

/// The canonical 44-byte PCM WAV header. Sizes beyond 4 GiB (about 37 hours
/// of call) are clamped; readers then stop at the clamp.
fn header(data_len: u64) -> [u8; HEADER_LEN as usize] {
    let data = u32::try_from(data_len).unwrap_or(u32::MAX - 36);
    let riff = data.saturating_add(36);
    let byte_rate = SAMPLE_RATE * u32::from(CHANNELS) * 2;
    let mut h = [0u8; HEADER_LEN as usize];
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &riff.to_le_bytes(),
        b"WAVE",
        b"fmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(), // PCM
        &CHANNELS.to_le_bytes(),
        &SAMPLE_RATE.to_le_bytes(),
        &byte_rate.to_le_bytes(),
        &(CHANNELS * 2).to_le_bytes(), // block align
        &16u16.to_le_bytes(),          // bits per sample
        b"data",
        &data.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        h[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn constant(v: i16) -> Frame {
        Frame::new([v; FRAME_SAMPLES])
    }

    fn read(bytes: Vec<u8>) -> (hound::WavSpec, Vec<(i16, i16)>) {
        let reader = hound::WavReader::new(Cursor::new(bytes)).expect("valid wav");
        let spec = reader.spec();
        let samples: Vec<i16> = reader
            .into_samples::<i16>()
            .collect::<Result<_, _>>()
            .expect("samples");
        let pairs = samples.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        (spec, pairs)
    }

    #[test]
    fn channels_are_aligned_on_the_timeline_with_silent_gaps() {
        let mut rec = StereoRecorder::new(Cursor::new(Vec::new())).expect("header");
        rec.push_caller(0, &constant(1)).expect("io");
        rec.push_agent(20, &constant(-2)).expect("io");
        rec.push_caller(20, &constant(3)).expect("io");
        rec.push_caller(40, &constant(5)).expect("io");
        rec.push_agent(60, &constant(-4)).expect("io");
        let bytes = rec.finalize().expect("io").into_inner();
        let (spec, pairs) = read(bytes);
        assert_eq!(spec.channels, 2);
        assert_eq!(spec.sample_rate, 8000);
        assert_eq!(spec.bits_per_sample, 16);
        assert_eq!(pairs.len(), 4 * FRAME_SAMPLES);
        let at = |ms: usize| pairs[ms * 8];
        assert_eq!(at(0), (1, 0));
        assert_eq!(at(20), (3, -2));
        assert_eq!(at(40), (5, 0));
        assert_eq!(at(60), (0, -4));
        assert_eq!(at(79), (0, -4));
    }

    #[test]
    fn early_frames_are_appended_not_lost() {
        let mut rec = StereoRecorder::new(Cursor::new(Vec::new())).expect("header");
        rec.push_caller(0, &constant(1)).expect("io");
        rec.push_caller(15, &constant(2)).expect("io"); // 5 ms early
        let (_, pairs) = read(rec.finalize().expect("io").into_inner());
        assert_eq!(pairs.len(), 2 * FRAME_SAMPLES);
        assert_eq!(pairs[159].0, 1);
        assert_eq!(pairs[160].0, 2);
    }

    #[test]
    fn a_silent_side_does_not_grow_memory() {
        let mut rec = StereoRecorder::new(Cursor::new(Vec::new())).expect("header");
        for i in 0..3000u64 {
            rec.push_caller(i * 20, &constant(7)).expect("io");
            let (caller, agent) = rec.pending();
            assert!(caller <= 4000 + FRAME_SAMPLES, "caller pending {caller}");
            assert_eq!(agent, 0);
        }
        assert_eq!(rec.duration(), Duration::from_secs(60));
        // The agent speaks at the end; it lands at its time.
        rec.push_agent(59_980, &constant(-9)).expect("io");
        let (_, pairs) = read(rec.finalize().expect("io").into_inner());
        assert_eq!(pairs.len(), 3000 * FRAME_SAMPLES);
        assert_eq!(pairs[0], (7, 0));
        assert_eq!(pairs[pairs.len() - 1], (7, -9));
    }

    #[test]
    fn a_long_pause_is_streamed_as_silence() {
        let mut rec = StereoRecorder::new(Cursor::new(Vec::new())).expect("header");
        rec.push_caller(0, &constant(1)).expect("io");
        rec.push_caller(600_000, &constant(2)).expect("io"); // ten minutes later
        let (c, a) = rec.pending();
        assert!(c <= 4000 + FRAME_SAMPLES && a == 0);
        let (_, pairs) = read(rec.finalize().expect("io").into_inner());
        assert_eq!(pairs.len(), 600_020 * 8);
        assert_eq!(pairs[300_000 * 8], (0, 0));
    }

    #[test]
    fn checkpoint_leaves_a_readable_file() {
        let mut rec = StereoRecorder::new(Cursor::new(Vec::new())).expect("header");
        rec.push_caller(0, &constant(1)).expect("io");
        rec.push_agent(0, &constant(2)).expect("io");
        rec.checkpoint().expect("io");
        rec.push_caller(20, &constant(3)).expect("io");
        rec.push_agent(20, &constant(4)).expect("io");
        let snapshot = rec.sink.get_ref().clone();
        let (_, pairs) = read(snapshot);
        assert_eq!(
            pairs.len(),
            FRAME_SAMPLES,
            "header says what was checkpointed"
        );
        let (_, pairs) = read(rec.finalize().expect("io").into_inner());
        assert_eq!(pairs[FRAME_SAMPLES], (3, 4));
    }

    #[test]
    fn sink_errors_are_returned() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl Seek for Full {
            fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
                Ok(0)
            }
        }
        assert!(matches!(StereoRecorder::new(Full), Err(MediaError::Io(_))));
    }
}
