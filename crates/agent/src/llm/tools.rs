//! Tools are commands: a model's tool call is parsed here, strictly and
//! without IO, into a [`ToolCall`] (or a [`ToolCallError`] that is sent back
//! to the model as the tool's answer); [`super::LlmAgent`] applies it (IO,
//! traced) and renders the result as a tool message.
//!
//! Built-ins: `transfer_to_human(reason)`, `end_call(reason)` and, when a
//! [`super::ContactLookup`] is configured, `lookup_contact(phone)`. Agents
//! add their own [`HttpTool`]s.

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{json, Map, Value};

use super::protocol::ToolSpec;
use super::LlmError;

pub const TRANSFER_TO_HUMAN: &str = "transfer_to_human";
pub const END_CALL: &str = "end_call";
pub const LOOKUP_CONTACT: &str = "lookup_contact";

/// A user-defined tool: the model's arguments go to `url` as a JSON body
/// (or as query parameters for `GET` and `DELETE`), and the response goes
/// back to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments: an object with `properties`, maybe
    /// `required`. Arguments it does not declare are refused unless
    /// `additionalProperties` is `true`.
    pub parameters: Value,
    pub url: Url,
    pub method: Method,
    pub timeout: Duration,
}

impl HttpTool {
    /// A tool declared in an agent's settings; errors name the field.
    pub fn new(
        name: &str,
        description: &str,
        parameters: Value,
        url: &str,
        method: &str,
        timeout: Duration,
    ) -> Result<Self, LlmError> {
        let invalid = |key: &'static str, reason: String| LlmError::InvalidConfig { key, reason };
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(invalid(
                "tools.name",
                format!("\"{name}\" must be 1 to 64 letters, digits, '_' or '-'"),
            ));
        }
        if [TRANSFER_TO_HUMAN, END_CALL, LOOKUP_CONTACT].contains(&name) {
            return Err(invalid(
                "tools.name",
                format!("\"{name}\" is a built-in tool"),
            ));
        }
        if !parameters.is_object() {
            return Err(invalid(
                "tools.parameters",
                "must be a JSON Schema object".into(),
            ));
        }
        let url = Url::parse(url).map_err(|e| invalid("tools.url", e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("tools.url", "must be http or https".into()));
        }
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|e| invalid("tools.method", e.to_string()))?;
        Ok(Self {
            name: name.into(),
            description: description.into(),
            parameters,
            url,
            method,
            timeout,
        })
    }
}

/// A tool call that passed parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCall {
    TransferToHuman {
        reason: String,
    },
    EndCall {
        reason: String,
    },
    LookupContact {
        phone: String,
    },
    /// The agent's `index`-th [`HttpTool`].
    Http {
        index: usize,
        args: Map<String, Value>,
    },
}

/// Why a tool call was refused; the model reads this as the tool's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolCallError {
    #[error("unknown tool \"{name}\"; the available tools are: {available}")]
    Unknown { name: String, available: String },
    #[error("the arguments are not a JSON object ({reason})")]
    Malformed { reason: String },
    #[error("unexpected argument \"{0}\"")]
    Unexpected(String),
    #[error("missing required argument \"{0}\"")]
    Missing(String),
    #[error("argument \"{name}\" must be {expected}")]
    WrongType {
        name: String,
        expected: &'static str,
    },
}

