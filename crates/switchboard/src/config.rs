//! Configuration: `switchboard.toml` plus `SWITCHBOARD_<SECTION>_<KEY>`
//! environment overrides plus command-line flags.
//!
//! Every setting is declared once, in the [`settings!`] table at the top of
//! this file. The table generates the raw serde structs the file is read into
//! (unknown keys refused), the list of environment variable names (unknown
//! `SWITCHBOARD_*` variables refused, with a suggestion), and the
//! [`SETTINGS`] slice that the docs-drift test checks against
//! `switchboard.example.toml` and `docs/configuration.md`.
//!
//! Loading runs in three steps: read the file into [`RawConfig`] → overlay
//! the environment, then the flags (precedence: flag > env > file > default)
//! while remembering where each value came from → convert into the typed
//! [`Config`], with errors that name the key, variable or flag to fix.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchboard_model::{validate_api_name, Region};
use switchboard_store::redact_url;

/// The file read when `--config` is not given, if it exists.
pub(crate) const DEFAULT_FILE: &str = "switchboard.toml";

/// `SWITCHBOARD_*` variables that are not settings of the file; they are
/// described in docs/configuration.md ("Other environment variables").
pub(crate) const EXTRA_ENV: &[&str] = &[
    "SWITCHBOARD_CONFIG",
    DATA_DIR_ALIAS,
    "SWITCHBOARD_SECRET_KEY",
    "SWITCHBOARD_ADMIN_PASSWORD",
    "SWITCHBOARD_TEST_DATABASE_URL",
];

/// Alias of `SWITCHBOARD_STORAGE_DATA_DIR`, kept for scripts that use it.
const DATA_DIR_ALIAS: &str = "SWITCHBOARD_DATA_DIR";

/// One setting: `[section] key`, its environment variable, default and meaning.
pub(crate) struct Setting {
    pub(crate) section: &'static str,
    pub(crate) key: &'static str,
    /// The default as the docs show it.
    // Read by the docs-drift test, which keeps the example file and
    // docs/configuration.md in step with this table.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) default: &'static str,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) doc: &'static str,
    set: fn(&mut RawConfig, &str) -> Result<(), String>,
    is_set: fn(&RawConfig) -> bool,
}

impl Setting {
    /// `http.addr`
    pub(crate) fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }

    /// `SWITCHBOARD_HTTP_ADDR`
    pub(crate) fn env_var(&self) -> String {
        format!("SWITCHBOARD_{}_{}", self.section, self.key).to_ascii_uppercase()
    }
}

/// Declares every setting. Each `[section] RawStruct { key: Type = "default", }`
/// becomes a field of the raw file structs and a row of [`SETTINGS`].
macro_rules! settings {
    ($(
        [$section:ident] $raw:ident {
            $( #[doc = $doc:literal] $key:ident : $ty:ty = $default:literal, )*
        }
    )*) => {
        /// The file as written: every key optional, unknown keys refused.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawConfig {
            $( #[serde(default)] $section: $raw, )*
        }

        $(
            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $raw {
                $( $key: Option<$ty>, )*
            }
        )*

        /// Every setting, in file order.
        pub(crate) const SETTINGS: &[Setting] = &[
            $( $( Setting {
                section: stringify!($section),
                key: stringify!($key),
                default: $default,
                doc: $doc.trim_ascii(),
                set: |raw, value| {
                    raw.$section.$key = Some(<$ty as EnvValue>::from_env(value)?);
                    Ok(())
                },
                is_set: |raw| raw.$section.$key.is_some(),
            }, )* )*
        ];
    };
}

settings! {
    [http] RawHttp {
        /// Address the dashboard and API listen on (port 0 picks a free port).
        addr: String = "127.0.0.1:8080",
        /// Mark the login cookie `Secure`; turn on when serving behind HTTPS.
        secure_cookies: bool = "false",
        /// How long a dashboard login lasts, in minutes.
        login_ttl_minutes: u32 = "720",
        /// Failed logins allowed per client address per minute before refusing.
        login_attempts_per_minute: u32 = "10",
        /// URL people use to reach the dashboard; handoff messages link to the Inbox with it.
        public_url: String = "http://<addr>",
    }
    [sip] RawSip {
        /// UDP and TCP address SIP listens on; 0.0.0.0:5060 takes calls from a trunk; `off` disables telephony.
        addr: String = "127.0.0.1:5060",
        /// Public address put in SDP and Contact when behind 1:1 NAT (never a private one).
        public_ip: String = "(unset)",
        /// UDP ports for RTP (even) and RTCP (odd), as FIRST-LAST.
        rtp_ports: String = "20000-29999",
        /// Send 180 Ringing before answering.
        ringing: bool = "true",
        /// Seconds an outbound call or transfer rings before it counts as not answered.
        no_answer_seconds: u32 = "30",
        /// Concurrent calls per agent at most (an agent's own limit applies too); then 486 Busy Here.
        max_calls_per_agent: u32 = "10",
        /// TCP address SIP over TLS listens on, such as 0.0.0.0:5061; needs tls_cert and tls_key.
        tls_addr: String = "(unset)",
        /// PEM file with the TLS listener's certificate chain, leaf first.
        tls_cert: String = "(unset)",
        /// PEM file with the private key of tls_cert.
        tls_key: String = "(unset)",
        /// PEM bundle of the CAs trusted when connecting to trunks whose transport is tls.
        tls_ca: String = "/etc/ssl/certs/ca-certificates.crt",
    }
    [llm] RawLlm {
        /// OpenAI-compatible endpoint for agents whose brain is `llm`, such as https://api.openai.com/v1.
        base_url: String = "(unset)",
        /// Model name sent with every request.
        model: String = "gpt-4o-mini",
        /// API key; prefer the environment variable to the file.
        api_key: String = "(unset)",
    }
    [speech] RawSpeech {
        /// Speech recognition: `whisper` (offline), `none` (keys only), or `auto` (whisper when installed).
        stt: String = "auto",
        /// Speech synthesis: `piper` (natural, offline), `espeak-ng`, or `auto` (piper when installed).
        tts: String = "auto",
        /// Directory of a CTranslate2 Whisper model; found in the speech venv by default.
        whisper_model: String = "(auto)",
        /// Piper voice (.onnx, with its .onnx.json beside it); found in the speech venv by default.
        piper_voice: String = "(auto)",
        /// Voice activity detection: `energy` (adaptive noise floor) or `webrtc` (libfvad; better in steady noise, treats pure tones as noise).
        vad: String = "energy",
    }
    [database] RawDatabase {
        /// sqlite://PATH (embedded) or postgresql://USER:PASS@HOST:PORT/DB (scale-out).
        url: String = "sqlite://<data_dir>/switchboard.db",
        /// Size of the connection pool.
        max_connections: u32 = "8",
    }
    [storage] RawStorage {
        /// Where the database, the secret key and recordings live by default.
        data_dir: String = "./data",
        /// Where call recordings are written.
        recordings_dir: String = "<data_dir>/recordings",
    }
    [phone] RawPhone {
        /// Region (ISO 3166 code) for numbers written without a country code.
        default_region: String = "US",
    }
    [log] RawLog {
        /// Level (error, warn, info, debug, trace) or tracing filter directives; RUST_LOG wins when set.
        level: String = "info",
        /// `text` for people, `json` for log collectors.
        format: String = "text",
    }
    [salesforce] RawSalesforce {
        /// The org's SCRT URL from the Embedded Service deployment; https:// (http:// only on loopback).
        scrt_url: String = "(unset)",
        /// The 15- or 18-character org id, starting with 00D.
        org_id: String = "(unset)",
        /// API name of the Custom Client Embedded Service deployment.
        deployment_name: String = "(unset)",
        /// `kid` of the key that signs customer identity tokens.
        jwt_key_id: String = "(unset)",
        /// PEM file with the RSA private key that signs identity tokens.
        jwt_private_key_file: String = "(unset)",
        /// `iss` of identity tokens, as registered in the deployment.
        jwt_issuer: String = "(unset)",
        /// Name of the routing attribute that carries the session id, such as OpencxSessionId.
        session_id_attribute: String = "(unset)",
    }
    [handoff] RawHandoff {
        /// Delivery workers in this process (each delivers one handoff at a time).
        workers: u32 = "2",
        /// Seconds a worker holds a handoff without progress before another may take it over.
        lease_seconds: u32 = "60",
        /// Hours a handoff may keep failing transiently before it is dead-lettered.
        max_age_hours: u32 = "24",
        /// Pack several transcript turns per Salesforce message (fewer round-trips on slow links).
        pack_turns: bool = "false",
        /// Seconds to wait for one Salesforce request.
        request_timeout_seconds: u32 = "10",
        /// Hours after delivery an open Salesforce conversation is closed, if the rep has not ended it.
        retention_hours: u32 = "24",
    }
    [sandbox] RawSandbox {
        /// Address of the built-in MIAW sandbox (handoffs go there while no org is configured); `off` disables it.
        addr: String = "127.0.0.1:8089",
    }
}

/// Why the configuration cannot be used. Each variant names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{} is not a known setting{}", origin.describe(key), suggest(.suggestion))]
    UnknownKey {
        key: String,
        origin: Origin,
        suggestion: Option<String>,
    },
    #[error("{var} is not a known setting{}", suggest(.suggestion))]
    UnknownEnv {
        var: String,
        suggestion: Option<String>,
    },
    #[error("{var} is not valid UTF-8")]
    EnvNotUnicode { var: String },
    #[error("{a} and {b} are both set, to different values; unset one of them")]
    EnvConflict { a: String, b: String },
    /// A value of the wrong form; `origin` says who set it.
    #[error("{}: {reason}", origin.describe(key))]
    Invalid {
        key: String,
        origin: Origin,
        reason: String,
    },
}

