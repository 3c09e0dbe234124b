//! Troubleshooting: the product diagnoses "transcript missing" for a session
//! and re-tests whether a handoff can create a conversation.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::App;
use switchboard_model::{
    Direction, HandoffMode, HandoffSpec, NewSession, SessionId, Speaker, Timestamp,
};

async fn session(app: &App, turns: &[&str]) -> SessionId {
    let store = &app.state.store;
    let s = store
        .create_session(&NewSession {
            agent_id: None,
            direction: Direction::Inbound,
            from: "+14155550100".into(),
            to: "+14155550199".into(),
            contact_id: None,
            started_at: Timestamp::from_millis(1_795_132_800_000),
        })
        .await
        .unwrap();
    for (i, text) in turns.iter().enumerate() {
        let t = Timestamp::from_millis(1_795_132_800_000 + i as i64 * 1000);
        store
            .append_turn(s.id, Speaker::Caller, text, t, t)
            .await
            .unwrap();
    }
    s.id
}

#[tokio::test]
async fn transcript_missing_is_diagnosed_for_one_session_with_a_retest() {
    let app = App::sqlite().await;
    let (cookie, _) = app.login().await;

    // Turns recorded, handoff written but not delivered yet (no worker runs).
    let waiting = session(&app, &["I need a person", "now please"]).await;
    app.state
        .store
        .create_handoff(
            waiting,
            &HandoffSpec {
                mode: HandoffMode::LoggedEscalation,
                reason: "asked for a person".into(),
                summary: "wants a person".into(),
                preferred_channel: None,
                channel_details: None,
            },
            None,
        )
        .await
        .unwrap();
    let r = app
        .page(&format!("/troubleshooting?session={waiting}"), &cookie)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("2 turn(s) were recorded."), "{}", r.body);
    assert!(
        r.body.contains("Still being delivered (pending)"),
        "{}",
        r.body
    );
    assert!(r.body.contains(">Re-test<"), "{}", r.body);
    assert!(
        r.body
            .contains(&format!(r#"action="/inbox/{waiting}/redrive""#)),
        "a stuck handoff can be re-driven from here"
    );
    // The Inbox link pasted as is works too.
    let r = app
        .page(
            &format!("/troubleshooting?session=http%3A%2F%2Fhost%2Finbox%2F{waiting}"),
            &cookie,
        )
        .await;
    assert!(r.body.contains("2 turn(s) were recorded."), "{}", r.body);

    // Nothing recorded and never handed off: both named, with what to check.
    let silent = session(&app, &[]).await;
    let r = app
        .page(&format!("/troubleshooting?session={silent}"), &cookie)
        .await;
    assert!(
        r.body.contains("No turns were recorded for this session"),
        "{}",
        r.body
    );
    assert!(r.body.contains("was not handed off"), "{}", r.body);
    assert!(!r.body.contains(&format!("/inbox/{silent}/redrive")));

    let r = app.page("/troubleshooting?session=nope", &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("role=\"alert\""), "{}", r.body);
}

#[tokio::test]
async fn handoff_not_creating_a_conversation_retests_the_connection_in_place() {
    let app = App::sqlite().await;
    let (cookie, csrf) = app.login().await;
    let r = app.page("/troubleshooting", &cookie).await;
    assert!(
        r.body.contains(r#"action="/troubleshooting/test""#),
        "{}",
        r.body
    );

    // Without the CSRF token the re-test is refused.
    let r = app
        .form(Method::POST, "/troubleshooting/test", Some(&cookie), "")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // The sandbox answers: a token can be obtained, shown on this page.
    let r = app
        .form(
            Method::POST,
            "/troubleshooting/test",
            Some(&cookie),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("<h1>Troubleshooting</h1>"), "{}", r.body);
    assert!(
        r.body
            .contains("Connection works: a conversation can be created."),
        "{}",
        r.body
    );
}
