//! Delivery of handoffs to Salesforce MIAW.
//!
//! A handoff is written with its outbox job in one transaction (see
//! `switchboard_store::Store::create_handoff`); nothing is sent from the
//! request path. This crate turns the job into Salesforce calls:
//!
//! - [`render`]: sans-IO — the session's transcript as messages (header,
//!   one line per turn with its time, summary), derived ids, splitting.
//! - [`attributes`]: sans-IO — the routing attributes under the configured names.
//! - [`policy`]: sans-IO — back-off with jitter and which failures to retry.
//! - [`worker`]: the async worker that claims jobs, calls MIAW through
//!   `switchboard_salesforce::MiawClient`, records progress per message, and
//!   retries, dead-letters or parks (when Salesforce is not configured).

pub mod attributes;
pub mod policy;
pub mod render;
pub mod watcher;
pub mod worker;

pub use worker::{NotConfigured, Target, TargetSource, Worker, WorkerConfig};
pub mod settings;

pub use settings::{ConfigOverrides, SalesforceSettings, SandboxTarget};
pub mod intake;
