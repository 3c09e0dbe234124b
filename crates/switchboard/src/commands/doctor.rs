//! `switchboard doctor`: checks what `serve` needs and says what to fix.
//!
//! Each check yields one [`Check`]; the report prints one line per check
//! (`ok   …`, `warn …`, `FAIL … — fix`) or a JSON array. Doctor changes
//! nothing: directories and the key file that `serve` would create are
//! reported as "will be created".

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use switchboard_store::{SecretBox, StoreError};

use crate::app::{connect, one_line, SECRET_KEY_VAR};
use crate::cli::DoctorArgs;
use crate::config::{Config, Overrides, Sources};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    status: Status,
    detail: String,
    fix: Option<String>,
}

impl Check {
    fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Check {
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            check,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            check,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn line(&self) -> String {
        let label = match self.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        match &self.fix {
            Some(fix) => format!("{label:<4} {}: {} — {fix}", self.check, self.detail),
            None => format!("{label:<4} {}: {}", self.check, self.detail),
        }
    }
}

pub(crate) async fn run(
    file: Option<PathBuf>,
    overrides: Overrides,
    args: DoctorArgs,
) -> anyhow::Result<ExitCode> {
    let checks = match Config::load(&Sources::from_process(file, overrides)) {
        Ok(config) => {
            // Logging problems must not hide the report.
            let _ = crate::logging::init(&config.log, false);
            let mut checks = vec![Check::ok(
                "config",
                match &config.file {
                    Some(path) => format!("{} is valid", path.display()),
                    None => "no config file; defaults and environment are valid".into(),
                },
            )];
            checks.extend(check_all(&config).await);
            checks
        }
        Err(e) => vec![Check::fail(
            "config",
            e.to_string(),
            "fix the setting named above (switchboard.example.toml lists every setting); the other checks need a valid config",
        )],
    };

    if args.json {
        crate::output::json(&checks)?;
    } else {
        for c in &checks {
            println!("{}", c.line());
        }
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn check_all(config: &Config) -> Vec<Check> {
    let mut checks = vec![
        check_dir(
            "data dir",
            &config.storage.data_dir,
            &config.how_to_set("storage.data_dir", Some("--data-dir")),
        ),
        check_dir(
            "recordings dir",
            &config.storage.recordings_dir,
            &config.how_to_set("storage.recordings_dir", None),
        ),
    ];
    let (key_check, secrets) = check_secret_key(config);
    checks.push(key_check);
    checks.push(check_database(config, secrets).await);
    checks.extend(check_providers(config).await);
    checks.push(check_http(config));
    checks.push(check_sandbox(config));
    checks.push(check_sip(config));
    checks.extend(check_sip_tls(config));
    checks.extend(check_speech(config));
    checks.extend(check_salesforce(config));
    checks
}

/// Writable if it exists; else its nearest existing ancestor must let us
/// create it (probed with a directory that is removed again).
fn check_dir(check: &'static str, dir: &Path, how_to_change: &str) -> Check {
    let fix = format!("make it writable for this user, or {how_to_change}");
    if dir.is_dir() {
        let probe = dir.join(format!(".switchboard-doctor-{}", std::process::id()));
        return match std::fs::write(&probe, b"ok") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                Check::ok(check, format!("{} is writable", dir.display()))
            }
            Err(e) => Check::fail(
                check,
                format!("{} is not writable ({e})", dir.display()),
                fix,
            ),
        };
    }
    if dir.exists() {
        return Check::fail(
            check,
            format!("{} exists but is not a directory", dir.display()),
            format!("remove or rename it, or {how_to_change}"),
        );
    }
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        if a.exists() {
            if !a.is_dir() {
                return Check::fail(
                    check,
                    format!(
                        "{} cannot be created: {} is not a directory",
                        dir.display(),
                        a.display()
                    ),
                    format!("choose a directory path: {how_to_change}"),
                );
            }
            let probe = a.join(format!(".switchboard-doctor-{}", std::process::id()));
            return match std::fs::create_dir(&probe) {
                Ok(()) => {
                    let _ = std::fs::remove_dir(&probe);
                    Check::ok(
                        check,
                        format!("{} will be created at first start", dir.display()),
                    )
                }
                Err(e) => Check::fail(
                    check,
                    format!(
                        "{} cannot be created: {} is not writable ({e})",
                        dir.display(),
                        a.display()
                    ),
                    fix,
                ),
            };
        }
        ancestor = a.parent();
    }
    Check::fail(check, format!("{} cannot be created", dir.display()), fix)
}

