//! WebRTC's voice activity detector for 8 kHz telephone audio: libfvad (a
//! standalone copy of the WebRTC VAD, built from C by `webrtc-vad`) behind a
//! handle that can move between threads.
//!
//! It owns nothing else. The call machine keeps one [`WebrtcVad`] per call
//! and asks it about every 20 ms caller frame; a call's machine runs in a
//! tokio task that may move between worker threads, so the handle must be
//! `Send`, which `webrtc_vad::Vad` (a raw pointer) is not. That impl is the
//! only unsafe code of the workspace, isolated here.

use webrtc_vad::{SampleRate, Vad, VadMode};

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// How readily the detector calls a frame speech: `Quality` the most
/// readily, `VeryAggressive` (libfvad mode 3) the least, which suits noisy
/// lines best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Quality,
    LowBitrate,
    Aggressive,
    #[default]
    VeryAggressive,
}

/// One detector state (per call: it adapts to the line).
pub struct WebrtcVad {
    inner: Vad,
    mode: Mode,
}

// SAFETY: `webrtc_vad::Vad` wraps a `*mut Fvad` created by `fvad_new` and
// freed in its `Drop`. The `Fvad` is a plain heap struct owned exclusively by
// this handle; libfvad keeps no global or thread-local state and every call
// takes the handle by `&mut`, so moving the handle to another thread and
// using it there is sound. It is not `Sync` (no shared access is offered).
#[allow(unsafe_code)]
unsafe impl Send for WebrtcVad {}

impl WebrtcVad {
    pub fn new(mode: Mode) -> Self {
        let vad_mode = match mode {
            Mode::Quality => VadMode::Quality,
            Mode::LowBitrate => VadMode::LowBitrate,
            Mode::Aggressive => VadMode::Aggressive,
            Mode::VeryAggressive => VadMode::VeryAggressive,
        };
        WebrtcVad {
            inner: Vad::new_with_rate_and_mode(SampleRate::Rate8kHz, vad_mode),
            mode,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether this 20 ms frame is speech.
    pub fn is_speech(&mut self, frame: &[i16; FRAME_SAMPLES]) -> bool {
        // libfvad only refuses frames of another length than 10/20/30 ms,
        // which the array type rules out.
        self.inner.is_voice_segment(frame).unwrap_or(false)
    }
}

impl std::fmt::Debug for WebrtcVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebrtcVad")
            .field("mode", &self.mode)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_not_speech_and_a_voiced_buzz_is() {
        let mut vad = WebrtcVad::new(Mode::VeryAggressive);
        assert!(!vad.is_speech(&[0; FRAME_SAMPLES]));
        // A 200 Hz square wave: rich harmonics in the speech band.
        let buzz: [i16; FRAME_SAMPLES] =
            std::array::from_fn(|i| if (i / 20) % 2 == 0 { 8000 } else { -8000 });
        let mut vad = WebrtcVad::new(Mode::VeryAggressive);
        assert!((0..10).all(|_| vad.is_speech(&buzz)));
    }

    #[test]
    fn the_handle_moves_between_threads() {
        fn assert_send<T: Send>(_: &T) {}
        let vad = WebrtcVad::new(Mode::default());
        assert_send(&vad);
        let handle = std::thread::spawn(move || {
            let mut vad = vad;
            vad.is_speech(&[0; FRAME_SAMPLES])
        });
        assert_eq!(handle.join().ok(), Some(false));
    }
}
