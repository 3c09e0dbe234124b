//! The call recording file: a [`StereoRecorder`] over a buffered file that
//! is finalised (WAV header sizes written) when the leg ends, even if its
//! task is dropped mid-call by a runtime shutdown.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_media::{Frame, MediaError, StereoRecorder};

/// How often the header is rewritten so the file stays playable if the
/// process dies mid-call.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Recording {
    path: PathBuf,
    writer: Option<StereoRecorder<BufWriter<File>>>,
    last_checkpoint_ms: u64,
}

impl Recording {
    pub(crate) fn create(path: &Path) -> Result<Self, MediaError> {
        let file = File::create(path)?;
        Ok(Recording {
            path: path.to_owned(),
            writer: Some(StereoRecorder::new(BufWriter::new(file))?),
            last_checkpoint_ms: 0,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records one tick: what the peer sent (left) and what we sent (right),
    /// `ts_ms` after the start of the leg.
    pub(crate) fn push(
        &mut self,
        ts_ms: u64,
        remote: &Frame,
        ours: &Frame,
    ) -> Result<(), MediaError> {
        self.push_remote(ts_ms, remote)?;
        self.push_ours(ts_ms, ours)
    }

    /// Records 20 ms the peer sent (left), `ts_ms` after the start of the
    /// leg. The two channels are pushed separately on a bridge, where each
    /// arrives with its own packets.
    pub(crate) fn push_remote(&mut self, ts_ms: u64, frame: &Frame) -> Result<(), MediaError> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        writer.push_caller(ts_ms, frame)?;
        self.checkpoint_if_due(ts_ms)
    }

    /// Records 20 ms we sent (right), `ts_ms` after the start of the leg.
    pub(crate) fn push_ours(&mut self, ts_ms: u64, frame: &Frame) -> Result<(), MediaError> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        writer.push_agent(ts_ms, frame)?;
        self.checkpoint_if_due(ts_ms)
    }

    fn checkpoint_if_due(&mut self, ts_ms: u64) -> Result<(), MediaError> {
        if ts_ms.saturating_sub(self.last_checkpoint_ms) >= CHECKPOINT_EVERY.as_millis() as u64 {
            if let Some(writer) = &mut self.writer {
                writer.checkpoint()?;
            }
            self.last_checkpoint_ms = ts_ms;
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<(), MediaError> {
        match self.writer.take() {
            Some(writer) => writer.finalize().map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(error) = writer.finalize() {
                tracing::warn!(path = %self.path.display(), %error, "recording could not be finalised");
            }
        }
    }
}