fn check_secret_key(config: &Config) -> (Check, Option<SecretBox>) {
    if let Ok(text) = std::env::var(SECRET_KEY_VAR) {
        if !text.trim().is_empty() {
            return match SecretBox::from_base64(&text) {
                Ok(b) => (Check::ok("secret key", format!("from {SECRET_KEY_VAR}")), Some(b)),
                Err(e) => (
                    Check::fail(
                        "secret key",
                        format!("{SECRET_KEY_VAR}: {e}"),
                        format!("set {SECRET_KEY_VAR} to the key secrets were stored with (`openssl rand -base64 32` for a new installation), or unset it to use the key file"),
                    ),
                    None,
                ),
            };
        }
    }
    let path = config.storage.secret_key_file();
    if !path.exists() {
        return (
            Check::ok(
                "secret key",
                format!("{} will be created at first start", path.display()),
            ),
            None,
        );
    }
    match SecretBox::load_or_create(&path) {
        Ok(b) => (Check::ok("secret key", format!("{} loads", path.display())), Some(b)),
        Err(e) => (
            Check::fail(
                "secret key",
                e.to_string(),
                format!("restore the key file (secrets stored with it are unreadable without it), or set {SECRET_KEY_VAR}"),
            ),
            None,
        ),
    }
}

async fn check_database(config: &Config, secrets: Option<SecretBox>) -> Check {
    let url = config.database.redacted_url();
    if let Some(path) = config.database.sqlite_path() {
        if !path.exists() {
            return Check::ok(
                "database",
                format!(
                    "sqlite file {} will be created at first start",
                    path.display()
                ),
            );
        }
    }
    // Doctor never decrypts, so a throwaway key is enough to connect.
    let secrets = secrets.unwrap_or_else(SecretBox::ephemeral);
    let store = match connect(config, secrets, Duration::from_secs(3)).await {
        Ok(store) => store,
        Err(e) => {
            let message = one_line(&e.to_string());
            let (detail, fix) = message
                .split_once(" — ")
                .map_or((message.as_str(), "check the database"), |(d, f)| (d, f));
            return Check::fail("database", detail, fix);
        }
    };
    let result = match store.ping().await {
        Err(e) => Check::fail(
            "database",
            format!("{url}: {}", one_line(&e.to_string())),
            config.how_to_set("database.url", None),
        ),
        Ok(()) => match store.user_count().await {
            Ok(_) => Check::ok(
                "database",
                format!(
                    "{} at {url} is reachable and has the schema",
                    store.backend().name()
                ),
            ),
            Err(StoreError::Database(_)) | Err(StoreError::Corrupt { .. }) => Check::warn(
                "database",
                format!("{url} is reachable but its schema is missing or out of date"),
                "run `switchboard migrate` (serve also migrates at start)",
            ),
            Err(e) => Check::fail(
                "database",
                format!("{url}: {}", one_line(&e.to_string())),
                config.how_to_set("database.url", None),
            ),
        },
    };
    store.close().await;
    result
}

fn check_sandbox(config: &Config) -> Check {
    let Some(addr) = config.sandbox.addr else {
        return Check::ok("sandbox", "off (sandbox.addr = off)");
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::ok(
            "sandbox",
            format!("{addr} is free for the built-in Salesforce sandbox"),
        ),
        Err(e) => Check::fail(
            "sandbox",
            format!("{addr} cannot be bound ({e})"),
            format!(
                "stop the other process, or {} (or `off` once an org is configured)",
                config.how_to_set("sandbox.addr", None)
            ),
        ),
    }
}

fn check_http(config: &Config) -> Check {
    let addr = config.http.addr;
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::ok("http", format!("{addr} is free")),
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "is already in use (is switchboard already running?)".to_string()
                }
                _ => format!("cannot be bound ({e})"),
            };
            Check::fail(
                "http",
                format!("{addr} {why}"),
                format!(
                    "stop the other process, or {}",
                    config.how_to_set("http.addr", Some("--http"))
                ),
            )
        }
    }
}

