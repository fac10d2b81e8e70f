//! SQLite side of the store: WAL, one multi-row statement per chunk, one
//! transaction per batch.

use crate::predictions::TickPredictions;
use crate::retention::{Expired, Expiring};
use crate::rows::{self, InferenceStatus, ModelArtifact, ModelEntry, PredictionRow};
use crate::{chunks, StoreError};
use gept_core::{
    BucketPrice, BucketStep, CollectorStatus, DataGap, ItemId, ItemMeta, LatestPrice, NewsItem,
    PlayerCount,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, QueryBuilder, Row, Sqlite, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// The SQLite backend: a pool with WAL and the pragmas below.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub pool: SqlitePool,
    /// The newest tick this process stored (see [`crate::ticks`]).
    pub(crate) ticks: crate::ticks::TickCache,
}

/// Page cache per connection: 64 MiB (negative means KiB).
pub const CACHE_SIZE_PRAGMA: &str = "-65536";

/// SQLite's bound-parameter limit (since 3.32).
const MAX_PARAMS: usize = 32_766;

pub(super) async fn connect(url: &str, max_connections: u32) -> Result<SqliteStore, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Connect(e.to_string()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        // Inserts land on one leaf page per item (primary key item, time):
        // a page cache that holds that working set avoids a read and a
        // write syscall per row.
        .pragma("cache_size", CACHE_SIZE_PRAGMA)
        .pragma("temp_store", "memory")
        // Deleted pages can be given back (retention's incremental_vacuum);
        // takes effect on a new file, see `migrate` for older ones.
        .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental)
        // Checkpoint less often: a bigger WAL merges repeated writes of the
        // same leaf pages before they reach the database file.
        .pragma("wal_autocheckpoint", "16384")
        .foreign_keys(true)
        // Statements are not logged by the driver (a slow batch insert would
        // be one line of hundreds of KB): `Store` logs slow operations by name.
        .disable_statement_logging();
    let path = options.get_filename();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Connect(format!("{}: {e}", dir.display())))?;
    }
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map(|pool| SqliteStore {
            pool,
            ticks: Default::default(),
        })
        .map_err(|e| StoreError::Connect(e.to_string()))
}