fn suggest(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("; did you mean {s}?"),
        None => String::new(),
    }
}

/// Where a value came from, so an error can point at the place to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl Origin {
    fn describe(&self, key: &str) -> String {
        match self {
            Origin::Default => format!("{key} (default)"),
            Origin::File(path) => format!("{key} (in {})", path.display()),
            Origin::Env(var) => format!("{var} ({key})"),
            Origin::Flag(flag) => format!("{flag} ({key})"),
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) http_addr: Option<String>,
    pub(crate) sip_addr: Option<String>,
}

/// What to load the configuration from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    /// `--config`: must exist. Without it `./switchboard.toml` is read if present.
    pub(crate) file: Option<PathBuf>,
    /// The environment, as `std::env::vars_os()` gives it (tests pass their own).
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) flags: Overrides,
}

impl Sources {
    /// The process environment with the given file and flags.
    pub(crate) fn from_process(file: Option<PathBuf>, flags: Overrides) -> Self {
        Sources {
            file,
            env: std::env::vars_os().collect(),
            flags,
        }
    }
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// The file that was read, if any.
    pub(crate) file: Option<PathBuf>,
    pub(crate) http: HttpConfig,
    pub(crate) sip: SipConfig,
    pub(crate) database: DatabaseConfig,
    pub(crate) storage: StorageConfig,
    pub(crate) phone: PhoneConfig,
    pub(crate) log: LogConfig,
    pub(crate) salesforce: SalesforceConfig,
    pub(crate) handoff: HandoffConfig,
    pub(crate) sandbox: SandboxConfig,
    pub(crate) speech: SpeechConfig,
    /// `None` unless `llm.base_url` is set.
    pub(crate) llm: Option<switchboard_agent::LlmConfig>,
    /// Where each explicitly set value came from (`"http.addr"` → origin).
    origins: HashMap<String, Origin>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HttpConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) secure_cookies: bool,
    pub(crate) login_ttl: Duration,
    pub(crate) login_attempts_per_minute: u32,
    /// Set explicitly; otherwise derived from the bound address.
    pub(crate) public_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HandoffConfig {
    pub(crate) workers: u32,
    pub(crate) lease: Duration,
    pub(crate) max_age: Duration,
    pub(crate) pack_turns: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) retention: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SandboxConfig {
    /// `None` when turned off.
    pub(crate) addr: Option<SocketAddr>,
}

/// The system's CA bundle on Debian (package ca-certificates).
const DEFAULT_TLS_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SipConfig {
    /// `None`: telephony is off.
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) public_ip: Option<std::net::IpAddr>,
    pub(crate) rtp_ports: (u16, u16),
    pub(crate) ringing: bool,
    pub(crate) no_answer: Duration,
    pub(crate) max_calls_per_agent: u32,
    /// SIP over TLS listener; `None`: none.
    pub(crate) tls_addr: Option<SocketAddr>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    /// Trust anchors for TLS trunks; `None` when the file is absent.
    pub(crate) tls_ca: Option<PathBuf>,
}

