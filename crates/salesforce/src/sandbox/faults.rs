//! Fault injection for the sandbox's API routes.
//!
//! Faults are consumed in the order they were pushed. `Latency` delays every
//! matching request until cleared; `Status`, `Timeout`, `Reset` and
//! `LostResponse` fire `times` times; `Down` fails everything until cleared.
//!
//! "Reset" and "lost response" close the connection without an answer: the
//! handler returns a body that fails on its first poll, before hyper has
//! flushed the response head, so hyper drops the connection and the client
//! sees it closed with no status (`TransportKind::Reset`).
//!
//! JSON (for `POST /sandbox/api/faults`, a list): `{"kind": "status",
//! "status": 429, "retry_after_secs": 2, "times": 1, "scope": "message"}`;
//! kinds `latency {ms}`, `status {status, retry_after_secs?, times}`,
//! `timeout {times}`, `reset {times}`, `lost_response {times}`, `down`;
//! `times` defaults to 1 and `scope` to `any`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::Shared;

/// How long a `Timeout` fault holds the request before answering 504.
pub(crate) const TIMEOUT_HOLD: Duration = Duration::from_secs(60);

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Delay every matching request by `ms` (until cleared).
    Latency { ms: u64 },
    /// Answer `status` (with `Retry-After` if set) without applying the request.
    Status {
        status: u16,
        #[serde(default)]
        retry_after_secs: Option<u64>,
        #[serde(default = "one")]
        times: u32,
    },
    /// Hold the request for up to 60 s (or until the client gives up); not applied.
    Timeout {
        #[serde(default = "one")]
        times: u32,
    },
    /// Close the connection without an answer; the request is NOT applied.
    Reset {
        #[serde(default = "one")]
        times: u32,
    },
    /// APPLY the request, then close the connection without its answer.
    LostResponse {
        #[serde(default = "one")]
        times: u32,
    },
    /// Every request fails with a closed connection until cleared.
    Down,
}

fn one() -> u32 {
    1
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultScope {
    #[default]
    Any,
    /// The three access-token endpoints.
    Token,
    /// Conversation endpoints other than posting a message.
    Conversation,
    /// `POST .../conversation/{id}/message`.
    Message,
    /// `GET /eventrouter/v1/sse`.
    Events,
}

impl FaultScope {
    fn of_path(path: &str) -> FaultScope {
        if path.starts_with("/eventrouter/") {
            FaultScope::Events
        } else if path.starts_with("/iamessage/api/v2/authorization/") {
            FaultScope::Token
        } else if path.starts_with("/iamessage/api/v2/conversation") && path.ends_with("/message") {
            FaultScope::Message
        } else {
            FaultScope::Conversation
        }
    }

    fn matches(self, request: FaultScope) -> bool {
        self == FaultScope::Any || self == request
    }
}

/// A fault with the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedFault {
    #[serde(flatten)]
    pub fault: Fault,
    #[serde(default)]
    pub scope: FaultScope,
}

/// The sandbox's active faults.
#[derive(Debug, Default)]
pub struct Faults {
    active: Mutex<Vec<ScopedFault>>,
}

/// What to do with one request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    delay: Duration,
    action: Option<Action>,
}

#[derive(Debug, PartialEq, Eq)]
enum Action {
    Status {
        status: u16,
        retry_after_secs: Option<u64>,
    },
    Timeout,
    Reset,
    LostResponse,
}

impl Faults {
    /// Adds a fault for every API request.
    pub fn push(&self, fault: Fault) {
        self.push_scoped(fault, FaultScope::Any);
    }

