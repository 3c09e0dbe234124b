//! Plain domain types shared by every Switchboard crate.
//!
//! This crate owns the vocabulary — ids, phone numbers, agents, numbers, trunks,
//! contacts, sessions, turns, trace steps, handoffs — and the rules that make a
//! value valid (`parse`/`TryFrom`, never a bare constructor on outside input).
//! It does no IO: time comes through the [`Clock`] trait so cores can run on
//! virtual time.
//!
//! Layout: [`ids`] (uuid newtypes), [`phone`] ([`E164`]), [`time`]
//! ([`Timestamp`], [`Clock`]), [`redact`] ([`Redacted`]), [`entities`] (the
//! records and their input forms), [`error`].

pub mod entities;
pub mod error;
pub mod ids;
pub mod phone;
pub mod redact;
pub mod salesforce;
pub mod time;

pub use entities::*;
pub use error::ModelError;
pub use ids::*;
pub use phone::{Region, E164};
pub use redact::Redacted;
pub use salesforce::MiawSettings;
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
