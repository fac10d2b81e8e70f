//! The `gept` command line.

use clap::{Parser, Subcommand};
use gept_core::config::Config;
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
    /// Run a recording through the feature dataflow and write one CSV row per
    /// (item, tick): `item_id,timestamp,<features>`, empty cells for nulls.
    /// Arguments after `--` go to timely: `-w N` worker threads, and for a
    /// cluster of processes `-n N -p I -h HOSTFILE` (process 0 writes the CSV).
    Features(FeaturesArgs),
    /// Train the fill model on history (recordings or the configured
    /// database), with early stopping on a time-based validation split, and
    /// write a self-describing model directory.
    Train(TrainArgs),
    /// Score a model on a period it never saw: report.json, a reliability
    /// diagram and an AUC heatmap (SVG) in the report directory.
    Eval(EvalArgs),
    /// Write the training and validation rows of `gept train` (same
    /// features, labels and split) as CSV, for peer models.
    Dataset(DatasetArgs),
    /// Replay a period through the serving feature engine, model and
    /// recommendations and simulate a player trading on them, beside the
    /// heuristics players use (margin flipping, the old system's ranking,
    /// random picks): profit, ROI, profit per slot-hour, fill rate, time to
    /// fill, capital use, drawdown, calibration; report.json and equity
    /// curves (SVG) in --out.
    Backtest(BacktestArgs),
    /// The model registry of the configured database.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Backups of the configured database (`gept serve` also makes them on
    /// `backup.interval`).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Replace the configured database's contents with a backup made by
    /// `gept backup now` or the service (same backend). Stop `gept serve`
    /// first.
    Restore {
        /// The backup file (`gept-<time>.db` or `.dump`).
        file: PathBuf,
    },
    /// The Discord bot (`POST /discord/interactions` of `gept serve`).
    #[command(subcommand)]
    Discord(DiscordCommand),
}

#[derive(Debug, Subcommand)]
pub enum DiscordCommand {
    /// Post the slash commands (/flip, /item, /status) to the Discord API
    /// (`discord.api_base`) for the application, replacing its commands.
    /// Needs GEPT__DISCORD__APPLICATION_ID and GEPT__DISCORD__TOKEN (or
    /// their files).
    RegisterCommands {
        /// Register in one server only (they appear at once there).
        #[arg(long, value_name = "ID")]
        guild: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Make a backup now into `backup.dir` (rotated to `backup.keep`).
    Now,
    /// List the backups in `backup.dir`, oldest first.
    List,
}

/// Where history comes from: recordings, or the configured database.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// The `/latest` recording (latest_snapshots.jsonl.zst).
    #[arg(long, value_name = "FILE", required_unless_present = "from_db")]
    pub latest: Option<PathBuf>,
    /// A `/1h` recording, for volume features; may be given more than once.
    #[arg(long, value_name = "FILE")]
    pub hourly: Vec<PathBuf>,
    /// The `/5m` recording, for the 5-minute volume features.
    #[arg(long, value_name = "FILE")]
    pub five_minute: Option<PathBuf>,
    /// The `/mapping` recording, for item constants.
    #[arg(long, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// Read history from the configured database instead of recordings.
    #[arg(long, conflicts_with_all = ["latest", "hourly", "five_minute", "mapping"])]
    pub from_db: bool,
    /// Use only ticks at or before this time (RFC 3339 or Unix seconds).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<i64>,
    /// With --from-db: rows from ticks at or after this time only (the
    /// 25 h before it still warm the feature windows up).
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "from_db")]
    pub since: Option<i64>,
}

/// The history `gept train` and `gept dataset` read: recordings, or the
/// configured database with `--from-db`; cut at `--until`.
impl HistoryArgs {
    pub fn load(&self, config: Option<&Config>) -> anyhow::Result<gept_model::history::History> {
        let args = self;
        use gept_model::history::History;
        let mut history = if args.from_db {
            let config =
                config.ok_or_else(|| anyhow::anyhow!("--from-db needs a configuration"))?;
            let until = args.until.unwrap_or(i64::MAX - 1);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let store = gept_store::Store::connect(
                        &config.database_url()?,
                        config.database.max_connections,
                    )
                    .await?;
                    let history = History::from_store(&store, until).await;
                    store.close().await;
                    anyhow::Ok(history?)
                })?
        } else {
            let latest = args
                .latest
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("--latest FILE or --from-db is required"))?;
            History::from_recordings(
                latest,
                &args.hourly,
                args.five_minute.as_deref(),
                args.mapping.as_deref(),
            )?
        };
        if let Some(until) = args.until {
            history.truncate(until);
        }
        anyhow::ensure!(!history.ticks.is_empty(), "no /latest ticks in the history");
        Ok(history)
    }
}

/// RFC 3339 (`2025-05-23T12:00:00Z`) or Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<i64>() {
        return Ok(t);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .map_err(|e| format!("{s:?} is neither Unix seconds nor RFC 3339: {e}"))
}

/// `cpu`, `cuda` or `auto` (CUDA when available).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

impl DeviceArg {
    pub fn device(self) -> anyhow::Result<tch::Device> {
        Ok(match self {
            DeviceArg::Auto => tch::Device::cuda_if_available(),
            DeviceArg::Cpu => tch::Device::Cpu,
            DeviceArg::Cuda => {
                anyhow::ensure!(
                    tch::Cuda::is_available(),
                    "--device cuda: no CUDA device is available"
                );
                tch::Device::Cuda(0)
            }
        })
    }
}

