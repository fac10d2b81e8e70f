//! Predictions (compact: 108 little-endian f32 per item and tick), the
//! `inference_status` row of every tick, item history for the API, and
//! retention, on either backend.

use super::{Store, StoreError};
use gept_core::{BucketPrice, BucketStep, ItemId, LatestPrice, N_TARGETS};

/// One item's probabilities at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    pub item_id: ItemId,
    pub tick_time: i64,
    pub observed_at: i64,
    pub model_version: String,
    pub probabilities: Vec<f32>,
}

/// What inference did at one tick.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InferenceStatus {
    pub tick_time: i64,
    pub items: i64,
    pub latency_ms: f64,
    pub model_version: Option<String>,
    /// `ok`, `no_model` or `error`.
    pub outcome: String,
    pub message: Option<String>,
}

/// Probabilities as stored: 108 little-endian f32.
pub fn encode_probabilities(p: &[f32]) -> Vec<u8> {
    p.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn decode_probabilities(b: &[u8]) -> Result<Vec<f32>, StoreError> {
    if b.len() != N_TARGETS * 4 {
        return Err(StoreError::Invalid(format!(
            "a stored prediction has {} bytes, not {}",
            b.len(),
            N_TARGETS * 4
        )));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Rows per statement.
const CHUNK: usize = 2_000;

impl Store {
    /// Stores predictions (idempotent per item and tick); returns how many were new.
    pub async fn insert_predictions(&self, rows: &[PredictionRow]) -> Result<u64, StoreError> {
        let mut stored = 0;
        match self {
            Store::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for chunk in rows.chunks(CHUNK / 5) {
                    let mut q = sqlx::QueryBuilder::new(
                        "INSERT OR IGNORE INTO predictions (item_id, tick_time, observed_at, model_version, probabilities) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(r.item_id as i64)
                            .push_bind(r.tick_time)
                            .push_bind(r.observed_at)
                            .push_bind(&r.model_version)
                            .push_bind(encode_probabilities(&r.probabilities));
                    });
                    stored += q.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            }
            Store::Postgres(p) => {
                p.ensure_partitions("predictions", rows.iter().map(|r| r.tick_time))
                    .await?;
                let mut tx = p.pool.begin().await?;
                for chunk in rows.chunks(CHUNK) {
                    stored += sqlx::query(
                        "INSERT INTO predictions (item_id, tick_time, observed_at, model_version, probabilities) \
                         SELECT u.item_id, to_timestamp(u.tick), to_timestamp(u.obs), u.version, u.p \
                         FROM UNNEST($1::int4[], $2::int8[], $3::int8[], $4::text[], $5::bytea[]) \
                         AS u(item_id, tick, obs, version, p) ON CONFLICT DO NOTHING",
                    )
                    .bind(chunk.iter().map(|r| r.item_id as i32).collect::<Vec<_>>())
                    .bind(chunk.iter().map(|r| r.tick_time).collect::<Vec<_>>())
                    .bind(chunk.iter().map(|r| r.observed_at).collect::<Vec<_>>())
                    .bind(chunk.iter().map(|r| r.model_version.clone()).collect::<Vec<_>>())
                    .bind(
                        chunk
                            .iter()
                            .map(|r| encode_probabilities(&r.probabilities))
                            .collect::<Vec<_>>(),
                    )
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
            }
        }
        Ok(stored)
    }

    /// The predictions stored for one tick, by item.
    pub async fn predictions_at(&self, tick_time: i64) -> Result<Vec<PredictionRow>, StoreError> {
        let rows: Vec<(i64, i64, i64, String, Vec<u8>)> = match self {
            Store::Sqlite(p) => sqlx::query_as(
                "SELECT item_id, tick_time, observed_at, model_version, probabilities FROM predictions \
                 WHERE tick_time = ? ORDER BY item_id",
            )
            .bind(tick_time)
            .fetch_all(p)
            .await?,
            Store::Postgres(p) => sqlx::query_as(
                "SELECT item_id::int8, EXTRACT(EPOCH FROM tick_time)::int8, EXTRACT(EPOCH FROM observed_at)::int8, \
                 model_version, probabilities FROM predictions WHERE tick_time = to_timestamp($1) ORDER BY item_id",
            )
            .bind(tick_time)
            .fetch_all(&p.pool)
            .await?,
        };
        rows.into_iter()
            .map(|(item, tick, obs, version, p)| {
                Ok(PredictionRow {
                    item_id: item as ItemId,
                    tick_time: tick,
                    observed_at: obs,
                    model_version: version,
                    probabilities: decode_probabilities(&p)?,
                })
            })
            .collect()
    }

    /// Records what inference did at a tick (replacing an earlier row of it).
    pub async fn put_inference_status(
        &self,
        s: &InferenceStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(p) => {
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
                .execute(p)
                .await?;
            }
            Store::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO inference_status (tick_time, items, latency_ms, model_version, outcome, message, created_at) \
                     VALUES (to_timestamp($1), $2, $3, $4, $5, $6, to_timestamp($7)) ON CONFLICT (tick_time) DO UPDATE SET \
                     items = excluded.items, latency_ms = excluded.latency_ms, model_version = excluded.model_version, \
                     outcome = excluded.outcome, message = excluded.message, created_at = excluded.created_at",
                )
                .bind(s.tick_time)
                .bind(s.items as i32)
                .bind(s.latency_ms)
                .bind(&s.model_version)
                .bind(&s.outcome)
                .bind(&s.message)
                .bind(now)
                .execute(&p.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Every inference status row, oldest tick first.
    pub async fn inference_statuses(&self) -> Result<Vec<InferenceStatus>, StoreError> {
        type Row = (i64, i64, f64, Option<String>, String, Option<String>);
        let rows: Vec<Row> = match self {
            Store::Sqlite(p) => sqlx::query_as(
                "SELECT tick_time, items, latency_ms, model_version, outcome, message FROM inference_status ORDER BY tick_time",
            )
            .fetch_all(p)
            .await?,
            Store::Postgres(p) => sqlx::query_as(
                "SELECT EXTRACT(EPOCH FROM tick_time)::int8, items::int8, latency_ms, model_version, outcome, message \
                 FROM inference_status ORDER BY tick_time",
            )
            .fetch_all(&p.pool)
            .await?,
        };
        Ok(rows
            .into_iter()
            .map(
                |(tick_time, items, latency_ms, model_version, outcome, message)| InferenceStatus {
                    tick_time,
                    items,
                    latency_ms,
                    model_version,
                    outcome,
                    message,
                },
            )
            .collect())
    }

    /// One item's `/latest` observations with `from <= timestamp < to`, oldest
    /// first, at most `limit`.
    pub async fn item_latest(
        &self,
        item: ItemId,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<LatestPrice>, StoreError> {
        type Row = (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
        let rows: Vec<Row> = match self {
            Store::Sqlite(p) => sqlx::query_as(
                "SELECT timestamp, high, high_time, low, low_time FROM prices_latest_1m \
                 WHERE item_id = ? AND timestamp >= ? AND timestamp < ? ORDER BY timestamp LIMIT ?",
            )
            .bind(item as i64)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(p)
            .await?,
            Store::Postgres(p) => sqlx::query_as(
                "SELECT EXTRACT(EPOCH FROM timestamp)::int8, high::int8, EXTRACT(EPOCH FROM high_time)::int8, low::int8, \
                 EXTRACT(EPOCH FROM low_time)::int8 FROM prices_latest_1m \
                 WHERE item_id = $1 AND timestamp >= to_timestamp($2) AND timestamp < to_timestamp($3) ORDER BY timestamp LIMIT $4",
            )
            .bind(item as i32)
            .bind(super::postgres::bound(from))
            .bind(super::postgres::bound(to))
            .bind(limit)
            .fetch_all(&p.pool)
            .await?,
        };
        Ok(rows
            .into_iter()
            .map(|(timestamp, high, high_time, low, low_time)| LatestPrice {
                item_id: item,
                timestamp,
                high,
                high_time,
                low,
                low_time,
            })
            .collect())
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
        type Row = (i64, Option<i64>, i64, Option<i64>, i64);
        let table = step.table();
        let rows: Vec<Row> = match self {
            Store::Sqlite(p) => sqlx::query_as(&format!(
                "SELECT timestamp, avg_high_price, high_price_volume, avg_low_price, low_price_volume FROM {table} \
                 WHERE item_id = ? AND timestamp >= ? AND timestamp < ? ORDER BY timestamp LIMIT ?"
            ))
            .bind(item as i64)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(p)
            .await?,
            Store::Postgres(p) => sqlx::query_as(&format!(
                "SELECT EXTRACT(EPOCH FROM timestamp)::int8, avg_high_price::int8, high_price_volume::int8, \
                 avg_low_price::int8, low_price_volume::int8 FROM {table} \
                 WHERE item_id = $1 AND timestamp >= to_timestamp($2) AND timestamp < to_timestamp($3) ORDER BY timestamp LIMIT $4"
            ))
            .bind(item as i32)
            .bind(super::postgres::bound(from))
            .bind(super::postgres::bound(to))
            .bind(limit)
            .fetch_all(&p.pool)
            .await?,
        };
        Ok(rows
            .into_iter()
            .map(|(timestamp, ah, hv, al, lv)| BucketPrice {
                item_id: item,
                timestamp,
                avg_high_price: ah,
                high_price_volume: hv,
                avg_low_price: al,
                low_price_volume: lv,
            })
            .collect())
    }

    /// Deletes `/latest` observations older than `latest_before` and
    /// predictions and inference rows older than `predictions_before`;
    /// returns the rows deleted per table.
    pub async fn apply_retention(
        &self,
        latest_before: i64,
        predictions_before: i64,
    ) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let plan = [
            ("prices_latest_1m", "timestamp", latest_before),
            ("predictions", "tick_time", predictions_before),
            ("inference_status", "tick_time", predictions_before),
        ];
        let mut out = Vec::new();
        for (table, column, before) in plan {
            let n = match self {
                Store::Sqlite(p) => sqlx::query(&format!("DELETE FROM {table} WHERE {column} < ?"))
                    .bind(before)
                    .execute(p)
                    .await?
                    .rows_affected(),
                Store::Postgres(p) => sqlx::query(&format!(
                    "DELETE FROM {table} WHERE {column} < to_timestamp($1)"
                ))
                .bind(super::postgres::bound(before))
                .execute(&p.pool)
                .await?
                .rows_affected(),
            };
            out.push((table, n));
        }
        Ok(out)
    }
}
