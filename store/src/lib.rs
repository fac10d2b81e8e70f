//! GePT's store: the schema (embedded migrations), SQLite (the embedded
//! default) and PostgreSQL, behind one type.
//!
//! Every operation is a method of [`Store`], written once here with its
//! documentation, and dispatched to the backend's method of the same name and
//! signature ([`sqlite::SqliteStore`], [`postgres::PgStore`]); rows shared by
//! both backends and their mapping from a selected tuple live in [`rows`].
//! Every write is batched and idempotent: a repeated row is not stored twice
//! (`INSERT OR IGNORE` / `ON CONFLICT DO NOTHING`; PostgreSQL's `/latest`
//! rows go through `COPY` into a staging table and a plain `INSERT`, which
//! falls back to `ON CONFLICT DO NOTHING` only after meeting a duplicate),
//! and the count of rows actually stored is returned. Times are Unix
//! seconds in this API; PostgreSQL stores them as `timestamptz`. On
//! PostgreSQL the closed days of `/latest`, `/5m` and `/1h` are packed one
//! row per item and day by the retention pass ([`packed`]); the reads merge
//! them with the open rows, so what a read gives does not depend on it.
//!
//! This crate depends on `gept-core` only: no dataflow, actor or model code.

pub mod packed;
pub mod postgres;
mod predictions;
pub mod retention;
pub mod rows;
pub mod sqlite;
pub mod ticks;

pub use retention::{Expired, Expiring};
pub use rows::{
    decode_probabilities, encode_probabilities, InferenceStatus, ModelArtifact, ModelEntry,
    ModelState, PredictionRow,
};

use gept_core::{
    BucketPrice, BucketStep, CollectorStatus, DataGap, ItemId, ItemMeta, LatestPrice, NewsItem,
    PlayerCount,
};
use std::time::Duration;

/// Why a store operation failed. Shown to operators, never to HTTP clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("backup: {0}")]
    Backup(String),
}

/// A pooled connection to the configured database.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Tables a store test or an operator may count.
pub const TABLES: [&str; 15] = [
    "items",
    "prices_latest_1m",
    "latest_ticks",
    "price_data_5min",
    "prices_1h",
    "osrs_news",
    "player_counts",
    "predictions",
    "model_registry",
    "model_artifacts",
    "inference_status",
    "collector_status",
    "data_gaps",
    "service_lease",
    "_sqlx_migrations",
];

/// Tables keyed by `timestamp` that [`Store::newest_time`] reads.
/// (`latest_ticks` is where the newest `/latest` tick is read: the rows
/// table holds only changes.)
const TIME_SERIES: [&str; 4] = [
    "prices_latest_1m",
    "latest_ticks",
    "price_data_5min",
    "prices_1h",
];

/// An operation slower than this is logged (by name and duration, never
/// its SQL or rows).
pub const SLOW_OPERATION: Duration = Duration::from_secs(1);

/// Calls the backend method of the same name with the same arguments; logs
/// the call when it took [`SLOW_OPERATION`] or more.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let started = std::time::Instant::now();
        let out = match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        };
        let took = started.elapsed();
        if took >= SLOW_OPERATION {
            tracing::warn!(operation = stringify!($method), took_ms = took.as_millis() as u64, "slow store operation");
        }
        out
    }};
}

