//! `switchboard salesforce keygen|test`.

use std::io::Write;
use std::process::ExitCode;

use serde_json::json;
use switchboard_salesforce::{keygen, JwtAlgorithm};

use crate::app::App;
use crate::cli::SalesforceCommand;
use crate::output;
use crate::{wiring, Failure};

pub(crate) async fn run(app: &App, cmd: SalesforceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SalesforceCommand::Keygen {
            key_id,
            algorithm,
            bits,
            out,
            json,
        } => {
            let alg = algorithm
                .parse::<JwtAlgorithm>()
                .map_err(|e| Failure::usage(format!("--algorithm: {e}")))?;
            if !(2048..=8192).contains(&bits) {
                return Err(Failure::usage(
                    "--bits: use 2048 to 8192 (Salesforce needs RSA keys of at least 2048 bits)",
                ));
            }
            let key = keygen(&key_id, alg, bits).map_err(|e| Failure::usage(e.to_string()))?;
            write_private(&out, key.private_pem.as_bytes())?;
            if json.json {
                output::json(
                    &json!({ "private_key_file": out, "jwk": key.jwk, "public_pem": key.public_pem }),
                )?;
            } else {
                println!(
                    "Private key written to {} (mode 0600). Keep it secret.",
                    out.display()
                );
                println!();
                println!("Public key as JWK — upload it under Setup → Enhanced Chat User Verification → your keyset → New Key:");
                println!("{}", serde_json::to_string_pretty(&key.jwk)?);
                println!();
                println!("Public key as PEM:");
                print!("{}", key.public_pem);
                println!();
                println!("Then set salesforce.jwt_key_id = \"{key_id}\", salesforce.jwt_issuer = the keyset's issuer, and");
                println!("salesforce.jwt_private_key_file = \"{}\" (or paste the key in Settings → Integrations → Salesforce).", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        SalesforceCommand::Test { json } => {
            let public_url = app
                .config
                .http
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", app.config.http.addr));
            let settings = wiring::salesforce_settings(
                &app.config,
                &app.store,
                app.config.sandbox.addr,
                &public_url,
            )?;
            let test = settings.test_connection().await;
            if json.json {
                output::json(&test)?;
            } else {
                for step in &test.steps {
                    println!(
                        "{} {}: {}",
                        if step.ok { "ok  " } else { "FAIL" },
                        step.name,
                        step.detail
                    );
                }
            }
            Ok(if test.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(|e| {
        Failure::usage(format!(
            "--out {}: {e} (it must not exist yet; choose another path)",
            path.display()
        ))
    })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
