//! Salesforce Messaging for In-App and Web (MIAW): the client that hands a
//! call to a human, the customer identity tokens it needs, and a local
//! sandbox of the API with a rep console.
//!
//! This crate knows Salesforce, not calls: the `handoff` crate decides
//! what to send and when to retry; this crate says how, and whether an
//! error is worth a retry.
//!
//! # Layout
//! - [`client`] — [`MiawClient`]: access tokens (unauthenticated,
//!   authenticated, continuation), create / close a conversation, post
//!   messages, routing status, list entries, and the event stream
//!   ([`MiawClient::events`], SSE). Errors are [`MiawError`] with
//!   `is_retryable` / `is_unauthorized` / `is_permanent` / `retry_after`.
//! - [`identity`] — [`JwtSigner`] for customer identity tokens (RS256 or
//!   RS512; header `kid`, claims `iss`, `sub`, `iat`, `exp`, no `aud`) and
//!   [`keygen`], which also produces the JWK to upload (with `x5c`, a
//!   self-signed certificate made with `rcgen`).
//! - [`sandbox`] — [`Sandbox`]: the MIAW API at its real paths, validating
//!   what Salesforce validates, with a simulated Omni-Channel rep, fault
//!   injection ([`Fault`]) and an HTML rep console.
//! - `sse` (private) — a sans-IO `text/event-stream` parser.
//!
//! # A handoff, as the client sees it
//! ```text
//! token = unauthenticated_token() | authenticated_token(signer.sign(sub, now, 300))
//! events(token, Some(&token.last_event_id))        // open the stream first
//! create_conversation(token, conversation_id, routing_attributes)
//! send_message(token, conversation_id, message_id, text, first.then_some(routing))   // one at a time
//! ... RoutingResult → ParticipantChanged(add, Agent, name) → Message(Agent, ...) ...
//! close_conversation(token, conversation_id)        // 404 counts as closed
//! ```
//! Ids are chosen by the caller (derive them from the session id): a retry
//! of any step repeats the same ids, and the API (and the sandbox) treats
//! a repeated create or message id as the same request.
//!
//! # Sandbox behaviour where Salesforce's is undocumented
//! These are choices, made to be strict where Salesforce might be strict:
//! - error bodies are JSON `{"message": "...", "code": "INVALID_REQUEST" |
//!   "UNAUTHORIZED" | "FORBIDDEN" | "NOT_FOUND" | "CONFLICT" | ...}` (clients
//!   must not rely on it: [`MiawError::Http`] keeps any body verbatim);
//! - token requests: bad or foreign `orgId`, unknown `esDeveloperName`
//!   (message names the deployment), `capabilitiesVersion` other than `"1"`,
//!   missing `platform` → 400; unauthenticated while User Verification is on,
//!   or authenticated while it is off → 403; a customer identity token that
//!   fails verification (unknown `kid`, bad signature, wrong `iss`, expired,
//!   no `sub`) → 401 with the reason;
//! - the access token is an HS256 JWT (1 h, see
//!   [`Sandbox::set_access_token_ttl`]); missing, foreign or expired → 401;
//! - create conversation → `201 {}`; the same id again from the same end
//!   user → `200 {}` and nothing changes (idempotent); from another end
//!   user → 409; an id that is not a lowercase UUID → 400;
//! - message → `201 {"conversationEntries":[{"id","clientTimestamp"}]}`
//!   (the entry id is the message id); the same message id again → `200`
//!   with the first copy's entry, nothing stored (accepted once); text over
//!   `max_message_chars` → 400 naming the limit; unknown or closed
//!   conversation → 404;
//! - DELETE conversation → 204, then it is gone (404 for messages, status
//!   and a second DELETE); its entries stay listable;
//! - after the rep ends the chat, the next message starts a new session
//!   (`sessions` + 1, a new RoutingResult, the rep timer again);
//!   `isNewMessagingSession: true` while a session is open only adds its
//!   routing attributes;
//! - routing-attribute keys that are not hidden pre-chat fields are
//!   dropped silently, like Salesforce does (the console shows them as
//!   ignored); non-string values → 400;
//! - entries list newest first (`direction=FromStart` for oldest first),
//!   `limit` 1..=50 (default 20), `entryPayload` as an object; SSE carries
//!   it as a JSON string;
//! - SSE without `X-Org-Id` → 400, with another org's → 403; `ping` every
//!   15 s ([`Sandbox::set_ping_interval`]); without `Last-Event-Id` the
//!   stream starts at "now"; one stream carries all of its end user's
//!   conversations and nothing of anyone else's.
//!
//! # Driving the sandbox
//! The simulated rep follows [`RepBehaviour`]: a RoutingResult (Initial,
//! failure None, the configured wait estimate) when a session starts, then
//! after `accept_after` a ParticipantChanged(add, Agent, `rep_name`) and a
//! greeting. Tests and the console drive it further with
//! [`Sandbox::rep_accept`], [`Sandbox::rep_send`], [`Sandbox::rep_end_chat`]
//! and [`Sandbox::drop_event_streams`]; faults go through
//! [`Sandbox::faults`] or `POST /sandbox/api/faults` (a JSON list such as
//! `[{"kind": "status", "status": 429, "retry_after_secs": 2, "scope": "message"}]`;
//! `DELETE` clears them). A [`Fault`] applies to every API request unless
//! pushed with a [`FaultScope`] (`token`, `conversation`, `message`, `events`).
//!
//! # The `x5c` certificate
//! Salesforce requires `x5c` in each uploaded JWK; [`keygen`] and
//! [`JwtSigner::public_jwk`] include a self-signed certificate for the key.
//! For a key made elsewhere, the equivalent is
//! `openssl req -new -x509 -key private.pem -subj "/CN=Switchboard" -days 7300 -outform DER | base64 -w0`.

pub mod client;
pub mod identity;
pub mod sandbox;
mod sse;

pub use client::{
    AccessToken, ConversationEntry, MiawClient, MiawConfig, MiawError, RoutingStatus, SentMessage,
    SseEvent, SseEventKind, TransportKind,
};
pub use identity::{keygen, GeneratedKey, IdentityError, JwtAlgorithm, JwtSigner};
pub use sandbox::{
    Fault, FaultScope, Faults, RepBehaviour, Sandbox, SandboxConfig, SandboxConversation,
    SandboxMessage, ScopedFault,
};