impl SqliteStore {
    /// Stores `ticks` (time, keyframe) and `rows` in one transaction (see
    /// [`crate::ticks`]); a listed tick becomes a keyframe, never the reverse.
    pub(super) async fn insert_latest_ticks(
        &self,
        ticks: &[(i64, bool)],
        rows: &[LatestPrice],
    ) -> Result<u64, StoreError> {
        let pool = &self.pool;
        let mut tx = pool.begin().await?;
        for chunk in ticks.chunks(MAX_PARAMS / 2) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("INSERT INTO latest_ticks (timestamp, keyframe) ");
            qb.push_values(chunk, |mut b, (t, k)| {
                b.push_bind(*t).push_bind(*k as i64);
            });
            qb.push(" ON CONFLICT (timestamp) DO UPDATE SET keyframe = MAX(keyframe, excluded.keyframe)");
            qb.build().execute(&mut *tx).await?;
        }
        let mut stored = 0;
        for chunk in chunks(rows, 6, MAX_PARAMS) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO prices_latest_1m (item_id, timestamp, high, high_time, low, low_time) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.item_id as i64)
                    .push_bind(r.timestamp)
                    .push_bind(r.high)
                    .push_bind(r.high_time)
                    .push_bind(r.low)
                    .push_bind(r.low_time);
            });
            stored += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Stored ticks in `[from, to)` (time, keyframe), oldest first, at most
    /// `limit`.
    pub(super) async fn tick_times(
        &self,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<(i64, bool)>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT timestamp, keyframe FROM latest_ticks \
             WHERE timestamp >= ? AND timestamp < ? ORDER BY timestamp LIMIT ?",
        )
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(t, k)| (t, k != 0)).collect())
    }

    /// The newest keyframe at or before `t`.
    pub(super) async fn keyframe_at_or_before(&self, t: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(timestamp) FROM latest_ticks WHERE keyframe = 1 AND timestamp <= ?",
        )
        .bind(t)
        .fetch_one(&self.pool)
        .await?)
    }

    pub(super) async fn insert_buckets(
        &self,
        step: BucketStep,
        rows: &[BucketPrice],
    ) -> Result<u64, StoreError> {
        let pool = &self.pool;
        let mut tx = pool.begin().await?;
        let mut stored = 0;
        let head = format!(
            "INSERT OR IGNORE INTO {} (item_id, timestamp, avg_high_price, high_price_volume, avg_low_price, low_price_volume) ",
            step.table()
        );
        for chunk in chunks(rows, 6, MAX_PARAMS) {
            let mut qb = QueryBuilder::<Sqlite>::new(&head);
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.item_id as i64)
                    .push_bind(r.timestamp)
                    .push_bind(r.avg_high_price)
                    .push_bind(r.high_price_volume)
                    .push_bind(r.avg_low_price)
                    .push_bind(r.low_price_volume);
            });
            stored += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(stored)
    }

    pub(super) async fn upsert_items(
        &self,
        items: &[ItemMeta],
        now: i64,
    ) -> Result<u64, StoreError> {
        let pool = &self.pool;
        let mut tx = pool.begin().await?;
        let mut stored = 0;
        for chunk in chunks(items, 10, MAX_PARAMS) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO items (item_id, name, examine, members, lowalch, highalch, value, buy_limit, icon, updated_at) ",
            );
            qb.push_values(chunk, |mut b, m| {
                b.push_bind(m.item_id as i64)
                    .push_bind(&m.name)
                    .push_bind(&m.examine)
                    .push_bind(m.members)
                    .push_bind(m.lowalch)
                    .push_bind(m.highalch)
                    .push_bind(m.value)
                    .push_bind(m.buy_limit)
                    .push_bind(&m.icon)
                    .push_bind(now);
            });
            qb.push(
                " ON CONFLICT (item_id) DO UPDATE SET name = excluded.name, examine = excluded.examine, \
                 members = excluded.members, lowalch = excluded.lowalch, highalch = excluded.highalch, \
                 value = excluded.value, buy_limit = excluded.buy_limit, icon = excluded.icon, \
                 updated_at = excluded.updated_at",
            );
            stored += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(stored)
    }

    pub(super) async fn insert_news(
        &self,
        items: &[NewsItem],
        now: i64,
    ) -> Result<u64, StoreError> {
        let pool = &self.pool;
        let mut stored = 0;
        for n in items {
            stored += sqlx::query(
                "INSERT OR IGNORE INTO osrs_news (guid, title, link, published_at, category, fetched_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&n.guid)
            .bind(&n.title)
            .bind(&n.link)
            .bind(n.published_at)
            .bind(&n.category)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
        }
        Ok(stored)
    }

    pub(super) async fn insert_player_counts(
        &self,
        rows: &[PlayerCount],
    ) -> Result<u64, StoreError> {
        let pool = &self.pool;
        let mut stored = 0;
        for r in rows {
            stored += sqlx::query(
                "INSERT OR IGNORE INTO player_counts (timestamp, players) VALUES (?, ?)",
            )
            .bind(r.timestamp)
            .bind(r.players)
            .execute(pool)
            .await?
            .rows_affected();
        }
        Ok(stored)
    }

    /// The stored rows in `[from, to)` as they lie (changes and keyframes).
    pub(super) async fn latest_rows(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<LatestPrice>, StoreError> {
        let pool = &self.pool;
        let rows = sqlx::query(
            "SELECT item_id, timestamp, high, high_time, low, low_time FROM prices_latest_1m \
             WHERE timestamp >= ? AND timestamp < ? ORDER BY timestamp, item_id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LatestPrice {
                    item_id: r.try_get::<i64, _>(0)? as u32,
                    timestamp: r.try_get(1)?,
                    high: r.try_get(2)?,
                    high_time: r.try_get(3)?,
                    low: r.try_get(4)?,
                    low_time: r.try_get(5)?,
                })
            })
            .collect()
    }

    pub(super) async fn load_buckets(
        &self,
        step: BucketStep,
        from: i64,
        to: i64,
    ) -> Result<Vec<BucketPrice>, StoreError> {
        let pool = &self.pool;
        let sql = format!(
            "SELECT item_id, timestamp, avg_high_price, high_price_volume, avg_low_price, low_price_volume FROM {} \
             WHERE timestamp >= ? AND timestamp < ? ORDER BY timestamp, item_id",
            step.table()
        );
        let rows = sqlx::query(&sql)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(BucketPrice {
                    item_id: r.try_get::<i64, _>(0)? as u32,
                    timestamp: r.try_get(1)?,
                    avg_high_price: r.try_get(2)?,
                    high_price_volume: r.try_get(3)?,
                    avg_low_price: r.try_get(4)?,
                    low_price_volume: r.try_get(5)?,
                })
            })
            .collect()
    }

    pub(super) async fn load_items(&self) -> Result<Vec<ItemMeta>, StoreError> {
        let pool = &self.pool;
        let rows = sqlx::query(
            "SELECT item_id, name, examine, members, lowalch, highalch, value, buy_limit, icon FROM items ORDER BY item_id",
        )
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ItemMeta {
                    item_id: r.try_get::<i64, _>(0)? as u32,
                    name: r.try_get(1)?,
                    examine: r.try_get(2)?,
                    members: r.try_get(3)?,
                    lowalch: r.try_get(4)?,
                    highalch: r.try_get(5)?,
                    value: r.try_get(6)?,
                    buy_limit: r.try_get(7)?,
                    icon: r.try_get(8)?,
                })
            })
            .collect()
    }

    pub(super) async fn put_collector_status(
        &self,
        s: &CollectorStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        let pool = &self.pool;
        sqlx::query(
            "INSERT INTO collector_status (collector, last_success, last_error, last_error_at, consecutive_failures, \
             restarts, rows_written, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (collector) DO UPDATE SET last_success = excluded.last_success, last_error = excluded.last_error, \
             last_error_at = excluded.last_error_at, consecutive_failures = excluded.consecutive_failures, \
             restarts = excluded.restarts, rows_written = excluded.rows_written, updated_at = excluded.updated_at",
        )
        .bind(&s.collector)
        .bind(s.last_success)
        .bind(&s.last_error)
        .bind(s.last_error_at)
        .bind(s.consecutive_failures)
        .bind(s.restarts)
        .bind(s.rows_written)
        .bind(now)
        .execute(pool)
        .await?;
        Ok(())
    }

    pub(super) async fn collector_statuses(&self) -> Result<Vec<CollectorStatus>, StoreError> {
        let pool = &self.pool;
        let rows = sqlx::query(
            "SELECT collector, last_success, last_error, last_error_at, consecutive_failures, restarts, rows_written \
             FROM collector_status ORDER BY collector",
        )
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CollectorStatus {
                    collector: r.try_get(0)?,
                    last_success: r.try_get(1)?,
                    last_error: r.try_get(2)?,
                    last_error_at: r.try_get(3)?,
                    consecutive_failures: r.try_get(4)?,
                    restarts: r.try_get(5)?,
                    rows_written: r.try_get(6)?,
                })
            })
            .collect()
    }

    pub(super) async fn record_gap(
        &self,
        feed: &str,
        bucket: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let pool = &self.pool;
        sqlx::query("INSERT OR IGNORE INTO data_gaps (feed, bucket, detected_at) VALUES (?, ?, ?)")
            .bind(feed)
            .bind(bucket)
            .bind(now)
            .execute(pool)
            .await?;
        Ok(())
    }

    pub(super) async fn fill_gap(
        &self,
        feed: &str,
        bucket: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let pool = &self.pool;
        sqlx::query(
            "UPDATE data_gaps SET filled_at = ? WHERE feed = ? AND bucket = ? AND filled_at IS NULL",
        )
        .bind(now)
        .bind(feed)
        .bind(bucket)
        .execute(pool)
        .await?;
        Ok(())
    }

    pub(super) async fn open_gaps(&self, feed: &str) -> Result<Vec<i64>, StoreError> {
        let pool = &self.pool;
        Ok(sqlx::query_scalar(
            "SELECT bucket FROM data_gaps WHERE feed = ? AND filled_at IS NULL ORDER BY bucket",
        )
        .bind(feed)
        .fetch_all(pool)
        .await?)
    }

    pub(super) async fn gaps(&self) -> Result<Vec<DataGap>, StoreError> {
        let pool = &self.pool;
        let rows = sqlx::query(
            "SELECT feed, bucket, detected_at, filled_at FROM data_gaps ORDER BY feed, bucket",
        )
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DataGap {
                    feed: r.try_get(0)?,
                    bucket: r.try_get(1)?,
                    detected_at: r.try_get(2)?,
                    filled_at: r.try_get(3)?,
                })
            })
            .collect()
    }
}

