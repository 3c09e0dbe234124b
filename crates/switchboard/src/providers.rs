//! Which speech providers and LLM a call runs on.
//!
//! The offline providers ([`crate::wiring::speech`]) are loaded once and
//! shared. When an agent picks a cloud provider (Deepgram, OpenAI-compatible,
//! ElevenLabs) and Settings → Speech & LLM has its key, the call gets that
//! provider first with the offline one behind it ([`FallbackStt`],
//! [`FallbackTts`]: retry once, then fall back), so a failing cloud never
//! leaves the caller in silence. Without a key the call runs offline and a
//! trace step on the session says why. Settings are read when each call
//! starts: a change applies to the next call.

use std::sync::Arc;

use switchboard_agent::LlmConfig;
use switchboard_model::{Agent, Brain, Redacted, Region, SessionId, SttProvider, TtsProvider};
use switchboard_speech::{
    DeepgramConfig, DeepgramStt, ElevenLabsConfig, ElevenLabsTts, FallbackStt, FallbackTts,
    OpenAiConfig, OpenAiStt, OpenAiTts, SpeechToText, TextToSpeech,
};
use switchboard_store::Store;
use switchboard_voice::{Engine, EngineConfig};
use switchboard_web::providers::{self, ProviderSettings};
use tokio::sync::Notify;
use tracing::warn;

/// Builds the engine for each call from the agent's choices.
#[derive(Clone)]
pub(crate) struct CallEngines {
    pub(crate) store: Store,
    pub(crate) notify: Arc<Notify>,
    pub(crate) config: EngineConfig,
    pub(crate) offline_stt: Arc<dyn SpeechToText>,
    pub(crate) offline_tts: Arc<dyn TextToSpeech>,
    /// For numbers the LLM's tools read without a country code.
    pub(crate) region: Region,
}

/// The providers chosen for one call, with what the trace should say.
pub(crate) struct Chosen {
    pub(crate) stt: Arc<dyn SpeechToText>,
    pub(crate) tts: Arc<dyn TextToSpeech>,
    pub(crate) llm: Option<LlmConfig>,
    /// Choices that could not be honoured, in words.
    pub(crate) notes: Vec<String>,
}

