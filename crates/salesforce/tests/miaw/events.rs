//! The event stream: routing, the rep joining, echoes, replay, and the
//! entryPayload string/object asymmetry.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use switchboard_salesforce::{
    MiawError, RepBehaviour, SandboxConfig, SseEvent, SseEventKind, TransportKind,
};
use uuid::Uuid;

use crate::common::*;

fn fast_rep() -> SandboxConfig {
    SandboxConfig {
        rep: RepBehaviour {
            accept_after: Some(Duration::from_millis(5)),
            rep_name: "Riley (Sandbox rep)".into(),
            estimated_wait_seconds: Some(42),
        },
        ..SandboxConfig::default()
    }
}

async fn next<S>(stream: &mut S) -> SseEvent
where
    S: Stream<Item = Result<SseEvent, MiawError>> + Unpin,
{
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the wait")
        .expect("the stream is open")
        .expect("a decodable event")
}

#[tokio::test]
async fn routing_then_rep_joins_then_echoes_and_ends() {
    let h = Harness::with(fast_rep()).await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let mut events = Box::pin(
        h.client
            .events(&token, Some(&token.last_event_id))
            .await
            .unwrap(),
    );
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[("SessionId", "s-1")]))
        .await
        .unwrap();

    let routed = next(&mut events).await;
    assert!(routed.is_for(conversation));
    assert!(routed.id.is_some());
    assert_eq!(
        routed.kind,
        SseEventKind::RoutingResult {
            conversation_id: conversation.to_string(),
            routing_type: "Initial".into(),
            failure_type: "None".into(),
            failure_reason: None,
            estimated_wait_seconds: Some(42),
        }
    );
    let joined = next(&mut events).await;
    assert_eq!(
        joined.kind,
        SseEventKind::ParticipantChanged {
            conversation_id: conversation.to_string(),
            operation: "add".into(),
            role: "Agent".into(),
            display_name: "Riley (Sandbox rep)".into(),
        }
    );
    let greeting = next(&mut events).await;
    assert!(
        matches!(&greeting.kind, SseEventKind::Message { role, display_name, text, .. }
            if role == "Agent" && display_name == "Riley (Sandbox rep)" && text.expose().contains("Riley")),
        "{greeting:?}"
    );

    let message = Uuid::new_v4();
    h.client
        .send_message(&token, conversation, message, "Caller: hello <b>", None)
        .await
        .unwrap();
    let echo = next(&mut events).await;
    assert_eq!(
        echo.kind,
        SseEventKind::Message {
            conversation_id: conversation.to_string(),
            role: "EndUser".into(),
            display_name: "Guest".into(),
            text: "Caller: hello <b>".to_string().into(),
            entry_id: message.to_string(),
        }
    );
    let ids: Vec<u64> = [&routed, &joined, &greeting, &echo]
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "monotonic ids {ids:?}");

    h.sandbox.rep_end_chat(conversation);
    let left = next(&mut events).await;
    assert!(
        matches!(&left.kind, SseEventKind::ParticipantChanged { operation, .. } if operation == "remove")
    );
    let closed = next(&mut events).await;
    assert_eq!(
        closed.kind,
        SseEventKind::CloseConversation {
            conversation_id: conversation.to_string()
        }
    );

    // Posting again starts a new session: routed again, and the rep comes back.
    h.client
        .send_message(&token, conversation, Uuid::new_v4(), "one more thing", None)
        .await
        .unwrap();
    let rerouted = next(&mut events).await;
    assert!(
        matches!(rerouted.kind, SseEventKind::RoutingResult { .. }),
        "{rerouted:?}"
    );
    assert!(
        matches!(next(&mut events).await.kind, SseEventKind::Message { ref role, .. } if role == "EndUser")
    );
    assert!(
        matches!(next(&mut events).await.kind, SseEventKind::ParticipantChanged { ref operation, .. } if operation == "add")
    );
    assert_eq!(h.sandbox.conversation(conversation).unwrap().sessions, 2);
}

#[tokio::test]
async fn reconnecting_with_last_event_id_replays_what_was_missed() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let start = token.last_event_id.clone();
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[]))
        .await
        .unwrap();
    for text in ["one", "two"] {
        h.client
            .send_message(&token, conversation, Uuid::new_v4(), text, None)
            .await
            .unwrap();
    }
    // Opened after the fact, from the token's position: everything is replayed.
    let mut events = Box::pin(h.client.events(&token, Some(&start)).await.unwrap());
    assert!(matches!(
        next(&mut events).await.kind,
        SseEventKind::RoutingResult { .. }
    ));
    let one = next(&mut events).await;
    let two = next(&mut events).await;
    assert!(matches!(&two.kind, SseEventKind::Message { text, .. } if text.expose() == "two"));

    // Resuming after "one" gives "two" only.
    let mut resumed = Box::pin(h.client.events(&token, one.id.as_deref()).await.unwrap());
    assert_eq!(next(&mut resumed).await, two);

    // Another end user's stream, even from the start, sees only its own events.
    let stranger = h.client.unauthenticated_token().await.unwrap();
    let mut theirs = Box::pin(h.client.events(&stranger, Some("0")).await.unwrap());
    let own = Uuid::new_v4();
    h.client
        .create_conversation(&stranger, own, &attrs(&[]))
        .await
        .unwrap();
    let first = next(&mut theirs).await;
    assert!(first.is_for(own), "{first:?}");
}

