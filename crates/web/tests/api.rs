//! The JSON API: happy paths and every kind of bad input the issue names.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::App;
use switchboard_web::routes::{table, Access};

#[tokio::test]
async fn agents_crud_round_trip() {
    let app = App::sqlite().await;
    let r = app
        .api(
            Method::POST,
            "/api/v1/agents",
            Some(r#"{"name":"Support","routing_attributes":{"session_id":"OpencxSessionId"}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let agent = r.json();
    assert_eq!(agent["routing_attributes"]["session_id"], "OpencxSessionId");
    assert_eq!(agent["handoff_mode"], "logged_escalation");
    let id = agent["id"].as_str().unwrap();

    let r = app.api(Method::GET, "/api/v1/agents/Support", None).await;
    assert_eq!(r.json()["id"], id);

    let r = app
        .api(
            Method::PUT,
            &format!("/api/v1/agents/{id}"),
            Some(r#"{"name":"Support","handoff_mode":"live_transfer","handoff_number":"+1 415 555 0123"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["handoff_number"], "+14155550123");

    let r = app
        .api(
            Method::POST,
            "/api/v1/agents",
            Some(r#"{"name":"Support"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["error"]["field"], "name");

    assert_eq!(
        app.api(Method::DELETE, &format!("/api/v1/agents/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = app
        .api(Method::GET, &format!("/api/v1/agents/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_name_the_problem() {
    let app = App::sqlite().await;
    let r = app
        .api(Method::POST, "/api/v1/agents", Some(r#"{"name": "x""#))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));

    let r = app
        .api(
            Method::POST,
            "/api/v1/agents",
            Some(r#"{"name": "x", "max_concurrent_calls": "ten"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "max_concurrent_calls");

    let r = app
        .api(
            Method::POST,
            "/api/v1/agents",
            Some(r#"{"name": "x", "routing_attributes": {"sesion_id": "A"}}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "routing_attributes.sesion_id");
    assert!(r.body.contains("unknown field `sesion_id`"), "{}", r.body);

    let r = app
        .api(
            Method::POST,
            "/api/v1/agents",
            Some(r#"{"name": "x", "handoff_mode": "live_transfer"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "handoff_number");

    let r = app
        .api(
            Method::POST,
            "/api/v1/agents",
            Some(r#"{"name": "x", "routing_attributes": {"session_id": "Opencx Session"}}"#),
        )
        .await;
    assert_eq!(r.json()["error"]["field"], "routing_attributes.session_id");

    // Not JSON at all.
    let r = app
        .send(
            Request::post("/api/v1/agents")
                .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
                .body(Body::from("name=x"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = app
        .api(Method::GET, "/api/v1/sessions?limit=many", None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "limit");
}

#[tokio::test]
async fn numbers_bind_to_one_agent_and_bad_numbers_say_why() {
    let app = App::sqlite().await;
    app.api(
        Method::POST,
        "/api/v1/agents",
        Some(r#"{"name":"Support"}"#),
    )
    .await;
    app.api(Method::POST, "/api/v1/agents", Some(r#"{"name":"Sales"}"#))
        .await;

    let r = app
        .api(
            Method::POST,
            "/api/v1/numbers",
            Some(r#"{"number":"(415) 555-0100","agent":"Support"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.json()["e164"], "+14155550100");

    let r = app
        .api(
            Method::POST,
            "/api/v1/numbers",
            Some(r#"{"number":"+14155550100","agent":"Sales"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("`Support`"),
        "409 names the agent holding the number: {msg}"
    );

    let r = app
        .api(
            Method::PUT,
            "/api/v1/numbers/+14155550100",
            Some(r#"{"agent":"Sales"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = app
        .api(
            Method::POST,
            "/api/v1/numbers",
            Some(r#"{"number":"555","agent":"Support"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "number");
    assert!(r.body.contains("not a valid number"), "{}", r.body);

    let r = app
        .api(
            Method::POST,
            "/api/v1/numbers",
            Some(r#"{"number":"+14155550101","agent":"Nobody"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["field"], "agent");

    let r = app
        .api(Method::GET, "/api/v1/numbers?agent=Support", None)
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = app
        .api(
            Method::PUT,
            "/api/v1/numbers/+14155550100",
            Some(r#"{"agent":null}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["agent_id"].is_null());
}

#[tokio::test]
async fn contacts_and_sessions_read() {
    let app = App::sqlite().await;
    let r = app
        .api(
            Method::POST,
            "/api/v1/contacts",
            Some(r#"{"phone":"+14155550100","name":"Ana","email":"ana@example.com"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .api(
            Method::POST,
            "/api/v1/contacts",
            Some(r#"{"phone":"+1 415 555 0100","name":"Dup"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .api(Method::GET, "/api/v1/contacts?search=ana", None)
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);

    let store = &app.state.store;
    let s = store
        .create_session(&switchboard_model::NewSession {
            agent_id: None,
            direction: switchboard_model::Direction::Inbound,
            from: "+14155550100".into(),
            to: "+14155550111".into(),
            contact_id: None,
            started_at: switchboard_model::Timestamp::from_millis(1_800_000_000_123),
        })
        .await
        .unwrap();
    let t = switchboard_model::Timestamp::from_millis(1_800_000_001_000);
    store
        .append_turn(
            s.id,
            switchboard_model::Speaker::Caller,
            "I need to speak with a person",
            t,
            t,
        )
        .await
        .unwrap();
    let r = app
        .api(Method::GET, &format!("/api/v1/sessions/{}", s.id), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let d = r.json();
    assert_eq!(d["session"]["started_at"], "2027-01-15T08:00:00.123Z");
    assert_eq!(d["turns"][0]["text"], "I need to speak with a person");
    let r = app
        .api(Method::GET, "/api/v1/sessions?direction=inbound", None)
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = app
        .api(Method::GET, "/api/v1/sessions?direction=sideways", None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .api(Method::GET, "/api/v1/sessions/not-a-uuid", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tokens_are_shown_once_and_work() {
    let app = App::sqlite().await;
    let r = app
        .api(Method::POST, "/api/v1/tokens", Some(r#"{"name":"ci"}"#))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let secret = r.json()["token"].as_str().unwrap().to_string();
    let listed = app.api(Method::GET, "/api/v1/tokens", None).await;
    assert!(!listed.body.contains(&secret), "the secret is never listed");
    let r = app
        .send(
            Request::get("/api/v1/me")
                .header(header::AUTHORIZATION, format!("Bearer {secret}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.json()["actor"], "token:ci");
    let entries = app.state.store.audit_entries(10).await.unwrap();
    assert!(entries
        .iter()
        .any(|e| e.action == "token.create" && e.actor == "token:tests"));
}

#[tokio::test]
async fn database_down_at_run_time_is_503_not_a_panic() {
    let app = App::sqlite().await;
    app.state.store.close().await;
    let r = app.api(Method::GET, "/api/v1/agents", None).await;
    // The bearer check itself needs the database: it answers 503, never 401 or 500.
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "unavailable");
    let r = app
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = app
        .send(Request::get("/healthz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "liveness does not depend on the database"
    );
    let r = app
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert!(r.body.contains("switchboard_database_up 0"), "{}", r.body);
}

#[tokio::test]
async fn openapi_documents_every_api_route() {
    let app = App::sqlite().await;
    let doc = app.api(Method::GET, "/api/openapi.json", None).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for route in table()
        .into_iter()
        .filter(|r| r.access == Access::Api && r.path.starts_with("/api/v1"))
    {
        let method = route.method.as_str().to_lowercase();
        assert!(
            doc["paths"][route.path][&method].is_object(),
            "{} {} is documented",
            route.method,
            route.path
        );
    }
    assert!(doc["components"]["schemas"]["AgentInput"].is_object());
}

#[tokio::test]
async fn health_and_metrics() {
    let app = App::sqlite().await;
    assert_eq!(
        app.send(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .status,
        StatusCode::OK
    );
    app.send(Request::get("/nope").body(Body::empty()).unwrap())
        .await;
    let m = app
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert!(m.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(m.body.contains("switchboard_database_up 1"));
    assert!(
        m.body
            .contains("switchboard_handoff_jobs{state=\"dead\"} 0"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("switchboard_http_responses_total{class=\"4xx\"} 1"),
        "{}",
        m.body
    );
}

#[tokio::test]
async fn api_works_on_postgres_too() {
    let Some(store) = switchboard_store::testing::postgres_store().await.unwrap() else {
        eprintln!("note: PostgreSQL not configured; skipped");
        return;
    };
    let app = App::with_store(store, None).await;
    let r = app
        .api(
            Method::POST,
            "/api/v1/agents",
            Some(r#"{"name":"Support"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .api(
            Method::POST,
            "/api/v1/numbers",
            Some(r#"{"number":"+14155550100","agent":"Support"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .api(
            Method::POST,
            "/api/v1/agents",
            Some(r#"{"name":"Support"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

/// Changes to what routes a call (agents, numbers, trunks) poke telephony
/// at once; other changes do not.
#[tokio::test]
async fn routing_changes_notify_telephony() {
    use std::time::Duration;
    let app = App::sqlite().await;
    let changed = app.state.routing_changed.clone();
    let poked = || async {
        tokio::time::timeout(Duration::from_millis(200), changed.notified())
            .await
            .is_ok()
    };
    let r = app
        .api(Method::POST, "/api/v1/agents", Some(r#"{"name":"Desk"}"#))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(poked().await, "agent.create");
    let r = app
        .api(
            Method::POST,
            "/api/v1/numbers",
            Some(r#"{"number":"+14155550100","agent":"Desk"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(poked().await, "number.add");
    let r = app
        .api(Method::POST, "/api/v1/tokens", Some(r#"{"name":"ci"}"#))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(!poked().await, "a token is not routing");
}