fn check_sip(config: &Config) -> Check {
    let Some(addr) = config.sip.addr else {
        return Check::ok("sip", "off (sip.addr = \"off\"): no calls are taken");
    };
    let how = config.how_to_set("sip.addr", Some("--sip"));
    let udp = std::net::UdpSocket::bind(addr);
    let tcp = std::net::TcpListener::bind(addr);
    match (udp, tcp) {
        (Ok(_), Ok(_)) => {
            let reach = if addr.ip().is_loopback() {
                "loopback only: a trunk cannot reach it; use 0.0.0.0:5060 to take carrier calls"
            } else {
                "UDP and TCP"
            };
            Check::ok(
                "sip",
                format!(
                    "{addr} is free ({reach}); RTP ports {}-{}",
                    config.sip.rtp_ports.0, config.sip.rtp_ports.1
                ),
            )
        }
        (Err(e), _) | (_, Err(e)) => {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "is already in use (another SIP server, or switchboard already running?)"
                        .to_string()
                }
                _ => format!("cannot be bound ({e})"),
            };
            Check::fail(
                "sip",
                format!("{addr} {why}"),
                format!("stop the other process, or {how}"),
            )
        }
    }
}

/// The SIP-over-TLS files, checked as start-up would; no line without a
/// TLS listener.
fn check_sip_tls(config: &Config) -> Option<Check> {
    let addr = config.sip.tls_addr?;
    let fix = format!(
        "{}; {}",
        config.how_to_set("sip.tls_cert", None),
        config.how_to_set("sip.tls_key", None)
    );
    let tls = match crate::wiring::sip_tls(config) {
        Ok(tls) => tls?,
        Err(e) => return Some(Check::fail("sip tls", format!("{e:#}"), fix)),
    };
    Some(match tls.check() {
        Ok(()) => Check::ok(
            "sip tls",
            match &config.sip.tls_ca {
                Some(ca) => format!(
                    "{addr}: certificate and key match; TLS trunks verified against {}",
                    ca.display()
                ),
                None => format!("{addr}: certificate and key match; no CA bundle, so no TLS trunk can be verified"),
            },
        ),
        Err(e) => Check::fail("sip tls", e.to_string(), fix),
    })
}

/// The offline speech the server would load (it falls back rather than
/// failing, so these are warnings unless the config insists).
fn check_speech(config: &Config) -> Vec<Check> {
    use crate::config::{SttChoice, TtsChoice};
    let install = "run scripts/install-speech.sh (make run does)";
    let mut checks = Vec::new();
    if config.sip.addr.is_none() {
        return checks;
    }
    let whisper = match &config.speech.whisper_model {
        Some(dir) => dir
            .join("model.bin")
            .is_file()
            .then(|| dir.clone())
            .ok_or_else(|| format!("{} has no model.bin", dir.display())),
        None => switchboard_speech::whisper_model_dir().map_err(|e| e.to_string()),
    };
    checks.push(match (config.speech.stt, whisper) {
        (SttChoice::None, _) => Check::ok(
            "speech recognition",
            "off (speech.stt = none): callers are heard through keys only",
        ),
        (_, Ok(dir)) => Check::ok(
            "speech recognition",
            format!("whisper, model {}", dir.display()),
        ),
        (SttChoice::Whisper, Err(e)) => Check::fail(
            "speech recognition",
            format!("speech.stt = whisper, but {e}"),
            install,
        ),
        (_, Err(e)) => Check::warn(
            "speech recognition",
            format!("no Whisper model ({e}): callers will be heard through keys only"),
            install,
        ),
    });
    let piper = match &config.speech.piper_voice {
        Some(v) => v
            .is_file()
            .then(|| v.clone())
            .ok_or_else(|| format!("{} does not exist", v.display())),
        None => switchboard_speech::piper_voice_path().map_err(|e| e.to_string()),
    };
    let espeak = std::process::Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    checks.push(match (config.speech.tts, piper, espeak) {
        (TtsChoice::Espeak, _, true) | (TtsChoice::Auto, Err(_), true) => Check::ok(
            "speech synthesis",
            "espeak-ng (robotic; Piper sounds natural: scripts/install-speech.sh)",
        ),
        (TtsChoice::Piper | TtsChoice::Auto, Ok(v), _) => {
            Check::ok("speech synthesis", format!("piper, voice {}", v.display()))
        }
        (TtsChoice::Piper, Err(e), _) => Check::fail(
            "speech synthesis",
            format!("speech.tts = piper, but {e}"),
            install,
        ),
        (_, _, false) => Check::fail(
            "speech synthesis",
            "neither Piper nor espeak-ng is installed: the agent cannot speak",
            "apt-get install espeak-ng, or scripts/install-speech.sh",
        ),
    });
    checks
}