impl CallEngines {
    /// The engine for a call to `agent` (cheap: the offline models are shared).
    pub(crate) async fn engine_for(&self, agent: &Agent, session: SessionId) -> Engine {
        let settings = match providers::load(&self.store).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "provider settings unreadable; using offline speech");
                ProviderSettings::default()
            }
        };
        let chosen = self.choose(agent, &settings);
        let names = serde_json::json!({
            "stt": chosen.stt.name(),
            "tts": chosen.tts.name(),
            "brain": if chosen.llm.is_some() { "llm" } else { "playbook" },
            "notes": chosen.notes,
        });
        if let Err(e) = self
            .store
            .add_trace_step(session, None, "providers", &names, None)
            .await
        {
            warn!(error = %e, "cannot record the call's providers");
        }
        let mut config = self.config.clone();
        config.llm = chosen.llm;
        Engine::new(
            self.store.clone(),
            chosen.stt,
            chosen.tts,
            self.notify.clone(),
            config,
        )
    }

    pub(crate) fn choose(&self, agent: &Agent, p: &ProviderSettings) -> Chosen {
        let mut notes = Vec::new();
        let spec = &agent.spec;
        let language = spec.language.clone();
        let stt: Arc<dyn SpeechToText> = match spec.stt_provider {
            SttProvider::Offline => self.offline_stt.clone(),
            SttProvider::Deepgram => match &p.deepgram.api_key {
                None => {
                    notes.push("Deepgram is selected but has no API key (Settings → Speech & LLM): offline speech recognition".into());
                    self.offline_stt.clone()
                }
                Some(key) => {
                    let mut c = DeepgramConfig::new(key.clone());
                    if !p.deepgram.model.is_empty() {
                        c.model = p.deepgram.model.clone();
                    }
                    if !p.deepgram.base_url.is_empty() {
                        c = c.with_base_url(p.deepgram.base_url.clone());
                    }
                    c.language = language.clone();
                    self.with_offline_stt(DeepgramStt::new(c).map(|s| Arc::new(s) as _), &mut notes)
                }
            },
            SttProvider::Openai => match openai_config(p) {
                None => {
                    notes.push("OpenAI transcription is selected but has no API key (Settings → Speech & LLM): offline speech recognition".into());
                    self.offline_stt.clone()
                }
                Some(mut c) => {
                    c.model = non_empty(&p.openai.stt_model);
                    c.language = language.split('-').next().unwrap_or("en").to_lowercase();
                    self.with_offline_stt(OpenAiStt::new(c).map(|s| Arc::new(s) as _), &mut notes)
                }
            },
        };
        let tts: Arc<dyn TextToSpeech> = match spec.tts_provider {
            TtsProvider::Offline => self.offline_tts.clone(),
            TtsProvider::Elevenlabs => match &p.elevenlabs.api_key {
                None => {
                    notes.push("ElevenLabs is selected but has no API key (Settings → Speech & LLM): offline voice".into());
                    self.offline_tts.clone()
                }
                Some(key) => {
                    let voice =
                        agent_voice(&spec.voice).unwrap_or_else(|| p.elevenlabs.voice_id.clone());
                    let mut c = ElevenLabsConfig::new(key.clone(), voice);
                    if !p.elevenlabs.model_id.is_empty() {
                        c.model_id = p.elevenlabs.model_id.clone();
                    }
                    if !p.elevenlabs.base_url.is_empty() {
                        c = c.with_base_url(p.elevenlabs.base_url.clone());
                    }
                    self.with_offline_tts(
                        ElevenLabsTts::new(c).map(|s| Arc::new(s) as _),
                        &mut notes,
                    )
                }
            },
            TtsProvider::Openai => match openai_config(p) {
                None => {
                    notes.push("OpenAI speech is selected but has no API key (Settings → Speech & LLM): offline voice".into());
                    self.offline_tts.clone()
                }
                Some(mut c) => {
                    c.model = non_empty(&p.openai.tts_model);
                    let voice = agent_voice(&spec.voice).unwrap_or_else(|| p.openai.voice.clone());
                    if !voice.is_empty() {
                        c.voice = voice;
                    }
                    self.with_offline_tts(OpenAiTts::new(c).map(|s| Arc::new(s) as _), &mut notes)
                }
            },
        };
        // The config file's [llm] wins over the dashboard's.
        let llm = match spec.brain {
            Brain::Playbook => None,
            Brain::Llm => match (&self.config.llm, dashboard_llm(p, self.region)) {
                (Some(file), _) => Some(file.clone()),
                (None, Ok(Some(c))) => Some(c),
                (None, Ok(None)) => {
                    notes.push("the LLM brain is selected but no LLM is configured (Settings → Speech & LLM, or [llm] in the config file): playbook".into());
                    None
                }
                (None, Err(e)) => {
                    notes.push(format!("the LLM settings are invalid ({e}): playbook"));
                    None
                }
            },
        };
        Chosen {
            stt,
            tts,
            llm,
            notes,
        }
    }

    fn with_offline_stt(
        &self,
        cloud: Result<Arc<dyn SpeechToText>, switchboard_speech::SpeechError>,
        notes: &mut Vec<String>,
    ) -> Arc<dyn SpeechToText> {
        match cloud {
            Ok(c) => Arc::new(FallbackStt::new(vec![c, self.offline_stt.clone()])),
            Err(e) => {
                notes.push(format!(
                    "cloud speech recognition cannot start ({e}): offline"
                ));
                self.offline_stt.clone()
            }
        }
    }

    fn with_offline_tts(
        &self,
        cloud: Result<Arc<dyn TextToSpeech>, switchboard_speech::SpeechError>,
        notes: &mut Vec<String>,
    ) -> Arc<dyn TextToSpeech> {
        match cloud {
            Ok(c) => Arc::new(FallbackTts::new(vec![c, self.offline_tts.clone()])),
            Err(e) => {
                notes.push(format!("cloud voice cannot start ({e}): offline"));
                self.offline_tts.clone()
            }
        }
    }
}

/// The agent's own voice, unless it left the default.
fn agent_voice(voice: &str) -> Option<String> {
    let v = voice.trim();
    (!v.is_empty() && v != "default").then(|| v.to_string())
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn openai_config(p: &ProviderSettings) -> Option<OpenAiConfig> {
    let key = p.openai.api_key.clone()?;
    let base = non_empty(&p.openai.base_url).unwrap_or_else(|| "https://api.openai.com".into());
    Some(OpenAiConfig::new(base, Some(key)))
}

fn dashboard_llm(
    p: &ProviderSettings,
    region: Region,
) -> Result<Option<LlmConfig>, switchboard_agent::llm::LlmError> {
    let Some(base) = non_empty(&p.llm.base_url) else {
        return Ok(None);
    };
    let model = non_empty(&p.llm.model).unwrap_or_else(|| "gpt-4o-mini".into());
    let mut c = LlmConfig::new(&base, model)?;
    c.api_key = p.llm.api_key.clone().map(Redacted::new);
    c.region = region;
    Ok(Some(c))
}
