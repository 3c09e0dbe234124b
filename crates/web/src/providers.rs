//! Settings → Speech & LLM: the keys and defaults of the cloud providers an
//! agent can pick in its configuration (Deepgram and OpenAI-compatible
//! speech to text; ElevenLabs and OpenAI-compatible text to speech; an
//! OpenAI-compatible LLM for the `llm` brain).
//!
//! Stored as one JSON setting (`providers`) with every API key sealed by the
//! store's secret key; keys are write-only on the page (blank keeps the
//! current one). The binary reads them with [`load`] when a call starts, so
//! a change applies to the next call. An agent whose provider has no key
//! runs on the offline speech (and its trace says so).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_model::{Brain, SttProvider, TtsProvider};
use switchboard_store::{Store, StoreError};

use crate::api::audit;
use crate::auth::{see_other, Caller};
use crate::error::ApiError;
use crate::pages::{csrf_field, error_banner, html_response, layout, page_error, text_input, Nav};
use crate::AppState;

/// The settings key.
pub const SETTING_KEY: &str = "providers";

/// Provider settings with the API keys in clear: what the binary uses.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderSettings {
    pub deepgram: DeepgramSettings,
    pub elevenlabs: ElevenLabsSettings,
    pub openai: OpenAiSettings,
    pub llm: LlmSettings,
}

impl std::fmt::Debug for ProviderSettings {
    // Keys are secrets: only whether each is set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("deepgram_key", &self.deepgram.api_key.is_some())
            .field("elevenlabs_key", &self.elevenlabs.api_key.is_some())
            .field("openai_key", &self.openai.api_key.is_some())
            .field("llm_key", &self.llm.api_key.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeepgramSettings {
    pub api_key: Option<String>,
    /// Empty: the adapter's default (`nova-3`).
    pub model: String,
    /// Empty: `wss://api.deepgram.com`.
    pub base_url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ElevenLabsSettings {
    pub api_key: Option<String>,
    /// The voice used when the agent's own `voice` is empty.
    pub voice_id: String,
    /// Empty: `eleven_flash_v2_5`.
    pub model_id: String,
    /// Empty: `https://api.elevenlabs.io`.
    pub base_url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenAiSettings {
    pub api_key: Option<String>,
    /// Empty: `https://api.openai.com`.
    pub base_url: String,
    /// Empty: `whisper-1`.
    pub stt_model: String,
    /// Empty: `gpt-4o-mini-tts`.
    pub tts_model: String,
    /// The voice used when the agent's own `voice` is empty (default `alloy`).
    pub voice: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmSettings {
    pub api_key: Option<String>,
    /// Such as `https://api.openai.com/v1`; empty: the LLM is not set here.
    pub base_url: String,
    pub model: String,
}

/// Errors reading the provider settings.
#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the provider settings are unreadable ({0}): save them again under Settings → Speech & LLM"
    )]
    Corrupt(String),
}

/// Reads the settings with the keys still sealed: enough to tell which are
/// set, without the secret key (`switchboard doctor`).
pub async fn load_sealed(store: &Store) -> Result<ProviderSettings, ProvidersError> {
    match store.setting(SETTING_KEY).await? {
        None => Ok(ProviderSettings::default()),
        Some(value) => {
            serde_json::from_value(value).map_err(|e| ProvidersError::Corrupt(e.to_string()))
        }
    }
}

/// Reads the settings and opens the sealed keys.
pub async fn load(store: &Store) -> Result<ProviderSettings, ProvidersError> {
    let mut p = load_sealed(store).await?;
    for key in keys_mut(&mut p) {
        if let Some(sealed) = key.take() {
            let open = store
                .secrets()
                .open(&sealed)
                .map_err(|e| ProvidersError::Corrupt(e.to_string()))?;
            *key = Some(open);
        }
    }
    Ok(p)
}

/// Seals the keys and stores the settings.
pub async fn save(store: &Store, settings: &ProviderSettings) -> Result<(), StoreError> {
    let mut sealed = settings.clone();
    for key in keys_mut(&mut sealed) {
        if let Some(k) = key.take() {
            *key = Some(store.secrets().seal(&k));
        }
    }
    let value = serde_json::to_value(&sealed).map_err(|e| StoreError::Corrupt {
        table: "settings",
        reason: e.to_string(),
    })?;
    store.put_setting(SETTING_KEY, &value).await
}

fn keys_mut(p: &mut ProviderSettings) -> [&mut Option<String>; 4] {
    [
        &mut p.deepgram.api_key,
        &mut p.elevenlabs.api_key,
        &mut p.openai.api_key,
        &mut p.llm.api_key,
    ]
}

/// The form as posted: keys are blank unless being replaced.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProvidersForm {
    deepgram_api_key: String,
    deepgram_clear: Option<String>,
    deepgram_model: String,
    deepgram_base_url: String,
    elevenlabs_api_key: String,
    elevenlabs_clear: Option<String>,
    elevenlabs_voice_id: String,
    elevenlabs_model_id: String,
    elevenlabs_base_url: String,
    openai_api_key: String,
    openai_clear: Option<String>,
    openai_base_url: String,
    openai_stt_model: String,
    openai_tts_model: String,
    openai_voice: String,
    llm_api_key: String,
    llm_clear: Option<String>,
    llm_base_url: String,
    llm_model: String,
}

fn new_key(current: &Option<String>, typed: &str, clear: bool) -> Option<String> {
    if clear {
        return None;
    }
    match typed.trim() {
        "" => current.clone(),
        k => Some(k.to_string()),
    }
}

/// A base URL must be absolute http(s); plain http only on loopback (keys
/// would travel in clear otherwise).
fn check_url(field: &str, value: &str, schemes: &[&str]) -> Option<(String, String)> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let Some((scheme, rest)) = v.split_once("://") else {
        return Some((
            field.into(),
            format!("must be a full URL starting with {}://", schemes[0]),
        ));
    };
    if !schemes.contains(&scheme) {
        return Some((
            field.into(),
            format!("must start with {}", schemes.join(":// or ") + "://"),
        ));
    }
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host_only = host
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(host)
        .trim_matches(['[', ']']);
    if host_only.is_empty() {
        return Some((field.into(), "has no host".into()));
    }
    let loopback = host_only == "localhost"
        || host_only
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if matches!(scheme, "http" | "ws") && !loopback {
        return Some((
            field.into(),
            "must use https:// (or wss://): the API key would travel in clear; plain http is allowed on localhost only".into(),
        ));
    }
    None
}

