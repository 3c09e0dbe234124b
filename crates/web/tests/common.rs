//! Shared test fixture: the real router over a real store, driven with
//! `oneshot` (no port).
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use switchboard_store::Store;
use switchboard_web::{AppState, WebSettings};
use tower::ServiceExt;

pub struct App {
    pub sandbox: switchboard_salesforce::Sandbox,
    pub router: Router,
    pub state: AppState,
    pub token: String,
    _dir: Option<tempfile::TempDir>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl App {
    pub async fn sqlite() -> App {
        let dir = tempfile::tempdir().unwrap();
        let store = switchboard_store::testing::sqlite_store(dir.path())
            .await
            .unwrap();
        App::with_store(store, Some(dir)).await
    }

    pub async fn with_store(store: Store, dir: Option<tempfile::TempDir>) -> App {
        store
            .create_user("admin", "correct horse battery")
            .await
            .unwrap();
        let token = store.create_api_token("tests").await.unwrap().secret;
        let settings = WebSettings {
            login_attempts_per_minute: 3,
            recordings_dir: dir.as_ref().map(|d| d.path().join("recordings")),
            ..Default::default()
        };
        let sandbox = switchboard_salesforce::Sandbox::new(Default::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox_url = format!("http://{}", listener.local_addr().unwrap());
        let app = sandbox.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let cfg = sandbox.config();
        let salesforce = switchboard_handoff::SalesforceSettings::new(
            store.clone(),
            Default::default(),
            switchboard_handoff::SandboxTarget {
                url: sandbox_url,
                org_id: cfg.org_id,
                deployment_name: cfg.deployment_name,
            },
            Some("http://127.0.0.1:8080".into()),
        );
        let state = AppState::new(store, settings)
            .with_salesforce(std::sync::Arc::new(salesforce))
            .with_sandbox(sandbox.clone());
        App {
            sandbox,
            router: switchboard_web::router(state.clone()),
            state,
            token,
            _dir: dir,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        // An event stream does not end by itself: its body is left unread
        // (tests that read one do so frame by frame).
        if headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
        {
            return Reply {
                status,
                headers,
                body: String::new(),
            };
        }
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// An API request with the bearer token; `body` is sent as JSON when given.
    pub async fn api(&self, method: Method, path: &str, body: Option<&str>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        self.send(
            req.body(Body::from(body.unwrap_or("").to_string()))
                .unwrap(),
        )
        .await
    }

    /// Logs in through the form; returns (cookie header value, csrf token).
    pub async fn login(&self) -> (String, String) {
        let r = self
            .form(
                Method::POST,
                "/login",
                None,
                "username=admin&password=correct+horse+battery&next=%2Finbox",
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(r.location(), "/inbox");
        let set = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let token = cookie.split_once('=').unwrap().1;
        let csrf = self
            .state
            .store
            .login(token)
            .await
            .unwrap()
            .unwrap()
            .csrf_token;
        (cookie, csrf)
    }

    pub async fn form(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(body.to_string())).unwrap())
            .await
    }

    pub async fn page(&self, path: &str, cookie: &str) -> Reply {
        self.send(
            Request::get(path)
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }
}