/// Options of `gept train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// The model directory to write (model.json, weights.safetensors).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Share of the period, at its end, held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,
    /// Keep every Nth tick as a row (neighbouring 5-minute rows are near duplicates).
    #[arg(long, default_value_t = 2)]
    pub stride: usize,
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Learning-rate factor per epoch (epoch e trains at 2e-3 · decay^(e − 1)).
    #[arg(long, default_value_t = 0.6)]
    pub lr_decay: f64,
    /// Epochs without a better validation AUC before stopping.
    #[arg(long, default_value_t = 2)]
    pub patience: usize,
    /// Stop after the epoch that passes this many minutes.
    #[arg(long)]
    pub max_minutes: Option<f64>,
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    /// Hidden layer widths, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "128,64")]
    pub hidden: Vec<i64>,
    /// Features the model should not read, comma separated (`""` for none).
    /// The default (`gept_model::net::DEFAULT_EXCLUDE`) leaves out price levels that repeat `mid` (high, low and
    /// their moving averages) and constants that only scale it: they let the
    /// network memorise items' prices in the training days and cost held-out
    /// AUC (docs/MODEL.md). Calendar features whose cycle the training period
    /// does not cover twice are left out anyway (day of week below 14 days,
    /// hour of day below 2).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub exclude_features: Option<Vec<String>>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// A model (the ACTIVE one) to score beside the new one on the
    /// validation rows after its training period; the figures go into
    /// model.json (`training.compared`) for the trainer's gate.
    #[arg(long, value_name = "DIR")]
    pub compare_with: Option<PathBuf>,
    /// Shuffles the training labels across rows: a model that learns
    /// nothing, to show that the gates refuse it.
    #[arg(long, hide = true)]
    pub shuffle_labels: bool,
}

/// Options of `gept backtest`.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// The model directory; without one only the peers trade.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Simulate ticks at or after this time (RFC 3339 or Unix seconds);
    /// earlier ones warm the features up. Default: the last --period.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<i64>,
    /// Without --from: the simulated period ends at the last tick and lasts
    /// this long (at most the history after 25 h of warm-up).
    #[arg(long, default_value = "7d")]
    pub period: String,
    /// Capital in gp; several give one run each.
    #[arg(long, value_delimiter = ',', default_value = "10000000")]
    pub capital: Vec<i64>,
    /// GE slots (8 members, 3 free-to-play).
    #[arg(long, default_value_t = 8)]
    pub slots: usize,
    /// low, medium, high; several give one run each.
    #[arg(long, value_delimiter = ',', default_value = "medium")]
    pub risk: Vec<String>,
    /// active, hybrid or passive.
    #[arg(long, default_value = "active")]
    pub style: String,
    /// Re-plan at least this often (and whenever a slot frees).
    #[arg(long, default_value = "5m")]
    pub replan: String,
    /// Share of a side's hourly traded volume one offer may take.
    #[arg(long, default_value_t = 0.25)]
    pub volume_share: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write report.json and the equity curves.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also store the report in the configured database as the model's
    /// backtest (served at /api/v1/backtest while it is ACTIVE); the model
    /// must be registered.
    #[arg(long, requires = "model")]
    pub store: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of `gept dataset`.
#[derive(Debug, clap::Args)]
pub struct DatasetArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Folder for train.csv and validation.csv.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0.2)]
    pub validation_fraction: f64,
    #[arg(long, default_value_t = 2)]
    pub stride: usize,
}

/// Options of `gept eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The model directory.
    #[arg(long, value_name = "DIR", required_unless_present = "predictions")]
    pub model: Option<PathBuf>,
    /// Score another model's predictions instead (CSV: item_id,timestamp,<target names>),
    /// e.g. the CatBoost peer's (scripts/peer_catboost.py).
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub predictions: Option<PathBuf>,
    /// Also write the scored rows (features and labels) as CSV.
    #[arg(long, value_name = "FILE")]
    pub export_rows: Option<PathBuf>,
    /// Score only these items (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub items: Vec<u32>,
    /// A `/latest` recording before the evaluated period: features may use
    /// it, nothing in it is scored.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// The evaluated period's `/latest` recording; only its ticks are scored.
    #[arg(long, value_name = "FILE")]
    pub latest: PathBuf,
    /// `/1h` recordings; may be given more than once.
    #[arg(long, value_name = "FILE")]
    pub hourly: Vec<PathBuf>,
    /// The `/5m` recording, for the 5-minute volume features.
    #[arg(long, value_name = "FILE")]
    pub five_minute: Option<PathBuf>,
    /// The `/mapping` recording, for item constants.
    #[arg(long, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// Score only ticks at or after this time (RFC 3339 or Unix seconds);
    /// earlier ticks of `--latest` then serve as history.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<i64>,
    /// Longest horizon scored, e.g. `12h`.
    #[arg(long, default_value = "12h")]
    pub max_horizon: String,
    /// Where to write report.json, reliability.svg and auc_heatmap.svg.
    #[arg(long, value_name = "DIR")]
    pub report: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a trained model directory as PENDING; with --activate, make it
    /// ACTIVE if it passes the gates (mean AUC ≥ 0.55, half the targets above
    /// 0.52, within 0.02 of the active model's mean AUC).
    Register {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        activate: bool,
    },
    /// Activate a registered model (the gates apply); the ACTIVE one becomes DEPRECATED.
    Activate {
        version: String,
        /// Skip the gates (recorded in the output).
        #[arg(long)]
        force: bool,
    },
    /// Archive a model that is not ACTIVE.
    Archive { version: String },
    /// List the registry.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
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
    /// The `/5m` recording, for the 5-minute volume features.
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
