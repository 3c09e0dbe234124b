//! The `switchboard` binary: command line, configuration, wiring, signals.
//!
//! Layout: [`cli`] declares the commands (clap derive); [`config`] loads
//! `switchboard.toml` + `SWITCHBOARD_*` environment + flags into a typed
//! [`config::Config`]; [`app`] opens what commands share (data directory,
//! secret key, store); `commands/` has one module per command family;
//! [`output`] prints tables and JSON. Logic worth testing on its own lives in
//! the library crates; this crate only wires it.
//!
//! Errors: handlers return `anyhow::Result`; [`exit_for`] turns the error
//! into one `error: …` line on stderr and an exit code: 2 when the input or
//! setup must change (config, flags, validation, unreachable database, busy
//! port), 1 when the operation itself failed (conflict, not found, failed
//! check or CSV row).

use std::process::ExitCode;

use clap::Parser;
use switchboard_model::ModelError;
use switchboard_store::StoreError;

mod app;
mod browser;
mod calls;
mod cli;
mod commands;
mod config;
mod logging;
mod output;
mod providers;
mod wiring;

use cli::{Cli, Command};
use config::{ConfigError, Overrides};

/// mimalloc rather than glibc's malloc: the call path allocates small
/// buffers on every SIP message and media tick, and glibc's arenas were
/// about 7 % of a call setup's CPU (docs/benchmarks.md, call setups).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => exit_for(&err),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        ..Overrides::default()
    };
    match cli.command {
        // Doctor reports a bad config as one of its checks instead of failing.
        Command::Doctor(args) => commands::doctor::run(cli.config, overrides, args).await,
        Command::Serve(args) => {
            let overrides = Overrides {
                http_addr: args.http.clone(),
                sip_addr: args.sip.clone(),
                ..overrides
            };
            let config = app::load_config(cli.config, overrides)?;
            logging::init(&config.log, true)?;
            commands::serve::run(config).await
        }
        Command::Call(args) => {
            let config = app::load_config(cli.config, overrides)?;
            logging::init(&config.log, false)?;
            commands::call::run(&config, args).await
        }
        Command::Sandbox(args) => {
            let config = app::load_config(cli.config, overrides)?;
            logging::init(&config.log, true)?;
            commands::sandbox::run(&config, args).await
        }
        Command::Data(command) => {
            let config = app::load_config(cli.config, overrides)?;
            logging::init(&config.log, false)?;
            let app = app::App::open(config).await?;
            let result = commands::dispatch(&app, command).await;
            app.store.close().await;
            result
        }
    }
}

/// An error whose message and exit code were decided where it happened.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    /// The input or setup must change (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
        Failure {
            code: 2,
            message: message.into(),
        }
        .into()
    }

    /// The operation failed (exit 1).
    pub(crate) fn failed(message: impl Into<String>) -> anyhow::Error {
        Failure {
            code: 1,
            message: message.into(),
        }
        .into()
    }
}

/// Prints `err` as one line on stderr and picks the exit code.
fn exit_for(err: &anyhow::Error) -> ExitCode {
    let (code, line) = describe(err);
    eprintln!("{line}");
    ExitCode::from(code)
}

fn describe(err: &anyhow::Error) -> (u8, String) {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return (f.code, format!("error: {}", f.message));
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return (2, format!("config error: {e}"));
        }
        if let Some(e) = cause.downcast_ref::<ModelError>() {
            return (2, format!("error: {e}"));
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            let code = match e {
                StoreError::Unavailable { .. } | StoreError::UnsupportedUrl { .. } => 2,
                _ => 1,
            };
            // The store's messages already include their source.
            return (code, format!("error: {e}"));
        }
    }
    (1, format!("error: {err:#}"))
}
