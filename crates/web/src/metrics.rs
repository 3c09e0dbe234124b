//! Prometheus counters, rendered in the text exposition format at `/metrics`.
//! A handful of atomics is all this needs; calls and handoffs add theirs later.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Requests by status class: 1xx..5xx.
    http_responses: [AtomicU64; 5],
    login_failures: AtomicU64,
    login_throttled: AtomicU64,
    /// Dashboard live-update streams open now.
    event_streams: AtomicU64,
}

/// Counts one open live-update stream until dropped (with the stream, when
/// the browser goes away).
#[derive(Debug)]
pub struct EventStreamGuard(Arc<Metrics>);

impl Drop for EventStreamGuard {
    fn drop(&mut self) {
        self.0.event_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            http_responses: Default::default(),
            login_failures: AtomicU64::new(0),
            login_throttled: AtomicU64::new(0),
            event_streams: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn record_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http_responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_login_failure(&self) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_login_throttled(&self) {
        self.login_throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn open_event_stream(self: &Arc<Self>) -> EventStreamGuard {
        self.event_streams.fetch_add(1, Ordering::Relaxed);
        EventStreamGuard(self.clone())
    }

    /// Live-update streams open now.
    pub fn event_streams(&self) -> u64 {
        self.event_streams.load(Ordering::Relaxed)
    }

    pub fn render(&self, db_up: bool) -> String {
        self.render_with(db_up, None)
    }

    /// Renders, with the handoff outbox's job counts when known.
    pub fn render_with(
        &self,
        db_up: bool,
        outbox: Option<&switchboard_store::OutboxCounts>,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP switchboard_build_info Build information.");
        let _ = writeln!(out, "# TYPE switchboard_build_info gauge");
        let _ = writeln!(
            out,
            "switchboard_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_uptime_seconds Seconds since the server started."
        );
        let _ = writeln!(out, "# TYPE switchboard_uptime_seconds gauge");
        let _ = writeln!(
            out,
            "switchboard_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_database_up Whether the database answered the last check."
        );
        let _ = writeln!(out, "# TYPE switchboard_database_up gauge");
        let _ = writeln!(out, "switchboard_database_up {}", u8::from(db_up));
        let _ = writeln!(
            out,
            "# HELP switchboard_http_responses_total HTTP responses by status class."
        );
        let _ = writeln!(out, "# TYPE switchboard_http_responses_total counter");
        for (i, c) in self.http_responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "switchboard_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_login_failures_total Failed dashboard logins."
        );
        let _ = writeln!(out, "# TYPE switchboard_login_failures_total counter");
        let _ = writeln!(
            out,
            "switchboard_login_failures_total {}",
            self.login_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_login_throttled_total Logins refused by the rate limit."
        );
        let _ = writeln!(out, "# TYPE switchboard_login_throttled_total counter");
        let _ = writeln!(
            out,
            "switchboard_login_throttled_total {}",
            self.login_throttled.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_dashboard_event_streams Dashboard live-update streams open now."
        );
        let _ = writeln!(out, "# TYPE switchboard_dashboard_event_streams gauge");
        let _ = writeln!(
            out,
            "switchboard_dashboard_event_streams {}",
            self.event_streams()
        );
        if let Some(c) = outbox {
            let _ = writeln!(out, "# HELP switchboard_handoff_jobs Handoff delivery jobs by state (parked: waiting for Salesforce settings; dead: dead-lettered).");
            let _ = writeln!(out, "# TYPE switchboard_handoff_jobs gauge");
            for (state, n) in [
                ("pending", c.pending),
                ("running", c.running),
                ("parked", c.parked),
                ("dead", c.dead),
            ] {
                let _ = writeln!(out, "switchboard_handoff_jobs{{state=\"{state}\"}} {n}");
            }
        }
        out
    }
}