/// The tools offered to the model.
pub(crate) fn specs(http: &[HttpTool], with_lookup: bool) -> Vec<ToolSpec> {
    let reason = |what: &str| {
        json!({
            "type": "object",
            "properties": { "reason": { "type": "string", "description": what } },
            "required": ["reason"],
            "additionalProperties": false,
        })
    };
    let mut specs = vec![
        ToolSpec {
            name: TRANSFER_TO_HUMAN.into(),
            description: "Hand the caller to a person on the team: when they ask for a person, or when you cannot resolve their request.".into(),
            parameters: reason("One line for the team: what the caller needs and why you are handing off."),
        },
        ToolSpec {
            name: END_CALL.into(),
            description: "End the call after saying goodbye, when the caller has nothing else.".into(),
            parameters: reason("Why the call is over."),
        },
    ];
    if with_lookup {
        specs.push(ToolSpec {
            name: LOOKUP_CONTACT.into(),
            description: "Find the customer record for a phone number (name, email).".into(),
            parameters: json!({
                "type": "object",
                "properties": { "phone": { "type": "string", "description": "Phone number, ideally in E.164 such as +14155550123." } },
                "required": ["phone"],
                "additionalProperties": false,
            }),
        });
    }
    specs.extend(http.iter().map(|t| ToolSpec {
        name: t.name.clone(),
        description: t.description.clone(),
        parameters: t.parameters.clone(),
    }));
    specs
}

/// Parse a call strictly: the name must be offered, the arguments must be
/// a JSON object with exactly the declared keys of the declared types.
pub fn parse(
    name: &str,
    arguments: &str,
    http: &[HttpTool],
    with_lookup: bool,
) -> Result<ToolCall, ToolCallError> {
    let args = parse_object(arguments)?;
    let one_string = |key: &str, args: Map<String, Value>| -> Result<String, ToolCallError> {
        check(&args, &[(key, "string")], &[key], false)?;
        Ok(args
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string())
    };
    match name {
        TRANSFER_TO_HUMAN => Ok(ToolCall::TransferToHuman {
            reason: one_string("reason", args)?,
        }),
        END_CALL => Ok(ToolCall::EndCall {
            reason: one_string("reason", args)?,
        }),
        LOOKUP_CONTACT if with_lookup => Ok(ToolCall::LookupContact {
            phone: one_string("phone", args)?,
        }),
        _ => {
            let Some(index) = http.iter().position(|t| t.name == name) else {
                let available: Vec<String> = specs(http, with_lookup)
                    .into_iter()
                    .map(|s| s.name)
                    .collect();
                return Err(ToolCallError::Unknown {
                    name: name.into(),
                    available: available.join(", "),
                });
            };
            check_schema(&http[index].parameters, &args)?;
            Ok(ToolCall::Http { index, args })
        }
    }
}

fn parse_object(arguments: &str) -> Result<Map<String, Value>, ToolCallError> {
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ToolCallError::Malformed {
            reason: format!("got {}", type_name(&other)),
        }),
        Err(e) => Err(ToolCallError::Malformed {
            reason: e.to_string(),
        }),
    }
}

/// Checks `args` against the `properties`/`required` of a JSON Schema.
fn check_schema(schema: &Value, args: &Map<String, Value>) -> Result<(), ToolCallError> {
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let types: Vec<(&str, &str)> = properties
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                v.get("type").and_then(Value::as_str).unwrap_or(""),
            )
        })
        .collect();
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let open = schema.get("additionalProperties") == Some(&Value::Bool(true));
    check(args, &types, &required, open)
}

fn check(
    args: &Map<String, Value>,
    types: &[(&str, &str)],
    required: &[&str],
    open: bool,
) -> Result<(), ToolCallError> {
    if !open {
        if let Some(extra) = args.keys().find(|k| !types.iter().any(|(n, _)| n == k)) {
            return Err(ToolCallError::Unexpected(extra.clone()));
        }
    }
    if let Some(missing) = required.iter().find(|k| !args.contains_key(**k)) {
        return Err(ToolCallError::Missing((*missing).to_string()));
    }
    for (name, ty) in types {
        let Some(value) = args.get(*name) else {
            continue;
        };
        let ok = match *ty {
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "null" => value.is_null(),
            _ => true,
        };
        if !ok {
            return Err(ToolCallError::WrongType {
                name: (*name).to_string(),
                expected: expected(ty),
            });
        }
    }
    Ok(())
}

