//! One module per `gept` subcommand.

pub mod bench_features;
pub mod bench_inference;
pub mod bench_ingest;
pub mod bench_serve;
pub mod bench_store;
pub mod config;
pub mod dataset;
pub mod eval;
pub mod features;
pub mod history;
pub mod migrate;
pub mod mock_api;
pub mod model;
pub mod serve;
pub mod train;

use crate::cli::{BenchCommand, Cli, Command};
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
        Command::Bench(BenchCommand::Serve {
            model,
            latest,
            hourly,
            mapping,
            warmup,
            ticks,
            subscribers,
            wrk_seconds,
        }) => tokio_runtime()?.block_on(bench_serve::run(bench_serve::Options {
            model,
            latest,
            hourly: hourly.as_deref(),
            mapping: mapping.as_deref(),
            warmup: *warmup,
            ticks: *ticks,
            subscribers: *subscribers,
            wrk_seconds: *wrk_seconds,
        })),
        Command::Bench(BenchCommand::Inference {
            model,
            latest,
            snapshots,
            repeats,
            device,
        }) => bench_inference::run(model, latest, *snapshots, *repeats, *device),
        Command::MockApi(args) => tokio_runtime()?.block_on(mock_api::run(args)),
        Command::Bench(BenchCommand::Features {
            latest,
            hourly,
            five_minute,
            mapping,
            snapshots,
            workers,
        }) => bench_features::run(
            latest,
            hourly.as_deref(),
            five_minute.as_deref(),
            mapping.as_deref(),
            *snapshots,
            *workers,
        ),
        Command::Bench(BenchCommand::Ingest {
            data_dir,
            snapshots,
            work_dir,
        }) => tokio_runtime()?.block_on(bench_ingest::run(data_dir, *snapshots, work_dir)),
        Command::Bench(BenchCommand::Store {
            latest,
            postgres,
            work_dir,
            snapshots,
        }) => tokio_runtime()?.block_on(bench_store::run(latest, postgres, work_dir, *snapshots)),
    }
}
