//! The agent brain as the engine drives it: the playbook answers on the
//! spot; the LLM agent runs in its own task (it is asynchronous and streams
//! sentences), fed asks and answering with events tagged by turn.

use futures_util::StreamExt;
use switchboard_agent::{
    Agent as _, AgentTurn, Decision, LlmAgent, LlmEvent, PlaybookAgent, TurnId,
};
use tokio::sync::mpsc;

pub(crate) enum Brain {
    Playbook(Box<PlaybookAgent>),
    Llm {
        asks: mpsc::UnboundedSender<AgentTurn>,
        events: mpsc::UnboundedReceiver<(TurnId, LlmEvent)>,
        task: tokio::task::JoinHandle<()>,
    },
}

/// What [`Brain::ask`] gives back at once.
// One per caller turn: boxing the decision would save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Answer {
    Now(Decision),
    Later,
}

impl Brain {
    pub(crate) fn playbook(agent: PlaybookAgent) -> Self {
        Brain::Playbook(Box::new(agent))
    }

    pub(crate) fn llm(mut agent: LlmAgent) -> Self {
        let (asks, mut ask_rx) = mpsc::unbounded_channel::<AgentTurn>();
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(turn) = ask_rx.recv().await {
                let mut stream = agent.respond(&turn);
                while let Some(ev) = stream.next().await {
                    if tx.send((turn.id, ev)).is_err() {
                        return;
                    }
                }
            }
        });
        Brain::Llm { asks, events, task }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Brain::Playbook(_) => "playbook",
            Brain::Llm { .. } => "llm",
        }
    }

    pub(crate) fn ask(&mut self, turn: AgentTurn) -> Answer {
        match self {
            Brain::Playbook(agent) => Answer::Now(agent.answer(&turn)),
            Brain::Llm { asks, .. } => {
                let _ = asks.send(turn);
                Answer::Later
            }
        }
    }

    /// The next streamed event. Pending forever for the playbook, and once
    /// the LLM task is gone: the call machine's decision timeout then hands
    /// the caller off, so a dead brain never leaves dead air.
    pub(crate) async fn next(&mut self) -> (TurnId, LlmEvent) {
        match self {
            Brain::Playbook(_) => std::future::pending().await,
            Brain::Llm { events, .. } => match events.recv().await {
                Some(ev) => ev,
                None => std::future::pending().await,
            },
        }
    }
}

impl Drop for Brain {
    fn drop(&mut self) {
        if let Brain::Llm { task, .. } = self {
            task.abort();
        }
    }
}
