//! Walks every route in the route table and proves that only the public ones
//! answer without credentials, that a forged token is refused, that cookie
//! logins need the CSRF token to change anything, and that every route really
//! serves the method the table says.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::App;
use switchboard_web::routes::{table, Access};

/// Fills `{param}` segments with a plausible value.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "0190b3c4-0000-7000-8000-000000000000"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn request(method: &axum::http::Method, path: &str) -> Request<Body> {
    Request::builder()
        .method(method.clone())
        .uri(concrete(path))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap()
}

#[tokio::test]
async fn only_public_routes_answer_without_credentials() {
    let app = App::sqlite().await;
    let routes = table();
    assert!(routes.len() > 40, "the walk covers the whole table");
    let public: Vec<_> = routes
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| (r.method.as_str(), r.path))
        .collect();
    assert_eq!(
        public,
        [
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/login"),
            ("POST", "/login")
        ],
        "only login, health and metrics are public"
    );
    for route in &routes {
        let r = app.send(request(&route.method, route.path)).await;
        match route.access {
            Access::Public => assert!(
                r.status != StatusCode::UNAUTHORIZED && !r.location().starts_with("/login"),
                "{} {} is public",
                route.method,
                route.path
            ),
            Access::Api => {
                assert_eq!(
                    r.status,
                    StatusCode::UNAUTHORIZED,
                    "{} {}: {}",
                    route.method,
                    route.path,
                    r.body
                );
                assert_eq!(r.json()["error"]["code"], "unauthorized");
                assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
            }
            Access::Page => {
                assert_eq!(
                    r.status,
                    StatusCode::SEE_OTHER,
                    "{} {}",
                    route.method,
                    route.path
                );
                assert!(
                    r.location().starts_with("/login"),
                    "{} {} -> {}",
                    route.method,
                    route.path,
                    r.location()
                );
            }
        }
    }
}

#[tokio::test]
async fn forged_or_revoked_tokens_are_refused() {
    let app = App::sqlite().await;
    for bad in ["sb_forged", "not-a-token", ""] {
        let r = app
            .send(
                Request::get("/api/v1/agents")
                    .header(header::AUTHORIZATION, format!("Bearer {bad}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "token {bad:?}");
    }
    let r = app
        .send(
            Request::get("/api/v1/agents")
                .header(header::COOKIE, "sb_session=guess")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let ok = app.api(Method::GET, "/api/v1/me", None).await;
    assert_eq!(ok.json()["actor"], "token:tests");
}

#[tokio::test]
async fn every_route_serves_its_method_when_authenticated() {
    let app = App::sqlite().await;
    let (cookie, csrf) = app.login().await;
    // Logging out is exercised last, so the walk keeps its session.
    for route in table().into_iter().filter(|r| r.path != "/logout") {
        let mut req = request(&route.method, route.path);
        req.headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
        req.headers_mut()
            .insert("x-csrf-token", csrf.parse().unwrap());
        let r = app.send(req).await;
        assert_ne!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {} is routed",
            route.method,
            route.path
        );
        assert_ne!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{} {}",
            route.method,
            route.path
        );
        assert!(
            !r.status.is_server_error(),
            "{} {}: {} {}",
            route.method,
            route.path,
            r.status,
            r.body
        );
        if route.method == Method::GET && route.path == "/api/v1/agents" {
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    let r = app
        .form(
            Method::POST,
            "/logout",
            Some(&cookie),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
    assert_eq!(
        app.page("/inbox", &cookie).await.status,
        StatusCode::SEE_OTHER,
        "logged out"
    );
}

#[tokio::test]
async fn cookie_logins_need_the_csrf_token_to_change_anything() {
    let app = App::sqlite().await;
    let (cookie, csrf) = app.login().await;
    // API with cookie and no CSRF header: refused.
    let r = app
        .send(
            Request::post("/api/v1/agents")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"name":"Support"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // Dashboard form without / with a wrong / with the right token.
    let r = app
        .form(
            Method::POST,
            "/channels/phone",
            Some(&cookie),
            "name=Support",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .form(
            Method::POST,
            "/channels/phone",
            Some(&cookie),
            "name=Support&csrf=wrong",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        app.state.store.list_agents().await.unwrap().is_empty(),
        "nothing was created"
    );
    let r = app
        .form(
            Method::POST,
            "/channels/phone",
            Some(&cookie),
            &format!("name=Support&csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(app.state.store.list_agents().await.unwrap().len(), 1);
    // Reads need no token.
    assert_eq!(
        app.page("/channels/phone", &cookie).await.status,
        StatusCode::OK
    );
}
