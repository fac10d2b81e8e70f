//! One module per `gept` subcommand; `run` dispatches to them.

pub mod backtest;
pub mod backup;
pub mod config;
pub mod dataset;
pub mod discord;
pub mod eval;
pub mod features;
pub mod migrate;
pub mod model;
pub mod serve;
pub mod train;

use crate::cli::{Cli, Command};
use gept_core::config::Config;

/// Loads the configuration, printing every problem with its key.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    Config::load(cli.config.as_deref()).map_err(|e| {
        for p in &e.problems {
            eprintln!("config error: {p}");
        }
        anyhow::anyhow!("invalid configuration ({} problem(s))", e.problems.len())
    })
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the chosen subcommand on the runtime it needs.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve => serve::run(load_config(&cli)?),
        Command::Migrate => {
            let config = load_config(&cli)?;
            tokio_runtime()?.block_on(migrate::run(&config))
        }
        Command::Config => config::run(&load_config(&cli)?),
        Command::Features(args) => features::run(args),
        Command::Train(args) => {
            let config = if args.history.from_db {
                Some(load_config(&cli)?)
            } else {
                None
            };
            train::run(args, config.as_ref())
        }
        Command::Eval(args) => eval::run(args),
        Command::Backtest(args) => {
            let config = if args.history.from_db || args.store {
                Some(load_config(&cli)?)
            } else {
                None
            };
            backtest::run(args, config.as_ref())
        }
        Command::Dataset(args) => {
            let config = if args.history.from_db {
                Some(load_config(&cli)?)
            } else {
                None
            };
            dataset::run(args, config.as_ref())
        }
        Command::Model(command) => {
            let config = load_config(&cli)?;
            tokio_runtime()?.block_on(model::run(&config, command))
        }
        Command::Backup(command) => {
            let config = load_config(&cli)?;
            tokio_runtime()?.block_on(backup::run(&config, command))
        }
        Command::Discord(command) => {
            let config = load_config(&cli)?;
            tokio_runtime()?.block_on(discord::run(&config, command))
        }
        Command::Restore { file } => {
            let config = load_config(&cli)?;
            tokio_runtime()?.block_on(backup::restore(&config, file))
        }
    }
}
