//! Where handoffs go: the effective MIAW settings, from the config file (for
//! unattended deployments) over the dashboard's saved values, and the built-in
//! sandbox when no org is configured.
//!
//! [`SalesforceSettings`] is the one place that reads, validates and saves the
//! settings, answers "where does each value come from", runs the connection
//! test, and resolves the worker's [`Target`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use switchboard_model::{MiawSettings, ModelError, Redacted};
use switchboard_salesforce::{
    JwtAlgorithm, JwtSigner, MiawClient, MiawConfig, MiawError, TransportKind,
};
use switchboard_store::{Store, StoreError};

use crate::worker::{NotConfigured, Target, TargetSource};

/// Store key of the saved settings (JSON).
pub const SETTINGS_KEY: &str = "salesforce.miaw";
/// Store key of the sealed private key.
pub const PRIVATE_KEY_KEY: &str = "salesforce.miaw.private_key";

/// Values from the config file / environment; they win over the dashboard.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    pub scrt_url: Option<String>,
    pub org_id: Option<String>,
    pub deployment_name: Option<String>,
    pub jwt_key_id: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_private_key_pem: Option<Redacted<String>>,
    pub session_id_attribute: Option<String>,
}

/// The built-in sandbox handoffs go to when no org is configured.
#[derive(Debug, Clone)]
pub struct SandboxTarget {
    pub url: String,
    pub org_id: String,
    pub deployment_name: String,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    ConfigFile,
    Dashboard,
    Default,
}

/// Where handoffs are delivered now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    Sandbox { url: String },
    Salesforce { url: String },
    NotConfigured { problems: Vec<String> },
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EffectiveSettings {
    pub settings: MiawSettings,
    /// Whether a JWT private key is stored (the key itself is write-only).
    pub private_key_set: bool,
    /// Per field: config_file, dashboard or default.
    pub sources: BTreeMap<String, Source>,
    pub destination: Destination,
}

/// What the dashboard or API submits. `jwt_private_key`: `None` keeps the
/// stored key, `Some("")` removes it, anything else replaces it.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MiawSettingsInput {
    #[serde(flatten)]
    pub settings: MiawSettings,
    pub jwt_private_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error("invalid Salesforce settings: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ModelError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One step of the connection test.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TestStep {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionTest {
    pub ok: bool,
    pub destination: Destination,
    pub steps: Vec<TestStep>,
}

pub struct SalesforceSettings {
    store: Store,
    overrides: ConfigOverrides,
    sandbox: SandboxTarget,
    inbox_base_url: Option<String>,
    request_timeout: Duration,
    /// The last target built: its settings fingerprint, when it was checked.
    cache: Mutex<Option<(String, Arc<Target>, std::time::Instant)>>,
}

/// How long a resolved target is used without reading the settings again.
/// Saving through this process invalidates it at once; other nodes see a
/// change within this time.
const TARGET_TTL: Duration = Duration::from_secs(2);

