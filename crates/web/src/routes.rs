//! The one table of routes. Each entry says its method, path and access
//! level; [`router`] builds the axum router from it, and the auth-walk test
//! reads the same table to prove that nothing but the public entries answers
//! without credentials.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};

use crate::error::ApiError;
use crate::{
    api, calls_api, contacts_pages, handoffs_api, pages, providers, recordings, test_call,
    trunks_page, AppState,
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the login page, health checks and metrics.
    Public,
    /// Bearer token or logged-in user (with CSRF token on changes); else 401.
    Api,
    /// Logged-in user (with CSRF token on changes); else redirect to /login.
    Page,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// Largest request body accepted anywhere; the Contacts page's CSV import
/// says so (larger files go through the CLI).
pub(crate) const BODY_LIMIT: usize = 2 * 1024 * 1024;

fn entries() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    use Access::*;
    let r =
        |method: Method, path: &'static str, access: Access, handler: MethodRouter<AppState>| {
            (
                RouteSpec {
                    method,
                    path,
                    access,
                },
                handler,
            )
        };
    let (g, p, u, d) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    vec![
        // Operations
        r(g.clone(), "/healthz", Public, get(healthz)),
        r(g.clone(), "/readyz", Public, get(readyz)),
        r(g.clone(), "/metrics", Public, get(metrics)),
        // Login
        r(g.clone(), "/login", Public, get(pages::login_form)),
        r(p.clone(), "/login", Public, post(pages::login_submit)),
        r(p.clone(), "/logout", Page, post(pages::logout)),
        // API
        r(g.clone(), "/api/openapi.json", Api, get(openapi)),
        r(g.clone(), "/api/v1/me", Api, get(api::me)),
        r(g.clone(), "/api/v1/agents", Api, get(api::list_agents)),
        r(p.clone(), "/api/v1/agents", Api, post(api::create_agent)),
        r(
            g.clone(),
            "/api/v1/agents/{agent}",
            Api,
            get(api::get_agent),
        ),
        r(
            u.clone(),
            "/api/v1/agents/{agent}",
            Api,
            put(api::update_agent),
        ),
        r(
            d.clone(),
            "/api/v1/agents/{agent}",
            Api,
            axum::routing::delete(api::delete_agent),
        ),
        r(g.clone(), "/api/v1/numbers", Api, get(api::list_numbers)),
        r(p.clone(), "/api/v1/numbers", Api, post(api::create_number)),
        r(
            g.clone(),
            "/api/v1/numbers/{number}",
            Api,
            get(api::get_number),
        ),
        r(
            u.clone(),
            "/api/v1/numbers/{number}",
            Api,
            put(api::bind_number),
        ),
        r(
            d.clone(),
            "/api/v1/numbers/{number}",
            Api,
            axum::routing::delete(api::delete_number),
        ),
        r(g.clone(), "/api/v1/contacts", Api, get(api::list_contacts)),
        r(
            p.clone(),
            "/api/v1/contacts",
            Api,
            post(api::create_contact),
        ),
        r(
            g.clone(),
            "/api/v1/contacts/{id}",
            Api,
            get(api::get_contact),
        ),
        r(
            u.clone(),
            "/api/v1/contacts/{id}",
            Api,
            put(api::update_contact),
        ),
        r(
            d.clone(),
            "/api/v1/contacts/{id}",
            Api,
            axum::routing::delete(api::delete_contact),
        ),
        r(g.clone(), "/api/v1/sessions", Api, get(api::list_sessions)),
        r(
            p.clone(),
            "/api/v1/sessions",
            Api,
            post(handoffs_api::create_text_call),
        ),
        r(
            g.clone(),
            "/api/v1/sessions/{id}",
            Api,
            get(api::get_session),
        ),
        r(p.clone(), "/api/v1/calls", Api, post(calls_api::place_call)),
        r(
            g.clone(),
            "/api/v1/sessions/{id}/recording",
            Api,
            get(recordings::get_recording),
        ),
        r(
            p.clone(),
            "/api/v1/sessions/{id}/handoff",
            Api,
            post(handoffs_api::create_handoff),
        ),
        r(
            g.clone(),
            "/api/v1/handoffs",
            Api,
            get(handoffs_api::list_handoffs),
        ),
        r(
            g.clone(),
            "/api/v1/handoffs/{id}",
            Api,
            get(handoffs_api::get_handoff),
        ),
        r(
            p.clone(),
            "/api/v1/handoffs/{id}/redrive",
            Api,
            post(handoffs_api::redrive_handoff),
        ),
        r(
            g.clone(),
            "/api/v1/settings/salesforce",
            Api,
            get(handoffs_api::get_salesforce_settings),
        ),
        r(
            u.clone(),
            "/api/v1/settings/salesforce",
            Api,
            put(handoffs_api::put_salesforce_settings),
        ),
        r(
            p.clone(),
            "/api/v1/settings/salesforce/test",
            Api,
            post(handoffs_api::test_salesforce),
        ),
        r(g.clone(), "/api/v1/trunks", Api, get(api::list_trunks)),
        r(p.clone(), "/api/v1/trunks", Api, post(api::create_trunk)),
        r(
            g.clone(),
            "/api/v1/trunks/{trunk}",
            Api,
            get(api::get_trunk),
        ),
        r(
            d.clone(),
            "/api/v1/trunks/{trunk}",
            Api,
            axum::routing::delete(api::delete_trunk),
        ),
        r(g.clone(), "/api/v1/tokens", Api, get(api::list_tokens)),
        r(p.clone(), "/api/v1/tokens", Api, post(api::create_token)),
        r(
            d.clone(),
            "/api/v1/tokens/{id}",
            Api,
            axum::routing::delete(api::revoke_token),
        ),
        // Dashboard
        r(g.clone(), "/", Page, get(pages::home)),
        r(g.clone(), "/channels/phone", Page, get(pages::agents_page)),
        r(
            g.clone(),
            "/channels/phone/new",
            Page,
            get(pages::new_agent_page),
        ),
        r(
            p.clone(),
            "/channels/phone",
            Page,
            post(pages::create_agent_submit),
        ),
        r(
            g.clone(),
            "/channels/phone/{id}",
            Page,
            get(pages::agent_page),
        ),
        r(
            p.clone(),
            "/channels/phone/{id}",
            Page,
            post(pages::update_agent_submit),
        ),
        r(
            p.clone(),
            "/channels/phone/{id}/delete",
            Page,
            post(pages::delete_agent_submit),
        ),
        r(
            p.clone(),
            "/channels/phone/{id}/numbers",
            Page,
            post(pages::bind_number_submit),
        ),
        r(
            p.clone(),
            "/channels/phone/{id}/numbers/unbind",
            Page,
            post(pages::unbind_number_submit),
        ),
        r(
            g.clone(),
            "/channels/phone/{id}/test-call",
            Page,
            get(test_call::test_call_page),
        ),
        r(
            g.clone(),
            "/channels/phone/{id}/test-call/ws",
            Page,
            get(test_call::test_call_ws),
        ),
        r(
            g.clone(),
            test_call::WORKLET_PATH,
            Page,
            get(test_call::worklet),
        ),
        r(g.clone(), "/inbox", Page, get(pages::inbox_page)),
        r(g.clone(), "/inbox/events", Page, get(pages::inbox_events)),
        r(g.clone(), "/inbox/{id}", Page, get(pages::session_page)),
        r(
            p.clone(),
            "/inbox/{id}/redrive",
            Page,
            post(pages::redrive_submit),
        ),
        r(
            g.clone(),
            "/contacts",
            Page,
            get(contacts_pages::contacts_page),
        ),
        r(
            p.clone(),
            "/contacts",
            Page,
            post(contacts_pages::create_contact_submit),
        ),
        r(
            p.clone(),
            "/contacts/import",
            Page,
            post(contacts_pages::import_contacts_submit),
        ),
        r(
            g.clone(),
            "/contacts/{id}",
            Page,
            get(contacts_pages::contact_page),
        ),
        r(
            p.clone(),
            "/contacts/{id}",
            Page,
            post(contacts_pages::update_contact_submit),
        ),
        r(
            p.clone(),
            "/contacts/{id}/delete",
            Page,
            post(contacts_pages::delete_contact_submit),
        ),
        r(
            g.clone(),
            "/settings/integrations",
            Page,
            get(pages::integrations_page),
        ),
        r(
            p.clone(),
            "/settings/integrations/salesforce",
            Page,
            post(pages::salesforce_submit),
        ),
        r(
            p.clone(),
            "/settings/integrations/salesforce/test",
            Page,
            post(pages::salesforce_test_submit),
        ),
        r(g.clone(), "/sandbox", Page, get(pages::sandbox_page)),
        r(
            p.clone(),
            "/sandbox/console/conversations/{id}/{action}",
            Page,
            post(pages::sandbox_rep_submit),
        ),
        r(
            g.clone(),
            "/settings/providers",
            Page,
            get(providers::providers_page),
        ),
        r(
            p.clone(),
            "/settings/providers",
            Page,
            post(providers::providers_submit),
        ),
        r(
            g.clone(),
            "/settings/trunks",
            Page,
            get(trunks_page::trunks_page),
        ),
        r(
            p.clone(),
            "/settings/trunks",
            Page,
            post(trunks_page::create_trunk_submit),
        ),
        r(
            p.clone(),
            "/settings/trunks/{id}/delete",
            Page,
            post(trunks_page::delete_trunk_submit),
        ),
        r(g.clone(), "/settings/tokens", Page, get(pages::tokens_page)),
        r(
            p.clone(),
            "/settings/tokens",
            Page,
            post(pages::create_token_submit),
        ),
        r(
            p.clone(),
            "/settings/tokens/{id}/revoke",
            Page,
            post(pages::revoke_token_submit),
        ),
        r(
            g,
            "/troubleshooting",
            Page,
            get(pages::troubleshooting_page),
        ),
        r(
            p,
            "/troubleshooting/test",
            Page,
            post(pages::troubleshooting_test_submit),
        ),
    ]
}

