//! End-to-end flows and the validation a user would run into.

use std::time::Duration;

use switchboard_salesforce::{JwtAlgorithm, JwtSigner, MiawError, RoutingStatus};
use uuid::Uuid;

use crate::common::*;

#[tokio::test]
async fn unauthenticated_handoff_creates_routes_posts_in_order_and_closes() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    assert_eq!(token.deployment_type.as_deref(), Some("api"));
    assert_eq!(
        token.hidden_prechat_fields,
        h.sandbox.config().hidden_prechat_fields
    );
    assert!(token.expires_at_unix.unwrap() > now_unix());
    assert_eq!(
        token.unknown_routing_attributes(["SessionId", "NotAField"]),
        ["NotAField"]
    );

    let conversation = Uuid::new_v4();
    let routing = attrs(&[
        ("SessionId", "s-123"),
        ("CallerPhone", "+14155550100"),
        ("NotAField", "x"),
    ]);
    h.client
        .create_conversation(&token, conversation, &routing)
        .await
        .unwrap();
    assert_eq!(
        h.client
            .conversation_status(&token, conversation)
            .await
            .unwrap(),
        RoutingStatus::Routed
    );

    let texts = [
        "Caller: I need a person",
        "AI agent: Connecting you now",
        "Summary: billing question",
    ];
    let session_routing = attrs(&[("HandoffReason", "caller asked")]);
    for (i, text) in texts.iter().enumerate() {
        let sent = h
            .client
            .send_message(
                &token,
                conversation,
                Uuid::new_v4(),
                text,
                (i == 0).then_some(&session_routing),
            )
            .await
            .unwrap();
        assert!(sent.entry_id.is_some() && sent.client_timestamp.is_some());
    }

    let entries = h
        .client
        .list_entries(&token, conversation, 20)
        .await
        .unwrap();
    let read_back: Vec<&str> = entries
        .iter()
        .filter(|e| e.entry_type == "Message")
        .map(|e| e.text.as_ref().unwrap().expose().as_str())
        .collect();
    assert_eq!(read_back, texts);
    assert!(entries.iter().any(|e| e.entry_type == "RoutingResult"));
    assert!(entries
        .iter()
        .filter(|e| e.entry_type == "Message")
        .all(
            |e| e.sender_role == "EndUser" && e.message_id.as_deref() == Some(e.entry_id.as_str())
        ));

    let recorded = h.sandbox.conversation(conversation).unwrap();
    assert_eq!(recorded.end_user, "Guest");
    assert!(!recorded.authenticated);
    assert_eq!(
        recorded.routing_attributes,
        attrs(&[
            ("SessionId", "s-123"),
            ("CallerPhone", "+14155550100"),
            ("HandoffReason", "caller asked")
        ])
    );
    assert_eq!(recorded.ignored_routing_attributes, ["NotAField"]);
    assert_eq!(recorded.messages.len(), 3);
    assert_eq!(recorded.sessions, 1);

    h.client
        .close_conversation(&token, conversation)
        .await
        .unwrap();
    assert_eq!(
        h.sandbox.conversation(conversation).unwrap().status,
        "closed"
    );
    // Already gone: still Ok.
    h.client
        .close_conversation(&token, conversation)
        .await
        .unwrap();
    let err = h
        .client
        .send_message(&token, conversation, Uuid::new_v4(), "late", None)
        .await
        .unwrap_err();
    assert!(err.is_not_found() && err.is_permanent(), "{err}");
    assert!(h.sandbox.request_count() >= 9);
}

#[tokio::test]
async fn authenticated_identity_is_verified_with_the_registered_key() {
    let h = Harness::with(verified_config()).await;
    let signer = JwtSigner::from_pem(&key().private_pem, KID, ISSUER, JwtAlgorithm::Rs256).unwrap();
    let identity = signer.sign("+14155550100", now_unix(), 300).unwrap();
    let token = h.client.authenticated_token(&identity).await.unwrap();
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[("SessionId", "s-9")]))
        .await
        .unwrap();
    h.client
        .send_message(&token, conversation, Uuid::new_v4(), "hello", None)
        .await
        .unwrap();
    let recorded = h.sandbox.conversation(conversation).unwrap();
    assert!(recorded.authenticated);
    assert_eq!(recorded.end_user, "+14155550100");

    // With User Verification on, guests are refused for good.
    let err = h.client.unauthenticated_token().await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.is_permanent());
    assert!(err.to_string().contains("User Verification is on"), "{err}");
}

