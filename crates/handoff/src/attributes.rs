//! The routing attributes a handoff sends, keyed by the Channel Variable
//! Names configured in Salesforce.
//!
//! Names come from the org-wide MIAW settings; an agent whose own name for an
//! attribute differs from the built-in default overrides it (so one agent can
//! feed a differently named parameter without touching the others).

use std::collections::BTreeMap;

use switchboard_model::{Handoff, RoutingAttributeNames, SessionId};

/// Salesforce checks values against the parameter's maximum length, which
/// admins commonly leave at 255.
pub const MAX_VALUE_CHARS: usize = 255;

pub fn effective_names(
    org: &RoutingAttributeNames,
    agent: Option<&RoutingAttributeNames>,
) -> RoutingAttributeNames {
    let default = RoutingAttributeNames::default();
    let Some(agent) = agent else {
        return org.clone();
    };
    let pick = |a: &String, d: &String, o: &String| if a != d { a.clone() } else { o.clone() };
    RoutingAttributeNames {
        session_id: pick(&agent.session_id, &default.session_id, &org.session_id),
        caller_phone: pick(
            &agent.caller_phone,
            &default.caller_phone,
            &org.caller_phone,
        ),
        handoff_reason: pick(
            &agent.handoff_reason,
            &default.handoff_reason,
            &org.handoff_reason,
        ),
        handoff_mode: pick(
            &agent.handoff_mode,
            &default.handoff_mode,
            &org.handoff_mode,
        ),
        preferred_channel: pick(
            &agent.preferred_channel,
            &default.preferred_channel,
            &org.preferred_channel,
        ),
    }
}

pub fn build(
    names: &RoutingAttributeNames,
    session: SessionId,
    caller: &str,
    handoff: &Handoff,
) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let mut put = |name: &str, value: &str| {
        let v = crate::render::clean(value).replace('\n', " ");
        let v: String = v.chars().take(MAX_VALUE_CHARS).collect();
        if !v.is_empty() {
            attrs.insert(name.to_string(), v);
        }
    };
    put(&names.session_id, &session.to_string());
    put(&names.caller_phone, caller);
    put(&names.handoff_reason, &handoff.reason);
    put(&names.handoff_mode, handoff.mode.as_str());
    if let Some(c) = handoff.preferred_channel {
        put(&names.preferred_channel, c.as_str());
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_overrides_only_what_it_changed() {
        let org = RoutingAttributeNames {
            session_id: "OpencxSessionId".into(),
            ..Default::default()
        };
        assert_eq!(
            effective_names(&org, Some(&RoutingAttributeNames::default())).session_id,
            "OpencxSessionId"
        );
        let agent = RoutingAttributeNames {
            caller_phone: "Phone_Number".into(),
            ..Default::default()
        };
        let eff = effective_names(&org, Some(&agent));
        assert_eq!(
            (eff.session_id.as_str(), eff.caller_phone.as_str()),
            ("OpencxSessionId", "Phone_Number")
        );
    }
}
