//! What `serve` starts besides the HTTP server: the built-in MIAW sandbox
//! (its own listener), the Salesforce settings service and the handoff
//! delivery workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_handoff::{
    ConfigOverrides, SalesforceSettings, SandboxTarget, Worker, WorkerConfig,
};
use switchboard_model::{Redacted, SystemClock};
use switchboard_salesforce::{Sandbox, SandboxConfig};
use switchboard_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::info;

use crate::config::Config;
use crate::Failure;

/// The sandbox serving on its own address.
pub(crate) struct RunningSandbox {
    pub(crate) sandbox: Sandbox,
    pub(crate) addr: SocketAddr,
}

/// Binds and serves the sandbox (until the process ends).
pub(crate) async fn start_sandbox(
    config: &Config,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Option<RunningSandbox>> {
    let Some(addr) = config.sandbox.addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        let change = config.how_to_set("sandbox.addr", None);
        Failure::usage(format!(
            "cannot listen on {addr} for the Salesforce sandbox: {e} — {change} (or `off`)"
        ))
    })?;
    let addr = listener
        .local_addr()
        .context("reading the sandbox address")?;
    let sandbox = Sandbox::new(SandboxConfig::default());
    let app = sandbox.router();
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the Salesforce sandbox stopped");
        }
    });
    info!(%addr, "built-in Salesforce MIAW sandbox listening");
    Ok(Some(RunningSandbox { sandbox, addr }))
}

/// The settings service: config-file values over the dashboard's, the
/// sandbox when no org is configured.
pub(crate) fn salesforce_settings(
    config: &Config,
    store: &Store,
    sandbox_addr: Option<SocketAddr>,
    public_url: &str,
) -> anyhow::Result<SalesforceSettings> {
    let sf = &config.salesforce;
    let key = match &sf.jwt_private_key_file {
        Some(path) => Some(Redacted::new(std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format!(
                "salesforce.jwt_private_key_file: cannot read {}: {e} — fix the path or the file's permissions",
                path.display()
            ))
        })?)),
        None => None,
    };
    let overrides = ConfigOverrides {
        scrt_url: sf.scrt_url.clone(),
        org_id: sf.org_id.clone(),
        deployment_name: sf.deployment_name.clone(),
        jwt_key_id: sf.jwt_key_id.clone(),
        jwt_issuer: sf.jwt_issuer.clone(),
        jwt_private_key_pem: key,
        session_id_attribute: sf.session_id_attribute.clone(),
    };
    let defaults = SandboxConfig::default();
    let target = SandboxTarget {
        url: match sandbox_addr {
            Some(addr) => format!("http://{addr}"),
            // No sandbox here: blank settings cannot go anywhere, and the
            // worker says so ("not configured") instead of guessing.
            None => String::new(),
        },
        org_id: defaults.org_id,
        deployment_name: defaults.deployment_name,
    };
    Ok(SalesforceSettings::new(
        store.clone(),
        overrides,
        target,
        Some(public_url.to_string()),
    )
    .with_request_timeout(config.handoff.request_timeout))
}

/// Starts the delivery workers; they stop (releasing any job between two
/// messages) when `stop` turns true.
pub(crate) fn start_workers(
    config: &Config,
    store: &Store,
    settings: Arc<SalesforceSettings>,
    notify: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    // Follows each delivered conversation: routing, the rep joining, and the
    // close (by the rep, or by us after the retention) so sessions do not
    // leak on the org.
    let watch_config = switchboard_handoff::watcher::WatchConfig {
        retention: config.handoff.retention,
        ..Default::default()
    };
    let watchers = switchboard_handoff::watcher::Watchers::new(
        store.clone(),
        settings.clone(),
        Arc::new(SystemClock),
        watch_config,
    );
    let requests = watchers.requests();
    set.spawn(watchers.run(stop.clone()));
    let node = format!("{}-{}", hostname(), std::process::id());
    for i in 0..config.handoff.workers {
        let worker_config = WorkerConfig {
            lease: config.handoff.lease,
            max_age: config.handoff.max_age,
            pack_turns: config.handoff.pack_turns,
            default_region: config.phone.default_region,
            ..WorkerConfig::default()
        };
        let worker = Worker::new(
            store.clone(),
            settings.clone(),
            Arc::new(SystemClock),
            worker_config,
            format!("{node}-{i}"),
        )
        .with_notifier(notify.clone())
        .with_watchers(requests.clone());
        let stop = stop.clone();
        set.spawn(async move { worker.run(stop).await });
    }
    info!(
        workers = config.handoff.workers,
        "handoff delivery workers started"
    );
    set
}