impl SalesforceSettings {
    pub fn new(
        store: Store,
        overrides: ConfigOverrides,
        sandbox: SandboxTarget,
        inbox_base_url: Option<String>,
    ) -> Self {
        Self {
            store,
            overrides,
            sandbox,
            inbox_base_url,
            request_timeout: Duration::from_secs(10),
            cache: Mutex::new(None),
        }
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn sandbox(&self) -> &SandboxTarget {
        &self.sandbox
    }

    async fn saved(&self) -> Result<MiawSettings, StoreError> {
        Ok(match self.store.setting(SETTINGS_KEY).await? {
            Some(v) => serde_json::from_value(v).unwrap_or_default(),
            None => MiawSettings::default(),
        })
    }

    async fn saved_key(&self) -> Result<Option<Redacted<String>>, StoreError> {
        match self.store.setting(PRIVATE_KEY_KEY).await? {
            Some(serde_json::Value::String(sealed)) if !sealed.is_empty() => {
                Ok(Some(Redacted::new(self.store.secrets().open(&sealed)?)))
            }
            _ => Ok(None),
        }
    }

    /// The settings in force, with the source of each value.
    pub async fn effective(&self) -> Result<EffectiveSettings, StoreError> {
        let (settings, key, sources) = self.resolve().await?;
        let destination = destination(&settings, &self.sandbox);
        Ok(EffectiveSettings {
            settings,
            private_key_set: key.is_some(),
            sources,
            destination,
        })
    }

    async fn resolve(
        &self,
    ) -> Result<
        (
            MiawSettings,
            Option<Redacted<String>>,
            BTreeMap<String, Source>,
        ),
        StoreError,
    > {
        let saved = self.saved().await?;
        let mut sources = BTreeMap::new();
        let o = &self.overrides;
        let mut pick = |field: &str, over: &Option<String>, saved: &str| -> String {
            match over {
                Some(v) => {
                    sources.insert(field.to_string(), Source::ConfigFile);
                    v.clone()
                }
                None if !saved.is_empty() => {
                    sources.insert(field.to_string(), Source::Dashboard);
                    saved.to_string()
                }
                None => {
                    sources.insert(field.to_string(), Source::Default);
                    String::new()
                }
            }
        };
        let mut settings = MiawSettings {
            scrt_url: pick("scrt_url", &o.scrt_url, &saved.scrt_url),
            org_id: pick("org_id", &o.org_id, &saved.org_id),
            deployment_name: pick(
                "deployment_name",
                &o.deployment_name,
                &saved.deployment_name,
            ),
            jwt_key_id: pick("jwt_key_id", &o.jwt_key_id, &saved.jwt_key_id),
            jwt_issuer: pick("jwt_issuer", &o.jwt_issuer, &saved.jwt_issuer),
            jwt_algorithm: pick("jwt_algorithm", &None, &saved.jwt_algorithm),
            routing_attributes: saved.routing_attributes.clone(),
        };
        if settings.jwt_algorithm.is_empty() {
            settings.jwt_algorithm = "RS256".into();
        }
        match &o.session_id_attribute {
            Some(name) => {
                settings.routing_attributes.session_id = name.clone();
                sources.insert("routing_attributes.session_id".into(), Source::ConfigFile);
            }
            None => {
                let src = if saved.routing_attributes == Default::default() {
                    Source::Default
                } else {
                    Source::Dashboard
                };
                sources.insert("routing_attributes.session_id".into(), src);
            }
        }
        let key = match &o.jwt_private_key_pem {
            Some(k) => {
                sources.insert("jwt_private_key".into(), Source::ConfigFile);
                Some(k.clone())
            }
            None => {
                let k = self.saved_key().await?;
                sources.insert(
                    "jwt_private_key".into(),
                    if k.is_some() {
                        Source::Dashboard
                    } else {
                        Source::Default
                    },
                );
                k
            }
        };
        Ok((settings, key, sources))
    }

    /// Validates field by field and saves. Fields set in the config file
    /// cannot be changed here (they would not take effect).
    pub async fn save(&self, input: MiawSettingsInput) -> Result<EffectiveSettings, SettingsError> {
        let s = input.settings;
        let mut problems = if s.is_blank() && s.jwt_key_id.is_empty() && s.jwt_issuer.is_empty() {
            // Blank means "use the sandbox"; only the attribute names matter.
            s.routing_attributes.validate().err().into_iter().collect()
        } else {
            s.problems()
        };
        let alg = if s.jwt_algorithm.trim().is_empty() {
            "RS256"
        } else {
            s.jwt_algorithm.trim()
        };
        if let Some(pem) = input
            .jwt_private_key
            .as_deref()
            .filter(|p| !p.trim().is_empty())
        {
            if let Ok(alg) = alg.parse::<JwtAlgorithm>() {
                if let Err(e) =
                    JwtSigner::from_pem(pem, s.jwt_key_id.trim(), s.jwt_issuer.trim(), alg)
                {
                    problems.push(ModelError::invalid("jwt_private_key", e.to_string()));
                }
            }
            if s.jwt_key_id.trim().is_empty() {
                problems.push(ModelError::invalid("jwt_key_id", "is required with a private key: the key id registered in the User Verification keyset"));
            }
        }
        for (field, over) in [
            ("scrt_url", &self.overrides.scrt_url),
            ("org_id", &self.overrides.org_id),
            ("deployment_name", &self.overrides.deployment_name),
        ] {
            if over.is_some() {
                problems.retain(|p| p.field() != field);
            }
        }
        if !problems.is_empty() {
            return Err(SettingsError::Invalid(problems));
        }
        let clean = MiawSettings {
            scrt_url: s.scrt_url.trim().trim_end_matches('/').to_string(),
            org_id: s.org_id.trim().to_string(),
            deployment_name: s.deployment_name.trim().to_string(),
            jwt_key_id: s.jwt_key_id.trim().to_string(),
            jwt_issuer: s.jwt_issuer.trim().to_string(),
            jwt_algorithm: alg.to_string(),
            routing_attributes: s.routing_attributes,
        };
        let value = serde_json::to_value(&clean).unwrap_or_default();
        self.store.put_setting(SETTINGS_KEY, &value).await?;
        match input.jwt_private_key.as_deref() {
            None => {}
            Some(p) if p.trim().is_empty() => {
                self.store
                    .put_setting(PRIVATE_KEY_KEY, &serde_json::Value::String(String::new()))
                    .await?
            }
            Some(p) => {
                let sealed = self.store.secrets().seal(p.trim());
                self.store
                    .put_setting(PRIVATE_KEY_KEY, &serde_json::Value::String(sealed))
                    .await?;
            }
        }
        self.invalidate();
        // Handoffs that waited for settings get another chance now.
        self.store.redrive_not_configured().await?;
        Ok(self.effective().await?)
    }

    fn invalidate(&self) {
        if let Ok(mut c) = self.cache.lock() {
            *c = None;
        }
    }

    async fn build_target(&self) -> Result<Arc<Target>, NotConfigured> {
        if let Ok(c) = self.cache.lock() {
            if let Some((_, t, checked)) = c.as_ref() {
                if checked.elapsed() < TARGET_TTL {
                    return Ok(t.clone());
                }
            }
        }
        let (settings, key, _) = self
            .resolve()
            .await
            .map_err(|e| NotConfigured(format!("cannot read the settings: {e}")))?;
        let fingerprint = format!(
            "{settings:?}|{}",
            key.as_ref().map_or(0, |k| k.expose().len())
        );
        if let Ok(mut c) = self.cache.lock() {
            if let Some((f, t, checked)) = c.as_mut() {
                if *f == fingerprint {
                    *checked = std::time::Instant::now();
                    return Ok(t.clone());
                }
            }
        }
        let (config, sandbox) = match destination(&settings, &self.sandbox) {
            Destination::NotConfigured { problems } => {
                return Err(NotConfigured(problems.join("; ")))
            }
            Destination::Sandbox { url } => (
                MiawConfig {
                    scrt_url: url,
                    org_id: self.sandbox.org_id.clone(),
                    deployment_name: self.sandbox.deployment_name.clone(),
                    request_timeout: self.request_timeout,
                },
                true,
            ),
            Destination::Salesforce { url } => (
                MiawConfig {
                    scrt_url: url,
                    org_id: settings.org_id.clone(),
                    deployment_name: settings.deployment_name.clone(),
                    request_timeout: self.request_timeout,
                },
                false,
            ),
        };
        let client = MiawClient::new(config).map_err(|e| NotConfigured(e.to_string()))?;
        let signer = match (&key, sandbox) {
            (Some(pem), false) if !settings.jwt_key_id.is_empty() => {
                let alg = settings
                    .jwt_algorithm
                    .parse::<JwtAlgorithm>()
                    .map_err(|e| NotConfigured(format!("jwt_algorithm: {e}")))?;
                Some(
                    JwtSigner::from_pem(
                        pem.expose(),
                        &settings.jwt_key_id,
                        &settings.jwt_issuer,
                        alg,
                    )
                    .map_err(|e| NotConfigured(format!("jwt_private_key: {e}")))?,
                )
            }
            _ => None,
        };
        let target = Arc::new(Target {
            client,
            signer,
            names: settings.routing_attributes.clone(),
            inbox_base_url: self.inbox_base_url.clone(),
            sandbox,
        });
        if let Ok(mut c) = self.cache.lock() {
            *c = Some((fingerprint, target.clone(), std::time::Instant::now()));
        }
        Ok(target)
    }

    /// Really obtains a token and reports each step in words.
    pub async fn test_connection(&self) -> ConnectionTest {
        let mut steps = Vec::new();
        let destination = match self.effective().await {
            Ok(e) => e.destination,
            Err(e) => {
                return ConnectionTest {
                    ok: false,
                    destination: Destination::NotConfigured {
                        problems: vec![e.to_string()],
                    },
                    steps: vec![TestStep {
                        name: "settings".into(),
                        ok: false,
                        detail: e.to_string(),
                    }],
                }
            }
        };
        let target = match self.build_target().await {
            Ok(t) => t,
            Err(NotConfigured(why)) => {
                steps.push(TestStep {
                    name: "settings".into(),
                    ok: false,
                    detail: why,
                });
                return ConnectionTest {
                    ok: false,
                    destination,
                    steps,
                };
            }
        };
        steps.push(TestStep {
            name: "settings".into(),
            ok: true,
            detail: "complete and valid".into(),
        });
        let token = match &target.signer {
            Some(signer) => {
                let now = chrono::Utc::now().timestamp();
                match signer.sign("switchboard-connection-test", now, 300) {
                    Ok(jwt) => target.client.authenticated_token(&jwt).await,
                    Err(e) => {
                        steps.push(TestStep {
                            name: "identity token".into(),
                            ok: false,
                            detail: e.to_string(),
                        });
                        return ConnectionTest {
                            ok: false,
                            destination,
                            steps,
                        };
                    }
                }
            }
            None => target.client.unauthenticated_token().await,
        };
        let kind = if target.signer.is_some() {
            "authenticated"
        } else {
            "unauthenticated"
        };
        let token = match token {
            Ok(t) => {
                steps.push(TestStep {
                    name: "access token".into(),
                    ok: true,
                    detail: format!("obtained an {kind} access token"),
                });
                t
            }
            Err(e) => {
                steps.push(TestStep {
                    name: "access token".into(),
                    ok: false,
                    detail: explain(&e),
                });
                return ConnectionTest {
                    ok: false,
                    destination,
                    steps,
                };
            }
        };
        let mut ok = true;
        match token.deployment_type.as_deref() {
            Some("api") | None => steps.push(TestStep {
                name: "deployment".into(),
                ok: true,
                detail: "Custom Client deployment".into(),
            }),
            Some(other) => {
                ok = false;
                steps.push(TestStep {
                    name: "deployment".into(),
                    ok: false,
                    detail: format!("the deployment type is `{other}`; handoffs need a Custom Client deployment (Embedded Service Deployments → New → Messaging for In-App and Web → Custom Client)"),
                });
            }
        }
        let names = &target.names;
        let wanted = [
            &names.session_id,
            &names.caller_phone,
            &names.handoff_reason,
            &names.handoff_mode,
            &names.preferred_channel,
        ];
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|n| !token.hidden_prechat_fields.iter().any(|f| f == **n))
            .map(|n| n.as_str())
            .collect();
        if missing.is_empty() {
            steps.push(TestStep {
                name: "routing attributes".into(),
                ok: true,
                detail: "every routing attribute is a hidden pre-chat field of the deployment"
                    .into(),
            });
        } else {
            ok = false;
            steps.push(TestStep {
                name: "routing attributes".into(),
                ok: false,
                detail: format!(
                    "Salesforce silently drops attributes that are not hidden pre-chat fields; missing: {}. Add each as a custom parameter of the Messaging channel (Channel Variable Name exactly as written), map it in Parameter Mapping, and add it as a hidden pre-chat field of the deployment",
                    missing.join(", ")
                ),
            });
        }
        ConnectionTest {
            ok,
            destination,
            steps,
        }
    }
}

