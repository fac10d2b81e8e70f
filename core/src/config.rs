//! Layered configuration: the embedded `config/default.toml`, then an optional
//! file, then `GEPT__SECTION__KEY` environment variables.
//!
//! Unknown keys are errors, every error names its key, and secrets never come
//! from a config file: a password in `database.url` or an `admin.token` written
//! into a file is refused.

use crate::duration::serde_text as dur;
use figment::providers::{Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "GEPT__";

/// The whole effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data: DataConfig,
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub upstream: UpstreamConfig,
    pub collectors: CollectorsConfig,
    pub supervisor: SupervisorConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    pub inference: InferenceConfig,
    pub retention: RetentionConfig,
    pub backup: BackupConfig,
    pub alerts: AlertsConfig,
    pub standby: StandbyConfig,
    pub service: ServiceConfig,
    pub accuracy: AccuracyConfig,
    pub trainer: TrainerConfig,
    pub discord: DiscordConfig,
}

/// The Discord bot over signed interactions (`POST /discord/interactions`).
/// Its public key, application id and bot token come from the environment
/// (`GEPT__DISCORD__PUBLIC_KEY`, `…__APPLICATION_ID`, `…__TOKEN`) or files
/// only; a config file naming them is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    pub public_key_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    pub application_id_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub token_file: String,
    /// The Discord REST API (`gept discord register-commands` posts there).
    pub api_base: String,
    /// A signed request whose timestamp is further from now is refused.
    #[serde(with = "dur")]
    pub max_clock_skew: Duration,
}