impl ProvidersForm {
    /// The new settings, or every invalid field at once.
    fn apply(&self, current: &ProviderSettings) -> Result<ProviderSettings, ApiError> {
        let t = |s: &str| s.trim().to_string();
        let next = ProviderSettings {
            deepgram: DeepgramSettings {
                api_key: new_key(
                    &current.deepgram.api_key,
                    &self.deepgram_api_key,
                    self.deepgram_clear.is_some(),
                ),
                model: t(&self.deepgram_model),
                base_url: t(&self.deepgram_base_url),
            },
            elevenlabs: ElevenLabsSettings {
                api_key: new_key(
                    &current.elevenlabs.api_key,
                    &self.elevenlabs_api_key,
                    self.elevenlabs_clear.is_some(),
                ),
                voice_id: t(&self.elevenlabs_voice_id),
                model_id: t(&self.elevenlabs_model_id),
                base_url: t(&self.elevenlabs_base_url),
            },
            openai: OpenAiSettings {
                api_key: new_key(
                    &current.openai.api_key,
                    &self.openai_api_key,
                    self.openai_clear.is_some(),
                ),
                base_url: t(&self.openai_base_url),
                stt_model: t(&self.openai_stt_model),
                tts_model: t(&self.openai_tts_model),
                voice: t(&self.openai_voice),
            },
            llm: LlmSettings {
                api_key: new_key(
                    &current.llm.api_key,
                    &self.llm_api_key,
                    self.llm_clear.is_some(),
                ),
                base_url: t(&self.llm_base_url),
                model: t(&self.llm_model),
            },
        };
        let mut errors: Vec<(String, String)> = [
            check_url(
                "deepgram_base_url",
                &next.deepgram.base_url,
                &["wss", "ws", "https", "http"],
            ),
            check_url(
                "elevenlabs_base_url",
                &next.elevenlabs.base_url,
                &["https", "http"],
            ),
            check_url("openai_base_url", &next.openai.base_url, &["https", "http"]),
            check_url("llm_base_url", &next.llm.base_url, &["https", "http"]),
        ]
        .into_iter()
        .flatten()
        .collect();
        if next.elevenlabs.api_key.is_some() && next.elevenlabs.voice_id.is_empty() {
            errors.push((
                "elevenlabs_voice_id".into(),
                "is required with an ElevenLabs key (agents with their own voice override it)"
                    .into(),
            ));
        }
        if !next.llm.base_url.is_empty() && next.llm.model.is_empty() {
            errors.push((
                "llm_model".into(),
                "is required with an LLM base URL, such as gpt-4o-mini".into(),
            ));
        }
        if next.llm.base_url.is_empty() && !next.llm.model.is_empty() {
            errors.push((
                "llm_base_url".into(),
                "is required with a model, such as https://api.openai.com/v1".into(),
            ));
        }
        match errors.len() {
            0 => Ok(next),
            1 => {
                let (field, message) = errors.remove(0);
                Err(ApiError::invalid(field, message))
            }
            _ => Err(ApiError::InvalidMany { errors }),
        }
    }