impl TargetSource for SalesforceSettings {
    async fn target(&self) -> Result<Arc<Target>, NotConfigured> {
        self.build_target().await
    }
}

fn destination(settings: &MiawSettings, sandbox: &SandboxTarget) -> Destination {
    if settings.is_blank() {
        return Destination::Sandbox {
            url: sandbox.url.clone(),
        };
    }
    let problems = settings.problems();
    if problems.is_empty() {
        Destination::Salesforce {
            url: settings.scrt_url.trim_end_matches('/').to_string(),
        }
    } else {
        Destination::NotConfigured {
            problems: problems.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A failure to reach Salesforce, in words that say what to check.
pub fn explain(e: &MiawError) -> String {
    match e {
        MiawError::Transport { kind, message } => match kind {
            TransportKind::Dns => {
                format!("DNS: the SCRT host cannot be resolved ({message}); check scrt_url")
            }
            TransportKind::Tls => format!("TLS: the secure connection failed ({message})"),
            TransportKind::Connect => {
                format!("cannot connect ({message}); check scrt_url and the network")
            }
            TransportKind::Timeout => format!("Salesforce did not answer in time ({message})"),
            _ => format!("network error: {message}"),
        },
        MiawError::Http { status, body, .. } => {
            let hint = match status {
                400 => " — check org_id and deployment_name (the deployment must be a published Custom Client deployment)",
                401 => " — the identity token was refused: check jwt_key_id, jwt_issuer and that the private key matches the key registered under Enhanced Chat User Verification",
                403 => " — check whether User Verification is on for the Messaging channel (then a JWT key is required) or off",
                404 => " — check scrt_url and deployment_name",
                _ => "",
            };
            format!("Salesforce answered {status}: {body}{hint}")
        }
        other => other.to_string(),
    }
}
