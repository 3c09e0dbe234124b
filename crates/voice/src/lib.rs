//! The voice engine: runs one [`Call`](switchboard_call::Call) machine per
//! phone call, wired to a [`Line`] (telephony's audio and verbs), the speech
//! providers, the agent brain and the store.
//!
//! It owns no socket and makes no conversational decision: telephony hands
//! it an answered call, the call machine decides what happens next, and the
//! engine executes (synthesise, recognise, play, transfer, hang up) and
//! writes what happened (turns, per-turn trace steps, the handoff, the end
//! of the session) through a per-call writer task, in order and with retries.
//!
//! Layout: [`line`] (the telephony-facing contract), `engine` (the driver
//! loop), `writer` (ordered store writes), [`caller`] (the test caller's
//! script, run over a line like the engine).
//!
//! Run loop per call: drain the machine's outputs until `Output::Timeout`,
//! then wait on whichever comes first — a line event (a 20 ms frame, a key,
//! a hangup), an STT event, a TTS frame, the transfer result, or the
//! machine's deadline — and feed it back as one input.

pub mod caller;
pub mod line;

mod brain;
mod engine;
mod writer;

pub use engine::{CallReport, CallSetup, Engine, EngineConfig};
pub use line::{Line, LineControl, LineEvent, TransferFuture, TransferResult};
