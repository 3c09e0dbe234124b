//! Uuid newtypes. Every record id is a UUID v7 (time-ordered, so ids sort by
//! creation and index well on both SQLite and PostgreSQL).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Hyphenated lowercase: the form Salesforce and our URLs use.
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = crate::ModelError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|e| crate::ModelError::invalid(stringify!($name), format!("not a UUID ({e})")))
            }
        }
    };
}

uuid_id!(
    /// A call session: the key reps see in Salesforce's routing attribute.
    SessionId
);
uuid_id!(AgentId);
uuid_id!(NumberId);
uuid_id!(TrunkId);
uuid_id!(ContactId);
uuid_id!(UserId);
uuid_id!(TokenId);
uuid_id!(TurnId);
uuid_id!(TraceStepId);
uuid_id!(HandoffId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_creation() {
        let a = SessionId::new();
        let b = SessionId::new();
        assert!(a < b, "v7 ids are time ordered");
        let parsed: SessionId = a.to_string().parse().expect("own output parses");
        assert_eq!(parsed, a);
        assert!(a.to_string().chars().all(|c| !c.is_ascii_uppercase()));
    }

    #[test]
    fn bad_id_names_the_type() {
        let err = "nope".parse::<AgentId>().unwrap_err();
        assert_eq!(err.field(), "AgentId");
    }
}
