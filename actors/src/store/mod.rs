//! Storage through sqlx on SQLite (the embedded default) or PostgreSQL.
//!
//! Migrations are embedded from `migrations/sqlite` and `migrations/postgres`.
//! Every write is batched and idempotent: a repeated row is not stored twice
//! (`INSERT OR IGNORE` / `ON CONFLICT DO NOTHING`), and the count of rows
//! actually stored is returned. Times are Unix seconds in the API of this
//! module; PostgreSQL stores them as `timestamptz`.

pub mod postgres;
pub mod predictions;
pub mod registry;
pub mod sqlite;

use gept_core::{
    BucketPrice, BucketStep, CollectorStatus, ItemMeta, LatestPrice, NewsItem, PlayerCount,
};
use sqlx::SqlitePool;
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
}

/// A pooled connection to the configured database.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(postgres::PgStore),
}

/// Tables a store test or an operator may count.
pub const TABLES: [&str; 12] = [
    "items",
    "prices_latest_1m",
    "price_data_5min",
    "prices_1h",
    "osrs_news",
    "player_counts",
    "predictions",
    "model_registry",
    "inference_status",
    "collector_status",
    "data_gaps",
    "_sqlx_migrations",
];

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

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => sqlx::migrate!("../migrations/sqlite").run(p).await?,
            Store::Postgres(p) => {
                sqlx::migrate!("../migrations/postgres")
                    .run(&p.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Whether the database answers a trivial query within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let q = async {
            match self {
                Store::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.is_ok(),
                Store::Postgres(p) => sqlx::query("SELECT 1").execute(&p.pool).await.is_ok(),
            }
        };
        tokio::time::timeout(timeout, q).await.unwrap_or(false)
    }

    /// Stores `/latest` observations; returns how many were new.
    pub async fn insert_latest(&self, rows: &[LatestPrice]) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::insert_latest(p, rows).await,
            Store::Postgres(p) => p.insert_latest(rows).await,
        }
    }

    /// Stores `/5m` or `/1h` bucket rows; returns how many were new.
    pub async fn insert_buckets(
        &self,
        step: BucketStep,
        rows: &[BucketPrice],
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::insert_buckets(p, step, rows).await,
            Store::Postgres(p) => p.insert_buckets(step, rows).await,
        }
    }

    /// Inserts or refreshes item metadata.
    pub async fn upsert_items(&self, items: &[ItemMeta], now: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::upsert_items(p, items, now).await,
            Store::Postgres(p) => p.upsert_items(items, now).await,
        }
    }

    /// Stores news items not seen before.
    pub async fn insert_news(&self, items: &[NewsItem], now: i64) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::insert_news(p, items, now).await,
            Store::Postgres(p) => p.insert_news(items, now).await,
        }
    }

    /// Stores player counts not seen before.
    pub async fn insert_player_counts(&self, rows: &[PlayerCount]) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::insert_player_counts(p, rows).await,
            Store::Postgres(p) => p.insert_player_counts(rows).await,
        }
    }

    /// All `/latest` rows with `from <= timestamp < to`, ordered by time then item.
    pub async fn load_latest(&self, from: i64, to: i64) -> Result<Vec<LatestPrice>, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::load_latest(p, from, to).await,
            Store::Postgres(p) => p.load_latest(from, to).await,
        }
    }

    /// All bucket rows of `step` with `from <= timestamp < to`, ordered by time then item.
    pub async fn load_buckets(
        &self,
        step: BucketStep,
        from: i64,
        to: i64,
    ) -> Result<Vec<BucketPrice>, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::load_buckets(p, step, from, to).await,
            Store::Postgres(p) => p.load_buckets(step, from, to).await,
        }
    }

    /// All items, by id.
    pub async fn load_items(&self) -> Result<Vec<ItemMeta>, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::load_items(p).await,
            Store::Postgres(p) => p.load_items().await,
        }
    }

    /// The distinct bucket starts stored for `step`, ascending.
    pub async fn bucket_times(&self, step: BucketStep) -> Result<Vec<i64>, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::bucket_times(p, step).await,
            Store::Postgres(p) => p.bucket_times(step).await,
        }
    }

    /// Rows in `table` (one of [`TABLES`]).
    pub async fn count(&self, table: &str) -> Result<i64, StoreError> {
        if !TABLES.contains(&table) {
            return Err(StoreError::Invalid(format!("unknown table {table}")));
        }
        let sql = format!("SELECT COUNT(*) FROM {table}");
        Ok(match self {
            Store::Sqlite(p) => sqlx::query_scalar(&sql).fetch_one(p).await?,
            Store::Postgres(p) => sqlx::query_scalar(&sql).fetch_one(&p.pool).await?,
        })
    }

    /// The newest `timestamp` in a time-series table (`prices_latest_1m`,
    /// `price_data_5min`, `prices_1h`), Unix seconds; `None` when empty.
    pub async fn newest_time(&self, table: &str) -> Result<Option<i64>, StoreError> {
        if !["prices_latest_1m", "price_data_5min", "prices_1h"].contains(&table) {
            return Err(StoreError::Invalid(format!(
                "{table} is not a time-series table"
            )));
        }
        Ok(match self {
            Store::Sqlite(p) => {
                sqlx::query_scalar(&format!("SELECT MAX(timestamp) FROM {table}"))
                    .fetch_one(p)
                    .await?
            }
            Store::Postgres(p) => {
                sqlx::query_scalar(&format!(
                    "SELECT EXTRACT(EPOCH FROM MAX(timestamp))::int8 FROM {table}"
                ))
                .fetch_one(&p.pool)
                .await?
            }
        })
    }

    /// Writes the whole status row of a collector.
    pub async fn put_collector_status(
        &self,
        s: &CollectorStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::put_collector_status(p, s, now).await,
            Store::Postgres(p) => p.put_collector_status(s, now).await,
        }
    }

    /// Every collector's status row, by name.
    pub async fn collector_statuses(&self) -> Result<Vec<CollectorStatus>, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::collector_statuses(p).await,
            Store::Postgres(p) => p.collector_statuses().await,
        }
    }

    /// Records a missed bucket of `feed` (once).
    pub async fn record_gap(&self, feed: &str, bucket: i64, now: i64) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::record_gap(p, feed, bucket, now).await,
            Store::Postgres(p) => p.record_gap(feed, bucket, now).await,
        }
    }

    /// Marks a recorded gap as back-filled.
    pub async fn fill_gap(&self, feed: &str, bucket: i64, now: i64) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::fill_gap(p, feed, bucket, now).await,
            Store::Postgres(p) => p.fill_gap(feed, bucket, now).await,
        }
    }

    /// Gaps of `feed` not yet back-filled, oldest first.
    pub async fn open_gaps(&self, feed: &str) -> Result<Vec<i64>, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::open_gaps(p, feed).await,
            Store::Postgres(p) => p.open_gaps(feed).await,
        }
    }

    /// Every gap ever recorded, as (feed, bucket, filled_at).
    pub async fn gaps(&self) -> Result<Vec<gept_core::DataGap>, StoreError> {
        match self {
            Store::Sqlite(p) => sqlite::gaps(p).await,
            Store::Postgres(p) => p.gaps().await,
        }
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(p) => p.close().await,
            Store::Postgres(p) => p.pool.close().await,
        }
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