    fn from_settings(p: &ProviderSettings) -> Self {
        ProvidersForm {
            deepgram_model: p.deepgram.model.clone(),
            deepgram_base_url: p.deepgram.base_url.clone(),
            elevenlabs_voice_id: p.elevenlabs.voice_id.clone(),
            elevenlabs_model_id: p.elevenlabs.model_id.clone(),
            elevenlabs_base_url: p.elevenlabs.base_url.clone(),
            openai_base_url: p.openai.base_url.clone(),
            openai_stt_model: p.openai.stt_model.clone(),
            openai_tts_model: p.openai.tts_model.clone(),
            openai_voice: p.openai.voice.clone(),
            llm_base_url: p.llm.base_url.clone(),
            llm_model: p.llm.model.clone(),
            ..Default::default()
        }
    }
}

fn key_field(label: &str, name: &str, set: bool, clear_name: &str) -> Markup {
    html! {
        div.field {
            label for=(name) { (label) }
            input id=(name) name=(name) type="password" autocomplete="off"
                placeholder=(if set { "•••••••• (set; type to replace)" } else { "not set" });
            @if set {
                label.inline { input type="checkbox" name=(clear_name) value="on" style="width:auto"; " Remove the key" }
            }
            small data-key-state=(if set { "set" } else { "unset" }) { @if set { "A key is saved (never shown)." } @else { "No key: agents that pick this provider use the offline speech." } }
        }
    }
}

/// Which agents pick each provider, for the page.
struct Usage {
    deepgram: Vec<String>,
    openai_stt: Vec<String>,
    elevenlabs: Vec<String>,
    openai_tts: Vec<String>,
    llm: Vec<String>,
}

fn used_by(names: &[String]) -> Markup {
    html! {
        p.muted {
            @if names.is_empty() { "No agent uses it." }
            @else { "Used by: " (names.join(", ")) }
        }
    }
}