/// Waits for the workers to finish their current message, at most `grace`.
pub(crate) async fn drain_workers(mut workers: JoinSet<()>, grace: Duration) {
    let drained = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("handoff workers did not stop in time; their jobs are taken over when the lease expires");
        workers.abort_all();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// The speech providers `[speech]` asks for, falling back (with a warning)
/// when an offline model is not installed: the server still takes calls.
pub(crate) async fn speech(
    config: &Config,
) -> (
    Arc<dyn switchboard_speech::SpeechToText>,
    Arc<dyn switchboard_speech::TextToSpeech>,
) {
    use crate::config::{SttChoice, TtsChoice};
    use switchboard_speech::{EspeakTts, PiperConfig, PiperTts, WhisperConfig, WhisperStt};
    let sp = &config.speech;
    let stt: Arc<dyn switchboard_speech::SpeechToText> = match sp.stt {
        SttChoice::None => Arc::new(NoStt),
        choice => {
            let cfg = WhisperConfig {
                model_dir: sp.whisper_model.clone(),
                ..WhisperConfig::default()
            };
            match WhisperStt::new(cfg) {
                Ok(w) => {
                    info!("speech recognition: whisper (offline)");
                    Arc::new(w)
                }
                Err(e) => {
                    if choice == SttChoice::Whisper {
                        tracing::error!(error = %e, "speech.stt = whisper, but Whisper cannot start; callers will only be heard through keys");
                    } else {
                        tracing::warn!(error = %e, "no offline speech recognition (run scripts/install-speech.sh); callers will only be heard through keys");
                    }
                    Arc::new(NoStt)
                }
            }
        }
    };
    let tts: Arc<dyn switchboard_speech::TextToSpeech> = match sp.tts {
        TtsChoice::Espeak => Arc::new(EspeakTts::default()),
        choice => {
            let piper = PiperTts::new(PiperConfig {
                voice: sp.piper_voice.clone(),
                ..PiperConfig::default()
            });
            match piper.start().await {
                Ok(_) => {
                    info!("speech synthesis: piper (offline)");
                    Arc::new(piper)
                }
                Err(e) => {
                    if choice == TtsChoice::Piper {
                        tracing::error!(error = %e, "speech.tts = piper, but Piper cannot start; using espeak-ng");
                    } else {
                        info!(reason = %e, "speech synthesis: espeak-ng (Piper is not installed: scripts/install-speech.sh)");
                    }
                    Arc::new(EspeakTts::default())
                }
            }
        }
    };
    (stt, tts)
}

/// Recognition when none is installed: every turn is heard as silence, so
/// the agent works through keys (and hands off when it cannot).
struct NoStt;

impl switchboard_speech::SpeechToText for NoStt {
    fn name(&self) -> &str {
        "none"
    }

    fn open(&self) -> Result<switchboard_speech::SttStream, switchboard_speech::SpeechError> {
        let (audio, mut rx) = tokio::sync::mpsc::channel(64);
        let (tx, events) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                if let switchboard_speech::SttInput::Finish = input {
                    let _ = tx
                        .send(Ok(switchboard_speech::SttEvent::Final {
                            text: String::new(),
                            confidence: 0.0,
                        }))
                        .await;
                    return;
                }
            }
        });
        Ok(switchboard_speech::SttStream { audio, events })
    }
}

/// The engines calls run on (phone and browser): the offline speech loaded
/// once and shared, cloud providers per agent (see [`crate::providers`]).
pub(crate) async fn call_engines(
    config: &Config,
    store: &Store,
    notify: Arc<Notify>,
) -> crate::providers::CallEngines {
    let (stt, tts) = speech(config).await;
    crate::providers::CallEngines {
        store: store.clone(),
        notify,
        config: {
            let mut c = switchboard_voice::EngineConfig {
                transfer_timeout: config.sip.no_answer + Duration::from_secs(5),
                llm: config.llm.clone(),
                ..Default::default()
            };
            c.call.vad.detector = config.speech.vad;
            c
        },
        offline_stt: stt,
        offline_tts: tts,
        region: config.phone.default_region,
    }
}