/// The trainer: the service trains, checks and replaces its own model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    pub enabled: bool,
    /// The first model is trained once the store holds this much `/latest`.
    #[serde(with = "dur")]
    pub bootstrap_after: Duration,
    /// A new model is trained this long (of stored tick time) after the
    /// last one's data ends.
    #[serde(with = "dur")]
    pub interval: Duration,
    /// Drift (the accuracy monitor) trains early, at most this often.
    #[serde(with = "dur")]
    pub drift_cooldown: Duration,
    /// Training reads the stored history of this span before the newest tick.
    #[serde(with = "dur")]
    pub window: Duration,
    /// Every `stride`-th tick of the window becomes rows.
    pub stride: usize,
    pub validation_fraction: f64,
    pub epochs: usize,
    /// Hidden layer widths.
    pub hidden: Vec<i64>,
    /// A training stops after the epoch that passes this many minutes.
    pub max_minutes: f64,
    /// A training child still running after this is killed.
    #[serde(with = "dur")]
    pub timeout: Duration,
    /// How often the conditions are checked.
    #[serde(with = "dur")]
    pub check_interval: Duration,
    /// Runs the training child under SCHED_IDLE (`chrt --idle 0`) when
    /// `chrt` is on the PATH; else (or when false) at `nice`.
    pub idle_priority: bool,
    /// The training child's CPU priority (`nice`), 0 to 19.
    pub nice: u8,
    /// A new model is refused when its mean AUC on rows neither model
    /// trained on is below the ACTIVE model's by more than this.
    pub max_auc_loss: f64,
    /// The program run as the training child; empty: this executable.
    pub program: String,
}
/// The live accuracy monitor: predictions scored against what then happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracyConfig {
    pub enabled: bool,
    /// One tick of predictions is scored per this much tick time (the first
    /// tick with predictions of each period): bounded memory.
    #[serde(with = "dur")]
    pub sample: Duration,
    /// The figures cover the labels that became known within this span.
    #[serde(with = "dur")]
    pub window: Duration,
    /// How often the figures are recomputed and published.
    #[serde(with = "dur")]
    pub interval: Duration,
    /// Drift: live Brier worse than the model's validation Brier by more.
    pub drift_brier_margin: f64,
    /// Drift: live ECE worse than the model's validation ECE by more.
    pub drift_ece_margin: f64,
    /// Labels a horizon group needs before drift is judged.
    pub min_labels: usize,
    /// Recalibrate the groups validation had no label for on matured live
    /// rows (a new model version, same weights) once they are enough.
    pub recalibrate: bool,
    /// Matured labels a group needs before it is recalibrated live.
    pub recalibrate_min_labels: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Empty for the embedded SQLite default.
    pub url: String,
    pub password_file: String,
    pub max_connections: u32,
    pub batch_rows: usize,
    #[serde(with = "dur")]
    pub flush_interval: Duration,
    /// Rows the store writer holds in memory while the database is away;
    /// past it they spill to the journal on local disk.
    pub buffer_max_rows: usize,
    /// Folder of the writer's journal; empty: `journal` in `data.dir`.
    pub journal_dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: String,
    /// `/readyz` answers 503 when the newest `/latest` tick is older.
    #[serde(with = "dur")]
    pub ready_max_feed_age: Duration,
    /// Recommendations are refused (503, "stale") when the newest tick
    /// arrived longer ago than this: no trades on old prices.
    #[serde(with = "dur")]
    pub stale_after: Duration,
    /// Per-client (IP address) token bucket: sustained requests per second.
    pub rate_limit_per_second: f64,
    /// Requests a client may make at once before the sustained rate applies.
    pub rate_limit_burst: f64,
    /// Clients (IP addresses) that get `trusted_rate_limit_per_second` instead.
    pub trusted_clients: Vec<String>,
    pub trusted_rate_limit_per_second: f64,
    /// Origins allowed by CORS; empty allows none.
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: u64,
    /// Largest accepted websocket message from a client, bytes.
    pub ws_max_message_bytes: usize,
    /// Stream messages queued per websocket client before it is `lagged`.
    pub ws_client_queue: usize,
    /// Websocket connections at once, in all.
    pub ws_max_clients: usize,
    /// Websocket connections at once from one client address.
    pub ws_max_clients_per_ip: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// HTTP connections open at once, in all.
    pub max_connections: usize,
    /// HTTP connections open at once from one peer address (a trusted proxy
    /// is not capped per address).
    pub max_connections_per_ip: usize,
    /// A request's headers must arrive within this.
    #[serde(with = "dur")]
    pub header_read_timeout: Duration,
    /// A connection with nothing read or written for this long is closed.
    #[serde(with = "dur")]
    pub idle_timeout: Duration,
    /// A write the client does not take within this closes the connection.
    #[serde(with = "dur")]
    pub write_timeout: Duration,
    /// Websocket clients are pinged this often (a client that answers stays
    /// open however quiet the feed).
    #[serde(with = "dur")]
    pub ws_ping_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// `auto` (CUDA when available), `cpu` or `cuda`.
    pub device: String,
    /// How often the registry is checked for a newly ACTIVE model.
    #[serde(with = "dur")]
    pub registry_poll: Duration,
    /// Ticks of predictions buffered for websocket clients.
    pub stream_buffer: usize,
    /// Folder the registry's model files are written to before loading;
    /// empty: `models` in `data.dir`.
    pub model_cache: String,
}