fn check_salesforce(config: &Config) -> Vec<Check> {
    let sf = &config.salesforce;
    if !sf.is_present() {
        return vec![Check::ok(
            "salesforce",
            "no org in the config file: handoffs go to the org saved in Settings → Integrations, else to the built-in sandbox",
        )];
    }
    let env_names = |keys: &[&str]| {
        keys.iter()
            .map(|k| format!("SWITCHBOARD_{}", k.replace('.', "_").to_ascii_uppercase()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut checks = Vec::new();
    let missing = sf.missing_required();
    if missing.is_empty() {
        checks.push(Check::ok(
            "salesforce",
            format!(
                "deployment {} at {}",
                sf.deployment_name.as_deref().unwrap_or_default(),
                sf.scrt_url.as_deref().unwrap_or_default()
            ),
        ));
    } else {
        checks.push(Check::fail(
            "salesforce",
            format!("missing {}", missing.join(", ")),
            format!("set them in [salesforce] or with {}", env_names(&missing)),
        ));
    }
    let (any_jwt, missing_jwt) = sf.missing_jwt();
    if !any_jwt {
        checks.push(Check::warn(
            "salesforce identity",
            "no identity-token settings: known contacts are handed off as unauthenticated users",
            "set salesforce.jwt_key_id, salesforce.jwt_private_key_file and salesforce.jwt_issuer to hand off known contacts as themselves",
        ));
    } else if !missing_jwt.is_empty() {
        checks.push(Check::fail(
            "salesforce identity",
            format!("missing {}", missing_jwt.join(", ")),
            format!(
                "identity tokens need all three settings: set them in [salesforce] or with {}",
                env_names(&missing_jwt)
            ),
        ));
    } else if let Some(path) = &sf.jwt_private_key_file {
        match std::fs::read_to_string(path) {
            Ok(pem) if pem.contains("PRIVATE KEY-----") => checks.push(Check::ok(
                "salesforce identity",
                format!("key {} from {}", sf.jwt_key_id.as_deref().unwrap_or_default(), path.display()),
            )),
            Ok(_) => checks.push(Check::fail(
                "salesforce identity",
                format!("{} is not a PEM private key", path.display()),
                "point salesforce.jwt_private_key_file at the RSA private key (-----BEGIN PRIVATE KEY-----)",
            )),
            Err(e) => checks.push(Check::fail(
                "salesforce identity",
                format!("{} cannot be read ({e})", path.display()),
                "fix salesforce.jwt_private_key_file or the file's permissions",
            )),
        }
    }
    checks
}

/// Agents that pick a cloud provider whose key is not set run on the offline
/// speech (or the playbook): say so before a caller notices.
async fn check_providers(config: &Config) -> Vec<Check> {
    use switchboard_model::{Brain, SttProvider, TtsProvider};
    if config.database.sqlite_path().is_some_and(|p| !p.exists()) {
        return Vec::new();
    }
    let Ok(store) = connect(config, SecretBox::ephemeral(), Duration::from_secs(3)).await else {
        return Vec::new(); // the database check reports it
    };
    let (Ok(agents), Ok(p)) = (
        store.list_agents().await,
        switchboard_web::providers::load_sealed(&store).await,
    ) else {
        store.close().await;
        return Vec::new();
    };
    store.close().await;
    let fix = "add the key under Settings → Speech & LLM in the dashboard";
    let mut checks = Vec::new();
    for a in &agents {
        let s = &a.spec;
        let mut missing = Vec::new();
        if s.stt_provider == SttProvider::Deepgram && p.deepgram.api_key.is_none() {
            missing.push("Deepgram");
        }
        if (s.stt_provider == SttProvider::Openai || s.tts_provider == TtsProvider::Openai)
            && p.openai.api_key.is_none()
        {
            missing.push("OpenAI speech");
        }
        if s.tts_provider == TtsProvider::Elevenlabs && p.elevenlabs.api_key.is_none() {
            missing.push("ElevenLabs");
        }
        if s.brain == Brain::Llm && config.llm.is_none() && p.llm.base_url.is_empty() {
            checks.push(Check::warn(
                "providers",
                format!(
                    "agent {} uses the LLM brain but no LLM is configured: it runs the playbook",
                    s.name
                ),
                "set the LLM under Settings → Speech & LLM, or [llm] in the config file",
            ));
        }
        if !missing.is_empty() {
            checks.push(Check::warn(
                "providers",
                format!(
                    "agent {} picks {} without an API key: its calls use the offline speech",
                    s.name,
                    missing.join(" and ")
                ),
                fix,
            ));
        }
    }
    if checks.is_empty() && !agents.is_empty() {
        checks.push(Check::ok(
            "providers",
            "every agent's speech and brain providers are configured",
        ));
    }
    checks
}
