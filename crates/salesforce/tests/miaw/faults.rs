//! Injected faults, as the handoff worker will meet them.

use std::time::Duration;

use switchboard_salesforce::{Fault, FaultScope, MiawError, TransportKind};
use uuid::Uuid;

use crate::common::*;

async fn conversation(h: &Harness) -> (switchboard_salesforce::AccessToken, Uuid) {
    let token = h.client.unauthenticated_token().await.unwrap();
    let id = Uuid::new_v4();
    h.client
        .create_conversation(&token, id, &attrs(&[]))
        .await
        .unwrap();
    (token, id)
}

#[tokio::test]
async fn rate_limit_is_retryable_with_retry_after_and_not_applied() {
    let h = Harness::start().await;
    let (token, id) = conversation(&h).await;
    h.sandbox.faults().push_scoped(
        Fault::Status {
            status: 429,
            retry_after_secs: Some(2),
            times: 1,
        },
        FaultScope::Message,
    );
    let message = Uuid::new_v4();
    let err = h
        .client
        .send_message(&token, id, message, "hi", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MiawError::Http { status: 429, retry_after: Some(d), .. } if *d == Duration::from_secs(2)),
        "{err:?}"
    );
    assert!(err.is_retryable() && !err.is_permanent());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert!(h.sandbox.conversation(id).unwrap().messages.is_empty());
    h.client
        .send_message(&token, id, message, "hi", None)
        .await
        .unwrap();
    assert_eq!(h.sandbox.conversation(id).unwrap().messages.len(), 1);
}

#[tokio::test]
async fn server_errors_on_tokens_are_retryable() {
    let h = Harness::start().await;
    h.sandbox.faults().push_scoped(
        Fault::Status {
            status: 503,
            retry_after_secs: None,
            times: 2,
        },
        FaultScope::Token,
    );
    for _ in 0..2 {
        let err = h.client.unauthenticated_token().await.unwrap_err();
        assert_eq!(err.status(), Some(503));
        assert!(err.is_retryable());
    }
    h.client.unauthenticated_token().await.unwrap();
}

#[tokio::test]
async fn lost_response_applies_the_message_and_the_retry_is_accepted_once() {
    let h = Harness::start().await;
    let (token, id) = conversation(&h).await;
    h.sandbox
        .faults()
        .push_scoped(Fault::LostResponse { times: 1 }, FaultScope::Message);
    let message = Uuid::new_v4();
    let err = h
        .client
        .send_message(&token, id, message, "hi", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MiawError::Transport {
                kind: TransportKind::Reset,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let recorded = h.sandbox.conversation(id).unwrap();
    assert_eq!(recorded.messages.len(), 1, "the request was applied");
    // The worker retries with the same id: accepted, still one copy.
    h.client
        .send_message(&token, id, message, "hi", None)
        .await
        .unwrap();
    assert_eq!(h.sandbox.conversation(id).unwrap().messages.len(), 1);
}

#[tokio::test]
async fn reset_is_a_transport_error_and_nothing_is_applied() {
    let h = Harness::start().await;
    let (token, id) = conversation(&h).await;
    h.sandbox.faults().push(Fault::Reset { times: 1 });
    let err = h
        .client
        .send_message(&token, id, Uuid::new_v4(), "hi", None)
        .await
        .unwrap_err();
    assert_eq!(err.transport_kind(), Some(TransportKind::Reset), "{err:?}");
    assert!(h.sandbox.conversation(id).unwrap().messages.is_empty());
    assert!(h.sandbox.faults().list().is_empty(), "the fault is spent");
}

#[tokio::test]
async fn hanging_request_is_a_client_timeout() {
    let h = Harness::start().await;
    let (token, id) = conversation(&h).await;
    let impatient = h.client_with(|c| c.request_timeout = Duration::from_millis(300));
    h.sandbox.faults().push(Fault::Timeout { times: 1 });
    let err = impatient
        .send_message(&token, id, Uuid::new_v4(), "hi", None)
        .await
        .unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportKind::Timeout),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(h.sandbox.conversation(id).unwrap().messages.is_empty());
}

#[tokio::test]
async fn down_fails_everything_until_cleared_and_latency_only_delays() {
    let h = Harness::start().await;
    h.sandbox.faults().push(Fault::Down);
    for _ in 0..3 {
        let err = h.client.unauthenticated_token().await.unwrap_err();
        assert!(matches!(err, MiawError::Transport { .. }), "{err:?}");
    }
    h.sandbox.faults().clear();
    h.sandbox.faults().push(Fault::Latency { ms: 20 });
    h.client.unauthenticated_token().await.unwrap();
    assert_eq!(h.sandbox.request_count(), 4);
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = switchboard_salesforce::MiawClient::new(switchboard_salesforce::MiawConfig::new(
        format!("http://127.0.0.1:{port}"),
        "00D000000000001",
        "Switchboard_Sandbox",
    ))
    .unwrap();
    let err = client.unauthenticated_token().await.unwrap_err();
    assert_eq!(
        err.transport_kind(),
        Some(TransportKind::Connect),
        "{err:?}"
    );
    assert!(err.to_string().contains("check the SCRT URL"), "{err}");
}

#[tokio::test]
async fn faults_can_be_set_over_http() {
    let h = Harness::start().await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/sandbox/api/faults", h.base))
        .json(&serde_json::json!([{"kind": "status", "status": 500, "scope": "token"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.client.unauthenticated_token().await.unwrap_err().status(),
        Some(500)
    );
    let r = http
        .post(format!("{}/sandbox/api/faults", h.base))
        .json(&serde_json::json!([{"kind": "down"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(h.client.unauthenticated_token().await.is_err());
    let r = http
        .delete(format!("{}/sandbox/api/faults", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    h.client.unauthenticated_token().await.unwrap();
    let r = http
        .post(format!("{}/sandbox/api/faults", h.base))
        .json(&serde_json::json!([{"kind": "explode"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_a_tls_error() {
    let h = Harness::start().await;
    let tls = h.client_with(|c| c.scrt_url = c.scrt_url.replace("http://", "https://"));
    let err = tls.unauthenticated_token().await.unwrap_err();
    assert_eq!(err.transport_kind(), Some(TransportKind::Tls), "{err:?}");
}

#[tokio::test]
async fn unknown_host_is_a_dns_error() {
    let client = switchboard_salesforce::MiawClient::new(switchboard_salesforce::MiawConfig::new(
        "https://switchboard-test.invalid",
        "00D000000000001",
        "Switchboard_Sandbox",
    ))
    .unwrap();
    let err = client.unauthenticated_token().await.unwrap_err();
    assert_eq!(err.transport_kind(), Some(TransportKind::Dns), "{err:?}");
}