/// Starts SIP when `sip.addr` is set: answered calls go to the voice engine.
pub(crate) async fn start_telephony(
    config: &Config,
    store: &Store,
    engines: crate::providers::CallEngines,
) -> anyhow::Result<Option<switchboard_telephony::Telephony>> {
    let Some(listen) = config.sip.addr else {
        info!("telephony is off (sip.addr = \"off\")");
        return Ok(None);
    };
    let media = switchboard_rtp::MediaConfig {
        bind_ip: if listen.ip().is_loopback() {
            listen.ip()
        } else {
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        },
        public_ip: config.sip.public_ip,
        ports: switchboard_rtp::PortRange {
            first: config.sip.rtp_ports.0,
            last: config.sip.rtp_ports.1,
        },
        ..Default::default()
    };
    let sip = switchboard_telephony::SipConfig {
        listen,
        public_addr: config.sip.public_ip,
        media,
        ringing: config.sip.ringing,
        no_answer_timeout: config.sip.no_answer,
        max_calls_per_agent: config.sip.max_calls_per_agent,
        recordings_dir: config.storage.recordings_dir.clone(),
        region: config.phone.default_region,
        tls: sip_tls(config)?,
        ..Default::default()
    };
    let handler = Arc::new(crate::calls::EngineHandler {
        engines,
        region: config.phone.default_region,
    });
    let telephony = switchboard_telephony::Telephony::start(store.clone(), sip, handler)
        .await
        .map_err(|e| match e {
            switchboard_telephony::TelephonyError::Tls(_) => Failure::usage(format!(
                "cannot start SIP over TLS: {e} — fix the PEM files that sip.tls_cert, \
                 sip.tls_key and sip.tls_ca name ({})",
                config.how_to_set("sip.tls_cert", None),
            )),
            switchboard_telephony::TelephonyError::Bind { addr, .. }
                if Some(addr.port()) == config.sip.tls_addr.map(|a| a.port())
                    && addr.port() != listen.port() =>
            {
                let change = config.how_to_set("sip.tls_addr", None);
                Failure::usage(format!("cannot start SIP over TLS: {e} — {change}"))
            }
            _ => {
                let change = config.how_to_set("sip.addr", Some("--sip"));
                Failure::usage(format!(
                    "cannot start SIP on {listen}: {e} — {change} (or `off`)"
                ))
            }
        })?;
    Ok(Some(telephony))
}

/// Reads the SIP-over-TLS files the configuration names; a file that
/// cannot be read is a usage error naming the setting.
pub(crate) fn sip_tls(config: &Config) -> anyhow::Result<Option<switchboard_telephony::SipTls>> {
    let read = |key: &str, path: &Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
        match path {
            None => Ok(None),
            Some(p) => std::fs::read(p).map(Some).map_err(|e| {
                Failure::usage(format!(
                    "cannot read {} ({e}) — {}",
                    p.display(),
                    config.how_to_set(key, None)
                ))
            }),
        }
    };
    if let Some(addr) = config.sip.tls_addr {
        if config.sip.tls_cert.is_none() || config.sip.tls_key.is_none() {
            return Err(Failure::usage(format!(
                "a SIP TLS listener on {addr} needs a certificate and its key: {} and {}",
                config.how_to_set("sip.tls_cert", None),
                config.how_to_set("sip.tls_key", None)
            )));
        }
    }
    let ca_pem = read("sip.tls_ca", &config.sip.tls_ca)?;
    if config.sip.tls_addr.is_none() && ca_pem.is_none() {
        return Ok(None);
    }
    Ok(Some(switchboard_telephony::SipTls {
        listen: config.sip.tls_addr,
        cert_pem: read("sip.tls_cert", &config.sip.tls_cert)?,
        key_pem: read("sip.tls_key", &config.sip.tls_key)?,
        ca_pem,
    }))
}

/// How often trunk registrations are reconciled with the store even without
/// a change made through this server (the CLI is another process; its
/// number and agent changes reach routing within telephony's 1 s cache).
const TRUNK_RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// Keeps telephony in line with the store: when the API or the dashboard
/// changes an agent, a number or a trunk, the routing cache is dropped and
/// REGISTER keepers follow at once; every [`TRUNK_RECONCILE_EVERY`] otherwise.
pub(crate) fn follow_routing_changes(
    telephony: switchboard_telephony::Telephony,
    changed: Arc<Notify>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(TRUNK_RECONCILE_EVERY) => {}
            }
            telephony.reload_routing();
            match telephony.reload_trunks().await {
                Ok(r) if r.started + r.stopped > 0 => {
                    info!(
                        started = r.started,
                        stopped = r.stopped,
                        "trunk registrations updated"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot reload trunk registrations"),
            }
        }
    });
}
