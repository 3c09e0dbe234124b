//! One module per command family. `serve` and `doctor` are run from `main`
//! directly (they own their start-up); the data commands get an opened
//! [`App`] through [`dispatch`].

use std::process::ExitCode;

use crate::app::App;
use crate::cli::DataCommand;

pub(crate) mod agents;
pub(crate) mod call;
pub(crate) mod contacts;
pub(crate) mod demo;
pub(crate) mod dial;
pub(crate) mod doctor;
pub(crate) mod handoffs;
pub(crate) mod migrate;
pub(crate) mod numbers;
pub(crate) mod salesforce;
pub(crate) mod sandbox;
pub(crate) mod serve;
pub(crate) mod tokens;
pub(crate) mod trunks;
pub(crate) mod users;

pub(crate) async fn dispatch(app: &App, command: DataCommand) -> anyhow::Result<ExitCode> {
    match command {
        DataCommand::Migrate => migrate::run(app).await,
        DataCommand::Agents(cmd) => agents::run(app, cmd).await,
        DataCommand::Numbers(cmd) => numbers::run(app, cmd).await,
        DataCommand::Trunks(cmd) => trunks::run(app, cmd).await,
        DataCommand::Contacts(cmd) => contacts::run(app, cmd).await,
        DataCommand::Tokens(cmd) => tokens::run(app, cmd).await,
        DataCommand::Handoffs(cmd) => handoffs::run(app, cmd).await,
        DataCommand::Salesforce(cmd) => salesforce::run(app, cmd).await,
        DataCommand::Users(cmd) => users::run(app, cmd).await,
        DataCommand::Demo(args) => demo::run(app, args).await,
        DataCommand::Dial(args) => dial::run(app, args).await,
    }
}
