//! The internal calls that start the pipeline without telephony: record a
//! "text call" (a session with its turns) and request a handoff. The REST
//! API, tests and the voice engine all use these, so every path writes the
//! same rows the same way.

use serde::Deserialize;
use switchboard_model::{
    Direction, Handoff, HandoffInput, HandoffMode, ModelError, NewSession, Region, Session,
    SessionId, Speaker, Timestamp, E164,
};
use switchboard_store::{Store, StoreError};
use tokio::sync::Notify;
use utoipa::ToSchema;

/// A session recorded from text: who called which agent, and what was said.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextCallInput {
    /// Agent id or name.
    pub agent: String,
    /// The caller's number (E.164 or any common form).
    pub from: String,
    /// The number called; defaults to the agent's first number.
    pub to: Option<String>,
    pub direction: Option<Direction>,
    /// Defaults to the first turn's start, or now.
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub turns: Vec<TurnInput>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TurnInput {
    pub speaker: Speaker,
    pub text: String,
    pub started_at: Timestamp,
    /// Defaults to `started_at`.
    pub ended_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    #[error(transparent)]
    Invalid(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest turn accepted; longer text is refused rather than truncated (the
/// renderer splits anything up to this into several messages).
const MAX_TURN_CHARS: usize = 200_000;
const MAX_TURNS: usize = 5_000;

pub async fn record_text_call(
    store: &Store,
    input: TextCallInput,
    region: Region,
    now: Timestamp,
) -> Result<Session, IntakeError> {
    let agent = match store.find_agent(&input.agent).await {
        Ok(a) => a,
        Err(StoreError::NotFound { .. }) => {
            return Err(ModelError::invalid(
                "agent",
                format!("no agent with id or name `{}`", input.agent),
            )
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    let from = E164::parse(&input.from, region).map_err(|e| e.for_field("from"))?;
    let to = match input.to.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => E164::parse(t, region)
            .map_err(|e| e.for_field("to"))?
            .to_string(),
        None => store
            .list_numbers(Some(agent.id))
            .await?
            .first()
            .map(|n| n.e164.to_string())
            .unwrap_or_default(),
    };
    if input.turns.len() > MAX_TURNS {
        return Err(ModelError::invalid("turns", format!("at most {MAX_TURNS} turns")).into());
    }
    for (i, t) in input.turns.iter().enumerate() {
        if t.text.chars().count() > MAX_TURN_CHARS {
            return Err(ModelError::invalid(
                format!("turns[{i}].text"),
                format!("is longer than {MAX_TURN_CHARS} characters"),
            )
            .into());
        }
        if t.ended_at.is_some_and(|e| e < t.started_at) {
            return Err(ModelError::invalid(
                format!("turns[{i}].ended_at"),
                "is before started_at",
            )
            .into());
        }
    }
    let contact = store.contact_by_phone(&from).await?;
    let started_at = input
        .started_at
        .or_else(|| input.turns.first().map(|t| t.started_at))
        .unwrap_or(now);
    let session = store
        .create_session(&NewSession {
            agent_id: Some(agent.id),
            direction: input.direction.unwrap_or(Direction::Inbound),
            from: from.to_string(),
            to,
            contact_id: contact.map(|c| c.id),
            started_at,
        })
        .await?;
    store.mark_answered(session.id, started_at).await?;
    for t in &input.turns {
        store
            .append_turn(
                session.id,
                t.speaker,
                &t.text,
                t.started_at,
                t.ended_at.unwrap_or(t.started_at),
            )
            .await?;
    }
    Ok(store.session(session.id).await?)
}

/// Records a handoff (with its job, in one transaction) and wakes the worker.
pub async fn request_handoff(
    store: &Store,
    session: SessionId,
    input: HandoffInput,
    now: Timestamp,
    notify: &Notify,
) -> Result<Handoff, IntakeError> {
    let s = store.session(session).await?;
    let default_mode = match s.agent_id {
        Some(a) => store
            .agent(a)
            .await
            .map_or(HandoffMode::LoggedEscalation, |a| a.spec.handoff_mode),
        None => HandoffMode::LoggedEscalation,
    };
    let end = input.end_session.then_some(now);
    let spec = input.validate(default_mode)?;
    let handoff = store.create_handoff(session, &spec, end).await?;
    notify.notify_waiters();
    notify.notify_one();
    Ok(handoff)
}