/// Which speech providers to use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpeechConfig {
    pub(crate) stt: SttChoice,
    pub(crate) tts: TtsChoice,
    pub(crate) whisper_model: Option<PathBuf>,
    pub(crate) piper_voice: Option<PathBuf>,
    pub(crate) vad: switchboard_call::Detector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SttChoice {
    Auto,
    Whisper,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TtsChoice {
    Auto,
    Piper,
    Espeak,
}

#[derive(Clone, PartialEq)]
pub(crate) struct DatabaseConfig {
    /// May hold a password: show it only through [`DatabaseConfig::redacted_url`].
    pub(crate) url: String,
    pub(crate) max_connections: u32,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl DatabaseConfig {
    pub(crate) fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The database file, for SQLite URLs.
    pub(crate) fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageConfig {
    pub(crate) data_dir: PathBuf,
    pub(crate) recordings_dir: PathBuf,
}

impl StorageConfig {
    pub(crate) fn secret_key_file(&self) -> PathBuf {
        self.data_dir.join("secret.key")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PhoneConfig {
    pub(crate) default_region: Region,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogConfig {
    pub(crate) level: String,
    pub(crate) format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// The Salesforce connection. Everything is optional until handoffs to
/// Salesforce are built; `doctor` reports what is missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SalesforceConfig {
    pub(crate) scrt_url: Option<String>,
    pub(crate) org_id: Option<String>,
    pub(crate) deployment_name: Option<String>,
    pub(crate) jwt_key_id: Option<String>,
    pub(crate) jwt_private_key_file: Option<PathBuf>,
    pub(crate) jwt_issuer: Option<String>,
    pub(crate) session_id_attribute: Option<String>,
}

impl SalesforceConfig {
    /// True when any Salesforce setting is given.
    pub(crate) fn is_present(&self) -> bool {
        *self != SalesforceConfig::default()
    }

    /// Settings needed to open conversations at all.
    pub(crate) fn missing_required(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.scrt_url.is_none() {
            missing.push("salesforce.scrt_url");
        }
        if self.org_id.is_none() {
            missing.push("salesforce.org_id");
        }
        if self.deployment_name.is_none() {
            missing.push("salesforce.deployment_name");
        }
        missing
    }

    /// Settings for signed identity tokens (known contacts). All or none.
    pub(crate) fn missing_jwt(&self) -> (bool, Vec<&'static str>) {
        let fields = [
            ("salesforce.jwt_key_id", self.jwt_key_id.is_some()),
            (
                "salesforce.jwt_private_key_file",
                self.jwt_private_key_file.is_some(),
            ),
            ("salesforce.jwt_issuer", self.jwt_issuer.is_some()),
        ];
        let any = fields.iter().any(|(_, set)| *set);
        let missing = fields
            .iter()
            .filter(|(_, set)| !set)
            .map(|(name, _)| *name)
            .collect();
        (any, missing)
    }
}

impl Config {
    /// Loads file, environment and flags; see the module docs for precedence.
    pub(crate) fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut origins = HashMap::new();
        let (file, mut raw) = read_file(sources.file.as_deref())?;
        if let Some(path) = &file {
            for s in SETTINGS {
                if (s.is_set)(&raw) {
                    origins.insert(s.path(), Origin::File(path.clone()));
                }
            }
        }
        apply_env(&mut raw, &mut origins, &sources.env)?;
        apply_flags(&mut raw, &mut origins, &sources.flags);
        convert(raw, file, origins)
    }

    /// Where `key` (`"http.addr"`) was set, for messages that point at it.
    pub(crate) fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// How to change `key`: the place it was set, else the ways to set it.
    pub(crate) fn how_to_set(&self, key: &str, flag: Option<&str>) -> String {
        let env = SETTINGS
            .iter()
            .find(|s| s.path() == key)
            .map(Setting::env_var)
            .unwrap_or_default();
        match self.origin(key) {
            Origin::File(path) => format!("change {key} in {}", path.display()),
            Origin::Env(var) => format!("change {var}"),
            Origin::Flag(f) => format!("change {f}"),
            Origin::Default => match flag {
                Some(flag) => format!("set {key} in the config file, {env} or {flag}"),
                None => format!("set {key} in the config file or {env}"),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Step 1: the file

fn read_file(explicit: Option<&Path>) -> Result<(Option<PathBuf>, RawConfig), ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from(DEFAULT_FILE);
            if !p.exists() {
                return Ok((None, RawConfig::default()));
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let raw = parse_toml(&path, &text)?;
    Ok((Some(path), raw))
}

fn parse_toml(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            })
            .unwrap_or_default();
        ConfigError::Syntax {
            path: path.to_path_buf(),
            message: format!("{at}{}", e.message().trim()),
        }
    })?;
    check_known_keys(path, &table)?;
    // `check_known_keys` gives the friendly message for unknown keys; serde's
    // `deny_unknown_fields` stays as the backstop, and its path names the key
    // when a value has the wrong type.
    serde_path_to_error::deserialize::<_, RawConfig>(toml::Value::Table(table)).map_err(|e| {
        ConfigError::Invalid {
            key: e.path().to_string(),
            origin: Origin::File(path.to_path_buf()),
            reason: e.inner().to_string(),
        }
    })
}

fn check_known_keys(path: &Path, table: &toml::Table) -> Result<(), ConfigError> {
    let sections: Vec<&str> = dedup(SETTINGS.iter().map(|s| s.section));
    for (section, value) in table {
        if !sections.contains(&section.as_str()) {
            return Err(ConfigError::UnknownKey {
                key: format!("[{section}]"),
                origin: Origin::File(path.to_path_buf()),
                suggestion: closest(section, sections.iter().copied()).map(|s| format!("[{s}]")),
            });
        }
        let Some(keys) = value.as_table() else {
            return Err(ConfigError::Invalid {
                key: section.clone(),
                origin: Origin::File(path.to_path_buf()),
                reason: format!("must be a section ([{section}]) with keys, not a value"),
            });
        };
        let known: Vec<String> = SETTINGS
            .iter()
            .filter(|s| s.section == section)
            .map(Setting::path)
            .collect();
        for key in keys.keys() {
            let key = format!("{section}.{key}");
            if !known.contains(&key) {
                let everything = SETTINGS.iter().map(Setting::path).collect::<Vec<_>>();
                return Err(ConfigError::UnknownKey {
                    suggestion: closest(&key, everything.iter().map(String::as_str))
                        .map(str::to_string),
                    key,
                    origin: Origin::File(path.to_path_buf()),
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Step 2: environment and flags

/// Parses an environment variable's text into a setting's raw type.
trait EnvValue: Sized {
    fn from_env(text: &str) -> Result<Self, String>;
}

impl EnvValue for String {
    fn from_env(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

impl EnvValue for bool {
    fn from_env(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("{text:?} is not true or false")),
        }
    }
}

impl EnvValue for u32 {
    fn from_env(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number"))
    }
}

fn apply_env(
    raw: &mut RawConfig,
    origins: &mut HashMap<String, Origin>,
    env: &[(OsString, OsString)],
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (name, value) in env {
        let name_lossy = name.to_string_lossy();
        if !name_lossy.starts_with("SWITCHBOARD_") {
            continue;
        }
        let Some(value) = value.to_str() else {
            return Err(ConfigError::EnvNotUnicode {
                var: name_lossy.into_owned(),
            });
        };
        vars.push((name_lossy.into_owned(), value.to_string()));
    }
    // Deterministic: the first unknown variable in name order is reported.
    vars.sort();

    let alias = vars.iter().find(|(n, _)| n == DATA_DIR_ALIAS).cloned();
    for (name, value) in &vars {
        if EXTRA_ENV.contains(&name.as_str()) {
            continue;
        }
        let Some(setting) = SETTINGS.iter().find(|s| s.env_var() == *name) else {
            let known = SETTINGS
                .iter()
                .map(Setting::env_var)
                .chain(EXTRA_ENV.iter().map(|n| n.to_string()))
                .collect::<Vec<_>>();
            return Err(ConfigError::UnknownEnv {
                var: name.clone(),
                suggestion: closest(name, known.iter().map(String::as_str)).map(str::to_string),
            });
        };
        // An empty variable counts as unset (`VAR= switchboard …` in shells).
        if value.is_empty() {
            continue;
        }
        if let Some((alias_name, alias_value)) = &alias {
            if setting.path() == "storage.data_dir"
                && !alias_value.is_empty()
                && alias_value != value
            {
                return Err(ConfigError::EnvConflict {
                    a: alias_name.clone(),
                    b: name.clone(),
                });
            }
        }
        (setting.set)(raw, value).map_err(|reason| ConfigError::Invalid {
            key: setting.path(),
            origin: Origin::Env(name.clone()),
            reason,
        })?;
        origins.insert(setting.path(), Origin::Env(name.clone()));
    }
    if let Some((alias_name, value)) = alias {
        let key = "storage.data_dir".to_string();
        if !value.is_empty() && !matches!(origins.get(&key), Some(Origin::Env(_))) {
            raw.storage.data_dir = Some(value);
            origins.insert(key, Origin::Env(alias_name));
        }
    }
    Ok(())
}

fn apply_flags(raw: &mut RawConfig, origins: &mut HashMap<String, Origin>, flags: &Overrides) {
    if let Some(dir) = &flags.data_dir {
        raw.storage.data_dir = Some(dir.to_string_lossy().into_owned());
        origins.insert("storage.data_dir".into(), Origin::Flag("--data-dir"));
    }
    if let Some(addr) = &flags.http_addr {
        raw.http.addr = Some(addr.clone());
        origins.insert("http.addr".into(), Origin::Flag("--http"));
    }
    if let Some(addr) = &flags.sip_addr {
        raw.sip.addr = Some(addr.clone());
        origins.insert("sip.addr".into(), Origin::Flag("--sip"));
    }
}

// ---------------------------------------------------------------------------
// Step 3: conversion into typed values

fn convert(
    raw: RawConfig,
    file: Option<PathBuf>,
    origins: HashMap<String, Origin>,
) -> Result<Config, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        key: key.to_string(),
        origin: origins.get(key).cloned().unwrap_or(Origin::Default),
        reason,
    };
    let addr = |key: &str, value: Option<String>, default: &str| {
        let text = value.unwrap_or_else(|| default.to_string());
        text.trim().parse::<SocketAddr>().map_err(|_| {
            invalid(
                key,
                format!("{text:?} is not an address like {default} (IP address and port)"),
            )
        })
    };
    let range = |key: &str, value: Option<u32>, default: u32, min: u32, max: u32| {
        let v = value.unwrap_or(default);
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(key, format!("{v} is not between {min} and {max}")))
        }
    };

    let http = HttpConfig {
        addr: addr("http.addr", raw.http.addr, "127.0.0.1:8080")?,
        secure_cookies: raw.http.secure_cookies.unwrap_or(false),
        login_ttl: Duration::from_secs(
            60 * u64::from(range(
                "http.login_ttl_minutes",
                raw.http.login_ttl_minutes,
                720,
                1,
                525_600,
            )?),
        ),
        login_attempts_per_minute: range(
            "http.login_attempts_per_minute",
            raw.http.login_attempts_per_minute,
            10,
            1,
            10_000,
        )?,
        public_url: match non_empty(raw.http.public_url) {
            None => None,
            Some(u) => {
                let u = u.trim().trim_end_matches('/').to_string();
                if !(u.starts_with("http://") || u.starts_with("https://"))
                    || u.contains(char::is_whitespace)
                {
                    return Err(invalid(
                        "http.public_url",
                        format!("{u:?} is not a URL such as https://switchboard.example.com"),
                    ));
                }
                Some(u)
            }
        },
    };
    let sip = SipConfig {
        addr: match non_empty(raw.sip.addr.clone()).as_deref().map(str::trim) {
            Some("off") => None,
            _ => Some(addr("sip.addr", raw.sip.addr, "127.0.0.1:5060")?),
        },
        public_ip: match non_empty(raw.sip.public_ip) {
            None => None,
            Some(text) => Some(text.trim().parse::<std::net::IpAddr>().map_err(|_| {
                invalid(
                    "sip.public_ip",
                    format!("{text:?} is not an IP address such as 203.0.113.10"),
                )
            })?),
        },
        rtp_ports: {
            let text = non_empty(raw.sip.rtp_ports).unwrap_or_else(|| "20000-29999".into());
            let parsed = text.trim().split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
            });
            match parsed {
                Some((a, b)) if a >= 1024 && b > a => (a, b),
                _ => {
                    return Err(invalid(
                        "sip.rtp_ports",
                        format!("{text:?} is not a port range such as 20000-29999 (from 1024 up, at least two ports)"),
                    ))
                }
            }
        },
        ringing: raw.sip.ringing.unwrap_or(true),
        no_answer: Duration::from_secs(u64::from(range(
            "sip.no_answer_seconds",
            raw.sip.no_answer_seconds,
            30,
            1,
            600,
        )?)),
        max_calls_per_agent: range(
            "sip.max_calls_per_agent",
            raw.sip.max_calls_per_agent,
            10,
            1,
            100_000,
        )?,
        tls_addr: match non_empty(raw.sip.tls_addr.clone()) {
            None => None,
            Some(_) => Some(addr("sip.tls_addr", raw.sip.tls_addr, "0.0.0.0:5061")?),
        },
        tls_cert: non_empty(raw.sip.tls_cert).map(PathBuf::from),
        tls_key: non_empty(raw.sip.tls_key).map(PathBuf::from),
        tls_ca: match non_empty(raw.sip.tls_ca) {
            Some(path) => Some(PathBuf::from(path)),
            // The system bundle when there is one (Debian: ca-certificates).
            None => Some(PathBuf::from(DEFAULT_TLS_CA)).filter(|p| p.exists()),
        },
    };

    let mut llm = match non_empty(raw.llm.base_url) {
        None => None,
        Some(url) => {
            let model = non_empty(raw.llm.model).unwrap_or_else(|| "gpt-4o-mini".into());
            let mut cfg = switchboard_agent::LlmConfig::new(url.trim(), model.trim())
                .map_err(|e| invalid("llm.base_url", e.to_string()))?;
            cfg.api_key = non_empty(raw.llm.api_key).map(switchboard_model::Redacted::new);
            Some(cfg)
        }
    };
    let speech = SpeechConfig {
        stt: match non_empty(raw.speech.stt).as_deref().map(str::trim) {
            None | Some("auto") => SttChoice::Auto,
            Some("whisper") => SttChoice::Whisper,
            Some("none") => SttChoice::None,
            Some(other) => {
                return Err(invalid(
                    "speech.stt",
                    format!("{other:?} is not one of auto, whisper, none"),
                ))
            }
        },
        tts: match non_empty(raw.speech.tts).as_deref().map(str::trim) {
            None | Some("auto") => TtsChoice::Auto,
            Some("piper") => TtsChoice::Piper,
            Some("espeak-ng" | "espeak") => TtsChoice::Espeak,
            Some(other) => {
                return Err(invalid(
                    "speech.tts",
                    format!("{other:?} is not one of auto, piper, espeak-ng"),
                ))
            }
        },
        whisper_model: non_empty(raw.speech.whisper_model).map(PathBuf::from),
        piper_voice: non_empty(raw.speech.piper_voice).map(PathBuf::from),
        vad: match non_empty(raw.speech.vad).as_deref().map(str::trim) {
            None | Some("energy") => switchboard_call::Detector::Energy,
            Some("webrtc") => switchboard_call::Detector::Webrtc,
            Some(other) => {
                return Err(invalid(
                    "speech.vad",
                    format!("{other:?} is not one of energy, webrtc"),
                ))
            }
        },
    };

    let data_dir = non_empty(raw.storage.data_dir).unwrap_or_else(|| "./data".into());
    let data_dir = PathBuf::from(data_dir);
    let recordings_dir = non_empty(raw.storage.recordings_dir)
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("recordings"));
    let storage = StorageConfig {
        data_dir,
        recordings_dir,
    };

    let url = match non_empty(raw.database.url) {
        Some(url) => {
            let url = url.trim().to_string();
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(invalid(
                    "database.url",
                    format!(
                        "{:?} is not a database URL: use sqlite://PATH or postgresql://USER:PASS@HOST:PORT/DB",
                        redact_url(&url)
                    ),
                ));
            }
            url
        }
        None => format!(
            "sqlite://{}",
            storage.data_dir.join("switchboard.db").display()
        ),
    };
    let database = DatabaseConfig {
        url,
        max_connections: range(
            "database.max_connections",
            raw.database.max_connections,
            8,
            1,
            1000,
        )?,
    };

    let region_text = raw.phone.default_region.unwrap_or_else(|| "US".into());
    let phone = PhoneConfig {
        default_region: region_text.parse::<Region>().map_err(|_| {
            invalid(
                "phone.default_region",
                format!("{region_text:?} is not an ISO 3166 two-letter region code such as US, GB or DE"),
            )
        })?,
    };

    let level = raw.log.level.unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        return Err(invalid(
            "log.level",
            format!("{level:?} is not a log level (error, warn, info, debug, trace) or filter directive: {e}"),
        ));
    }
    let format = match raw.log.format.as_deref().map(str::trim) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(invalid(
                "log.format",
                format!("{other:?} is not one of: text, json"),
            ))
        }
    };
    let log = LogConfig { level, format };

    let salesforce = convert_salesforce(raw.salesforce, &invalid)?;

    let handoff = HandoffConfig {
        workers: range("handoff.workers", raw.handoff.workers, 2, 1, 64)?,
        lease: Duration::from_secs(u64::from(range(
            "handoff.lease_seconds",
            raw.handoff.lease_seconds,
            60,
            1,
            3600,
        )?)),
        max_age: Duration::from_secs(
            3600 * u64::from(range(
                "handoff.max_age_hours",
                raw.handoff.max_age_hours,
                24,
                1,
                24 * 30,
            )?),
        ),
        pack_turns: raw.handoff.pack_turns.unwrap_or(false),
        request_timeout: Duration::from_secs(u64::from(range(
            "handoff.request_timeout_seconds",
            raw.handoff.request_timeout_seconds,
            10,
            1,
            300,
        )?)),
        retention: Duration::from_secs(
            3600 * u64::from(range(
                "handoff.retention_hours",
                raw.handoff.retention_hours,
                24,
                1,
                24 * 30,
            )?),
        ),
    };
    let sandbox = match non_empty(raw.sandbox.addr).as_deref().map(str::trim) {
        Some("off") => SandboxConfig { addr: None },
        Some(text) => SandboxConfig {
            addr: Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "sandbox.addr",
                    format!("{text:?} is not an address like 127.0.0.1:8089, or `off`"),
                )
            })?),
        },
        None => SandboxConfig {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 8089))),
        },
    };

    if let Some(cfg) = llm.as_mut() {
        cfg.region = phone.default_region;
    }
    Ok(Config {
        file,
        http,
        sip,
        database,
        storage,
        phone,
        log,
        salesforce,
        handoff,
        sandbox,
        speech,
        llm,
        origins,
    })
}

