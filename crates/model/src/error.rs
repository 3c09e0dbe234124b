use std::fmt;

/// Why a value from outside (API body, CLI flag, config, CSV row) was refused.
///
/// `field` names the input so that the caller can point at it; `reason` says
/// what would be accepted instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl ModelError {
    pub fn invalid(field: impl fmt::Display, reason: impl fmt::Display) -> Self {
        ModelError::Invalid {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The input this error is about (`"phone"`, `"routing_attributes.session_id"`).
    pub fn field(&self) -> &str {
        match self {
            ModelError::Invalid { field, .. } => field,
        }
    }

    /// The same reason, reported under another field name.
    pub fn for_field(self, field: &str) -> Self {
        match self {
            ModelError::Invalid { reason, .. } => ModelError::Invalid {
                field: field.to_string(),
                reason,
            },
        }
    }

    /// The same error, reported under `prefix.field` (for nested inputs).
    pub fn within(self, prefix: &str) -> Self {
        match self {
            ModelError::Invalid { field, reason } => ModelError::Invalid {
                field: format!("{prefix}.{field}"),
                reason,
            },
        }
    }
}