/// `model_registry` columns in [`rows::EntryTuple`] order.
const REGISTRY_COLUMNS: &str = "version, state, path, sha256, mean_auc, metrics, created_at, activated_at, deprecated_at, archived_at";

impl SqliteStore {
    pub(super) async fn register_model(&self, e: &ModelEntry) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "INSERT INTO model_registry ({REGISTRY_COLUMNS}) VALUES (?, 'PENDING', ?, ?, ?, ?, ?, NULL, NULL, NULL)"
        ))
        .bind(&e.version)
        .bind(&e.path)
        .bind(&e.sha256)
        .bind(e.mean_auc)
        .bind(&e.metrics)
        .bind(e.created_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    pub(super) async fn models(&self) -> Result<Vec<ModelEntry>, StoreError> {
        sqlx::query_as::<_, rows::EntryTuple>(&format!(
            "SELECT {REGISTRY_COLUMNS} FROM model_registry ORDER BY created_at, version"
        ))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(rows::entry)
        .collect()
    }

    pub(super) async fn activate_model(&self, version: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE model_registry SET state = 'DEPRECATED', deprecated_at = ? WHERE state = 'ACTIVE'")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE model_registry SET state = 'ACTIVE', activated_at = ?, deprecated_at = NULL WHERE version = ?")
            .bind(now)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn put_model_artifact(
        &self,
        version: &str,
        a: &ModelArtifact,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO model_artifacts (version, meta, weights, sha256) VALUES (?, ?, ?, ?) \
             ON CONFLICT (version) DO UPDATE SET meta = excluded.meta, weights = excluded.weights, sha256 = excluded.sha256",
        )
        .bind(version)
        .bind(&a.meta)
        .bind(&a.weights)
        .bind(&a.sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn model_artifact(
        &self,
        version: &str,
    ) -> Result<Option<ModelArtifact>, StoreError> {
        Ok(sqlx::query_as::<_, (Vec<u8>, Vec<u8>, String)>(
            "SELECT meta, weights, sha256 FROM model_artifacts WHERE version = ?",
        )
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .map(|(meta, weights, sha256)| ModelArtifact {
            meta,
            weights,
            sha256,
        }))
    }

    pub(super) async fn put_backtest(
        &self,
        version: &str,
        created_at: i64,
        report: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO backtests (version, created_at, report) VALUES (?, ?, ?) \
             ON CONFLICT (version) DO UPDATE SET created_at = excluded.created_at, report = excluded.report",
        )
        .bind(version)
        .bind(created_at)
        .bind(report)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn backtest(
        &self,
        version: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        Ok(sqlx::query_as::<_, (i64, String)>(
            "SELECT created_at, report FROM backtests WHERE version = ?",
        )
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(super) async fn archive_model(&self, version: &str, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE model_registry SET state = 'ARCHIVED', archived_at = ? WHERE version = ? AND state <> 'ACTIVE'",
        )
        .bind(now)
        .bind(version)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub(super) async fn insert_prediction_ticks(
        &self,
        ticks: &[TickPredictions],
    ) -> Result<u64, StoreError> {
        let mut stored = 0;
        let mut tx = self.pool.begin().await?;
        for t in ticks {
            let n = sqlx::query(
                "INSERT OR IGNORE INTO predictions (tick_time, model_version, items, body) VALUES (?, ?, ?, ?)",
            )
            .bind(t.tick_time)
            .bind(&t.model_version)
            .bind(t.items)
            .bind(&t.body)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            stored += n * t.items as u64;
        }
        tx.commit().await?;
        Ok(stored)
    }

    pub(super) async fn prediction_tick(
        &self,
        tick_time: i64,
    ) -> Result<Option<TickPredictions>, StoreError> {
        Ok(sqlx::query_as::<_, (i64, String, i64, Vec<u8>)>(
            "SELECT tick_time, model_version, items, body FROM predictions WHERE tick_time = ?",
        )
        .bind(tick_time)
        .fetch_optional(&self.pool)
        .await?
        .map(rows::prediction_tick))
    }

    /// Ticks of the predictions stored one row per item (before
    /// `predictions_v1` was converted), oldest first; none when converted.
    pub(super) async fn legacy_prediction_ticks(&self) -> Result<Vec<i64>, StoreError> {
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'predictions_v1'",
        )
        .fetch_optional(&self.pool)
        .await?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query_scalar("SELECT DISTINCT tick_time FROM predictions_v1 ORDER BY tick_time")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub(super) async fn legacy_predictions_at(
        &self,
        tick_time: i64,
    ) -> Result<Vec<PredictionRow>, StoreError> {
        sqlx::query_as::<_, rows::PredictionTuple>(
            "SELECT item_id, tick_time, observed_at, model_version, probabilities FROM predictions_v1 \
             WHERE tick_time = ? ORDER BY item_id",
        )
        .bind(tick_time)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(rows::prediction)
        .collect()
    }

    pub(super) async fn drop_legacy_predictions(&self) -> Result<(), StoreError> {
        sqlx::query("DROP TABLE IF EXISTS predictions_v1")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn put_inference_status(
        &self,
        s: &InferenceStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO inference_status (tick_time, items, latency_ms, model_version, outcome, message, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.tick_time)
        .bind(s.items)
        .bind(s.latency_ms)
        .bind(&s.model_version)
        .bind(&s.outcome)
        .bind(&s.message)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn inference_statuses(&self) -> Result<Vec<InferenceStatus>, StoreError> {
        Ok(sqlx::query_as::<_, rows::StatusTuple>(
            "SELECT tick_time, items, latency_ms, model_version, outcome, message FROM inference_status ORDER BY tick_time",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(rows::inference_status)
        .collect())
    }

    /// One item's stored rows in `[from, to)` as they lie.
    pub(super) async fn item_latest_rows(
        &self,
        item: ItemId,
        from: i64,
        to: i64,
    ) -> Result<Vec<LatestPrice>, StoreError> {
        Ok(sqlx::query_as::<_, rows::ItemLatestTuple>(
            "SELECT timestamp, high, high_time, low, low_time FROM prices_latest_1m \
             WHERE item_id = ? AND timestamp >= ? AND timestamp < ? ORDER BY timestamp",
        )
        .bind(item as i64)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| rows::item_latest(item, r))
        .collect())
    }

    pub(super) async fn item_buckets(
        &self,
        step: BucketStep,
        item: ItemId,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<BucketPrice>, StoreError> {
        Ok(sqlx::query_as::<_, rows::ItemBucketTuple>(&format!(
            "SELECT timestamp, avg_high_price, high_price_volume, avg_low_price, low_price_volume FROM {} \
             WHERE item_id = ? AND timestamp >= ? AND timestamp < ? ORDER BY timestamp LIMIT ?",
            step.table()
        ))
        .bind(item as i64)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| rows::item_bucket(item, r))
        .collect())
    }

    pub(super) async fn count(&self, table: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn newest_time(&self, table: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar(&format!("SELECT MAX(timestamp) FROM {table}"))
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub(super) async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now = chrono::Utc::now().timestamp();
        let row: Option<String> = sqlx::query_scalar(
            "INSERT INTO service_lease (name, holder, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
               acquired_at = CASE WHEN service_lease.holder = excluded.holder \
                 THEN service_lease.acquired_at ELSE excluded.acquired_at END, \
               expires_at = excluded.expires_at \
             WHERE service_lease.holder = excluded.holder OR service_lease.expires_at < ?3 \
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now)
        .bind(now + ttl.as_secs().max(1) as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    pub(super) async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM service_lease WHERE name = ?1 AND holder = ?2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        // Retention gives space back with incremental_vacuum, which needs
        // auto_vacuum = INCREMENTAL (2). A file created before that setting
        // needs one VACUUM to take it (outside any transaction).
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&self.pool)
            .await?;
        if mode != 2 {
            let mut conn = self.pool.acquire().await?;
            sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                .execute(&mut *conn)
                .await?;
            sqlx::query("VACUUM").execute(&mut *conn).await?;
        }
        Ok(())
    }

    pub(super) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub(super) async fn close(&self) {
        self.pool.close().await
    }
}

impl SqliteStore {
    pub(super) async fn expire(
        &self,
        what: Expiring,
        before: i64,
        batch_rows: u64,
    ) -> Result<Expired, StoreError> {
        let (table, key) = (what.table(), what.key());
        let condition = match what {
            Expiring::FilledGaps => "filled_at IS NOT NULL AND filled_at < ?".to_string(),
            _ => format!("{} < ?", what.column()),
        };
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {condition} LIMIT ?)"
        );
        let mut expired = Expired::default();
        loop {
            // One short statement at a time: writers wait at most one batch.
            let n = sqlx::query(&sql)
                .bind(before)
                .bind(batch_rows.max(1) as i64)
                .execute(&self.pool)
                .await?
                .rows_affected();
            expired.rows += n;
            if n < batch_rows.max(1) {
                if what == Expiring::Latest {
                    sqlx::query("DELETE FROM latest_ticks WHERE timestamp < ?")
                        .bind(before)
                        .execute(&self.pool)
                        .await?;
                }
                return Ok(expired);
            }
            tokio::task::yield_now().await;
        }
    }

    pub(super) async fn prepare_partitions(&self, _now: i64) -> Result<(), StoreError> {
        Ok(())
    }

    pub(super) async fn reclaim_space(&self) -> Result<(), StoreError> {
        // Free pages go back to the file system (auto_vacuum = INCREMENTAL,
        // set by migration 0002); the WAL is folded in and truncated.
        sqlx::query("PRAGMA incremental_vacuum")
            .execute(&self.pool)
            .await?;
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        Ok(())
    }

    pub(super) async fn oldest_time(&self, what: Expiring) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT MIN({}) FROM {}",
            what.column(),
            what.table()
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    pub(super) async fn table_bytes(&self, table: &str) -> Result<i64, StoreError> {
        // The dbstat virtual table: the pages of the table and its indexes.
        let bytes: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = ?1 \
             OR name IN (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1)",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes.unwrap_or(0))
    }

    pub(super) async fn database_bytes(&self) -> Result<i64, StoreError> {
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&self.pool)
            .await?;
        let size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&self.pool)
            .await?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&self.pool)
            .await?;
        Ok((pages - free) * size)
    }
}

impl SqliteStore {
    /// `VACUUM INTO path`: a consistent, compact copy while writers go on.
    pub(super) async fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        let target = path
            .to_str()
            .ok_or_else(|| StoreError::Backup(format!("{} is not UTF-8", path.display())))?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces every row of every table with the backup's, in one
    /// transaction: the backup is attached and each table copied.
    pub(super) async fn restore_from(&self, path: &std::path::Path) -> Result<(), StoreError> {
        let source = path
            .to_str()
            .ok_or_else(|| StoreError::Backup(format!("{} is not UTF-8", path.display())))?;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("ATTACH DATABASE ? AS backup")
            .bind(source)
            .execute(&mut *conn)
            .await?;
        let result = async {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM backup.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(&mut *conn)
            .await?;
            if !tables.iter().any(|t| t == "_sqlx_migrations") {
                return Err(StoreError::Backup(format!(
                    "{} is not a GePT database backup",
                    path.display()
                )));
            }
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            sqlx::query("PRAGMA defer_foreign_keys = ON")
                .execute(&mut *conn)
                .await?;
            let copy = async {
                for t in &tables {
                    sqlx::query(&format!("DELETE FROM main.\"{t}\""))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(&format!(
                        "INSERT INTO main.\"{t}\" SELECT * FROM backup.\"{t}\""
                    ))
                    .execute(&mut *conn)
                    .await?;
                }
                Ok::<(), StoreError>(())
            }
            .await;
            match copy {
                Ok(()) => {
                    sqlx::query("COMMIT").execute(&mut *conn).await?;
                    Ok(())
                }
                Err(e) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    Err(e)
                }
            }
        }
        .await;
        let _ = sqlx::query("DETACH DATABASE backup")
            .execute(&mut *conn)
            .await;
        result
    }
}

impl SqliteStore {
    /// Hours before `before` holding more than one prediction tick, each with
    /// its first tick.
    pub(super) async fn prediction_hours(
        &self,
        before: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as::<_, (i64, i64)>(
            "SELECT tick_time / 3600 * 3600 AS hour, MIN(tick_time) FROM predictions \
             WHERE tick_time < ? GROUP BY hour HAVING COUNT(*) > 1 ORDER BY hour",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Nothing per day: freed pages go back in `reclaim_space`.
    pub(super) async fn compact_prediction_day(&self, _day: i64) -> Result<(), StoreError> {
        Ok(())
    }

    pub(super) async fn thin_prediction_hour(
        &self,
        hour: i64,
        first: i64,
        batch_rows: u64,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM predictions WHERE tick_time IN (SELECT tick_time FROM predictions \
                 WHERE tick_time >= ? AND tick_time < ? AND tick_time <> ? LIMIT ?)",
            )
            .bind(hour)
            .bind(hour + 3600)
            .bind(first)
            .bind(batch_rows.max(1) as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
            removed += n;
            if n < batch_rows.max(1) {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }
}