fn convert_salesforce(
    raw: RawSalesforce,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<SalesforceConfig, ConfigError> {
    let scrt_url = non_empty(raw.scrt_url).map(|s| s.trim().trim_end_matches('/').to_string());
    if let Some(url) = &scrt_url {
        check_scrt_url(url).map_err(|reason| invalid("salesforce.scrt_url", reason))?;
    }
    let org_id = non_empty(raw.org_id).map(|s| s.trim().to_string());
    if let Some(id) = &org_id {
        let ok = (id.len() == 15 || id.len() == 18)
            && id.starts_with("00D")
            && id.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(invalid(
                "salesforce.org_id",
                format!("{id:?} is not a Salesforce org id: 15 or 18 letters and digits starting with 00D (Setup → Company Information)"),
            ));
        }
    }
    let deployment_name = non_empty(raw.deployment_name).map(|s| s.trim().to_string());
    if let Some(name) = &deployment_name {
        validate_api_name(name).map_err(|reason| invalid("salesforce.deployment_name", reason))?;
    }
    let session_id_attribute = non_empty(raw.session_id_attribute).map(|s| s.trim().to_string());
    if let Some(name) = &session_id_attribute {
        validate_api_name(name)
            .map_err(|reason| invalid("salesforce.session_id_attribute", reason))?;
    }
    Ok(SalesforceConfig {
        scrt_url,
        org_id,
        deployment_name,
        jwt_key_id: non_empty(raw.jwt_key_id).map(|s| s.trim().to_string()),
        jwt_private_key_file: non_empty(raw.jwt_private_key_file).map(PathBuf::from),
        jwt_issuer: non_empty(raw.jwt_issuer).map(|s| s.trim().to_string()),
        session_id_attribute,
    })
}