impl InferenceConfig {
    /// The torch device name: `cpu`, `cuda` or `auto`; anything else is an error.
    pub fn device_name(&self) -> Result<&str, String> {
        match self.device.as_str() {
            d @ ("auto" | "cpu" | "cuda") => Ok(d),
            other => Err(format!(
                "inference.device: {other:?} is not auto, cpu or cuda"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Whether the retention pass runs on its schedule (the admin route runs
    /// it on demand either way).
    pub enabled: bool,
    /// Time between two passes; each waits a further random share of `jitter`.
    #[serde(with = "dur")]
    pub interval: Duration,
    #[serde(with = "dur")]
    pub jitter: Duration,
    /// Rows per delete statement on SQLite, so collectors keep writing.
    pub batch_rows: u64,
    /// `/latest` observations older than this are deleted, after their
    /// `/5m` and `/1h` buckets are filled in where the upstream ones are missing.
    #[serde(with = "dur")]
    pub latest: Duration,
    /// `/5m` buckets older than this are deleted (0: kept forever).
    #[serde(with = "dur")]
    pub five_minute: Duration,
    /// `/1h` buckets older than this are deleted (0: kept forever).
    #[serde(with = "dur")]
    pub one_hour: Duration,
    /// Predictions are kept at every tick for this long (what the live
    /// accuracy of the longest horizon needs), then thinned to the first tick
    /// of each hour.
    #[serde(with = "dur")]
    pub predictions_full: Duration,
    /// PostgreSQL: a UTC day's `/latest`, `/5m` and `/1h` rows are packed
    /// into one row per item (`gept_store::packed`) once the day has been
    /// over this long (late `/5m` and `/1h` buckets arrive after it ends).
    #[serde(with = "dur")]
    pub pack_after: Duration,
    /// Predictions older than this are deleted (0: kept, thinned, forever).
    #[serde(with = "dur")]
    pub predictions: Duration,
    /// `inference_status` rows and filled `data_gaps` older than this are deleted.
    #[serde(with = "dur")]
    pub status: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub news_url: String,
    pub player_count_url: String,
    pub user_agent: String,
    #[serde(with = "dur")]
    pub timeout: Duration,
    #[serde(with = "dur")]
    pub connect_timeout: Duration,
    pub max_retries: u32,
    #[serde(with = "dur")]
    pub backoff_base: Duration,
    #[serde(with = "dur")]
    pub backoff_max: Duration,
    pub breaker_failures: u32,
    #[serde(with = "dur")]
    pub breaker_cooldown: Duration,
}

/// Schedule of one collector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    pub enabled: bool,
    #[serde(with = "dur")]
    pub interval: Duration,
    /// `/latest` only: a tick this long after the tick before it (a restart,
    /// a crash, an outage of the upstream) records the missed span in
    /// `data_gaps`; 0 (the default elsewhere) never does.
    #[serde(with = "dur", default)]
    pub gap_after: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorsConfig {
    pub latest: CollectorConfig,
    #[serde(rename = "5m")]
    pub five_minute: CollectorConfig,
    #[serde(rename = "1h")]
    pub one_hour: CollectorConfig,
    pub mapping: CollectorConfig,
    pub news: CollectorConfig,
    pub player_count: CollectorConfig,
    pub timeseries: CollectorConfig,
}

impl CollectorsConfig {
    /// Turns every collector off: for a service fed by its caller
    /// (`ServiceHandle::feed`), as the serving benchmark and tests do.
    pub fn disable_all(&mut self) {
        for c in [
            &mut self.latest,
            &mut self.five_minute,
            &mut self.one_hour,
            &mut self.mapping,
            &mut self.news,
            &mut self.player_count,
            &mut self.timeseries,
        ] {
            c.enabled = false;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    #[serde(with = "dur")]
    pub restart_min: Duration,
    #[serde(with = "dur")]
    pub restart_max: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Only ever from the environment (`GEPT__ADMIN__TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub token_file: String,
}

/// Who may scrape `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Only ever from the environment (`GEPT__METRICS__TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub token_file: String,
}

/// Scheduled backups of the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    pub enabled: bool,
    /// Time between two backups (the first one after this long).
    #[serde(with = "dur")]
    pub interval: Duration,
    /// Folder of the backups; empty: `backups` in `data.dir`.
    pub dir: String,
    /// Backups kept; older ones are deleted after each new one.
    pub keep: usize,
}

impl Config {
    /// The folder of the store writer's journal.
    pub fn journal_dir(&self) -> PathBuf {
        if self.database.journal_dir.is_empty() {
            self.data.dir.join("journal")
        } else {
            PathBuf::from(&self.database.journal_dir)
        }
    }

    /// The folder the registry's models are written to before loading.
    pub fn model_cache(&self) -> PathBuf {
        if self.inference.model_cache.is_empty() {
            self.data.dir.join("models")
        } else {
            PathBuf::from(&self.inference.model_cache)
        }
    }

    /// The folder backups go to.
    pub fn backup_dir(&self) -> PathBuf {
        if self.backup.dir.is_empty() {
            self.data.dir.join("backups")
        } else {
            PathBuf::from(&self.backup.dir)
        }
    }
}

/// Two or more `gept serve` on one PostgreSQL: one primary, the others
/// following and taking over when it dies or stalls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyConfig {
    /// Off: this process is the primary, always.
    pub enabled: bool,
    /// This node's name in the lease; empty: host name and process id.
    pub node: String,
    /// The lease lasts this long unless renewed: a dead or stalled primary
    /// is replaced within about `lease + renew`.
    #[serde(with = "dur")]
    pub lease: Duration,
    /// The primary renews the lease, and a follower tries to take it, this
    /// often.
    #[serde(with = "dur")]
    pub renew: Duration,
    /// A follower reads newly stored ticks and buckets this often.
    #[serde(with = "dur")]
    pub follow_interval: Duration,
}

/// Alerts the service sends itself, to a webhook (Discord-compatible JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Evaluates the conditions; posts only with a webhook URL.
    pub enabled: bool,
    /// Only ever from the environment (`GEPT__ALERTS__WEBHOOK_URL`): the
    /// URL holds the webhook's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// A file holding the webhook URL (instead of the environment).
    pub webhook_url_file: String,
    /// How often the conditions are evaluated.
    #[serde(with = "dur")]
    pub interval: Duration,
    /// How long a condition must hold before its alert fires.
    #[serde(with = "dur")]
    pub pending_for: Duration,
    /// A firing alert is posted again this often until it resolves.
    #[serde(with = "dur")]
    pub resend_interval: Duration,
    /// The disk holding the database (SQLite) or the backups is "filling"
    /// below this share of free space.
    pub disk_free_min: f64,
}

impl Config {
    /// The alerts webhook URL, from the environment or the file; `None`: no
    /// alert is posted (they still show in `/metrics` and the log).
    pub fn alerts_webhook(&self) -> Result<Option<String>, ConfigError> {
        if let Some(u) = self.alerts.webhook_url.as_ref().filter(|u| !u.is_empty()) {
            return Ok(Some(u.clone()));
        }
        if self.alerts.webhook_url_file.is_empty() {
            return Ok(None);
        }
        read_secret(Path::new(&self.alerts.webhook_url_file))
            .map(Some)
            .map_err(|e| ConfigError::one(format!("alerts.webhook_url_file: {e}")))
    }

    /// The SQLite database file, when the store is SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.database_url().ok()?;
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or(rest);
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }
}

/// The running service as a whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The longest a clean stop may take: polls in flight, the final flush,
    /// the feature and inference threads and the prediction writes.
    #[serde(with = "dur")]
    pub shutdown_timeout: Duration,
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem, each naming its key.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

impl Config {
    /// Loads the default, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut files = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::one(format!(
                    "--config: no such file {}",
                    path.display()
                )));
            }
            files = files.merge(Toml::file(path));
        }
        let mut problems = Vec::new();
        if let Ok(url) = files.extract_inner::<String>("database.url") {
            if url_password(&url).is_some() {
                problems.push(
                    "database.url: a password written into a config file is refused; \
                     set GEPT__DATABASE__URL in the environment or use database.password_file"
                        .to_string(),
                );
            }
        }
        if files.find_value("metrics.token").is_ok() {
            problems.push(
                "metrics.token: a token written into a config file is refused; \
                 set GEPT__METRICS__TOKEN in the environment or use metrics.token_file"
                    .to_string(),
            );
        }
        if files.find_value("admin.token").is_ok() {
            problems.push(
                "admin.token: a token written into a config file is refused; \
                 set GEPT__ADMIN__TOKEN in the environment or use admin.token_file"
                    .to_string(),
            );
        }
        for key in ["public_key", "application_id", "token"] {
            if files.find_value(&format!("discord.{key}")).is_ok() {
                problems.push(format!(
                    "discord.{key}: written into a config file is refused; set GEPT__DISCORD__{} \
                     in the environment or use discord.{key}_file",
                    key.to_uppercase()
                ));
            }
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let defaults: toml::Table = DEFAULT_TOML
            .parse()
            .expect("embedded default is valid TOML");
        let mut env_toml = toml::Table::new();
        for (key, value) in env {
            let path: Vec<String> = key[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            insert_env(&mut env_toml, Some(&defaults), &path, &value);
        }
        let figment = files.merge(Toml::string(&env_toml.to_string()));
        match figment.extract::<Config>() {
            Ok(config) => {
                if problems.is_empty() {
                    config.validate().map(|_| config).map_err(|mut p| {
                        problems.append(&mut p);
                        ConfigError { problems }
                    })
                } else {
                    Err(ConfigError { problems })
                }
            }
            Err(errors) => {
                for e in errors {
                    let key = e.path.join(".");
                    let key = if key.is_empty() {
                        "(top level)".to_string()
                    } else {
                        key
                    };
                    problems.push(format!("{key}: {}", e.kind));
                }
                Err(ConfigError { problems })
            }
        }
    }

    fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "api.listen: {:?} is not an address like 127.0.0.1:8000",
                self.api.listen
            ));
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections: must be at least 1".into());
        }
        if self.backup.keep == 0 {
            problems.push("backup.keep: must be at least 1".into());
        }
        if self.service.shutdown_timeout.is_zero() {
            problems.push("service.shutdown_timeout: must be above zero".into());
        }
        if self.database.batch_rows == 0 {
            problems.push("database.batch_rows: must be at least 1".into());
        }
        if self.standby.enabled
            && (self.standby.renew.is_zero()
                || self.standby.follow_interval.is_zero()
                || self.standby.renew * 2 > self.standby.lease)
        {
            problems.push("standby: renew and follow_interval must be above zero, and lease at least twice renew".into());
        }
        if self.trainer.enabled
            && (self.trainer.check_interval.is_zero()
                || self.trainer.stride == 0
                || self.trainer.epochs == 0
                || self.trainer.nice > 19
                || !(0.0..1.0).contains(&self.trainer.validation_fraction)
                || self.trainer.validation_fraction == 0.0)
        {
            problems.push("trainer: check_interval above zero, stride and epochs at least 1, nice 0 to 19, validation_fraction in (0, 1)".into());
        }
        if self.api.stale_after.is_zero() {
            problems.push("api.stale_after: must be above zero".into());
        }
        if self.accuracy.sample.is_zero()
            || self.accuracy.interval.is_zero()
            || self.accuracy.window.is_zero()
        {
            problems.push("accuracy: sample, window and interval must be above zero".into());
        }
        if self.alerts.interval.is_zero() {
            problems.push("alerts.interval: must be above zero".into());
        }
        if !(0.0..1.0).contains(&self.alerts.disk_free_min) {
            problems.push("alerts.disk_free_min: must be a share in [0, 1)".into());
        }
        if self.api.idle_timeout.is_zero()
            || self.api.write_timeout.is_zero()
            || self.api.header_read_timeout.is_zero()
            || self.api.ws_ping_interval.is_zero()
        {
            problems.push("api: header_read_timeout, idle_timeout, write_timeout and ws_ping_interval must be above zero".into());
        }
        if self.api.ws_ping_interval >= self.api.idle_timeout {
            problems.push("api.ws_ping_interval: must be shorter than api.idle_timeout, or quiet websocket clients are cut".into());
        }
        let u = &self.database.url;
        if !(u.is_empty()
            || u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
        {
            problems.push(format!(
                "database.url: {:?} is neither sqlite: nor postgres://",
                redact_url(u)
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The database URL to connect to, with the secret-file password merged in.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        let url = if self.database.url.is_empty() {
            let path = self.data.dir.join("gept.db");
            format!("sqlite://{}?mode=rwc", path.display())
        } else {
            self.database.url.clone()
        };
        if self.database.password_file.is_empty() {
            return Ok(url);
        }
        let password = read_secret(Path::new(&self.database.password_file))
            .map_err(|e| ConfigError::one(format!("database.password_file: {e}")))?;
        insert_password(&url, &password).ok_or_else(|| {
            ConfigError::one("database.password_file: the URL takes no password".into())
        })
    }

    /// The admin token from the environment or the token file; `None` turns
    /// admin endpoints off.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = self.admin.token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(t.clone()));
        }
        if self.admin.token_file.is_empty() {
            return Ok(None);
        }
        read_secret(Path::new(&self.admin.token_file))
            .map(Some)
            .map_err(|e| ConfigError::one(format!("admin.token_file: {e}")))
    }

    /// The bearer token `/metrics` asks for, from the environment or the
    /// token file; `None`: `/metrics` is open (bind `api.listen` to a private
    /// address then).
    pub fn metrics_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = self.metrics.token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(t.clone()));
        }
        if self.metrics.token_file.is_empty() {
            return Ok(None);
        }
        read_secret(Path::new(&self.metrics.token_file))
            .map(Some)
            .map_err(|e| ConfigError::one(format!("metrics.token_file: {e}")))
    }

    /// A Discord setting from the environment or its file; `None` when
    /// neither is set.
    fn discord_value(
        value: &Option<String>,
        file: &str,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            return Ok(Some(v.trim().to_string()));
        }
        if file.is_empty() {
            return Ok(None);
        }
        read_secret(Path::new(file))
            .map(Some)
            .map_err(|e| ConfigError::one(format!("discord.{key}_file: {e}")))
    }

    /// The application's Ed25519 public key (hex); `None`: the interactions
    /// endpoint is off.
    pub fn discord_public_key(&self) -> Result<Option<String>, ConfigError> {
        Self::discord_value(
            &self.discord.public_key,
            &self.discord.public_key_file,
            "public_key",
        )
    }

    pub fn discord_application_id(&self) -> Result<Option<String>, ConfigError> {
        Self::discord_value(
            &self.discord.application_id,
            &self.discord.application_id_file,
            "application_id",
        )
    }

    pub fn discord_token(&self) -> Result<Option<String>, ConfigError> {
        Self::discord_value(&self.discord.token, &self.discord.token_file, "token")
    }

    /// The configuration as TOML with every secret replaced by `***`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = redact_url(&shown.database.url);
        if shown.admin.token.is_some() {
            shown.admin.token = Some("***".into());
        }
        if shown.discord.token.is_some() {
            shown.discord.token = Some("***".into());
        }
        if shown.metrics.token.is_some() {
            shown.metrics.token = Some("***".into());
        }
        if shown.alerts.webhook_url.is_some() {
            shown.alerts.webhook_url = Some("***".into());
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }
}

/// Inserts an environment value at `path`. A value is typed (boolean,
/// integer, float) only where the default configuration holds such a type;
/// anywhere else, a token or a password of digits stays a string.
fn insert_env(
    table: &mut toml::Table,
    defaults: Option<&toml::Table>,
    path: &[String],
    value: &str,
) {
    let default = defaults.and_then(|d| d.get(&path[0]));
    if path.len() == 1 {
        let v = match default {
            Some(toml::Value::Boolean(_)) => value.parse().map(toml::Value::Boolean).ok(),
            Some(toml::Value::Integer(_)) => value.parse().map(toml::Value::Integer).ok(),
            Some(toml::Value::Float(_)) => value.parse().map(toml::Value::Float).ok(),
            // Lists from the environment are comma separated.
            Some(toml::Value::Array(_)) => Some(toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            )),
            _ => None,
        }
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
        table.insert(path[0].clone(), v);
        return;
    }
    let entry = table
        .entry(path[0].clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        let sub = match default {
            Some(toml::Value::Table(d)) => Some(d),
            _ => None,
        };
        insert_env(t, sub, &path[1..], value);
    }
}

fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(line)
}

/// The password of a `scheme://user:password@host/...` URL, if any.
pub fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

/// The URL with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url_password(url) {
        Some(p) => url.replacen(&format!(":{p}@"), ":***@", 1),
        None => url.to_string(),
    }
}

fn insert_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (userinfo, host) = rest.split_once('@')?;
    let user = userinfo.split(':').next()?;
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Some(format!("{scheme}://{user}:{encoded}@{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_loads_with_documented_values() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.api.listen, "127.0.0.1:8000");
        assert_eq!(c.collectors.latest.interval, Duration::from_secs(60));
        assert_eq!(c.database_url().unwrap(), "sqlite://data/gept.db?mode=rwc");
        assert_eq!(c.admin_token().unwrap(), None);
        assert_eq!(
            c.metrics_token().unwrap(),
            None,
            "/metrics is open by default"
        );
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("GEPT__API__LISTEN", "0.0.0.0:9000"),
                ("GEPT__COLLECTORS__LATEST__INTERVAL", "5s"),
                ("GEPT__COLLECTORS__5M__ENABLED", "false"),
                ("GEPT__DATABASE__URL", "postgres://u:pw@h/db"),
                ("GEPT__ADMIN__TOKEN", "12345"),
                ("GEPT__METRICS__TOKEN", "67890"),
                ("GEPT_TEST_DATABASE_URL", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.api.listen, "0.0.0.0:9000");
        assert_eq!(c.collectors.latest.interval, Duration::from_secs(5));
        assert!(!c.collectors.five_minute.enabled);
        assert_eq!(
            c.admin_token().unwrap().as_deref(),
            Some("12345"),
            "a token of digits stays a string"
        );
        assert_eq!(c.metrics_token().unwrap().as_deref(), Some("67890"));
        let shown = c.redacted_toml();
        assert!(
            !shown.contains("pw") && !shown.contains("12345") && !shown.contains("67890"),
            "{shown}"
        );
        assert!(shown.contains("postgres://u:***@h/db"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = Config::load_with_env(
            None,
            env(&[("GEPT__API__LISTNE", "x"), ("GEPT__BOGUS__KEY", "1")]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("listne"), "{text}");
        let err =
            Config::load_with_env(None, env(&[("GEPT__COLLECTORS__LATEST__INTERVAL", "soon")]))
                .unwrap_err();
        assert!(
            err.to_string().contains("collectors.latest.interval"),
            "{err}"
        );
    }

    #[test]
    fn passwords_in_config_files_are_refused() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[database]\nurl = \"postgres://gept:hunter2@db/gept\"\n[admin]\ntoken = \"t\""
        )
        .unwrap();
        let err = Config::load_with_env(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].starts_with("database.url"));
        assert!(err.problems[1].starts_with("admin.token"));
        // A passwordless URL in a file is fine (trust or peer authentication).
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[database]\nurl = \"postgres://postgres@127.0.0.1/test\""
        )
        .unwrap();
        Config::load_with_env(Some(f.path()), env(&[])).unwrap();
    }

    #[test]
    fn password_file_is_merged_encoded() {
        let mut pw = tempfile::NamedTempFile::new().unwrap();
        writeln!(pw, "p@ss word").unwrap();
        let c = Config::load_with_env(
            None,
            env(&[
                ("GEPT__DATABASE__URL", "postgres://gept@db:5432/gept"),
                ("GEPT__DATABASE__PASSWORD_FILE", pw.path().to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.database_url().unwrap(),
            "postgres://gept:p%40ss%20word@db:5432/gept"
        );
    }
}
