//! `switchboard sandbox`: the built-in MIAW sandbox on its own, with faults
//! from flags — for trying a MIAW client, or for tests that need Salesforce
//! to misbehave in a separate process.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use switchboard_salesforce::{Fault, Sandbox, SandboxConfig};
use tokio::net::TcpListener;

use crate::cli::SandboxArgs;
use crate::config::Config;
use crate::Failure;

pub(crate) async fn run(config: &Config, args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let addr: SocketAddr = match &args.addr {
        Some(a) => a.parse().map_err(|_| {
            Failure::usage(format!(
                "--addr: {a:?} is not an address like 127.0.0.1:8089"
            ))
        })?,
        None => config
            .sandbox
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8089))),
    };
    let mut sandbox_config = SandboxConfig::default();
    if let Some(path) = &args.verify_with {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("--verify-with {}: {e}", path.display())))?;
        let jwk: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Failure::usage(format!(
                "--verify-with {}: not a JSON web key ({e})",
                path.display()
            ))
        })?;
        let kid = jwk["kid"]
            .as_str()
            .ok_or_else(|| Failure::usage("--verify-with: the JWK has no `kid`"))?
            .to_string();
        sandbox_config.user_verification = true;
        sandbox_config.keys = vec![(kid, jwk)];
        sandbox_config.issuer = args.issuer.clone();
    }
    let sandbox = Sandbox::new(sandbox_config.clone());
    if let Some(ms) = args.latency_ms {
        sandbox.faults().push(Fault::Latency { ms });
    }
    if let Some(status) = args.fail_status {
        sandbox.faults().push(Fault::Status {
            status,
            retry_after_secs: args.retry_after,
            times: args.times,
        });
    }
    if let Some(times) = args.lose_responses {
        sandbox.faults().push(Fault::LostResponse { times });
    }
    if let Some(times) = args.resets {
        sandbox.faults().push(Fault::Reset { times });
    }
    if let Some(times) = args.timeouts {
        sandbox.faults().push(Fault::Timeout { times });
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {addr}: {e} — use --addr")))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    println!(
        "Salesforce MIAW sandbox: http://{bound} (rep console: http://{bound}/sandbox/console)"
    );
    println!(
        "Connect with scrt_url = \"http://{bound}\", org_id = \"{}\", deployment_name = \"{}\"",
        sandbox_config.org_id, sandbox_config.deployment_name
    );
    let app = sandbox.router();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the sandbox stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}
