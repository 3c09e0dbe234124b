//! The rep console and the control API.

use switchboard_salesforce::SandboxConversation;
use uuid::Uuid;

use crate::common::*;

#[tokio::test]
async fn console_escapes_everything_the_caller_said() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(
            &token,
            conversation,
            &attrs(&[("HandoffReason", "<img src=x onerror=alert(2)>")]),
        )
        .await
        .unwrap();
    h.client
        .send_message(
            &token,
            conversation,
            Uuid::new_v4(),
            "<script>alert(1)</script> & more",
            None,
        )
        .await
        .unwrap();

    let fragment = h.sandbox.console_html();
    assert!(fragment.starts_with("<section"), "an embeddable fragment");
    assert!(!fragment.contains("<script>"), "{fragment}");
    assert!(!fragment.contains("<img"), "{fragment}");
    assert!(fragment.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
    assert!(fragment.contains(&conversation.to_string()));
    assert!(fragment.contains("HandoffReason"));
    assert!(fragment.contains("waiting"));

    let page = reqwest::get(format!("{}/sandbox/console", h.base))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"http-equiv="refresh""#));
    assert!(!page.contains("<script>"));
    let paused = reqwest::get(format!("{}/sandbox/console?refresh=0", h.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!paused.contains(r#"http-equiv="refresh""#));
}

#[tokio::test]
async fn control_api_lists_conversations_and_drives_the_rep() {
    let h = Harness::start().await;
    let before = h.sandbox.request_count();
    let token = h.client.unauthenticated_token().await.unwrap();
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[("SessionId", "s-7")]))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let listed: Vec<serde_json::Value> = http
        .get(format!("{}/sandbox/api/conversations", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], conversation.to_string());
    assert_eq!(listed[0]["routing_attributes"]["SessionId"], "s-7");

    let r = http
        .post(format!(
            "{}/sandbox/api/conversations/{conversation}/messages",
            h.base
        ))
        .json(&serde_json::json!({"text": "Hello from the rep"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = h.sandbox.conversation(conversation).unwrap();
    assert_eq!(after.rep_joined.as_deref(), Some("Riley (Sandbox rep)"));
    assert_eq!(after.messages.last().unwrap().text, "Hello from the rep");
    assert_eq!(after.messages.last().unwrap().sender_role, "Agent");

    // The console's form posts work too (and redirect back).
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .post(format!(
            "{}/sandbox/console/conversations/{conversation}/end",
            h.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let ended: SandboxConversation = h.sandbox.conversation(conversation).unwrap();
    assert_eq!(ended.status, "ended");

    // Console and control routes are not API requests.
    assert_eq!(h.sandbox.request_count() - before, 2);
}