impl Store {
    /// Connects to `url` (`sqlite:...` or `postgres://...`) with a pool of
    /// `max_connections`. A SQLite file and its folder are created if missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            sqlite::connect(url, max_connections)
                .await
                .map(Store::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::connect(url, max_connections)
                .await
                .map(Store::Postgres)
        } else {
            Err(StoreError::Connect(format!(
                "unsupported database URL scheme in {:?}",
                gept_core::config::redact_url(url)
            )))
        }
    }

    /// Applies the embedded migrations of this backend, then converts any
    /// predictions still stored a row per item and tick (`predictions_v1`,
    /// left by the migration that made `predictions` a row per tick), tick
    /// by tick: an interrupted conversion resumes where it stopped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self.migrate())?;
        let ticks = dispatch!(self.legacy_prediction_ticks())?;
        if !ticks.is_empty() {
            tracing::info!(
                ticks = ticks.len(),
                "converting stored predictions to one row per tick"
            );
        }
        for t in ticks {
            let mut rows = dispatch!(self.legacy_predictions_at(t))?;
            // A tick is one model's; rows of another (never written by the
            // service) are left out, and said so.
            let version = rows[0].model_version.clone();
            let before = rows.len();
            rows.retain(|r| r.model_version == version);
            if rows.len() < before {
                tracing::warn!(
                    tick = t,
                    dropped = before - rows.len(),
                    "a tick's stored predictions came from two model versions; kept {version}'s"
                );
            }
            self.insert_predictions(&rows).await?;
        }
        dispatch!(self.drop_legacy_predictions())
    }

    /// Whether the database answers a trivial query within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async { dispatch!(self.ping()) })
            .await
            .unwrap_or(false)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        dispatch!(self.close())
    }

    // ---- the primary's lease (standby takeover) ----

    /// Takes or renews the lease `name` for `holder` until `ttl` from now (the
    /// database's clock); answers whether `holder` holds it. Another holder's
    /// lease is taken only once it has expired.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self.take_lease(name, holder, ttl))
    }

    /// Gives the lease up if `holder` holds it (a clean stop hands over at once).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        dispatch!(self.release_lease(name, holder))
    }

    // ---- collected prices and reference data ----

    /// Stores `/latest` observations, each tick (the rows of one
    /// `timestamp`) whole and once: only what changed since the tick before
    /// is written (see [`ticks`]); a tick already stored is ignored. Returns
    /// the observations of the ticks that were new (one per item and tick),
    /// as if every row had been written. Calls are serialised per store.
    pub async fn insert_latest(&self, rows: &[LatestPrice]) -> Result<u64, StoreError> {
        let mut by_time: std::collections::BTreeMap<i64, Vec<LatestPrice>> = Default::default();
        for r in rows {
            by_time.entry(r.timestamp).or_default().push(*r);
        }
        if by_time.is_empty() {
            return Ok(0);
        }
        let cache = match self {
            Store::Sqlite(s) => s.ticks.clone(),
            Store::Postgres(s) => s.ticks.clone(),
        };
        let mut known = cache.lock().await;
        // What this process stored is the predecessor only while it is the
        // store's newest tick (another writer may have stored since).
        let newest = dispatch!(self.newest_time("latest_ticks"))?;
        let mut prev = known.take().filter(|st| Some(st.time) == newest);
        let (mut listed, mut keep, mut late) = (Vec::new(), Vec::new(), Vec::new());
        let mut observed = 0u64;
        for (t, rows) in by_time {
            if newest.is_some_and(|n| t <= n) {
                late.push((t, rows));
                continue;
            }
            let (keyframe, stored, state) = ticks::plan(prev.as_ref(), t, &rows);
            listed.push((t, keyframe));
            keep.extend(stored);
            observed += state.rows.len() as u64;
            prev = Some(state);
        }
        if !listed.is_empty() {
            dispatch!(self.insert_latest_ticks(&listed, &keep))?;
        }
        *known = prev;
        drop(known);
        for (t, rows) in late {
            observed += self.insert_late_tick(t, &rows).await?;
        }
        Ok(observed)
    }

    /// A tick older than the newest stored one: ignored when stored already;
    /// else stored as a keyframe, after the stored tick that follows it is
    /// made a keyframe (so it is never read against this one).
    async fn insert_late_tick(&self, t: i64, rows: &[LatestPrice]) -> Result<u64, StoreError> {
        if !dispatch!(self.tick_times(t, t + 1, 1))?.is_empty() {
            return Ok(0);
        }
        if let Some(&(next, false)) = dispatch!(self.tick_times(t + 1, i64::MAX / 2, 1))?.first() {
            let whole = self.load_latest(next, next + 1).await?;
            dispatch!(self.insert_latest_ticks(&[(next, true)], &whole))?;
        }
        let (_, stored, state) = ticks::plan(None, t, rows);
        dispatch!(self.insert_latest_ticks(&[(t, true)], &stored))?;
        Ok(state.rows.len() as u64)
    }

    /// Stores `/5m` or `/1h` bucket rows; returns how many were new.
    pub async fn insert_buckets(
        &self,
        step: BucketStep,
        rows: &[BucketPrice],
    ) -> Result<u64, StoreError> {
        dispatch!(self.insert_buckets(step, rows))
    }

    /// Inserts or refreshes item metadata.
    pub async fn upsert_items(&self, items: &[ItemMeta], now: i64) -> Result<u64, StoreError> {
        dispatch!(self.upsert_items(items, now))
    }

    /// Stores news items not seen before.
    pub async fn insert_news(&self, items: &[NewsItem], now: i64) -> Result<u64, StoreError> {
        dispatch!(self.insert_news(items, now))
    }

    /// Stores player counts not seen before.
    pub async fn insert_player_counts(&self, rows: &[PlayerCount]) -> Result<u64, StoreError> {
        dispatch!(self.insert_player_counts(rows))
    }

    /// Every item's `/latest` row of every tick with `from <= timestamp <
    /// to`, ordered by time then item: the ticks as they were written,
    /// rebuilt from the newest keyframe at or before `from` (see [`ticks`]).
    pub async fn load_latest(&self, from: i64, to: i64) -> Result<Vec<LatestPrice>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let start = dispatch!(self.keyframe_at_or_before(from))?.unwrap_or(from);
        let listed = dispatch!(self.tick_times(start, to, i64::MAX))?;
        if listed.iter().all(|(t, _)| *t < from) {
            return Ok(Vec::new());
        }
        let rows = dispatch!(self.latest_rows(start, to))?;
        Ok(ticks::reconstruct(&listed, &rows, from))
    }

    /// All bucket rows of `step` with `from <= timestamp < to`, ordered by time then item.
    pub async fn load_buckets(
        &self,
        step: BucketStep,
        from: i64,
        to: i64,
    ) -> Result<Vec<BucketPrice>, StoreError> {
        dispatch!(self.load_buckets(step, from, to))
    }

    /// All items, by id.
    pub async fn load_items(&self) -> Result<Vec<ItemMeta>, StoreError> {
        dispatch!(self.load_items())
    }

    /// One item's `/latest` row at each of the first `limit` stored ticks
    /// with `from <= timestamp < to`, oldest first (rebuilt as
    /// [`Store::load_latest`] does); a tick without the item gives no row.
    pub async fn item_latest(
        &self,
        item: ItemId,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<LatestPrice>, StoreError> {
        if from >= to || limit <= 0 {
            return Ok(Vec::new());
        }
        let listed = dispatch!(self.tick_times(from, to, limit))?;
        let Some(&(last, _)) = listed.last() else {
            return Ok(Vec::new());
        };
        let start = dispatch!(self.keyframe_at_or_before(from))?.unwrap_or(from);
        let rows = dispatch!(self.item_latest_rows(item, start, last + 1))?;
        let split = rows.partition_point(|r| r.timestamp < from);
        let before = split.checked_sub(1).map(|i| rows[i]);
        Ok(ticks::reconstruct_item(&listed, before, &rows[split..]))
    }

    /// One item's `/5m` or `/1h` buckets with `from <= timestamp < to`,
    /// oldest first, at most `limit`.
    pub async fn item_buckets(
        &self,
        step: BucketStep,
        item: ItemId,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<BucketPrice>, StoreError> {
        dispatch!(self.item_buckets(step, item, from, to, limit))
    }

    /// Rows in `table` (one of [`TABLES`]).
    pub async fn count(&self, table: &str) -> Result<i64, StoreError> {
        if !TABLES.contains(&table) {
            return Err(StoreError::Invalid(format!("unknown table {table}")));
        }
        dispatch!(self.count(table))
    }

    /// The newest `timestamp` in a time-series table (`prices_latest_1m`,
    /// `price_data_5min`, `prices_1h`), Unix seconds; `None` when empty.
    pub async fn newest_time(&self, table: &str) -> Result<Option<i64>, StoreError> {
        if !TIME_SERIES.contains(&table) {
            return Err(StoreError::Invalid(format!(
                "{table} is not a time-series table"
            )));
        }
        let table = if table == "prices_latest_1m" {
            "latest_ticks"
        } else {
            table
        };
        dispatch!(self.newest_time(table))
    }

    // ---- collector bookkeeping ----

    /// Writes the whole status row of a collector.
    pub async fn put_collector_status(
        &self,
        s: &CollectorStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self.put_collector_status(s, now))
    }

    /// Every collector's status row, by name.
    pub async fn collector_statuses(&self) -> Result<Vec<CollectorStatus>, StoreError> {
        dispatch!(self.collector_statuses())
    }

    /// Records a missed bucket of `feed` (once).
    pub async fn record_gap(&self, feed: &str, bucket: i64, now: i64) -> Result<(), StoreError> {
        dispatch!(self.record_gap(feed, bucket, now))
    }

    /// Marks a recorded gap as back-filled.
    pub async fn fill_gap(&self, feed: &str, bucket: i64, now: i64) -> Result<(), StoreError> {
        dispatch!(self.fill_gap(feed, bucket, now))
    }

    /// Gaps of `feed` not yet back-filled, oldest first.
    pub async fn open_gaps(&self, feed: &str) -> Result<Vec<i64>, StoreError> {
        dispatch!(self.open_gaps(feed))
    }

    /// Every gap ever recorded, as (feed, bucket, filled_at).
    pub async fn gaps(&self) -> Result<Vec<DataGap>, StoreError> {
        dispatch!(self.gaps())
    }

    // ---- predictions and inference ----

    /// Stores predictions, one row per tick (`predictions.rs`): a tick's
    /// rows are stored whole and once, and rows of a tick already stored are
    /// ignored. A tick's rows must share a model version. Returns how many
    /// rows were new.
    pub async fn insert_predictions(&self, rows: &[PredictionRow]) -> Result<u64, StoreError> {
        let ticks = predictions::encode(rows)?;
        dispatch!(self.insert_prediction_ticks(&ticks))
    }

    /// The predictions stored for one tick, by item; their probabilities as
    /// stored (the published integers, [`gept_core::p_units`]).
    pub async fn predictions_at(&self, tick_time: i64) -> Result<Vec<PredictionRow>, StoreError> {
        match dispatch!(self.prediction_tick(tick_time))? {
            Some(t) => predictions::decode(&t),
            None => Ok(Vec::new()),
        }
    }

    /// Records what inference did at a tick (replacing an earlier row of it).
    pub async fn put_inference_status(
        &self,
        s: &InferenceStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self.put_inference_status(s, now))
    }

    /// Every inference status row, oldest tick first.
    pub async fn inference_statuses(&self) -> Result<Vec<InferenceStatus>, StoreError> {
        dispatch!(self.inference_statuses())
    }

    // ---- retention ----

    /// Removes the rows of `what` older than `before`. PostgreSQL drops each
    /// partition whose end is at or before `before` (whole partitions only:
    /// rows of a partly expired partition stay until all of it has expired)
    /// and deletes from the small unpartitioned tables; SQLite deletes in
    /// statements of at most `batch_rows` rows, so writers wait at most one.
    /// `/latest` ticks are cut only where no kept tick would lose the ticks
    /// it is read from (at an hour's start, always at `before`).
    pub async fn expire(
        &self,
        what: Expiring,
        before: i64,
        batch_rows: u64,
    ) -> Result<Expired, StoreError> {
        let before = match what {
            Expiring::Latest => self.tick_cut(before).await?,
            _ => before,
        };
        dispatch!(self.expire(what, before, batch_rows))
    }

    /// Where `/latest` ticks may be cut at or before `before`: `before` when
    /// the first tick at or after it is a keyframe (always so at an hour's
    /// start) or there is none; else the keyframe it is read from, so no
    /// kept tick loses its predecessors.
    async fn tick_cut(&self, before: i64) -> Result<i64, StoreError> {
        match dispatch!(self.tick_times(before, i64::MAX / 2, 1))?.first() {
            None | Some((_, true)) => Ok(before),
            Some((_, false)) => {
                Ok(dispatch!(self.keyframe_at_or_before(before))?.unwrap_or(i64::MIN / 2))
            }
        }
    }

    /// Keeps, of the predictions before `before`, only those of the first
    /// tick of each UTC hour; hours already thinned are skipped cheaply (one
    /// index lookup). Deletes in statements of at most `batch_rows` rows,
    /// then gives each thinned day's space back (PostgreSQL: `VACUUM FULL`
    /// of its partition, a past day no writer touches). Returns the rows
    /// removed.
    pub async fn thin_predictions(&self, before: i64, batch_rows: u64) -> Result<u64, StoreError> {
        let mut removed = 0;
        let mut days = std::collections::BTreeSet::new();
        for (hour, first) in dispatch!(self.prediction_hours(before))? {
            let n = dispatch!(self.thin_prediction_hour(hour, first, batch_rows))?;
            if n > 0 {
                days.insert(hour - hour.rem_euclid(86_400));
            }
            removed += n;
        }
        // Space back: PostgreSQL never reuses a past day's partition (new
        // rows go to today's), so its deleted rows' space stays until the
        // partition is rewritten; SQLite's comes back in `reclaim_space`.
        for day in days {
            dispatch!(self.compact_prediction_day(day))?;
        }
        Ok(removed)
    }

    /// Moves the `/latest`, `/5m` and `/1h` rows of every UTC day before the
    /// day of `before` into one row per item and day (PostgreSQL, see
    /// [`packed`]: its per-row overhead made those tables 2–3× SQLite's);
    /// reads give the same rows after as before. Returns the rows moved
    /// (always 0 on SQLite, whose rows are already narrow).
    pub async fn pack_closed(&self, before: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(s) => s.pack_closed(before).await,
        }
    }

    /// Creates the partitions of `now` and of the two periods after it
    /// (PostgreSQL; nothing to do on SQLite).
    pub async fn prepare_partitions(&self, now: i64) -> Result<(), StoreError> {
        dispatch!(self.prepare_partitions(now))
    }

    /// Gives the space of deleted rows back to the file system where the
    /// backend keeps it (SQLite's incremental vacuum).
    pub async fn reclaim_space(&self) -> Result<(), StoreError> {
        dispatch!(self.reclaim_space())
    }

    /// The oldest time in `what`'s time column; `None` when empty.
    pub async fn oldest_time(&self, what: Expiring) -> Result<Option<i64>, StoreError> {
        dispatch!(self.oldest_time(what))
    }

    /// Bytes `table` (one of [`TABLES`]) takes on disk with its indexes
    /// (PostgreSQL: all its partitions).
    pub async fn table_bytes(&self, table: &str) -> Result<i64, StoreError> {
        if !TABLES.contains(&table) {
            return Err(StoreError::Invalid(format!("unknown table {table}")));
        }
        dispatch!(self.table_bytes(table))
    }

    /// Bytes the database holds in use (SQLite: pages in use; PostgreSQL:
    /// `pg_database_size`).
    pub async fn database_bytes(&self) -> Result<i64, StoreError> {
        dispatch!(self.database_bytes())
    }

    /// Fills in `/5m` and `/1h` rows from the 1-minute ticks of trades in
    /// `[from, to)` (see [`retention::downsample`]) where the upstream's are
    /// missing: an upstream row is never replaced. Returns the rows added.
    pub async fn downsample_latest(&self, from: i64, to: i64) -> Result<u64, StoreError> {
        // A trade is seen by the ticks after it: minutes later, or longer
        // across a gap in collection.
        let ticks = self.load_latest(from, to + 3600).await?;
        let mut added = 0;
        for step in [BucketStep::FiveMinutes, BucketStep::OneHour] {
            let rows = retention::downsample(&ticks, step, from, to);
            added += self.insert_buckets(step, &rows).await?;
        }
        Ok(added)
    }

    // ---- backups ----

    /// Writes a consistent copy of the whole database to `path` (SQLite:
    /// `VACUUM INTO`, while writers go on; PostgreSQL: `pg_dump -Fc`). The
    /// copy is written under a temporary name beside `path` and renamed only
    /// once complete, so `path` is either a whole backup or absent.
    pub async fn backup_to(&self, path: &std::path::Path) -> Result<u64, StoreError> {
        let partial = path.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let written = async {
            dispatch!(self.backup_to(&partial))?;
            std::fs::rename(&partial, path)
                .map_err(|e| StoreError::Backup(format!("{}: {e}", path.display())))?;
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| StoreError::Backup(format!("{}: {e}", path.display())))
        }
        .await;
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written
    }

    /// Replaces the database's contents with a backup made by
    /// [`Store::backup_to`] on the same backend (stop the service first).
    pub async fn restore_from(&self, path: &std::path::Path) -> Result<(), StoreError> {
        if !path.is_file() {
            return Err(StoreError::Backup(format!(
                "no backup at {}",
                path.display()
            )));
        }
        dispatch!(self.restore_from(path))
    }

    /// The file extension of this backend's backups.
    pub fn backup_extension(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "db",
            Store::Postgres(_) => "dump",
        }
    }

    // ---- the model registry: PENDING → ACTIVE → DEPRECATED → ARCHIVED ----

    /// Registers a model as PENDING; an already registered version is an error.
    pub async fn register_model(&self, e: &ModelEntry) -> Result<(), StoreError> {
        match dispatch!(self.register_model(e)) {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(StoreError::Invalid(
                format!("model {} is already registered", e.version),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Every registered model, oldest first.
    pub async fn models(&self) -> Result<Vec<ModelEntry>, StoreError> {
        dispatch!(self.models())
    }

    /// The ACTIVE model, if any (a unique partial index allows at most one).
    pub async fn active_model(&self) -> Result<Option<ModelEntry>, StoreError> {
        Ok(self
            .models()
            .await?
            .into_iter()
            .find(|m| m.state == ModelState::Active))
    }

    /// Makes `version` the ACTIVE model and the previous ACTIVE one
    /// DEPRECATED, in one transaction. Only a PENDING or DEPRECATED model can
    /// be activated. This applies no quality gate: the model side does
    /// (`gept_model::registry::activate_gated`).
    pub async fn activate_model(&self, version: &str, now: i64) -> Result<(), StoreError> {
        let target = self
            .models()
            .await?
            .into_iter()
            .find(|m| m.version == version)
            .ok_or_else(|| StoreError::Invalid(format!("no model {version} in the registry")))?;
        match target.state {
            ModelState::Active => Ok(()),
            ModelState::Archived => Err(StoreError::Invalid(format!(
                "model {version} is archived and cannot be activated"
            ))),
            ModelState::Pending | ModelState::Deprecated => {
                dispatch!(self.activate_model(version, now))
            }
        }
    }

    /// Stores (or replaces) the files of the registered model `version`.
    pub async fn put_model_artifact(
        &self,
        version: &str,
        artifact: &ModelArtifact,
    ) -> Result<(), StoreError> {
        dispatch!(self.put_model_artifact(version, artifact))
    }

    /// The stored files of model `version`; `None` for a model registered
    /// before artifacts were stored (it loads from its `path`).
    pub async fn model_artifact(&self, version: &str) -> Result<Option<ModelArtifact>, StoreError> {
        dispatch!(self.model_artifact(version))
    }

    /// Stores `report` (JSON) as the newest backtest of registered model
    /// `version`, replacing an older one.
    pub async fn put_backtest(
        &self,
        version: &str,
        created_at: i64,
        report: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self.put_backtest(version, created_at, report))
    }

    /// The newest backtest of model `version`: (when, report JSON).
    pub async fn backtest(&self, version: &str) -> Result<Option<(i64, String)>, StoreError> {
        dispatch!(self.backtest(version))
    }

    /// Archives a model that is not ACTIVE.
    pub async fn archive_model(&self, version: &str, now: i64) -> Result<(), StoreError> {
        if dispatch!(self.archive_model(version, now))? == 0 {
            return Err(StoreError::Invalid(format!(
                "no archivable model {version} (unknown, or ACTIVE)"
            )));
        }
        Ok(())
    }
}

/// Splits `rows` into chunks that keep a statement under `max_params` binds.
pub(crate) fn chunks<T>(
    rows: &[T],
    columns: usize,
    max_params: usize,
) -> std::slice::Chunks<'_, T> {
    rows.chunks((max_params / columns).max(1))
}