fn body(
    form: &ProvidersForm,
    current: &ProviderSettings,
    usage: &Usage,
    error: Option<&ApiError>,
    saved: bool,
    caller: &Caller,
) -> Markup {
    html! {
        @if saved { p.notice role="status" { "Saved. New calls use these settings." } }
        (error_banner(error))
        p.muted {
            "Each agent picks its speech-to-text, text-to-speech and brain under Channels → Phone. "
            "A cloud provider that fails is retried once, then the call falls back to the offline speech, so callers never hear dead air."
        }
        form method="post" action="/settings/providers" {
            (csrf_field(caller))
            fieldset {
                legend { "Deepgram (speech to text, streaming)" }
                (used_by(&usage.deepgram))
                (key_field("API key", "deepgram_api_key", current.deepgram.api_key.is_some(), "deepgram_clear"))
                (text_input("Model", "deepgram_model", &form.deepgram_model, "Empty: nova-3", error))
                (text_input("Endpoint", "deepgram_base_url", &form.deepgram_base_url, "Empty: wss://api.deepgram.com", error))
            }
            fieldset {
                legend { "ElevenLabs (text to speech, streaming)" }
                (used_by(&usage.elevenlabs))
                (key_field("API key", "elevenlabs_api_key", current.elevenlabs.api_key.is_some(), "elevenlabs_clear"))
                (text_input("Default voice id", "elevenlabs_voice_id", &form.elevenlabs_voice_id, "Used when an agent's Voice is empty", error))
                (text_input("Model", "elevenlabs_model_id", &form.elevenlabs_model_id, "Empty: eleven_flash_v2_5", error))
                (text_input("Endpoint", "elevenlabs_base_url", &form.elevenlabs_base_url, "Empty: https://api.elevenlabs.io", error))
            }
            fieldset {
                legend { "OpenAI-compatible speech (transcription and speech)" }
                (used_by(&[usage.openai_stt.clone(), usage.openai_tts.clone()].concat()))
                (key_field("API key", "openai_api_key", current.openai.api_key.is_some(), "openai_clear"))
                (text_input("Endpoint", "openai_base_url", &form.openai_base_url, "Empty: https://api.openai.com (without /v1)", error))
                (text_input("Transcription model", "openai_stt_model", &form.openai_stt_model, "Empty: whisper-1", error))
                (text_input("Speech model", "openai_tts_model", &form.openai_tts_model, "Empty: gpt-4o-mini-tts", error))
                (text_input("Default voice", "openai_voice", &form.openai_voice, "Used when an agent's Voice is empty; empty: alloy", error))
            }
            fieldset {
                legend { "LLM (OpenAI-compatible Chat Completions, for the llm brain)" }
                (used_by(&usage.llm))
                (key_field("API key", "llm_api_key", current.llm.api_key.is_some(), "llm_clear"))
                (text_input("Base URL", "llm_base_url", &form.llm_base_url, "Such as https://api.openai.com/v1; the [llm] section of the config file, when set, wins", error))
                (text_input("Model", "llm_model", &form.llm_model, "Such as gpt-4o-mini", error))
            }
            button type="submit" { "Save" }
        }
    }
}

async fn usage(store: &Store) -> Result<Usage, StoreError> {
    let agents = store.list_agents().await?;
    let pick = |f: &dyn Fn(&switchboard_model::AgentSpec) -> bool| {
        agents
            .iter()
            .filter(|a| f(&a.spec))
            .map(|a| a.spec.name.clone())
            .collect::<Vec<_>>()
    };
    Ok(Usage {
        deepgram: pick(&|s| s.stt_provider == SttProvider::Deepgram),
        openai_stt: pick(&|s| s.stt_provider == SttProvider::Openai),
        elevenlabs: pick(&|s| s.tts_provider == TtsProvider::Elevenlabs),
        openai_tts: pick(&|s| s.tts_provider == TtsProvider::Openai),
        llm: pick(&|s| s.brain == Brain::Llm),
    })
}

