//! `POST /api/v1/calls` with a scripted dialer: placed, refused (the words
//! come back), telephony off, unknown agent, bad input.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use common::App;
use switchboard_model::{AgentId, SessionId};
use switchboard_web::calls_api::{DialFailure, DialFuture, Dialer};

struct Scripted {
    result: Result<SessionId, DialFailure>,
    asked: Mutex<Vec<(AgentId, String, Option<String>)>>,
}

struct Handle(Arc<Scripted>);

impl Dialer for Handle {
    fn dial(&self, agent: AgentId, to: String, trunk: Option<String>) -> DialFuture {
        self.0.asked.lock().unwrap().push((agent, to, trunk));
        let result = self.0.result.clone();
        Box::pin(async move { result })
    }
}

async fn app_with(result: Option<Result<SessionId, DialFailure>>) -> (App, Option<Arc<Scripted>>) {
    let mut app = App::sqlite().await;
    let r = app
        .api(Method::POST, "/api/v1/agents", Some(r#"{"name":"Sales"}"#))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let scripted = result.map(|result| {
        Arc::new(Scripted {
            result,
            asked: Mutex::new(Vec::new()),
        })
    });
    if let Some(s) = &scripted {
        app.state = app.state.clone().with_dialer(Arc::new(Handle(s.clone())));
        app.router = switchboard_web::router(app.state.clone());
    }
    (app, scripted)
}

#[tokio::test]
async fn an_answered_call_returns_its_session() {
    let id = SessionId::new();
    let (app, dialer) = app_with(Some(Ok(id))).await;
    let r = app
        .api(
            Method::POST,
            "/api/v1/calls",
            Some(r#"{"agent":"Sales","to":"+14155550123","trunk":"carrier"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.json()["session_id"], id.to_string());
    assert_eq!(r.json()["status"], "answered");
    let asked = dialer.unwrap().asked.lock().unwrap().clone();
    assert_eq!(asked[0].1, "+14155550123");
    assert_eq!(asked[0].2.as_deref(), Some("carrier"));
}

#[tokio::test]
async fn a_busy_callee_is_a_conflict_with_the_reason() {
    let (app, _) = app_with(Some(Err(DialFailure::Refused("busy".into())))).await;
    let r = app
        .api(
            Method::POST,
            "/api/v1/calls",
            Some(r#"{"agent":"Sales","to":"+14155550123"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body.contains("busy"), "{}", r.body);
}

#[tokio::test]
async fn refusals_without_telephony_or_agent_or_number() {
    let (app, _) = app_with(None).await;
    let r = app
        .api(
            Method::POST,
            "/api/v1/calls",
            Some(r#"{"agent":"Sales","to":"+14155550123"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body.contains("telephony is off"), "{}", r.body);

    let (app, _) = app_with(Some(Ok(SessionId::new()))).await;
    let r = app
        .api(
            Method::POST,
            "/api/v1/calls",
            Some(r#"{"agent":"Nobody","to":"+14155550123"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = app
        .api(
            Method::POST,
            "/api/v1/calls",
            Some(r#"{"agent":"Sales","to":"  "}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = app
        .api(
            Method::POST,
            "/api/v1/calls",
            Some(r#"{"agent":"Sales","to":"+1","extra":1}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
}
