//! The `gept` command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// GePT: Old School RuneScape Grand Exchange fill predictions on every tick.
///
/// Configuration is layered: the embedded default, then `--config FILE`, then
/// environment variables `GEPT__SECTION__KEY` (e.g. `GEPT__DATABASE__URL`).
/// `gept config` prints the result.
#[derive(Debug, Parser)]
#[command(name = "gept", version, about, long_about)]
pub struct Cli {
    /// A TOML file layered over the embedded default configuration.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the embedded migrations to the configured database (SQLite by
    /// default, PostgreSQL with GEPT__DATABASE__URL=postgres://...).
    Migrate,
    /// Print the effective configuration as TOML, secrets redacted, and which
    /// torch device models would run on.
    Config,
    /// Run the service: collectors, store, HTTP API. Needs a descriptive
    /// User-Agent (GEPT__UPSTREAM__USER_AGENT); stops gracefully on SIGINT or
    /// SIGTERM after storing every buffered row.
    Serve,
    /// Replay recorded API responses over HTTP, in the API's exact format and
    /// paths, for tests and offline runs.
    MockApi(MockApiArgs),
    /// Run a recording through the feature dataflow and write one CSV row per
    /// (item, tick): `item_id,timestamp,<features>`, empty cells for nulls.
    /// Arguments after `--` go to timely: `-w N` worker threads, and for a
    /// cluster of processes `-n N -p I -h HOSTFILE` (process 0 writes the CSV).
    Features(FeaturesArgs),
    /// Run a benchmark against its named peer or limit and print the ratio.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Options of `gept features`.
#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    /// The `/latest` recording (latest_snapshots.jsonl.zst).
    #[arg(long, value_name = "FILE")]
    pub latest: PathBuf,
    /// The `/1h` recording, for volume features.
    #[arg(long, value_name = "FILE")]
    pub hourly: Option<PathBuf>,
    /// The `/5m` recording (accepted; no feature reads it yet).
    #[arg(long, value_name = "FILE")]
    pub five_minute: Option<PathBuf>,
    /// The `/mapping` recording, for item constants (buy limit, alch value).
    #[arg(long, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// Where to write the CSV.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Use only the first N snapshots.
    #[arg(long)]
    pub max_snapshots: Option<usize>,
    /// timely's own options: `-w N`, `-n N -p I -h HOSTFILE`.
    #[arg(last = true)]
    pub timely: Vec<String>,
}

/// Options of `gept mock-api`.
#[derive(Debug, clap::Args)]
pub struct MockApiArgs {
    /// Folder with latest_snapshots.jsonl.zst, 1h_snapshots.jsonl.gz,
    /// 5m_snapshots_partial.jsonl.gz and mapping.json.gz (a missing file makes
    /// its endpoint answer 404).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// `step`: one recorded /latest snapshot per request; `realtime` or
    /// `speed:N`: a virtual clock from the first snapshot at N times real time.
    #[arg(long, default_value = "step")]
    pub clock: crate::mock_api::Clock,
    /// Share of API responses that are faulted (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Kinds of faults injected, comma separated: 500, 429, slow, truncated, malformed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,429,slow,truncated,malformed"
    )]
    pub faults: Vec<crate::mock_api::FaultKind>,
    /// How long a slow response takes, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub slow_ms: u64,
    /// Seed of the fault injection.
    #[arg(long, default_value_t = 1)]
    pub fault_seed: u64,
    /// Serve only the first N /latest snapshots.
    #[arg(long)]
    pub max_snapshots: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
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