async fn render(
    s: &AppState,
    caller: &Caller,
    form: Option<&ProvidersForm>,
    error: Option<&ApiError>,
    saved: bool,
) -> Response {
    let current = match load(&s.store).await {
        Ok(c) => c,
        Err(ProvidersError::Store(e)) => return page_error(e),
        // Unreadable (the secret key changed): show it empty so it can be saved again.
        Err(e) => {
            tracing::warn!(error = %e, "provider settings unreadable");
            ProviderSettings::default()
        }
    };
    let usage = match usage(&s.store).await {
        Ok(u) => u,
        Err(e) => return page_error(e),
    };
    let fresh;
    let form = match form {
        Some(f) => f,
        None => {
            fresh = ProvidersForm::from_settings(&current);
            &fresh
        }
    };
    let status = error.map(|e| e.status()).unwrap_or(StatusCode::OK);
    html_response(
        status,
        layout(
            "Speech & LLM providers",
            caller,
            Nav::Providers,
            body(form, &current, &usage, error, saved, caller),
        ),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct SavedQuery {
    #[serde(default)]
    saved: Option<String>,
}

/// `GET /settings/providers`.
pub async fn providers_page(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SavedQuery>,
) -> Response {
    render(&s, &caller, None, None, q.saved.is_some()).await
}

/// `POST /settings/providers`.
pub async fn providers_submit(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<ProvidersForm>,
) -> Response {
    let current = load(&s.store).await.unwrap_or_default();
    let next = match form.apply(&current) {
        Ok(n) => n,
        Err(e) => return render(&s, &caller, Some(&form), Some(&e), false).await,
    };
    if let Err(e) = save(&s.store, &next).await {
        return page_error(e);
    }
    audit(
        &s,
        &caller,
        "settings.providers",
        SETTING_KEY,
        json!({
            "deepgram_key": next.deepgram.api_key.is_some(),
            "elevenlabs_key": next.elevenlabs.api_key.is_some(),
            "openai_key": next.openai.api_key.is_some(),
            "llm_key": next.llm.api_key.is_some(),
        }),
    )
    .await;
    see_other("/settings/providers?saved=1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_keys_keep_the_saved_ones_and_clear_removes_them() {
        let current = ProviderSettings {
            deepgram: DeepgramSettings {
                api_key: Some("dg-old".into()),
                ..Default::default()
            },
            llm: LlmSettings {
                api_key: Some("sk-old".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let form = ProvidersForm {
            deepgram_model: " nova-2 ".into(),
            llm_clear: Some("on".into()),
            openai_api_key: "sk-new".into(),
            ..Default::default()
        };
        let next = form.apply(&current).unwrap();
        assert_eq!(next.deepgram.api_key.as_deref(), Some("dg-old"));
        assert_eq!(next.deepgram.model, "nova-2");
        assert_eq!(next.llm.api_key, None);
        assert_eq!(next.openai.api_key.as_deref(), Some("sk-new"));
    }

    #[test]
    fn every_bad_field_is_reported() {
        let form = ProvidersForm {
            deepgram_base_url: "api.deepgram.com".into(),
            openai_base_url: "http://api.example.com".into(),
            elevenlabs_api_key: "el".into(),
            llm_base_url: "https://llm.example.com/v1".into(),
            ..Default::default()
        };
        let e = form.apply(&ProviderSettings::default()).unwrap_err();
        let ApiError::InvalidMany { errors } = e else {
            panic!("{e:?}")
        };
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "deepgram_base_url",
                "openai_base_url",
                "elevenlabs_voice_id",
                "llm_model"
            ]
        );
    }

    #[test]
    fn plain_http_is_allowed_on_loopback_only() {
        assert_eq!(
            check_url("f", "http://127.0.0.1:8080/v1", &["https", "http"]),
            None
        );
        assert_eq!(
            check_url("f", "http://localhost/v1", &["https", "http"]),
            None
        );
        assert_eq!(check_url("f", "ws://[::1]:9000", &["wss", "ws"]), None);
        assert!(check_url("f", "http://10.0.0.5/v1", &["https", "http"]).is_some());
        assert!(check_url("f", "ftp://x", &["https", "http"]).is_some());
    }

    #[test]
    fn debug_never_shows_keys() {
        let p = ProviderSettings {
            openai: OpenAiSettings {
                api_key: Some("sk-secret".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!format!("{p:?}").contains("sk-secret"));
    }
}