#[tokio::test]
async fn a_dropped_stream_ends_with_a_transport_error() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let mut events = Box::pin(h.client.events(&token, None).await.unwrap());
    // The stream task subscribes asynchronously; drop until the cut is seen.
    let result = tokio::time::timeout(WAIT, async {
        loop {
            h.sandbox.drop_event_streams();
            if let Ok(item) = tokio::time::timeout(Duration::from_millis(50), events.next()).await {
                return item;
            }
        }
    })
    .await
    .expect("the stream ends within the wait");
    let err = result.expect("an error before the end").unwrap_err();
    assert!(matches!(err, MiawError::Transport { .. }), "{err:?}");
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn event_stream_needs_a_token_and_the_org_header() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/eventrouter/v1/sse", h.base);
    let r = http
        .get(&url)
        .header("X-Org-Id", "00D000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&url)
        .bearer_auth(token.access_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("X-Org-Id"));

    let err = h
        .client_with(|c| c.org_id = "00D0000000000ZZ".into())
        .events(&token, None)
        .await
        .err()
        .expect("a foreign org is refused");
    assert_eq!(err.status(), Some(403));

    h.sandbox.faults().push_scoped(
        switchboard_salesforce::Fault::Reset { times: 1 },
        switchboard_salesforce::FaultScope::Events,
    );
    let err = h.client.events(&token, None).await.err().expect("reset");
    assert_eq!(err.transport_kind(), Some(TransportKind::Reset));
}

#[tokio::test]
async fn entry_payload_is_a_string_over_sse_and_an_object_in_lists() {
    let h = Harness::start().await;
    let token = h.client.unauthenticated_token().await.unwrap();
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[]))
        .await
        .unwrap();
    h.client
        .send_message(&token, conversation, Uuid::new_v4(), "same text", None)
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let listed: serde_json::Value = http
        .get(format!(
            "{}/iamessage/api/v2/conversation/{conversation}/entries",
            h.base
        ))
        .bearer_auth(token.access_token.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest = &listed["conversationEntries"][0];
    assert_eq!(newest["entryType"], "Message", "newest first");
    assert!(newest["entryPayload"].is_object());
    assert_eq!(
        newest["entryPayload"]["abstractMessage"]["staticContent"]["text"],
        "same text"
    );

    let mut sse = http
        .get(format!("{}/eventrouter/v1/sse", h.base))
        .bearer_auth(token.access_token.expose())
        .header("X-Org-Id", "00D000000000001")
        .header("Last-Event-Id", "0")
        .send()
        .await
        .unwrap();
    assert!(sse.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut text = String::new();
    while !text.contains("event: CONVERSATION_MESSAGE") || !text.ends_with("\n\n") {
        let chunk = tokio::time::timeout(WAIT, sse.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .split("\n\n")
        .find(|block| block.contains("event: CONVERSATION_MESSAGE"))
        .and_then(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .unwrap();
    let data: serde_json::Value = serde_json::from_str(data).unwrap();
    let payload = data["conversationEntry"]["entryPayload"]
        .as_str()
        .expect("a JSON string over SSE");
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload, newest["entryPayload"]);

    // The client reads both forms to the same thing.
    let entries = h
        .client
        .list_entries(&token, conversation, 50)
        .await
        .unwrap();
    let mut events = Box::pin(h.client.events(&token, Some("0")).await.unwrap());
    next(&mut events).await; // RoutingResult
    let event = next(&mut events).await;
    let SseEventKind::Message { text, .. } = event.kind else {
        panic!("{event:?}")
    };
    assert_eq!(Some(&text), entries.last().unwrap().text.as_ref());
}

#[tokio::test]
async fn idle_streams_get_pings_which_the_client_skips() {
    let h = Harness::start().await;
    h.sandbox.set_ping_interval(Duration::from_millis(20));
    let token = h.client.unauthenticated_token().await.unwrap();
    let mut events = Box::pin(h.client.events(&token, None).await.unwrap());

    // A raw stream opened alongside shows the pings on the wire.
    let mut raw = reqwest::Client::new()
        .get(format!("{}/eventrouter/v1/sse", h.base))
        .bearer_auth(token.access_token.expose())
        .header("X-Org-Id", "00D000000000001")
        .send()
        .await
        .unwrap();
    let mut pings = 0;
    while pings < 3 {
        let chunk = tokio::time::timeout(WAIT, raw.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        pings += String::from_utf8_lossy(&chunk)
            .matches("event: ping\ndata: {}\n\n")
            .count();
    }

    // Through the client they never surface: the first item is the real event.
    let conversation = Uuid::new_v4();
    h.client
        .create_conversation(&token, conversation, &attrs(&[]))
        .await
        .unwrap();
    let first = next(&mut events).await;
    assert!(
        matches!(first.kind, SseEventKind::RoutingResult { .. }),
        "{first:?}"
    );
}
