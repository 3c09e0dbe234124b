//! `switchboard migrate`: [`App::open`] already brings the schema up to date;
//! this command says which database that was.

use std::process::ExitCode;

use crate::app::App;

pub(crate) async fn run(app: &App) -> anyhow::Result<ExitCode> {
    println!(
        "Database schema is up to date ({} at {}).",
        app.store.backend().name(),
        app.config.database.redacted_url()
    );
    Ok(ExitCode::SUCCESS)
}