#[tokio::test]
async fn identity_signed_with_another_key_is_refused_with_salesforce_words() {
    let h = Harness::with(verified_config()).await;
    let wrong =
        JwtSigner::from_pem(&other_key().private_pem, KID, ISSUER, JwtAlgorithm::Rs256).unwrap();
    let err = h
        .client
        .authenticated_token(&wrong.sign("+14155550100", now_unix(), 300).unwrap())
        .await
        .unwrap_err();
    let MiawError::Http { status, body, .. } = &err else {
        panic!("expected an HTTP error, got {err:?}");
    };
    assert_eq!(*status, 401);
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "customerIdentityToken signature does not verify with key 'test-kid'", "code": "UNAUTHORIZED"})
    );
    assert!(err.is_unauthorized() && !err.is_permanent());
    assert!(err
        .to_string()
        .contains("customerIdentityToken signature does not verify with key 'test-kid'"));

    let right =
        JwtSigner::from_pem(&key().private_pem, KID, "someone-else", JwtAlgorithm::Rs256).unwrap();
    let err = h
        .client
        .authenticated_token(&right.sign("x", now_unix(), 300).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match the keyset issuer"),
        "{err}"
    );

    let right = JwtSigner::from_pem(&key().private_pem, KID, ISSUER, JwtAlgorithm::Rs256).unwrap();
    let err = h
        .client
        .authenticated_token(&right.sign("x", now_unix() - 600, 300).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.is_unauthorized() && err.to_string().contains("expired"),
        "{err}"
    );

    let other_kid = JwtSigner::from_pem(
        &key().private_pem,
        "unknown-kid",
        ISSUER,
        JwtAlgorithm::Rs256,
    )
    .unwrap();
    let err = h
        .client
        .authenticated_token(&other_kid.sign("x", now_unix(), 300).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no key with kid 'unknown-kid'"),
        "{err}"
    );

    let rs512 = JwtSigner::from_pem(&key().private_pem, KID, ISSUER, JwtAlgorithm::Rs512).unwrap();
    let err = h
        .client
        .authenticated_token(&rs512.sign("x", now_unix(), 300).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("registered for RS256"), "{err}");
}

