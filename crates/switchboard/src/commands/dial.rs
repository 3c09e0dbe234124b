//! `switchboard dial`: an agent calls someone, placed by the running server
//! (which owns the SIP listener) through `POST /api/v1/calls`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::app::App;
use crate::cli::DialArgs;
use crate::{output, Failure};

/// Longest wait for the callee to answer (the server's no-answer timeout
/// ends the attempt before this).
const ANSWER_WAIT: Duration = Duration::from_secs(180);

pub(crate) async fn run(app: &App, args: DialArgs) -> anyhow::Result<ExitCode> {
    // Fail early, with the CLI's words, on an unknown agent.
    let agent = app.store.find_agent(&args.agent).await?;
    let (token, temporary) = match args.token.clone().filter(|t| !t.is_empty()) {
        Some(t) => (t, None),
        None => {
            let t = app
                .store
                .create_api_token("switchboard dial (temporary)")
                .await?;
            (t.secret.clone(), Some(t.token.id))
        }
    };
    let result = place(app, &args, &agent.spec.name, &token).await;
    if let Some(id) = temporary {
        if let Err(e) = app.store.revoke_api_token(id).await {
            tracing::warn!(error = %e, "cannot revoke the temporary API token");
        }
    }
    let (status, body) = result?;
    let base = app
        .config
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", app.config.http.addr));
    let message = body["error"]["message"]
        .as_str()
        .or_else(|| body["message"].as_str())
        .unwrap_or("")
        .to_string();
    match status {
        201 => {
            let session = body["session_id"].as_str().unwrap_or_default();
            if args.json.json {
                output::json(&json!({
                    "session": session,
                    "status": "answered",
                    "inbox": format!("{base}/inbox/{session}"),
                }))?;
            } else {
                println!("Answered: {} is talking to {}.", agent.spec.name, args.to);
                println!("Session: {base}/inbox/{session}");
            }
            Ok(ExitCode::SUCCESS)
        }
        409 => Err(Failure::failed(message)),
        404 | 422 => Err(Failure::usage(message)),
        503 => Err(Failure::failed(format!(
            "the server could not place the call ({message}); see its log"
        ))),
        401 => Err(Failure::usage(
            "the server refused the API token: pass a valid one with --token or SWITCHBOARD_TOKEN",
        )),
        other => Err(Failure::failed(format!(
            "the server answered {other}: {body}"
        ))),
    }
}

async fn place(
    app: &App,
    args: &DialArgs,
    agent: &str,
    token: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let addr = app.config.http.addr;
    let url = format!("http://{addr}/api/v1/calls");
    let client = reqwest::Client::builder()
        .timeout(ANSWER_WAIT)
        .build()
        .context("cannot build the HTTP client")?;
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&json!({ "agent": agent, "to": args.to, "trunk": args.trunk }))
        .send()
        .await
        .map_err(|e| {
            let how = app.config.how_to_set("http.addr", Some("--http"));
            if e.is_connect() {
                Failure::usage(format!(
                    "no server answers at {addr}: start `switchboard serve` first ({how})"
                ))
            } else {
                Failure::failed(format!("the request to {url} failed: {e}"))
            }
        })?;
    let status = response.status().as_u16();
    let body = response
        .json::<serde_json::Value>()
        .await
        .unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}
