//! Text calls, handoffs and the Salesforce settings through the API and the
//! dashboard, with a real delivery worker and the sandbox on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::App;
use switchboard_handoff::{Worker, WorkerConfig};
use switchboard_model::{HandoffId, SystemClock};
use tokio::sync::watch;

/// Starts a delivery worker wired like `serve` does; stops when dropped.
fn start_worker(app: &App) -> watch::Sender<bool> {
    let (stop, rx) = watch::channel(false);
    let config = WorkerConfig {
        idle_poll: Duration::from_millis(20),
        backoff: switchboard_handoff::policy::Backoff {
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
        },
        ..Default::default()
    };
    let settings = app.state.salesforce.clone().expect("wired");
    let worker = Worker::new(
        app.state.store.clone(),
        settings,
        Arc::new(SystemClock),
        config,
        "web-test".into(),
    )
    .with_notifier(app.state.handoff_notify.clone());
    tokio::spawn(async move { worker.run(rx).await });
    stop
}

async fn wait_status(app: &App, id: &str, want: &str) -> serde_json::Value {
    let id: HandoffId = id.parse().unwrap();
    let h =
        switchboard_handoff::worker::wait_delivered(&app.state.store, id, Duration::from_secs(20))
            .await
            .unwrap();
    let r = app
        .api(Method::GET, &format!("/api/v1/handoffs/{}", h.id), None)
        .await;
    let detail = r.json();
    assert_eq!(detail["handoff"]["status"], want, "{}", r.body);
    detail
}

const CALL: &str = r#"{
  "agent": "Support",
  "from": "+1 415 555 0100",
  "turns": [
    {"speaker": "ai", "text": "Hello, how can I help?", "started_at": "2026-11-25T19:03:07.000Z"},
    {"speaker": "caller", "text": "I need to speak with a person", "started_at": "2026-11-25T19:03:09.000Z"}
  ]
}"#;

