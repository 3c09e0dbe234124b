//! Who is calling, and may they.
//!
//! Two ways in: a bearer token (`Authorization: Bearer sb_…`, for scripts) or
//! the dashboard's login cookie. A cookie is ambient — the browser sends it on
//! any request — so every state-changing request that relies on it must also
//! carry the login's CSRF token (form field `csrf` or header `X-CSRF-Token`).
//! Bearer requests need none: a cross-site page cannot set that header.
//!
//! The middleware here is applied per access level by [`crate::routes`]: API
//! routes answer 401 JSON, page routes redirect to `/login`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use switchboard_model::ApiToken;
use switchboard_store::LoginSession;

use crate::error::ApiError;
use crate::AppState;

/// The dashboard's login cookie.
pub const SESSION_COOKIE: &str = "sb_session";
/// Largest form body the CSRF check will buffer.
const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

/// The authenticated principal of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    User(LoginSession),
    Token(ApiToken),
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self {
            Caller::User(l) => format!("user:{}", l.user.username),
            Caller::Token(t) => format!("token:{}", t.name),
        }
    }

    pub fn csrf_token(&self) -> &str {
        match self {
            Caller::User(l) => &l.csrf_token,
            Caller::Token(_) => "",
        }
    }
}

/// Reads one cookie from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

enum Authn {
    Caller(Caller),
    None,
    BadToken,
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Authn, ApiError> {
    if let Some(secret) = bearer(headers) {
        return Ok(match state.store.verify_api_token(secret).await? {
            Some(token) => Authn::Caller(Caller::Token(token)),
            None => Authn::BadToken,
        });
    }
    if let Some(value) = cookie(headers, SESSION_COOKIE) {
        if let Some(login) = state.store.login(value).await? {
            return Ok(Authn::Caller(Caller::User(login)));
        }
    }
    Ok(Authn::None)
}

/// Checks the CSRF token of a cookie-authenticated unsafe request, buffering a
/// form body to find the `csrf` field. Returns the request rebuilt.
async fn check_csrf(caller: &Caller, req: Request) -> Result<Request, ApiError> {
    let Caller::User(login) = caller else {
        return Ok(req);
    };
    if !is_unsafe(req.method()) {
        return Ok(req);
    }
    let expected = login.csrf_token.as_bytes();
    if let Some(h) = req.headers().get("x-csrf-token") {
        return if constant_time_eq(h.as_bytes(), expected) {
            Ok(req)
        } else {
            Err(csrf_error())
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(csrf_error());
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| ApiError::BadRequest {
            message: "form body too large".into(),
        })?;
    let found = form_urlencoded_value(&bytes, "csrf");
    if !found.is_some_and(|v| constant_time_eq(v.as_bytes(), expected)) {
        return Err(csrf_error());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn csrf_error() -> ApiError {
    ApiError::Forbidden {
        message: "missing or wrong CSRF token: reload the page and try again (scripts: use a bearer token)".into(),
    }
}

fn form_urlencoded_value(body: &[u8], key: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware for `/api/*`: 401 JSON unless authenticated; CSRF for cookies.
pub async fn require_api(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match authenticate(&state, req.headers()).await {
        Ok(Authn::Caller(c)) => c,
        Ok(Authn::None | Authn::BadToken) => return ApiError::Unauthorized.into_response(),
        Err(e) => return e.into_response(),
    };
    req = match check_csrf(&caller, req).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Middleware for dashboard pages: redirect to the login page unless logged in.
pub async fn require_page(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match authenticate(&state, req.headers()).await {
        Ok(Authn::Caller(c)) => c,
        Ok(Authn::None | Authn::BadToken) => {
            let next_path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let target = if req.method() == Method::GET {
                format!("/login?next={}", percent_encode(next_path))
            } else {
                "/login".to_string()
            };
            return Redirect::to(&target).into_response();
        }
        Err(e) => return crate::pages::error_page(&e).into_response(),
    };
    req = match check_csrf(&caller, req).await {
        Ok(r) => r,
        Err(e) => return crate::pages::error_page(&e).into_response(),
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Only local paths are accepted as a post-login target (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

/// The client address for rate limiting: the TCP peer.
pub fn client_ip(req_ext: Option<&ConnectInfo<SocketAddr>>) -> IpAddr {
    req_ext.map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// Counts failed logins per client address in a fixed one-minute window.
/// The table is bounded: when full, expired windows are swept and, if it is
/// still full, the new address is refused (fail closed) rather than letting
/// an attacker grow memory by rotating addresses.
#[derive(Debug)]
pub struct LoginLimiter {
    per_minute: u32,
    window: Duration,
    max_entries: usize,
    table: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            window: Duration::from_secs(60),
            max_entries: 10_000,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` if `ip` must wait before trying again.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let Ok(mut table) = self.table.lock() else {
            return Ok(());
        };
        match table.get(&ip) {
            Some((start, n))
                if now.duration_since(*start) < self.window && *n >= self.per_minute =>
            {
                Err((self.window - now.duration_since(*start)).as_secs().max(1))
            }
            Some(_) => Ok(()),
            None if table.len() >= self.max_entries => {
                let window = self.window;
                table.retain(|_, (start, _)| now.duration_since(*start) < window);
                if table.len() >= self.max_entries {
                    Err(self.window.as_secs())
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        let entry = table.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    pub fn record_success(&self, ip: IpAddr) {
        if let Ok(mut table) = self.table.lock() {
            table.remove(&ip);
        }
    }
}

/// A redirect after POST.
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_the_limit_and_forgets_after_the_window() {
        let l = LoginLimiter::new(3);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(ip, t0).is_ok());
            l.record_failure(ip, t0);
        }
        assert!(l.check(ip, t0).is_err());
        assert!(
            l.check([10, 0, 0, 2].into(), t0).is_ok(),
            "other clients are not affected"
        );
        assert!(l.check(ip, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn limiter_table_is_bounded() {
        let mut l = LoginLimiter::new(1);
        l.max_entries = 4;
        let t0 = Instant::now();
        for i in 0..4u8 {
            l.record_failure([10, 0, 0, i].into(), t0);
        }
        assert!(
            l.check([10, 0, 1, 1].into(), t0).is_err(),
            "full table refuses new addresses"
        );
        assert!(
            l.check([10, 0, 1, 1].into(), t0 + Duration::from_secs(61))
                .is_ok(),
            "expired entries are swept"
        );
    }

    #[test]
    fn next_targets_are_local_only() {
        assert_eq!(safe_next(Some("/inbox?x=1")), "/inbox?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn csrf_field_is_found_in_a_form() {
        assert_eq!(
            form_urlencoded_value(b"a=1&csrf=ab%2Dc+d", "csrf").as_deref(),
            Some("ab-c d")
        );
        assert_eq!(form_urlencoded_value(b"a=1", "csrf"), None);
    }
}