    /// Adds a fault for one kind of request.
    pub fn push_scoped(&self, fault: Fault, scope: FaultScope) {
        let exhausted = matches!(
            fault,
            Fault::Status { times: 0, .. }
                | Fault::Timeout { times: 0 }
                | Fault::Reset { times: 0 }
                | Fault::LostResponse { times: 0 }
        );
        if !exhausted {
            self.lock().push(ScopedFault { fault, scope });
        }
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The faults still active, in order.
    pub fn list(&self) -> Vec<ScopedFault> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ScopedFault>> {
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Consumes what applies to a request of `scope`.
    fn plan(&self, scope: FaultScope) -> Plan {
        let mut active = self.lock();
        let mut plan = Plan::default();
        let mut spent = None;
        for (i, f) in active.iter_mut().enumerate() {
            if !f.scope.matches(scope) {
                continue;
            }
            let (action, times) = match &mut f.fault {
                Fault::Latency { ms } => {
                    plan.delay += Duration::from_millis(*ms);
                    continue;
                }
                Fault::Down => {
                    plan.action = Some(Action::Reset);
                    break;
                }
                Fault::Status {
                    status,
                    retry_after_secs,
                    times,
                } => (
                    Action::Status {
                        status: *status,
                        retry_after_secs: *retry_after_secs,
                    },
                    times,
                ),
                Fault::Timeout { times } => (Action::Timeout, times),
                Fault::Reset { times } => (Action::Reset, times),
                Fault::LostResponse { times } => (Action::LostResponse, times),
            };
            *times = times.saturating_sub(1);
            if *times == 0 {
                spent = Some(i);
            }
            plan.action = Some(action);
            break;
        }
        if let Some(i) = spent {
            active.remove(i);
        }
        plan
    }
}

/// Counts API requests and applies the faults that match them.
pub(super) async fn middleware(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    shared
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scope = FaultScope::of_path(request.uri().path());
    let plan = shared.faults.plan(scope);
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    match plan.action {
        None => next.run(request).await,
        Some(Action::Status {
            status,
            retry_after_secs,
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response =
                ApiError::new(code, format!("sandbox fault: injected HTTP {status}"))
                    .into_response();
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Some(Action::Timeout) => {
            tokio::time::sleep(TIMEOUT_HOLD).await;
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "sandbox fault: timed out").into_response()
        }
        Some(Action::Reset) => connection_reset(),
        Some(Action::LostResponse) => {
            let response = next.run(request).await;
            // Let the handler's work (already applied) finish; drop its answer.
            drop(response);
            connection_reset()
        }
    }
}

/// A response whose body fails at once: hyper drops the connection before
/// writing the head.
fn connection_reset() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection reset",
        ))
    });
    Response::new(Body::from_stream(failing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_as_json_with_default_scope_and_times() {
        let list: Vec<ScopedFault> = serde_json::from_str(
            r#"[{"kind":"status","status":429,"retry_after_secs":2},
                {"kind":"lost_response","scope":"message"},
                {"kind":"down"},
                {"kind":"latency","ms":5,"scope":"token"}]"#,
        )
        .unwrap();
        assert_eq!(
            list[0],
            ScopedFault {
                fault: Fault::Status {
                    status: 429,
                    retry_after_secs: Some(2),
                    times: 1
                },
                scope: FaultScope::Any
            }
        );
        assert_eq!(list[1].scope, FaultScope::Message);
        assert_eq!(list[2].fault, Fault::Down);
        let again: Vec<ScopedFault> =
            serde_json::from_str(&serde_json::to_string(&list).unwrap()).unwrap();
        assert_eq!(again, list);
        assert!(serde_json::from_str::<ScopedFault>(r#"{"kind":"explode"}"#).is_err());
    }

    #[test]
    fn counted_faults_fire_the_given_number_of_times_in_scope() {
        let faults = Faults::default();
        faults.push_scoped(Fault::Reset { times: 2 }, FaultScope::Message);
        faults.push(Fault::Latency { ms: 3 });
        assert_eq!(faults.plan(FaultScope::Token).action, None);
        assert_eq!(
            faults.plan(FaultScope::Token).delay,
            Duration::from_millis(3)
        );
        assert_eq!(faults.plan(FaultScope::Message).action, Some(Action::Reset));
        assert_eq!(faults.plan(FaultScope::Message).action, Some(Action::Reset));
        assert_eq!(faults.plan(FaultScope::Message).action, None);
        faults.push(Fault::Down);
        assert_eq!(faults.plan(FaultScope::Events).action, Some(Action::Reset));
        assert_eq!(faults.plan(FaultScope::Events).action, Some(Action::Reset));
        faults.clear();
        assert_eq!(faults.plan(FaultScope::Events), Plan::default());
        faults.push(Fault::Timeout { times: 0 });
        assert!(faults.list().is_empty());
    }

    #[test]
    fn paths_map_to_scopes() {
        assert_eq!(
            FaultScope::of_path("/eventrouter/v1/sse"),
            FaultScope::Events
        );
        assert_eq!(
            FaultScope::of_path("/iamessage/api/v2/authorization/unauthenticated/access-token"),
            FaultScope::Token
        );
        assert_eq!(
            FaultScope::of_path("/iamessage/api/v2/conversation/x/message"),
            FaultScope::Message
        );
        assert_eq!(
            FaultScope::of_path("/iamessage/api/v2/conversation/x/entries"),
            FaultScope::Conversation
        );
    }
}