#[tokio::test]
async fn text_call_and_handoff_through_the_api_reach_the_sandbox() {
    let app = App::sqlite().await;
    let _worker = start_worker(&app);
    app.api(
        Method::POST,
        "/api/v1/agents",
        Some(r#"{"name":"Support"}"#),
    )
    .await;
    let r = app.api(Method::POST, "/api/v1/sessions", Some(CALL)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let session = r.json()["session"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["turns"].as_array().unwrap().len(), 2);

    let r = app
        .api(
            Method::POST,
            &format!("/api/v1/sessions/{session}/handoff"),
            Some(r#"{"reason":"Caller asked for a person","end_session":true}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let detail = wait_status(&app, r.json()["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(detail["handoff"]["messages_acked"], 4);
    assert_eq!(detail["attempts"][0]["outcome"], "delivered");
    assert_eq!(
        detail["handoff"]["routing_attributes"]["SessionId"],
        session.as_str()
    );
    let conv = &app.sandbox.conversations()[0];
    assert_eq!(conv.routing_attributes.get("SessionId"), Some(&session));

    let again = app
        .api(
            Method::POST,
            &format!("/api/v1/sessions/{session}/handoff"),
            Some(r#"{"reason":"again"}"#),
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "one handoff per session"
    );
    let bad = app
        .api(
            Method::POST,
            "/api/v1/sessions",
            Some(r#"{"agent":"Nobody","from":"+14155550100"}"#),
        )
        .await;
    assert_eq!(
        (bad.status, bad.json()["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("agent"))
    );
    let bad = app
        .api(
            Method::POST,
            "/api/v1/sessions",
            Some(r#"{"agent":"Support","from":"12"}"#),
        )
        .await;
    assert_eq!(bad.json()["error"]["field"], "from");
}

#[tokio::test]
async fn salesforce_settings_are_validated_field_by_field_and_the_key_is_write_only() {
    let app = App::sqlite().await;
    let r = app
        .api(Method::PUT, "/api/v1/settings/salesforce", Some(r#"{"scrt_url":"http://acme.my.salesforce-scrt.com","org_id":"12345","deployment_name":"9bad"}"#))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let fields: Vec<String> = r.json()["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["scrt_url", "org_id", "deployment_name"]);

    let key =
        switchboard_salesforce::keygen("k1", switchboard_salesforce::JwtAlgorithm::Rs256, 2048)
            .unwrap();
    let body = serde_json::json!({
        "scrt_url": "https://acme.my.salesforce-scrt.com",
        "org_id": "00D5g000004abcd",
        "deployment_name": "Support_Web",
        "jwt_key_id": "k1",
        "jwt_issuer": "switchboard",
        "jwt_private_key": key.private_pem,
        "routing_attributes": {"session_id": "OpencxSessionId"}
    });
    let r = app
        .api(
            Method::PUT,
            "/api/v1/settings/salesforce",
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got = app
        .api(Method::GET, "/api/v1/settings/salesforce", None)
        .await;
    assert!(
        !got.body.contains("PRIVATE KEY"),
        "the key is never returned"
    );
    let v = got.json();
    assert_eq!(v["private_key_set"], true);
    assert_eq!(
        v["settings"]["routing_attributes"]["session_id"],
        "OpencxSessionId"
    );
    assert_eq!(v["sources"]["org_id"], "dashboard");
    assert_eq!(v["destination"]["kind"], "salesforce");

    let mismatched = serde_json::json!({"scrt_url": "https://acme.my.salesforce-scrt.com", "org_id": "00D5g000004abcd", "deployment_name": "Support_Web", "jwt_key_id": "k1", "jwt_issuer": "x", "jwt_private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"});
    let r = app
        .api(
            Method::PUT,
            "/api/v1/settings/salesforce",
            Some(&mismatched.to_string()),
        )
        .await;
    assert_eq!(r.json()["error"]["field"], "jwt_private_key", "{}", r.body);
}

#[tokio::test]
async fn connection_test_reports_each_step_with_salesforces_answer() {
    let app = App::sqlite().await;
    let r = app
        .api(Method::POST, "/api/v1/settings/salesforce/test", None)
        .await;
    let t = r.json();
    assert_eq!(t["ok"], true, "the sandbox answers: {}", r.body);
    assert_eq!(t["destination"]["kind"], "sandbox");

    // Point at the sandbox with a deployment it does not know.
    let cfg = app.sandbox.config();
    let url = match &t["destination"]["url"] {
        serde_json::Value::String(u) => u.clone(),
        _ => panic!("{t}"),
    };
    let body =
        serde_json::json!({"scrt_url": url, "org_id": cfg.org_id, "deployment_name": "Not_There"});
    assert_eq!(
        app.api(
            Method::PUT,
            "/api/v1/settings/salesforce",
            Some(&body.to_string())
        )
        .await
        .status,
        StatusCode::OK
    );
    let t = app
        .api(Method::POST, "/api/v1/settings/salesforce/test", None)
        .await
        .json();
    assert_eq!(t["ok"], false);
    let step = &t["steps"][1];
    assert_eq!(step["ok"], false);
    assert!(
        step["detail"].as_str().unwrap().contains("Not_There"),
        "Salesforce's message is shown: {t}"
    );

    // A routing attribute name the deployment does not have is called out.
    let body = serde_json::json!({"scrt_url": url, "org_id": cfg.org_id, "deployment_name": cfg.deployment_name, "routing_attributes": {"session_id": "Call_Session_Id"}});
    app.api(
        Method::PUT,
        "/api/v1/settings/salesforce",
        Some(&body.to_string()),
    )
    .await;
    let t = app
        .api(Method::POST, "/api/v1/settings/salesforce/test", None)
        .await
        .json();
    let attrs = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "routing attributes")
        .unwrap()
        .clone();
    assert_eq!(attrs["ok"], false);
    assert!(
        attrs["detail"]
            .as_str()
            .unwrap()
            .contains("Call_Session_Id"),
        "{attrs}"
    );
}

#[tokio::test]
async fn troubleshooting_names_the_failure_and_redrive_delivers_after_the_fix() {
    let app = App::sqlite().await;
    let _worker = start_worker(&app);
    let (cookie, csrf) = app.login().await;
    app.api(
        Method::POST,
        "/api/v1/agents",
        Some(r#"{"name":"Support"}"#),
    )
    .await;

    // Break the settings: a deployment the org does not have.
    let t = app
        .api(Method::POST, "/api/v1/settings/salesforce/test", None)
        .await
        .json();
    let url = t["destination"]["url"].as_str().unwrap().to_string();
    let org = app.sandbox.config().org_id;
    let form = format!("csrf={csrf}&scrt_url={}&org_id={org}&deployment_name=Broken_Deployment&jwt_algorithm=RS256", url.replace(':', "%3A").replace('/', "%2F"));
    let r = app
        .form(
            Method::POST,
            "/settings/integrations/salesforce",
            Some(&cookie),
            &form,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);

    let r = app.api(Method::POST, "/api/v1/sessions", Some(CALL)).await;
    let session = r.json()["session"]["id"].as_str().unwrap().to_string();
    let h = app
        .api(
            Method::POST,
            &format!("/api/v1/sessions/{session}/handoff"),
            Some(r#"{"reason":"Caller asked for a person"}"#),
        )
        .await;
    wait_status(&app, h.json()["id"].as_str().unwrap(), "dead_letter").await;

    let page = app.page("/troubleshooting", &cookie).await;
    assert!(
        page.body.contains("Broken_Deployment"),
        "the failing handoff shows Salesforce's error: {}",
        page.body
    );
    let inbox = app.page(&format!("/inbox/{session}"), &cookie).await;
    assert!(
        inbox.body.contains("dead_letter") && inbox.body.contains("Re-drive"),
        "{}",
        inbox.body
    );

    // Fix, re-drive from the session page, and it is delivered.
    let cfg = app.sandbox.config();
    let form = format!(
        "csrf={csrf}&scrt_url={}&org_id={org}&deployment_name={}&jwt_algorithm=RS256",
        url.replace(':', "%3A").replace('/', "%2F"),
        cfg.deployment_name
    );
    assert_eq!(
        app.form(
            Method::POST,
            "/settings/integrations/salesforce",
            Some(&cookie),
            &form
        )
        .await
        .status,
        StatusCode::SEE_OTHER
    );
    let r = app
        .form(
            Method::POST,
            &format!("/inbox/{session}/redrive"),
            Some(&cookie),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    wait_status(&app, h.json()["id"].as_str().unwrap(), "delivered").await;
    let inbox = app.page(&format!("/inbox/{session}"), &cookie).await;
    assert!(
        inbox.body.contains("data-status=\"delivered\""),
        "{}",
        inbox.body
    );
    let console = app.page("/sandbox", &cookie).await;
    assert!(
        console.body.contains("I need to speak with a person"),
        "the rep console shows the transcript"
    );
}

#[tokio::test]
async fn the_settings_page_marks_every_bad_field_and_runs_the_test() {
    let app = App::sqlite().await;
    let (cookie, csrf) = app.login().await;
    let page = app.page("/settings/integrations", &cookie).await;
    assert!(page.body.contains("built-in MIAW sandbox"), "{}", page.body);
    let r = app
        .form(
            Method::POST,
            "/settings/integrations/salesforce",
            Some(&cookie),
            &format!("csrf={csrf}&scrt_url=ftp%3A%2F%2Fx&org_id=123&deployment_name=ok"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body.contains("id=\"scrt_url-error\"") && r.body.contains("id=\"org_id-error\""),
        "{}",
        r.body
    );
    let r = app
        .form(
            Method::POST,
            "/settings/integrations/salesforce/test",
            Some(&cookie),
            &format!("csrf={csrf}"),
        )
        .await;
    assert!(r.body.contains("Connection works."), "{}", r.body);
}