/// Every route with its access level (for tests and docs).
pub fn table() -> Vec<RouteSpec> {
    entries().into_iter().map(|(spec, _)| spec).collect()
}

/// Builds the whole application router.
pub fn router(state: AppState) -> Router {
    let (mut public, mut api, mut pages) = (Router::new(), Router::new(), Router::new());
    for (spec, handler) in entries() {
        match spec.access {
            Access::Public => public = public.route(spec.path, handler),
            Access::Api => api = api.route(spec.path, handler),
            Access::Page => pages = pages.route(spec.path, handler),
        }
    }
    let api = api.route_layer(from_fn_with_state(state.clone(), crate::auth::require_api));
    let pages = pages.route_layer(from_fn_with_state(state.clone(), crate::auth::require_page));
    Router::new()
        .merge(public)
        .merge(api)
        .merge(pages)
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), common_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Counts responses and sets the security headers every response carries.
async fn common_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    state.metrics.record_response(response.status().as_u16());
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; media-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn not_found(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        ApiError::not_found("route", req.uri().path()).into_response()
    } else {
        pages::html(StatusCode::NOT_FOUND, pages::not_found_page())
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(3), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database did not answer within 3 s\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let store = &state.store;
    let counts = tokio::time::timeout(Duration::from_secs(2), async {
        store.ping().await?;
        store.outbox_counts(switchboard_store::HANDOFF_JOB).await
    })
    .await;
    let (db_up, outbox) = match counts {
        Ok(Ok(c)) => (true, Some(c)),
        _ => (false, None),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render_with(db_up, outbox.as_ref()),
    )
        .into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}
