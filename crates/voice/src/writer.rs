//! The per-call store writer: turns, trace steps, the handoff and the end of
//! the session, written in order by one task so the engine's 20 ms loop never
//! waits on the database, and retried so a database hiccup does not lose a
//! transcript or a handoff.

use std::sync::Arc;
use std::time::Duration;

use switchboard_model::{HandoffInput, Outcome, SessionId, Speaker, Timestamp};
use switchboard_store::Store;
use tokio::sync::{mpsc, Notify};
use tracing::{error, warn};

/// One write, in call order.
#[derive(Debug)]
pub(crate) enum Write {
    Turn {
        speaker: Speaker,
        text: String,
        started_at: Timestamp,
        ended_at: Timestamp,
    },
    Trace {
        kind: &'static str,
        json: serde_json::Value,
        latency_ms: Option<i64>,
    },
    Handoff {
        input: HandoffInput,
        at: Timestamp,
    },
    End {
        at: Timestamp,
        outcome: Outcome,
        reason: String,
    },
}

/// What the writer did, for the engine's report.
#[derive(Debug, Default, Clone)]
pub(crate) struct Written {
    pub(crate) turns: usize,
    pub(crate) traces: usize,
    pub(crate) handoff: Option<switchboard_model::HandoffId>,
    pub(crate) failures: usize,
}

const ATTEMPTS: u32 = 5;

pub(crate) fn spawn(
    store: Store,
    session: SessionId,
    notify: Arc<Notify>,
) -> (
    mpsc::UnboundedSender<Write>,
    tokio::task::JoinHandle<Written>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
    let task = tokio::spawn(async move {
        let mut written = Written::default();
        // Trace steps belong to the latest caller turn.
        let mut turn_seq: Option<i64> = None;
        while let Some(write) = rx.recv().await {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match apply(&store, session, &notify, &write, turn_seq).await {
                    Ok(Applied::Turn { seq, speaker }) => {
                        written.turns += 1;
                        if speaker == Speaker::Caller {
                            turn_seq = Some(seq);
                        }
                        break;
                    }
                    Ok(Applied::Trace) => {
                        written.traces += 1;
                        break;
                    }
                    Ok(Applied::Handoff(id)) => {
                        written.handoff = Some(id);
                        break;
                    }
                    Ok(Applied::Done) => break,
                    Err(e) if attempt < ATTEMPTS && e.is_retryable() => {
                        warn!(%session, error = %e, attempt, "store write failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                    Err(e) => {
                        written.failures += 1;
                        error!(%session, error = %e, write = ?write, "store write lost after retries");
                        break;
                    }
                }
            }
        }
        written
    });
    (tx, task)
}

enum Applied {
    Turn { seq: i64, speaker: Speaker },
    Trace,
    Handoff(switchboard_model::HandoffId),
    Done,
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Store(#[from] switchboard_store::StoreError),
    #[error(transparent)]
    Intake(#[from] switchboard_handoff::intake::IntakeError),
}

impl WriteError {
    fn is_retryable(&self) -> bool {
        match self {
            WriteError::Store(e) => e.is_retryable(),
            WriteError::Intake(switchboard_handoff::intake::IntakeError::Store(e)) => {
                e.is_retryable()
            }
            WriteError::Intake(_) => false,
        }
    }
}

async fn apply(
    store: &Store,
    session: SessionId,
    notify: &Notify,
    write: &Write,
    turn_seq: Option<i64>,
) -> Result<Applied, WriteError> {
    Ok(match write {
        Write::Turn {
            speaker,
            text,
            started_at,
            ended_at,
        } => {
            let turn = store
                .append_turn(session, *speaker, text, *started_at, *ended_at)
                .await?;
            Applied::Turn {
                seq: turn.seq,
                speaker: *speaker,
            }
        }
        Write::Trace {
            kind,
            json,
            latency_ms,
        } => {
            store
                .add_trace_step(session, turn_seq, kind, json, *latency_ms)
                .await?;
            Applied::Trace
        }
        Write::Handoff { input, at } => {
            let h = switchboard_handoff::intake::request_handoff(
                store,
                session,
                input.clone(),
                *at,
                notify,
            )
            .await?;
            Applied::Handoff(h.id)
        }
        Write::End {
            at,
            outcome,
            reason,
        } => {
            store.end_session(session, *at, *outcome, reason).await?;
            Applied::Done
        }
    })
}
