//! The LLM agent against a fake OpenAI-compatible server on 127.0.0.1:0:
//! streamed answers, tools, and every way the service can let us down.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use switchboard_agent::llm::{ContactLookup, HttpTool, LookupError};
use switchboard_agent::{
    AgentTurn, ContactPoint, Decision, EndReason, FollowUpStep, LlmAgent, LlmConfig, LlmEvent,
    Rule, TurnId, ASK_CHANNEL,
};
use switchboard_model::{
    AgentInput, AgentSpec, Contact, ContactId, HandoffMode, Region, Speaker, Timestamp, E164,
};

/// How the fake answers one streamed completion.
enum Reply {
    Sse(String),
    Status(u16),
    Hang,
}

const SUMMARY: &str = "The caller has a billing dispute. They asked for a person.";

#[derive(Default)]
struct Fake {
    replies: Mutex<VecDeque<Reply>>,
    /// Bodies of every streamed completion request, in order.
    requests: Mutex<Vec<Value>>,
    summaries: Mutex<u32>,
    /// What the user tool endpoints received.
    tool_calls: Mutex<Vec<Value>>,
}

impl Fake {
    fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

async fn completions(State(fake): State<Arc<Fake>>, Json(body): Json<Value>) -> Response {
    if body["stream"] == false {
        *fake.summaries.lock().expect("not poisoned") += 1;
        return Json(json!({
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": SUMMARY } }]
        }))
        .into_response();
    }
    fake.requests.lock().expect("not poisoned").push(body);
    let reply = fake.replies.lock().expect("not poisoned").pop_front();
    match reply {
        Some(Reply::Sse(body)) => {
            ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
        }
        Some(Reply::Status(code)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "{\"error\":{\"message\":\"scripted failure\"}}",
        )
            .into_response(),
        Some(Reply::Hang) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        None => (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
    }
}

async fn weather(State(fake): State<Arc<Fake>>, Json(body): Json<Value>) -> Json<Value> {
    fake.tool_calls.lock().expect("not poisoned").push(body);
    Json(json!({ "forecast": "sunny", "high_c": 21 }))
}

async fn opening(
    State(fake): State<Arc<Fake>>,
    Query(query): Query<std::collections::BTreeMap<String, String>>,
) -> &'static str {
    fake.tool_calls
        .lock()
        .expect("not poisoned")
        .push(json!(query));
    "open until 17:00"
}

/// A user tool endpoint that hangs.
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(60)).await;
    "too late"
}

async fn start(replies: Vec<Reply>) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        replies: Mutex::new(replies.into()),
        ..Fake::default()
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/tools/weather", post(weather))
        .route("/tools/opening", get(opening))
        .route("/tools/slow", post(slow))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), fake)
}

fn sse(chunks: &[Value]) -> String {
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

fn content(parts: &[&str]) -> String {
    let mut chunks: Vec<Value> = parts
        .iter()
        .map(|p| json!({ "choices": [{ "index": 0, "delta": { "content": p }, "finish_reason": null }] }))
        .collect();
    chunks.push(json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] }));
    chunks.push(json!({ "choices": [], "usage": { "prompt_tokens": 120, "completion_tokens": 14, "total_tokens": 134 } }));
    sse(&chunks)
}

/// One tool call per `(id, name, argument pieces)`, each piece its own chunk.
fn tool_calls(calls: &[(&str, &str, &[&str])]) -> String {
    let mut chunks = Vec::new();
    for (index, (id, name, pieces)) in calls.iter().enumerate() {
        chunks.push(json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [
            { "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" } }
        ] } }] }));
        for piece in *pieces {
            chunks.push(json!({ "choices": [{ "index": 0, "delta": { "tool_calls": [
                { "index": index, "function": { "arguments": piece } }
            ] } }] }));
        }
    }
    chunks.push(json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }] }));
    sse(&chunks)
}

fn spec(mode: HandoffMode) -> AgentSpec {
    AgentInput {
        name: "Acme front desk".into(),
        instructions: Some("Opening hours: Monday to Friday 9 to 5.".into()),
        handoff_mode: Some(mode),
        handoff_number: Some("+14155550100".into()),
        ..Default::default()
    }
    .validate(Region::default())
    .expect("valid agent")
}

fn caller() -> E164 {
    E164::parse("+14155550123", Region::default()).expect("valid number")
}

fn agent(base: &str, mode: HandoffMode) -> LlmAgent {
    let mut config = LlmConfig::new(&format!("{base}/v1"), "fake-model").expect("valid config");
    config.timeout = Duration::from_millis(500);
    config.turn_timeout = Duration::from_secs(5);
    let client = config.client().expect("a client");
    LlmAgent::new(client, config, &spec(mode), Some(&caller()))
}

