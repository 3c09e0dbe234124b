//! Shared fixture: the sandbox served on 127.0.0.1:0 and a client for it.
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use switchboard_salesforce::{
    keygen, GeneratedKey, JwtAlgorithm, MiawClient, MiawConfig, RepBehaviour, Sandbox,
    SandboxConfig,
};
use tokio::net::TcpListener;

pub(crate) const KID: &str = "test-kid";
pub(crate) const ISSUER: &str = "https://switchboard.example/identity";
/// The longest any bounded wait in these tests may take.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Harness {
    pub(crate) sandbox: Sandbox,
    pub(crate) client: MiawClient,
    pub(crate) base: String,
}

impl Harness {
    /// A sandbox whose rep never joins by itself (tests that want a rep say so).
    pub(crate) async fn start() -> Harness {
        Harness::with(quiet_config()).await
    }

    pub(crate) async fn with(config: SandboxConfig) -> Harness {
        let sandbox = Sandbox::new(config.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = sandbox.router();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let base = format!("http://{addr}");
        let client = MiawClient::new(MiawConfig {
            scrt_url: base.clone(),
            org_id: config.org_id.clone(),
            deployment_name: config.deployment_name.clone(),
            request_timeout: Duration::from_secs(5),
        })
        .unwrap();
        Harness {
            sandbox,
            client,
            base,
        }
    }

    /// Another client to the same sandbox, with one setting changed.
    pub(crate) fn client_with(&self, change: impl FnOnce(&mut MiawConfig)) -> MiawClient {
        let mut config = self.client.config().clone();
        change(&mut config);
        MiawClient::new(config).unwrap()
    }
}

pub(crate) fn quiet_config() -> SandboxConfig {
    SandboxConfig {
        rep: RepBehaviour {
            accept_after: None,
            ..RepBehaviour::default()
        },
        ..SandboxConfig::default()
    }
}

/// One RSA key per test binary (generation is slow in debug builds).
pub(crate) fn key() -> &'static GeneratedKey {
    static KEY: OnceLock<GeneratedKey> = OnceLock::new();
    KEY.get_or_init(|| keygen(KID, JwtAlgorithm::Rs256, 2048).unwrap())
}

/// A second key, registered nowhere.
pub(crate) fn other_key() -> &'static GeneratedKey {
    static KEY: OnceLock<GeneratedKey> = OnceLock::new();
    KEY.get_or_init(|| keygen(KID, JwtAlgorithm::Rs256, 2048).unwrap())
}

pub(crate) fn verified_config() -> SandboxConfig {
    SandboxConfig {
        user_verification: true,
        keys: vec![(KID.to_string(), key().jwk.clone())],
        issuer: Some(ISSUER.to_string()),
        ..quiet_config()
    }
}

pub(crate) fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