fn expected(ty: &str) -> &'static str {
    match ty {
        "string" => "a string",
        "number" => "a number",
        "integer" => "an integer",
        "boolean" => "true or false",
        "object" => "an object",
        "array" => "an array",
        _ => "null",
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A tool's error as the model reads it.
pub(crate) fn error_message(message: impl std::fmt::Display) -> String {
    json!({ "error": message.to_string() }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> HttpTool {
        HttpTool::new(
            "get_weather",
            "Weather in a city",
            json!({
                "type": "object",
                "properties": { "city": { "type": "string" }, "days": { "type": "integer" } },
                "required": ["city"],
            }),
            "http://127.0.0.1:9/weather",
            "post",
            Duration::from_secs(2),
        )
        .expect("valid tool")
    }

    #[test]
    fn builtins_parse_strictly() {
        assert_eq!(
            parse(TRANSFER_TO_HUMAN, r#"{"reason":" billing "}"#, &[], false),
            Ok(ToolCall::TransferToHuman {
                reason: "billing".into()
            })
        );
        assert_eq!(
            parse(END_CALL, r#"{"reason":"done","mood":"happy"}"#, &[], false),
            Err(ToolCallError::Unexpected("mood".into()))
        );
        assert_eq!(
            parse(END_CALL, "", &[], false),
            Err(ToolCallError::Missing("reason".into()))
        );
        assert!(matches!(
            parse(END_CALL, r#"{"reason": 3}"#, &[], false),
            Err(ToolCallError::WrongType { .. })
        ));
        assert!(matches!(
            parse(END_CALL, r#"{"reason": "x""#, &[], false),
            Err(ToolCallError::Malformed { .. })
        ));
        assert!(matches!(
            parse(END_CALL, "[]", &[], false),
            Err(ToolCallError::Malformed { .. })
        ));
    }

    #[test]
    fn lookup_is_only_offered_with_a_directory() {
        let err = parse(LOOKUP_CONTACT, r#"{"phone":"+1"}"#, &[], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown tool \"lookup_contact\"; the available tools are: transfer_to_human, end_call"
        );
        assert!(parse(LOOKUP_CONTACT, r#"{"phone":"+1"}"#, &[], true).is_ok());
    }

    #[test]
    fn http_tools_follow_their_schema() {
        let tools = [weather()];
        let Ok(ToolCall::Http { index: 0, args }) =
            parse("get_weather", r#"{"city":"Oslo","days":2}"#, &tools, false)
        else {
            panic!("expected the tool");
        };
        assert_eq!(args["city"], "Oslo");
        assert_eq!(
            parse(
                "get_weather",
                r#"{"city":"Oslo","units":"c"}"#,
                &tools,
                false
            ),
            Err(ToolCallError::Unexpected("units".into()))
        );
        assert_eq!(
            parse("get_weather", r#"{"days":2}"#, &tools, false),
            Err(ToolCallError::Missing("city".into()))
        );
        assert!(matches!(
            parse(
                "get_weather",
                r#"{"city":"Oslo","days":1.5}"#,
                &tools,
                false
            ),
            Err(ToolCallError::WrongType { .. })
        ));
    }

    #[test]
    fn tool_declarations_are_checked() {
        let bad = |name: &str, url: &str, method: &str| {
            HttpTool::new(name, "", json!({}), url, method, Duration::from_secs(1))
        };
        assert!(bad("ok_name", "http://x/y", "GET").is_ok());
        assert!(matches!(
            bad("end_call", "http://x/y", "GET"),
            Err(LlmError::InvalidConfig {
                key: "tools.name",
                ..
            })
        ));
        assert!(bad("has space", "http://x/y", "GET").is_err());
        assert!(matches!(
            bad("x", "ftp://x/y", "GET"),
            Err(LlmError::InvalidConfig {
                key: "tools.url",
                ..
            })
        ));
    }
}
