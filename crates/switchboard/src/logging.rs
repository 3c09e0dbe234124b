//! Logging to stderr with `tracing-subscriber`: text or JSON, filtered by
//! `RUST_LOG` when set, else by `[log] level`. Stdout is left to command
//! output (dashboard URL, tables, JSON) so scripts can read it.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `serve` logs at the configured level;
/// one-shot commands only warn, unless `RUST_LOG` asks for more.
pub(crate) fn init(config: &LogConfig, serving: bool) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::builder()
            .parse(&directives)
            .map_err(|e| crate::Failure::usage(format!("RUST_LOG: {e}")))?,
        _ if serving => EnvFilter::builder().parse(&config.level)?,
        _ => EnvFilter::new("warn"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Only fails if a subscriber is already set, which `main` never does twice.
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