/// `https://…`, or `http://` to a loopback host (the local sandbox).
fn check_scrt_url(url: &str) -> Result<(), String> {
    let expected = "use the org's SCRT URL such as https://example.my.salesforce-scrt.com (http:// only for a local sandbox on 127.0.0.1 or localhost)";
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL: {expected}"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no host: {expected}"));
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!("{url:?} must use https:// ({expected})")),
        _ => Err(format!("{url:?} is not an https:// URL: {expected}")),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn dedup<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The candidate nearest to `input` by edit distance, if it is close enough
/// to be a likely typo.
fn closest<'a>(input: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    candidates
        .map(|c| (levenshtein(&input, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    /// Loads `toml` (if any) from a temp file with `vars` as the environment.
    fn load(
        toml: Option<&str>,
        vars: &[(&str, &str)],
        flags: Overrides,
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = toml.map(|text| {
            let path = dir.path().join("switchboard.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        Config::load(&Sources {
            file,
            env: env(vars),
            flags,
        })
    }

    fn err(toml: Option<&str>, vars: &[(&str, &str)]) -> String {
        load(toml, vars, Overrides::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_without_file_or_env() {
        let c = load(None, &[("HOME", "/root")], Overrides::default()).unwrap();
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.sip.addr.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:5060")
        );
        assert_eq!(c.sip.rtp_ports, (20000, 29999));
        assert_eq!(c.speech.stt, SttChoice::Auto);
        assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(c.storage.recordings_dir, PathBuf::from("./data/recordings"));
        assert_eq!(c.database.url, "sqlite://./data/switchboard.db");
        assert_eq!(c.database.max_connections, 8);
        assert_eq!(c.http.login_ttl, Duration::from_secs(720 * 60));
        assert_eq!(c.phone.default_region, Region::default());
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(!c.salesforce.is_present());
    }

    #[test]
    fn sip_and_speech_values_are_checked() {
        let c = load(Some("[sip]\naddr = \"off\"\n"), &[], Overrides::default()).unwrap();
        assert_eq!(c.sip.addr, None);
        let e = load(
            Some("[sip]\nrtp_ports = \"30000-20000\"\n"),
            &[],
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sip.rtp_ports") && e.contains("20000-29999"),
            "{e}"
        );
        let e = load(
            None,
            &[("SWITCHBOARD_SPEECH_STT", "vosk")],
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SWITCHBOARD_SPEECH_STT") && e.contains("auto, whisper, none"),
            "{e}"
        );
        let e = load(
            None,
            &[("SWITCHBOARD_SIP_PUBLIC_IP", "example.com")],
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sip.public_ip") || e.contains("SWITCHBOARD_SIP_PUBLIC_IP"),
            "{e}"
        );
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let file = "[http]\naddr = \"127.0.0.1:1000\"\n[storage]\ndata_dir = \"/from/file\"\n[sip]\naddr = \"127.0.0.1:1003\"\n";
        let c = load(Some(file), &[], Overrides::default()).unwrap();
        assert_eq!(c.http.addr.port(), 1000);
        assert!(matches!(c.origin("http.addr"), Origin::File(_)));

        let vars = [("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:1001")];
        let c = load(Some(file), &vars, Overrides::default()).unwrap();
        assert_eq!(c.http.addr.port(), 1001);
        assert_eq!(
            c.origin("http.addr"),
            Origin::Env("SWITCHBOARD_HTTP_ADDR".into())
        );
        assert_eq!(
            c.sip.addr.map(|a| a.port()),
            Some(1003),
            "keys not overridden keep the file value"
        );

        let flags = Overrides {
            http_addr: Some("127.0.0.1:1002".into()),
            data_dir: Some("/from/flag".into()),
            ..Default::default()
        };
        let c = load(Some(file), &vars, flags).unwrap();
        assert_eq!(c.http.addr.port(), 1002);
        assert_eq!(c.storage.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(
            c.database.url, "sqlite:///from/flag/switchboard.db",
            "the database follows the data dir"
        );
        assert_eq!(
            c.storage.recordings_dir,
            PathBuf::from("/from/flag/recordings")
        );
    }

    #[test]
    fn env_overrides_every_kind_of_value() {
        let vars = [
            ("SWITCHBOARD_HTTP_SECURE_COOKIES", "true"),
            ("SWITCHBOARD_HTTP_LOGIN_TTL_MINUTES", "30"),
            ("SWITCHBOARD_DATABASE_URL", "postgresql://sb:pw@db:5432/sb"),
            ("SWITCHBOARD_STORAGE_RECORDINGS_DIR", "/rec"),
            ("SWITCHBOARD_PHONE_DEFAULT_REGION", "gb"),
            ("SWITCHBOARD_LOG_FORMAT", "json"),
            (
                "SWITCHBOARD_SALESFORCE_SCRT_URL",
                "https://acme.my.salesforce-scrt.com/",
            ),
            ("SWITCHBOARD_SALESFORCE_ORG_ID", "00D5g000004abcd"),
        ];
        let c = load(
            Some("[http]\nsecure_cookies = false\n"),
            &vars,
            Overrides::default(),
        )
        .unwrap();
        assert!(c.http.secure_cookies);
        assert_eq!(c.http.login_ttl, Duration::from_secs(30 * 60));
        assert_eq!(c.database.redacted_url(), "postgresql://sb:***@db:5432/sb");
        assert_eq!(c.storage.recordings_dir, PathBuf::from("/rec"));
        assert_eq!(c.phone.default_region.code(), "GB");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(
            c.salesforce.scrt_url.as_deref(),
            Some("https://acme.my.salesforce-scrt.com")
        );
        assert_eq!(
            c.salesforce.missing_required(),
            ["salesforce.deployment_name"]
        );
        assert!(
            !format!("{c:?}").contains("pw@"),
            "debug output hides the password"
        );
    }

    #[test]
    fn every_setting_has_a_working_env_var() {
        // Values that are valid for every key of the same type.
        for s in SETTINGS {
            let value = match (s.section, s.key) {
                ("http" | "sip" | "sandbox", "addr") => "127.0.0.1:9",
                ("http", "public_url") => "https://sb.example.com",
                (_, "secure_cookies" | "pack_turns" | "ringing") => "1",
                ("sip", "public_ip") => "203.0.113.10",
                ("sip", "rtp_ports") => "30000-30099",
                ("sip", "tls_addr") => "0.0.0.0:5061",
                ("sip", "tls_cert" | "tls_key" | "tls_ca") => "/some/value",
                ("sip", _) => "5",
                ("speech", "stt") => "none",
                ("llm", "base_url") => "http://127.0.0.1:9000/v1",
                ("speech", "tts") => "espeak-ng",
                ("speech", "vad") => "webrtc",
                ("handoff", _) => "5",
                (_, k)
                    if k.ends_with("minutes")
                        || k.ends_with("minute")
                        || k.ends_with("connections") =>
                {
                    "5"
                }
                ("database", "url") => "sqlite://x.db",
                ("phone", _) => "DE",
                ("log", "level") => "debug",
                ("log", "format") => "json",
                ("salesforce", "scrt_url") => "http://127.0.0.1:9000",
                ("salesforce", "org_id") => "00D000000000001AAA",
                ("salesforce", "deployment_name" | "session_id_attribute") => "OpencxSessionId",
                _ => "/some/value",
            };
            let var = s.env_var();
            let c = load(None, &[(var.as_str(), value)], Overrides::default())
                .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
            assert_eq!(c.origin(&s.path()), Origin::Env(var.clone()), "{var}");
        }
    }

    #[test]
    fn unknown_file_key_is_named_with_suggestion() {
        let e = err(Some("[http]\nadr = \"127.0.0.1:80\"\n"), &[]);
        assert!(e.starts_with("http.adr (in "), "{e}");
        assert!(
            e.ends_with("switchboard.toml) is not a known setting; did you mean http.addr?"),
            "{e}"
        );
        let e = err(Some("[htp]\naddr = \"127.0.0.1:80\"\n"), &[]);
        assert!(e.starts_with("[htp] (in "), "{e}");
        assert!(e.ends_with("did you mean [http]?"), "{e}");
        let e = err(Some("[http]\ncompletely_unrelated = 1\n"), &[]);
        assert!(
            e.ends_with("switchboard.toml) is not a known setting"),
            "{e}"
        );
    }

    #[test]
    fn unknown_env_var_gets_a_suggestion() {
        let e = err(None, &[("SWITCHBOARD_HTTP_ADR", "127.0.0.1:80")]);
        assert_eq!(
            e,
            "SWITCHBOARD_HTTP_ADR is not a known setting; did you mean SWITCHBOARD_HTTP_ADDR?"
        );
        // Non-config variables on the allow-list are accepted.
        let ok = [
            ("SWITCHBOARD_ADMIN_PASSWORD", "x"),
            ("SWITCHBOARD_SECRET_KEY", "x"),
            ("SWITCHBOARD_TEST_DATABASE_URL", "x"),
            ("OTHER_APP_HTTP_ADR", "x"),
        ];
        assert!(load(None, &ok, Overrides::default()).is_ok());
    }

    #[test]
    fn bad_values_name_the_key_and_the_expected_form() {
        let e = err(Some("[http]\naddr = \"abc\"\n"), &[]);
        assert!(
            e.starts_with("http.addr (in ")
                && e.ends_with(
                    ": \"abc\" is not an address like 127.0.0.1:8080 (IP address and port)"
                ),
            "{e}"
        );
        let e = err(None, &[("SWITCHBOARD_HTTP_ADDR", "abc")]);
        assert_eq!(
            e,
            "SWITCHBOARD_HTTP_ADDR (http.addr): \"abc\" is not an address like 127.0.0.1:8080 (IP address and port)"
        );
        let e = err(None, &[("SWITCHBOARD_HTTP_SECURE_COOKIES", "maybe")]);
        assert_eq!(
            e,
            "SWITCHBOARD_HTTP_SECURE_COOKIES (http.secure_cookies): \"maybe\" is not true or false"
        );
        let e = err(Some("[http]\nsecure_cookies = \"yes\"\n"), &[]);
        assert!(e.starts_with("http.secure_cookies (in "), "{e}");
        assert!(e.contains("expected a boolean"), "{e}");
        let e = err(None, &[("SWITCHBOARD_DATABASE_MAX_CONNECTIONS", "0")]);
        assert!(e.ends_with("0 is not between 1 and 1000"), "{e}");
        let e = err(
            None,
            &[("SWITCHBOARD_DATABASE_URL", "mysql://u:secret@h/db")],
        );
        assert!(e.contains("use sqlite://PATH or postgresql://"), "{e}");
        assert!(!e.contains("secret"), "the password is not shown: {e}");
        let e = err(None, &[("SWITCHBOARD_PHONE_DEFAULT_REGION", "XX")]);
        assert!(e.contains("ISO 3166"), "{e}");
        let e = err(None, &[("SWITCHBOARD_LOG_FORMAT", "xml")]);
        assert!(e.ends_with("\"xml\" is not one of: text, json"), "{e}");
        let e = err(Some("http = 3\n"), &[]);
        assert!(e.contains("must be a section"), "{e}");
        let e = err(Some("[http\n"), &[]);
        assert!(e.contains("line 1"), "{e}");
        let flags = Overrides {
            sip_addr: Some("nope".into()),
            ..Default::default()
        };
        let e = load(None, &[], flags).unwrap_err().to_string();
        assert!(e.starts_with("--sip (sip.addr): \"nope\""), "{e}");
    }

    #[test]
    fn salesforce_values_are_checked() {
        let e = err(None, &[("SWITCHBOARD_SALESFORCE_ORG_ID", "12345")]);
        assert!(
            e.starts_with("SWITCHBOARD_SALESFORCE_ORG_ID (salesforce.org_id): \"12345\" is not a Salesforce org id"),
            "{e}"
        );
        let e = err(Some("[salesforce]\norg_id = \"00Dabc\"\n"), &[]);
        assert!(e.contains("15 or 18"), "{e}");
        let e = err(
            Some("[salesforce]\nscrt_url = \"http://acme.my.salesforce-scrt.com\"\n"),
            &[],
        );
        assert!(e.contains("must use https://"), "{e}");
        let e = err(
            Some("[salesforce]\nsession_id_attribute = \"Session Id\"\n"),
            &[],
        );
        assert!(e.contains("not a Salesforce API name"), "{e}");
        let c = load(
            Some("[salesforce]\nscrt_url = \"http://localhost:8089\"\njwt_issuer = \"sb\"\n"),
            &[],
            Overrides::default(),
        )
        .unwrap();
        assert!(c.salesforce.is_present());
        let (any, missing) = c.salesforce.missing_jwt();
        assert!(any);
        assert_eq!(
            missing,
            ["salesforce.jwt_key_id", "salesforce.jwt_private_key_file"]
        );
    }

    #[test]
    fn data_dir_alias_and_conflict() {
        let c = load(
            None,
            &[("SWITCHBOARD_DATA_DIR", "/alias")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.storage.data_dir, PathBuf::from("/alias"));
        let e = err(
            None,
            &[
                ("SWITCHBOARD_DATA_DIR", "/a"),
                ("SWITCHBOARD_STORAGE_DATA_DIR", "/b"),
            ],
        );
        assert!(e.contains("are both set"), "{e}");
        let c = load(
            None,
            &[("SWITCHBOARD_DATABASE_URL", "")],
            Overrides::default(),
        )
        .unwrap();
        assert!(c.database.url.starts_with("sqlite://"), "empty means unset");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let e = Config::load(&Sources {
            file: Some("/nonexistent/switchboard.toml".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/switchboard.toml"),
            "{e}"
        );
    }

    /// The example file and the docs show every setting with its variable,
    /// default and meaning, exactly as this table has them, so they cannot drift.
    #[test]
    fn example_file_and_docs_cover_every_setting() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let example_path = root.join("switchboard.example.toml");
        let example = std::fs::read_to_string(&example_path).unwrap();
        let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        for s in SETTINGS {
            let env = s.env_var();
            let section = example
                .split(&format!("\n[{}]\n", s.section))
                .nth(1)
                .unwrap_or_else(|| panic!("switchboard.example.toml has no [{}]", s.section));
            let section = section.split("\n[").next().unwrap_or_default();
            let block = format!("# {}\n# env: {env}, default: {}\n", s.doc, s.default);
            let after = section.split(&block).nth(1).unwrap_or_else(|| {
                panic!(
                    "switchboard.example.toml: [{}] lacks the block for {}:\n{block}",
                    s.section, s.key
                )
            });
            assert!(
                after.starts_with(&format!("{} = ", s.key))
                    || after.starts_with(&format!("# {} = ", s.key)),
                "switchboard.example.toml: `{} = …` must follow its comment",
                s.key
            );
            let row = format!("| `{}` | `{env}` | `{}` | {} |", s.path(), s.default, s.doc);
            assert!(
                docs.contains(&row),
                "docs/configuration.md lacks the row:\n{row}"
            );
        }
        for var in EXTRA_ENV {
            assert!(
                docs.contains(var),
                "docs/configuration.md does not name {var}"
            );
        }
        // The example is valid and its active values are the defaults.
        let from_example = Config::load(&Sources {
            file: Some(example_path),
            ..Default::default()
        })
        .unwrap();
        let defaults = Config::load(&Sources::default()).unwrap();
        assert_eq!(
            (
                &from_example.http,
                &from_example.sip,
                &from_example.database,
                &from_example.storage,
                &from_example.phone,
                &from_example.log,
                &from_example.salesforce
            ),
            (
                &defaults.http,
                &defaults.sip,
                &defaults.database,
                &defaults.storage,
                &defaults.phone,
                &defaults.log,
                &defaults.salesforce
            ),
        );
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let c = ["SWITCHBOARD_HTTP_ADDR", "SWITCHBOARD_SIP_ADDR"];
        assert_eq!(
            closest("SWITCHBOARD_HTP_ADDR", c.into_iter()),
            Some("SWITCHBOARD_HTTP_ADDR")
        );
        assert_eq!(closest("SWITCHBOARD_FOO", c.into_iter()), None);
    }
}
