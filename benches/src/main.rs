//! `gept-bench`: GePT's benchmarks, one subcommand each. Every one runs the
//! product's own code on the recordings and prints its figure next to a
//! named peer or limit measured in the same run, with the ratio.
//! BENCHMARKS.md quotes them with the commands that made them.

mod features;
mod inference;
mod ingest;
mod serve;
mod storage;
mod store;
mod train;

use clap::{Parser, Subcommand};
use gept::cli::DeviceArg;
use std::path::PathBuf;

/// GePT's benchmarks against their peers and limits.
#[derive(Debug, Parser)]
#[command(name = "gept-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The serving path on loopback: tick → websocket delivery (1 client;
    /// many clients of 10 items; many clients of every item) and wrk on the
    /// prediction routes, against the aims.
    Serve {
        /// A model directory (`gept train`).
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// The `/latest` recording.
        #[arg(long, value_name = "FILE")]
        latest: PathBuf,
        /// The `/1h` recording (volume features).
        #[arg(long, value_name = "FILE")]
        hourly: Option<PathBuf>,
        /// The `/5m` recording (the feed `gept serve` also collects).
        #[arg(long, value_name = "FILE")]
        five_minute: Option<PathBuf>,
        /// The `/mapping` recording (item constants).
        #[arg(long, value_name = "FILE")]
        mapping: Option<PathBuf>,
        /// Ticks fed before measuring (the windows fill).
        #[arg(long, default_value_t = 300)]
        warmup: usize,
        /// Ticks measured (split over the three stream scenarios).
        #[arg(long, default_value_t = 30)]
        ticks: usize,
        /// Websocket clients of scenarios 2 and 3.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Seconds of each wrk run (0: skip).
        #[arg(long, default_value_t = 10)]
        wrk_seconds: u64,
        /// Milliseconds between a measured tick's last delivery and the next
        /// tick (0: back to back, a stress case; the upstream gives a tick a
        /// minute, so a tick's own background work, its prediction write
        /// and the accuracy monitor's update, is done before the next).
        #[arg(long, default_value_t = 0)]
        gap_ms: u64,
        /// A configuration setting for the service, `section.key=value`
        /// (as `GEPT__SECTION__KEY`); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// One batched forward pass (with calibration) over every item of a
    /// full tick, p50 and p99, against the 5 ms limit.
    Inference {
        /// The model directory.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// The `/latest` recording; its last tick's rows are predicted.
        #[arg(long, value_name = "FILE")]
        latest: PathBuf,
        /// Use only the first N snapshots.
        #[arg(long, default_value_t = 300)]
        snapshots: usize,
        #[arg(long, default_value_t = 200)]
        repeats: usize,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
    },
    /// Snapshots/s end to end (replay server → client → parser → SQLite
    /// store) on the step clock, the share of time in HTTP, parsing and
    /// storage, against the raw store load rate of the same rows.
    Ingest {
        /// Folder with the recordings (as for `gept mock-api`).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Replay only the first N snapshots.
        #[arg(long)]
        snapshots: Option<usize>,
        /// Work folder for the SQLite files.
        #[arg(long, default_value = "bench-out")]
        work_dir: PathBuf,
    },
    /// Per-tick latency (p50, p99), replay throughput and peak memory of the
    /// feature dataflow, against recomputing every feature from the last
    /// 24 h at each tick (the batch peer), in the same run.
    Features {
        /// The `/latest` recording.
        #[arg(long, value_name = "FILE")]
        latest: PathBuf,
        /// The `/1h` recording.
        #[arg(long, value_name = "FILE")]
        hourly: Option<PathBuf>,
        /// The `/5m` recording.
        #[arg(long, value_name = "FILE")]
        five_minute: Option<PathBuf>,
        /// The `/mapping` recording.
        #[arg(long, value_name = "FILE")]
        mapping: Option<PathBuf>,
        /// Use only the first N snapshots.
        #[arg(long)]
        snapshots: Option<usize>,
        /// Timely worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Training from the store as the trainer runs it (streamed, bounded
    /// memory) on the recording copied end to end `copies` times: rows,
    /// wall time and peak memory against the aims (10 minutes, 4 GB).
    TrainStore {
        /// Folder with the recordings.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Copies of the recording (3.4 days each), end to end.
        #[arg(long, default_value_t = 1)]
        copies: usize,
        #[arg(long, default_value = "bench-out")]
        work_dir: PathBuf,
        /// Every Nth tick becomes rows (6: one row per item per 30 minutes
        /// of the 5-minute recording, as stride 30 on 1-minute ticks).
        #[arg(long, default_value_t = 6)]
        stride: usize,
        #[arg(long, default_value_t = 12)]
        epochs: usize,
        #[arg(long, default_value_t = 8.0)]
        max_minutes: f64,
    },
    /// The store's size over simulated weeks (the recording in a loop at one
    /// tick a minute, with predictions, buckets and hourly retention on the
    /// simulated clock), per day and table, against the 8 GB at 90 days and
    /// 5 MB a day aims.
    Storage {
        /// Folder with the recordings.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Simulated days.
        #[arg(long, default_value_t = 45)]
        days: i64,
        /// Keep the items whose id is a multiple of this (1: all).
        #[arg(long, default_value_t = 1)]
        every: u32,
        /// The model whose predictions of the recording are stored (a
        /// model directory, `gept train`): real probabilities compress as
        /// stored ones will.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// `sqlite` (a fresh file in the work dir) or `postgres` (a fresh
        /// database on the server of --postgres).
        #[arg(long, default_value = "sqlite")]
        backend: String,
        #[arg(
            long,
            env = "GEPT_BENCH_DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        postgres: String,
        #[arg(long, default_value = "bench-out")]
        work_dir: PathBuf,
    },
    /// Rows/s loading the whole `/latest` recording into SQLite and
    /// PostgreSQL through the store, against each database's own bulk load
    /// (`sqlite3 .import`, PostgreSQL `COPY`) of the same rows.
    Store {
        /// The `/latest` recording (latest_snapshots.jsonl.zst).
        #[arg(long, value_name = "FILE")]
        latest: PathBuf,
        /// PostgreSQL to load into; skipped when unreachable.
        #[arg(
            long,
            env = "GEPT_BENCH_DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        postgres: String,
        /// Work folder for the SQLite files and the CSV of the peers.
        #[arg(long, default_value = "bench-out")]
        work_dir: PathBuf,
        /// Load only the first N snapshots (all by default).
        #[arg(long)]
        snapshots: Option<usize>,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> std::process::ExitCode {
    gept::telemetry::init();
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            model,
            latest,
            hourly,
            five_minute,
            mapping,
            warmup,
            ticks,
            subscribers,
            wrk_seconds,
            gap_ms,
            settings,
        } => gept::service::system().block_on(serve::run(serve::Options {
            model: &model,
            latest: &latest,
            hourly: hourly.as_deref(),
            five_minute: five_minute.as_deref(),
            mapping: mapping.as_deref(),
            warmup,
            ticks,
            subscribers,
            wrk_seconds,
            gap: std::time::Duration::from_millis(gap_ms),
            settings: &settings,
        })),
        Command::Inference {
            model,
            latest,
            snapshots,
            repeats,
            device,
        } => inference::run(&model, &latest, snapshots, repeats, device),
        Command::Features {
            latest,
            hourly,
            five_minute,
            mapping,
            snapshots,
            workers,
        } => features::run(
            &latest,
            hourly.as_deref(),
            five_minute.as_deref(),
            mapping.as_deref(),
            snapshots,
            workers,
        ),
        Command::Ingest {
            data_dir,
            snapshots,
            work_dir,
        } => runtime()?.block_on(ingest::run(&data_dir, snapshots, &work_dir)),
        Command::TrainStore {
            data_dir,
            copies,
            work_dir,
            stride,
            epochs,
            max_minutes,
        } => runtime()?.block_on(train::run(train::Options {
            data_dir: &data_dir,
            copies,
            work_dir: &work_dir,
            stride,
            epochs,
            max_minutes,
        })),
        Command::Store {
            latest,
            postgres,
            work_dir,
            snapshots,
        } => runtime()?.block_on(store::run(&latest, &postgres, &work_dir, snapshots)),
        Command::Storage {
            data_dir,
            days,
            every,
            model,
            backend,
            postgres,
            work_dir,
        } => runtime()?.block_on(async {
            let url = match backend.as_str() {
                "sqlite" => {
                    std::fs::create_dir_all(&work_dir)?;
                    let db = work_dir.join("storage.db");
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
                    }
                    format!("sqlite://{}?mode=rwc", db.display())
                }
                "postgres" => store::fresh_database(&postgres, "gept_bench_storage").await?,
                other => anyhow::bail!("--backend {other}: sqlite or postgres"),
            };
            storage::run(storage::Options {
                data_dir: &data_dir,
                url: &url,
                days,
                every,
                model: &model,
                work_dir: &work_dir,
            })
            .await
        }),
    }
}
