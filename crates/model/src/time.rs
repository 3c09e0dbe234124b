use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with millisecond precision, stored as milliseconds since the
/// Unix epoch (the same integer on SQLite and PostgreSQL) and shown as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[schema(value_type = String, format = DateTime, example = "2026-11-25T19:01:04.123Z")]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(&self) -> i64 {
        self.0
    }

    pub fn to_datetime(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    pub fn to_rfc3339(&self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Parses RFC 3339 (`2026-11-25T19:01:04.123Z`, any offset).
    pub fn parse_rfc3339(s: &str) -> Result<Self, crate::ModelError> {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|dt| Self(dt.timestamp_millis()))
            .map_err(|e| {
                crate::ModelError::invalid(
                    "timestamp",
                    format!("expected RFC 3339 such as 2026-11-25T19:01:04.123Z ({e})"),
                )
            })
    }

    pub fn plus_millis(&self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// Where "now" comes from. Cores take a clock (or an explicit `now`) so tests
/// can run on virtual time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(Utc::now().timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_keeps_milliseconds_in_utc() {
        let t = Timestamp::parse_rfc3339("2026-11-25T20:01:04.123+01:00").expect("valid");
        assert_eq!(t.to_rfc3339(), "2026-11-25T19:01:04.123Z");
        let json = serde_json::to_string(&t).expect("serialises");
        assert_eq!(json, "\"2026-11-25T19:01:04.123Z\"");
        let back: Timestamp = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, t);
    }

    #[test]
    fn bad_timestamp_says_the_expected_form() {
        let err = Timestamp::parse_rfc3339("yesterday").unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }
}

/// A clock that moves only when told to (tests and simulations).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn starting_at(t: Timestamp) -> Self {
        Self(std::sync::atomic::AtomicI64::new(t.as_millis()))
    }

    pub fn advance_millis(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}