/// The engine's side: keeps the history and asks one turn at a time.
struct Conversation {
    history: Vec<(Speaker, String)>,
    turns: u64,
}

impl Conversation {
    fn new() -> Self {
        Self {
            history: vec![(Speaker::Ai, "Hello, Acme.".into())],
            turns: 0,
        }
    }

    fn turn(&mut self, utterance: &str) -> AgentTurn {
        self.turns += 1;
        AgentTurn {
            id: TurnId::from(self.turns),
            history: self.history.clone(),
            utterance: utterance.into(),
            dtmf: None,
            now: Timestamp::from_millis(1_700_000_000_000 + self.turns as i64 * 4_000),
            event: None,
            // This helper acts on every decision, as the call machine does
            // when the caller waits for it.
            last_applied: (self.turns > 1).then(|| TurnId::from(self.turns - 1)),
        }
    }

    /// Ask and collect: the sentences in order, then the decision.
    async fn ask(&mut self, agent: &mut LlmAgent, utterance: &str) -> (Vec<String>, Decision) {
        let turn = self.turn(utterance);
        let events: Vec<LlmEvent> = agent.respond(&turn).collect().await;
        let mut sentences = Vec::new();
        let mut decision = None;
        for event in events {
            assert!(decision.is_none(), "the decision comes last");
            match event {
                LlmEvent::Sentence(s) => sentences.push(s),
                LlmEvent::Decision(d) => decision = Some(d),
            }
        }
        let decision = decision.expect("a decision");
        assert_eq!(
            sentences.join(" "),
            decision.say(),
            "sentences make the say"
        );
        self.history.push((Speaker::Caller, utterance.into()));
        self.history.push((Speaker::Ai, decision.say().into()));
        (sentences, decision)
    }
}

#[tokio::test]
async fn streamed_content_becomes_sentences_then_a_reply() {
    let (base, fake) = start(vec![Reply::Sse(content(&[
        "We open ",
        "at 9 on week",
        "days. On Saturdays we open at ten.",
        " Anything else?",
    ]))])
    .await;
    let mut agent = agent(&base, HandoffMode::LiveTransfer);
    let mut call = Conversation::new();
    let (sentences, decision) = call.ask(&mut agent, "When do you open?").await;
    assert_eq!(
        sentences,
        [
            "We open at 9 on weekdays.",
            "On Saturdays we open at ten.",
            "Anything else?"
        ]
    );
    let Decision::Reply { trace, .. } = &decision else {
        panic!("expected a reply, got {decision:?}");
    };
    assert_eq!(trace.rule, Rule::LlmReply);
    let llm = trace.llm.as_ref().expect("an llm trace");
    assert_eq!(llm.model, "fake-model");
    assert_eq!(llm.usage.map(|u| u.total_tokens), Some(134));
    assert_eq!(llm.rounds.len(), 1);
    assert!(llm.response.starts_with("We open at 9"));

    let request = &fake.requests()[0];
    assert_eq!(request["model"], "fake-model");
    assert_eq!(request["stream"], true);
    let messages = request["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"]
        .as_str()
        .is_some_and(|s| s.starts_with("Opening hours: Monday to Friday 9 to 5.")));
    assert_eq!(
        messages[1],
        json!({ "role": "assistant", "content": "Hello, Acme." })
    );
    assert_eq!(
        messages[2],
        json!({ "role": "user", "content": "When do you open?" })
    );
    let tools: Vec<&str> = request["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(tools, ["transfer_to_human", "end_call"]);
}