#[tokio::test]
async fn rs512_identity_is_accepted_when_the_key_is_registered_for_it() {
    let mut jwk = key().jwk.clone();
    jwk["alg"] = "RS512".into();
    let config = switchboard_salesforce::SandboxConfig {
        keys: vec![(KID.to_string(), jwk)],
        ..verified_config()
    };
    let h = Harness::with(config).await;
    let signer = JwtSigner::from_pem(&key().private_pem, KID, ISSUER, JwtAlgorithm::Rs512).unwrap();
    h.client
        .authenticated_token(&signer.sign("crm-42", now_unix(), 60).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn authenticated_tokens_are_refused_while_user_verification_is_off() {
    let h = Harness::start().await;
    let signer = JwtSigner::from_pem(&key().private_pem, KID, ISSUER, JwtAlgorithm::Rs256).unwrap();
    let err = h
        .client
        .authenticated_token(&signer.sign("x", now_unix(), 60).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string().contains("User Verification is off"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_deployment_and_foreign_org_are_permanent_400s() {
    let h = Harness::start().await;
    let err = h
        .client_with(|c| c.deployment_name = "Nope_Deployment".into())
        .unauthenticated_token()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.is_permanent() && !err.is_retryable());
    assert!(
        err.to_string()
            .contains("no Embedded Service deployment named 'Nope_Deployment'"),
        "{err}"
    );

    let err = h
        .client_with(|c| c.org_id = "00D0000000000ZZ".into())
        .unauthenticated_token()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("orgId"), "{err}");

    // The 18-character form of the configured org id is the same org.
    h.client_with(|c| c.org_id = "00D000000000001AAA".into())
        .unauthenticated_token()
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_access_token_is_unauthorized_and_a_new_one_works() {
    let h = Harness::start().await;
    h.sandbox.set_access_token_ttl(Duration::ZERO);
    let token = h.client.unauthenticated_token().await.unwrap();
    assert!(token.expires_within(now_unix(), 0));
    let err = h
        .client
        .create_conversation(&token, Uuid::new_v4(), &attrs(&[]))
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(h
        .client
        .continuation_token(&token)
        .await
        .unwrap_err()
        .is_unauthorized());

    h.sandbox.set_access_token_ttl(Duration::from_secs(3600));
    let fresh = h.client.unauthenticated_token().await.unwrap();
    h.client
        .create_conversation(&fresh, Uuid::new_v4(), &attrs(&[]))
        .await
        .unwrap();
}

#[tokio::test]
async fn continuation_token_keeps_the_same_end_user() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[]))
        .await
        .unwrap();
    let next = h.client.continuation_token(&token).await.unwrap();
    assert_ne!(next.access_token, token.access_token);
    assert_eq!(next.hidden_prechat_fields, token.hidden_prechat_fields);
    h.client
        .send_message(&next, conversation, Uuid::new_v4(), "still me", None)
        .await
        .unwrap();
    assert_eq!(
        h.sandbox.conversation(conversation).unwrap().messages.len(),
        1
    );

    // A different guest cannot see it.
    let stranger = h.client.unauthenticated_token().await.unwrap();
    let err = h
        .client
        .conversation_status(&stranger, conversation)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn repeated_ids_are_accepted_once() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let conversation = Uuid::new_v4();
    let routing = attrs(&[("SessionId", "s-1")]);
    h.client
        .create_conversation(&token, conversation, &routing)
        .await
        .unwrap();
    h.client
        .create_conversation(&token, conversation, &routing)
        .await
        .unwrap();
    assert_eq!(h.sandbox.conversations().len(), 1);

    let message = Uuid::new_v4();
    let first = h
        .client
        .send_message(&token, conversation, message, "once", None)
        .await
        .unwrap();
    let second = h
        .client
        .send_message(&token, conversation, message, "once", None)
        .await
        .unwrap();
    assert_eq!(first, second);
    let recorded = h.sandbox.conversation(conversation).unwrap();
    assert_eq!(recorded.messages.len(), 1);
    assert_eq!(recorded.messages[0].id, message);

    // The same conversation id from another end user is a conflict.
    let stranger = h.client.unauthenticated_token().await.unwrap();
    let err = h
        .client
        .create_conversation(&stranger, conversation, &routing)
        .await
        .unwrap_err();
    assert!(err.is_conflict() && err.is_permanent(), "{err}");
}

#[tokio::test]
async fn oversized_text_is_a_permanent_400_naming_the_limit() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[]))
        .await
        .unwrap();
    let err = h
        .client
        .send_message(
            &token,
            conversation,
            Uuid::new_v4(),
            &"é".repeat(4001),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.is_permanent());
    assert!(err.to_string().contains("the limit is 4000"), "{err}");
    h.client
        .send_message(
            &token,
            conversation,
            Uuid::new_v4(),
            &"é".repeat(4000),
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn raw_requests_are_validated_like_salesforce() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", token.access_token.expose());
    let api = format!("{}/iamessage/api/v2", h.base);
    let deployment = h.sandbox.config().deployment_name;

    let upper = Uuid::new_v4().to_string().to_uppercase();
    let r = http
        .post(format!("{api}/conversation"))
        .header("Authorization", &bearer)
        .json(&serde_json::json!({"conversationId": upper, "esDeveloperName": deployment}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("lowercase UUID"));

    let r = http
        .post(format!("{api}/conversation"))
        .json(&serde_json::json!({"conversationId": Uuid::new_v4().to_string(), "esDeveloperName": deployment}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a Bearer token is required");

    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[]))
        .await
        .unwrap();
    for (body, needle) in [
        (
            serde_json::json!({"message": {"id": "not-a-uuid", "messageType": "StaticContentMessage", "staticContent": {"formatType": "Text", "text": "x"}}, "esDeveloperName": deployment}),
            "message.id",
        ),
        (
            serde_json::json!({"message": {"id": Uuid::new_v4().to_string(), "messageType": "ChoicesMessage", "staticContent": {"formatType": "Text", "text": "x"}}, "esDeveloperName": deployment}),
            "messageType",
        ),
        (
            serde_json::json!({"message": {"id": Uuid::new_v4().to_string(), "messageType": "StaticContentMessage", "staticContent": {"formatType": "Buttons", "text": "x"}}, "esDeveloperName": deployment}),
            "formatType",
        ),
        (
            serde_json::json!({"message": {"id": Uuid::new_v4().to_string(), "messageType": "StaticContentMessage", "staticContent": {"formatType": "Text", "text": "x"}}, "esDeveloperName": deployment, "routingAttributes": {"SessionId": 5}}),
            "routingAttributes.SessionId",
        ),
    ] {
        let r = http
            .post(format!("{api}/conversation/{conversation}/message"))
            .header("Authorization", &bearer)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.contains(needle), "{needle} not in {text}");
    }

    let r = http
        .get(format!(
            "{api}/conversation/{conversation}/entries?limit=51"
        ))
        .header("Authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let err = h
        .client
        .send_message(&token, Uuid::new_v4(), Uuid::new_v4(), "nobody home", None)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn posting_after_the_rep_ended_the_chat_starts_a_new_session() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[("SessionId", "s-1")]))
        .await
        .unwrap();
    h.sandbox.rep_accept(conversation);
    assert_eq!(
        h.sandbox
            .conversation(conversation)
            .unwrap()
            .rep_joined
            .as_deref(),
        Some("Riley (Sandbox rep)")
    );
    h.sandbox.rep_end_chat(conversation);
    let ended = h.sandbox.conversation(conversation).unwrap();
    assert_eq!(
        (ended.status.as_str(), ended.rep_joined.as_deref()),
        ("ended", None)
    );
    assert_eq!(
        h.client
            .conversation_status(&token, conversation)
            .await
            .unwrap(),
        RoutingStatus::NeedsRouting
    );

    h.client
        .send_message(&token, conversation, Uuid::new_v4(), "are you there?", None)
        .await
        .unwrap();
    let again = h.sandbox.conversation(conversation).unwrap();
    assert_eq!(again.sessions, 2);
    assert_eq!(again.status, "open");
}
