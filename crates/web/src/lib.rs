//! Switchboard's HTTP side.
//!
//! Owns the REST API under `/api/v1` (with its OpenAPI document at
//! `/api/openapi.json`), the server-rendered dashboard, authentication (cookie
//! logins with CSRF tokens for people, bearer tokens for scripts), and the
//! operational endpoints `/healthz`, `/readyz` and `/metrics`.
//!
//! Layout: [`routes`] is the one table of every route with its access level,
//! from which [`router`] is built (and which the auth-walk test reads);
//! [`auth`] holds the extractors and login rate limiting; [`api`] the JSON
//! handlers; [`pages`] the dashboard (the Contacts pages in
//! [`contacts_pages`], their CSV import in [`contacts_csv`], which the CLI
//! uses too); [`error`] maps failures to responses; [`metrics`] the
//! Prometheus counters.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use switchboard_handoff::SalesforceSettings;
use switchboard_model::{Clock, Region, SystemClock};
use switchboard_salesforce::Sandbox;
use switchboard_store::Store;
use tokio::sync::Notify;

pub mod api;
pub mod auth;
pub mod calls_api;
pub mod contacts_csv;
pub mod contacts_pages;
pub mod error;
pub mod handoffs_api;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod providers;
pub mod recordings;
pub mod routes;
pub mod test_call;
pub mod trunks_page;

pub use routes::router;

/// Settings the HTTP side needs from the configuration.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Region for phone numbers typed without a country code.
    pub default_region: Region,
    /// How long a dashboard login lasts.
    pub login_ttl: Duration,
    /// Mark the login cookie `Secure` (serve behind HTTPS).
    pub secure_cookies: bool,
    /// Failed logins allowed per client address per minute before 429.
    pub login_attempts_per_minute: u32,
    /// Where call recordings live (`None`: recordings are not served).
    pub recordings_dir: Option<std::path::PathBuf>,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            default_region: Region::default(),
            login_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            login_attempts_per_minute: 10,
            recordings_dir: None,
        }
    }
}

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub settings: Arc<WebSettings>,
    pub metrics: Arc<metrics::Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Salesforce MIAW settings and connection test (`None`: not wired).
    pub salesforce: Option<Arc<SalesforceSettings>>,
    /// The built-in MIAW sandbox, when it runs in this process.
    pub sandbox: Option<Sandbox>,
    /// Poked after a handoff is written so the delivery worker looks at once.
    pub handoff_notify: Arc<Notify>,
    /// Places outbound calls (`None`: telephony is off).
    pub dialer: Option<Arc<dyn calls_api::Dialer>>,
    /// Poked when agents, numbers or trunks change, so telephony's routing
    /// cache and trunk registrations follow at once.
    pub routing_changed: Arc<Notify>,
    /// Starts browser test calls on the voice engine (`None`: not wired).
    pub browser_calls: Option<Arc<dyn test_call::BrowserCalls>>,
    pub(crate) limiter: Arc<auth::LoginLimiter>,
}

impl AppState {
    pub fn new(store: Store, settings: WebSettings) -> Self {
        let limiter = auth::LoginLimiter::new(settings.login_attempts_per_minute);
        Self {
            store,
            settings: Arc::new(settings),
            metrics: Arc::new(metrics::Metrics::default()),
            clock: Arc::new(SystemClock),
            salesforce: None,
            sandbox: None,
            handoff_notify: Arc::new(Notify::new()),
            dialer: None,
            browser_calls: None,
            routing_changed: Arc::new(Notify::new()),
            limiter: Arc::new(limiter),
        }
    }

    pub fn with_salesforce(mut self, settings: Arc<SalesforceSettings>) -> Self {
        self.salesforce = Some(settings);
        self
    }

    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    pub fn with_dialer(mut self, dialer: Arc<dyn calls_api::Dialer>) -> Self {
        self.dialer = Some(dialer);
        self
    }

    pub fn with_browser_calls(mut self, calls: Arc<dyn test_call::BrowserCalls>) -> Self {
        self.browser_calls = Some(calls);
        self
    }

    pub fn with_handoff_notify(mut self, notify: Arc<Notify>) -> Self {
        self.handoff_notify = notify;
        self
    }
}

/// Serves the router on `listener` until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