#[tokio::test]
async fn split_transfer_call_hands_off_with_the_reason_and_a_summary() {
    let (base, fake) = start(vec![Reply::Sse(tool_calls(&[(
        "call_1",
        "transfer_to_human",
        &[
            "{\"rea",
            "son\": \"Billing dis",
            "pute over a double charge\"}",
        ],
    )]))])
    .await;
    let mut agent = agent(&base, HandoffMode::LiveTransfer);
    let mut call = Conversation::new();
    let (_, decision) = call
        .ask(&mut agent, "You charged me twice, get me a person")
        .await;
    let Decision::Handoff {
        handoff,
        say,
        trace,
    } = decision
    else {
        panic!("expected a handoff, got {decision:?}");
    };
    assert_eq!(handoff.reason, "Billing dispute over a double charge");
    assert_eq!(handoff.mode, HandoffMode::LiveTransfer);
    assert_eq!(
        handoff.summary,
        format!("{SUMMARY} Preferred follow-up: live transfer to a person.")
    );
    assert!(say.contains("connect you"), "{say}");
    assert_eq!(trace.rule, Rule::LlmHandoff);
    let llm = trace.llm.expect("llm trace");
    assert_eq!(llm.tool_calls[0].name, "transfer_to_human");
    assert_eq!(
        llm.tool_calls[0].arguments,
        json!({ "reason": "Billing dispute over a double charge" })
    );
    assert_eq!(llm.summary.map(|s| s.source), Some("llm"));
    assert_eq!(*fake.summaries.lock().expect("not poisoned"), 1);

    // While the transfer runs the agent only holds, without the model.
    let (_, decision) = call.ask(&mut agent, "hello?").await;
    assert_eq!(decision.trace().rule, Rule::AwaitingTransfer);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_dropped_handoff_does_not_leave_the_agent_holding() {
    let (base, fake) = start(vec![
        Reply::Sse(tool_calls(&[(
            "call_1",
            "transfer_to_human",
            &["{\"reason\": \"wants a person\"}"],
        )])),
        Reply::Sse(content(&["Sure, we open at nine."])),
    ])
    .await;
    let mut agent = agent(&base, HandoffMode::LiveTransfer);
    let mut call = Conversation::new();
    let first = call.turn("a person please");
    let decision = agent.decide(&first).await;
    assert!(matches!(decision, Decision::Handoff { .. }));
    // The caller spoke again before the machine used that decision: the
    // machine dropped it and says so in the next turn.
    let mut second = call.turn("actually, when do you open?");
    second.last_applied = None;
    let decision = agent.decide(&second).await;
    assert_eq!(decision.say(), "Sure, we open at nine.");
    assert_eq!(fake.requests().len(), 2);
}

struct Directory;

impl ContactLookup for Directory {
    fn lookup<'a>(
        &'a self,
        phone: &'a E164,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Contact>, LookupError>> + Send + 'a>> {
        Box::pin(async move {
            Ok((phone.as_str() == "+14155550123").then(|| Contact {
                id: ContactId::new(),
                phone: phone.clone(),
                name: "Ana Lopez".into(),
                email: Some("ana@example.com".into()),
                external_id: None,
                created_at: Timestamp::from_millis(0),
                updated_at: Timestamp::from_millis(0),
            }))
        })
    }
}

#[tokio::test]
async fn lookup_contact_round_trip() {
    let (base, fake) = start(vec![
        Reply::Sse(tool_calls(&[(
            "call_1",
            "lookup_contact",
            &["{\"phone\": \"+14155550123\"}"],
        )])),
        Reply::Sse(content(&["Hi Ana, how can I help?"])),
    ])
    .await;
    let mut agent = agent(&base, HandoffMode::LiveTransfer).with_contacts(Arc::new(Directory));
    let mut call = Conversation::new();
    let (sentences, decision) = call.ask(&mut agent, "Hi, it's me").await;
    assert_eq!(sentences, ["Hi Ana, how can I help?"]);
    assert!(matches!(decision, Decision::Reply { .. }));

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let tools = requests[0]["tools"].as_array().expect("tools");
    assert!(tools
        .iter()
        .any(|t| t["function"]["name"] == "lookup_contact"));
    let messages = requests[1]["messages"].as_array().expect("messages");
    let assistant = &messages[messages.len() - 2];
    assert_eq!(
        assistant["tool_calls"][0]["function"]["name"],
        "lookup_contact"
    );
    let tool = messages.last().expect("the tool answer");
    assert_eq!(tool["role"], "tool");
    assert_eq!(tool["tool_call_id"], "call_1");
    let result: Value =
        serde_json::from_str(tool["content"].as_str().expect("text")).expect("json");
    assert_eq!(result["found"], true);
    assert_eq!(result["name"], "Ana Lopez");
    let trace = decision.trace().llm.as_ref().expect("llm trace");
    assert!(trace.tool_calls[0].ok);
    assert_eq!(trace.rounds.len(), 2);
}

#[tokio::test]
async fn user_http_tools_get_the_arguments() {
    let (base, fake) = start(vec![
        Reply::Sse(tool_calls(&[
            ("call_w", "get_weather", &["{\"city\":", " \"Oslo\"}"]),
            ("call_o", "opening_times", &["{\"day\": \"monday\"}"]),
        ])),
        Reply::Sse(content(&["It will be sunny. We are open until five."])),
    ])
    .await;
    let weather = HttpTool::new(
        "get_weather",
        "The weather in a city",
        json!({ "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] }),
        &format!("{base}/tools/weather"),
        "POST",
        Duration::from_secs(2),
    )
    .expect("valid tool");
    let opening = HttpTool::new(
        "opening_times",
        "Opening times for a day",
        json!({ "type": "object", "properties": { "day": { "type": "string" } } }),
        &format!("{base}/tools/opening"),
        "GET",
        Duration::from_secs(2),
    )
    .expect("valid tool");
    let mut agent = agent(&base, HandoffMode::LiveTransfer).with_tools(vec![weather, opening]);
    let mut call = Conversation::new();
    let (sentences, _) = call.ask(&mut agent, "Weather in Oslo? Open Monday?").await;
    assert_eq!(sentences, ["It will be sunny.", "We are open until five."]);

    let received = fake.tool_calls.lock().expect("not poisoned").clone();
    assert_eq!(
        received,
        [json!({ "city": "Oslo" }), json!({ "day": "monday" })]
    );
    let requests = fake.requests();
    let messages = requests[1]["messages"].as_array().expect("messages");
    let answers: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(answers.len(), 2);
    let weather: Value =
        serde_json::from_str(answers[0]["content"].as_str().expect("text")).expect("json");
    assert_eq!(
        weather,
        json!({ "status": 200, "body": { "forecast": "sunny", "high_c": 21 } })
    );
    assert!(answers[1]["content"]
        .as_str()
        .is_some_and(|c| c.contains("open until 17:00")));
}

#[tokio::test]
async fn refused_tool_calls_are_answered_to_the_model() {
    let (base, fake) = start(vec![
        Reply::Sse(tool_calls(&[
            ("call_a", "launch_rocket", &["{}"]),
            ("call_b", "transfer_to_human", &["{reason: oops"]),
            (
                "call_c",
                "end_call",
                &["{\"reason\": \"done\", \"mood\": \"great\"}"],
            ),
        ])),
        Reply::Sse(content(&["Sorry about that. We open at nine."])),
    ])
    .await;
    let mut agent = agent(&base, HandoffMode::LiveTransfer);
    let mut call = Conversation::new();
    let (_, decision) = call.ask(&mut agent, "When do you open?").await;
    assert_eq!(decision.say(), "Sorry about that. We open at nine.");
    let requests = fake.requests();
    let messages = requests[1]["messages"].as_array().expect("messages");
    let answers: Vec<String> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(answers.len(), 3);
    assert!(
        answers[0].contains("unknown tool \\\"launch_rocket\\\""),
        "{}",
        answers[0]
    );
    assert!(answers[1].contains("not a JSON object"), "{}", answers[1]);
    assert!(
        answers[2].contains("unexpected argument \\\"mood\\\""),
        "{}",
        answers[2]
    );
    let trace = decision.trace().llm.as_ref().expect("llm trace");
    assert!(trace.tool_calls.iter().all(|t| !t.ok));
}

#[tokio::test]
async fn a_hanging_user_tool_times_out_and_the_model_is_told() {
    let (base, fake) = start(vec![
        Reply::Sse(tool_calls(&[(
            "call_s",
            "check_stock",
            &["{\"item\": \"floss\"}"],
        )])),
        Reply::Sse(content(&["Sorry, I can't check that right now."])),
    ])
    .await;
    let slow = HttpTool::new(
        "check_stock",
        "Whether an item is in stock",
        json!({ "type": "object", "properties": { "item": { "type": "string" } } }),
        &format!("{base}/tools/slow"),
        "POST",
        Duration::from_millis(300),
    )
    .expect("valid tool");
    let mut agent = agent(&base, HandoffMode::LiveTransfer).with_tools(vec![slow]);
    // The endpoint hangs for 60 s; the tool's 300 ms timeout bounds the turn.
    let mut call = Conversation::new();
    let (_, decision) = tokio::time::timeout(
        Duration::from_secs(30),
        call.ask(&mut agent, "Do you have floss?"),
    )
    .await
    .expect("the tool timeout ends the turn");
    assert_eq!(decision.say(), "Sorry, I can't check that right now.");
    let requests = fake.requests();
    let messages = requests[1]["messages"].as_array().expect("messages");
    let tool = messages.last().expect("the tool answer");
    assert_eq!(tool["role"], "tool");
    assert!(
        tool["content"]
            .as_str()
            .is_some_and(|c| c.contains("did not answer in time")),
        "{tool}"
    );
    let trace = decision.trace().llm.as_ref().expect("llm trace");
    assert_eq!(trace.tool_calls.len(), 1);
    assert!(!trace.tool_calls[0].ok, "the failed tool is traced");
}

#[tokio::test]
async fn the_model_must_answer_after_three_tool_rounds() {
    let again = || Reply::Sse(tool_calls(&[("c", "launch_rocket", &["{}"])]));
    let (base, fake) = start(vec![
        again(),
        again(),
        again(),
        Reply::Sse(content(&["I can't do that."])),
    ])
    .await;
    let mut agent = agent(&base, HandoffMode::LiveTransfer);
    let (_, decision) = Conversation::new().ask(&mut agent, "Launch it").await;
    assert_eq!(decision.say(), "I can't do that.");
    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[2]["tool_choice"], "auto");
    assert_eq!(requests[3]["tool_choice"], "none");
}

#[tokio::test]
async fn server_errors_and_hangs_fall_back_to_a_handoff() {
    for (reply, expect) in [
        (Reply::Status(500), "failed: 500"),
        (Reply::Status(429), "rate limiting"),
        (Reply::Hang, "did not answer in time"),
        (Reply::Sse("data: nonsense\n\n".into()), "unusable answer"),
    ] {
        let (base, _fake) = start(vec![reply]).await;
        let mut agent = agent(&base, HandoffMode::LiveTransfer);
        let (_, decision) = Conversation::new()
            .ask(&mut agent, "When do you open?")
            .await;
        let Decision::Handoff {
            handoff,
            say,
            trace,
        } = decision
        else {
            panic!("expected a handoff, got {decision:?}");
        };
        assert_eq!(handoff.reason, "The AI service was unavailable");
        assert!(handoff
            .summary
            .starts_with("Caller asked: When do you open?"));
        assert!(say.starts_with("I'm sorry, I'm having trouble right now."));
        assert_eq!(trace.rule, Rule::LlmUnavailable);
        let error = trace
            .llm
            .and_then(|l| l.error)
            .expect("the error is traced");
        assert!(error.contains(expect), "{error}");
    }
}

#[tokio::test]
async fn a_stream_without_done_and_with_garbage_is_used() {
    let body = [
        ": keep-alive".to_string(),
        "data: {not json".to_string(),
        "event: something".to_string(),
        format!(
            "data: {}",
            json!({ "choices": [{ "index": 0, "delta": { "content": "We open at nine." } }] })
        ),
        "retry: 10".to_string(),
    ]
    .join("\n");
    let (base, _fake) = start(vec![Reply::Sse(body)]).await;
    let mut agent = agent(&base, HandoffMode::LiveTransfer);
    let (sentences, decision) = Conversation::new().ask(&mut agent, "When?").await;
    assert_eq!(sentences, ["We open at nine."]);
    let trace = decision.trace().llm.as_ref().expect("llm trace");
    assert_eq!(trace.rounds[0].ignored_lines, 1);
}

#[tokio::test]
async fn logged_escalation_runs_the_follow_up_dialogue_to_the_end() {
    let (base, fake) = start(vec![Reply::Sse(tool_calls(&[(
        "call_1",
        "transfer_to_human",
        &["{\"reason\": \"Billing dispute\"}"],
    )]))])
    .await;
    let mut agent = agent(&base, HandoffMode::LoggedEscalation);
    let mut call = Conversation::new();
    let (sentences, decision) = call.ask(&mut agent, "I want a person").await;
    assert!(matches!(decision, Decision::Handoff { .. }));
    assert!(decision.say().ends_with(ASK_CHANNEL), "{}", decision.say());
    assert!(sentences.len() >= 2, "{sentences:?}");

    let (_, decision) = call.ask(&mut agent, "email please").await;
    let Decision::Collect { step, .. } = decision else {
        panic!("expected the dialogue, got {decision:?}");
    };
    assert_eq!(
        step,
        FollowUpStep::AskDetail(switchboard_model::PreferredChannel::Email)
    );
    call.ask(&mut agent, "ana at example dot com").await;
    let (_, decision) = call.ask(&mut agent, "yes").await;
    let Decision::EndCall {
        reason: EndReason::Escalated { handoff, follow_up },
        ..
    } = decision
    else {
        panic!("expected the end of the escalation, got {decision:?}");
    };
    assert_eq!(
        follow_up.map(|f| f.contact),
        Some(ContactPoint::Email("ana@example.com".into()))
    );
    assert_eq!(handoff.reason, "Billing dispute");
    assert_eq!(
        handoff.summary,
        format!("{SUMMARY} Preferred follow-up: email to ana@example.com.")
    );
    assert_eq!(fake.requests().len(), 1, "the dialogue needs no model");
}
