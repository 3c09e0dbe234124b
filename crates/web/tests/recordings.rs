//! `GET /api/v1/sessions/{id}/recording`: whole file, byte ranges, 416,
//! missing recordings, and access only with credentials.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::App;
use switchboard_model::{Direction, NewSession, Timestamp};

async fn session_with_recording(app: &App, content: Option<&str>) -> String {
    let store = &app.state.store;
    let s = store
        .create_session(&NewSession {
            agent_id: None,
            direction: Direction::Inbound,
            from: "+14155550100".into(),
            to: "+14155550111".into(),
            contact_id: None,
            started_at: Timestamp::from_millis(1_800_000_000_000),
        })
        .await
        .unwrap();
    if let Some(content) = content {
        let dir = app.state.settings.recordings_dir.clone().unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let key = format!("{}.wav", s.id);
        std::fs::write(dir.join(&key), content).unwrap();
        store.set_recording(s.id, &key).await.unwrap();
    }
    s.id.to_string()
}

async fn get(app: &App, id: &str, range: Option<&str>) -> common::Reply {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("/api/v1/sessions/{id}/recording"))
        .header(header::AUTHORIZATION, format!("Bearer {}", app.token));
    if let Some(range) = range {
        req = req.header(header::RANGE, range);
    }
    app.send(req.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn serves_the_recording_whole_and_in_ranges() {
    let app = App::sqlite().await;
    let content: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let id = session_with_recording(&app, Some(&content)).await;

    let r = get(&app, &id, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, content);
    assert_eq!(r.headers[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(r.headers[header::ACCEPT_RANGES], "bytes");

    let r = get(&app, &id, Some("bytes=100-199")).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, content[100..200]);
    assert_eq!(r.headers[header::CONTENT_RANGE], "bytes 100-199/20000");
    assert_eq!(r.headers[header::CONTENT_LENGTH], "100");

    let r = get(&app, &id, Some("bytes=19990-")).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, content[19_990..]);

    let r = get(&app, &id, Some("bytes=-10")).await;
    assert_eq!(r.body, content[19_990..]);

    let r = get(&app, &id, Some("bytes=20000-")).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers[header::CONTENT_RANGE], "bytes */20000");
}

#[tokio::test]
async fn missing_recordings_are_404_and_anonymous_requests_401() {
    let app = App::sqlite().await;
    let id = session_with_recording(&app, None).await;
    assert_eq!(get(&app, &id, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "not-a-session", None).await.status,
        StatusCode::NOT_FOUND
    );

    let id = session_with_recording(&app, Some("RIFF")).await;
    let anonymous = app
        .send(
            Request::builder()
                .uri(format!("/api/v1/sessions/{id}/recording"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_session_page_plays_the_recording_and_seeks_by_turn() {
    let app = App::sqlite().await;
    let id = session_with_recording(&app, Some("RIFF....WAVE")).await;
    let sid: switchboard_model::SessionId = id.parse().unwrap();
    let t = Timestamp::from_millis(1_800_000_002_500);
    app.state
        .store
        .append_turn(sid, switchboard_model::Speaker::Caller, "Hello there", t, t)
        .await
        .unwrap();
    let (cookie, _) = app.login().await;
    let page = app.page(&format!("/inbox/{id}"), &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(&format!(
            r#"<audio id="recording" controls preload="metadata" src="/api/v1/sessions/{id}/recording">"#
        )),
        "{}",
        page.body
    );
    // The turn started 2.5 s after the session: that is where a click seeks.
    assert!(page.body.contains(r#"data-offset="2.50""#), "{}", page.body);

    // Without a recording there is no player.
    let other = session_with_recording(&app, None).await;
    let page = app.page(&format!("/inbox/{other}"), &cookie).await;
    assert!(!page.body.contains("<audio"));

    // The audio element's request carries the login cookie, not a token.
    let r = app
        .send(
            Request::builder()
                .uri(format!("/api/v1/sessions/{id}/recording"))
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}
