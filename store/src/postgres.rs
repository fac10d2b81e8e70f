//! PostgreSQL side of the store: array-parameter bulk inserts (`UNNEST`) with
//! `ON CONFLICT DO NOTHING`, and time partitions created before their first row.

use crate::packed::{self, day_of, packed_table, Packable};
use crate::predictions::TickPredictions;
use crate::retention::{Expired, Expiring};
use crate::rows::{self, InferenceStatus, ModelArtifact, ModelEntry, PredictionRow};
use crate::{chunks, StoreError};
use chrono::{Datelike, TimeZone, Utc};
use gept_core::{
    BucketPrice, BucketStep, CollectorStatus, DataGap, ItemId, ItemMeta, LatestPrice, NewsItem,
    PlayerCount,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, PgPool, Row};
use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Rows per `UNNEST` statement.
const CHUNK_ROWS: usize = 50_000;

/// A PostgreSQL pool and the partitions known to exist.
#[derive(Clone, Debug)]
pub struct PgStore {
    pub pool: PgPool,
    /// The newest tick this process stored (see [`crate::ticks`]).
    pub(crate) ticks: crate::ticks::TickCache,
    partitions: Arc<Mutex<HashSet<String>>>,
    /// The connection URL, for `pg_dump` and `pg_restore` (never logged).
    url: Arc<str>,
}

/// How a time-series table is partitioned.
#[derive(Clone, Copy)]
enum Span {
    Day,
    Month,
}

fn span_of(table: &str) -> Span {
    match table {
        "prices_latest_1m" | "prices_latest_1m_packed" | "predictions" => Span::Day,
        _ => Span::Month,
    }
}

/// The partition holding `ts`: (name suffix, start, end) in Unix seconds.
fn partition_of(span: Span, ts: i64) -> (String, i64, i64) {
    let t = Utc.timestamp_opt(ts, 0).single().unwrap_or_default();
    match span {
        Span::Day => {
            let start = ts - ts.rem_euclid(86_400);
            (t.format("%Y%m%d").to_string(), start, start + 86_400)
        }
        Span::Month => {
            let start = Utc
                .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                .unwrap();
            let (y, m) = if t.month() == 12 {
                (t.year() + 1, 1)
            } else {
                (t.year(), t.month() + 1)
            };
            let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap();
            (
                t.format("%Y%m").to_string(),
                start.timestamp(),
                end.timestamp(),
            )
        }
    }
}

fn literal(ts: i64) -> String {
    Utc.timestamp_opt(ts, 0)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S+00")
        .to_string()
}

pub(super) async fn connect(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
    // Statements are not logged by the driver (a slow batch insert would be
    // one line of hundreds of KB): `Store` logs slow operations by name.
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Connect(e.to_string()))?
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Connect(e.to_string()))?;
    Ok(PgStore {
        pool,
        ticks: Default::default(),
        partitions: Arc::default(),
        url: Arc::from(url),
    })
}

/// Clamps a query bound to the range `to_timestamp` accepts (years 1970..=9999).
fn bound(t: i64) -> i64 {
    t.clamp(0, 253_402_300_799)
}

/// Bytes of `COPY` text sent at a time.
const COPY_BUFFER: usize = 1 << 20;

/// One `/latest` row as a line of `COPY … FROM STDIN` text (tab-separated,
/// `\N` for null), in `stage_latest`'s column order.
fn copy_line(buf: &mut Vec<u8>, r: &LatestPrice) {
    use std::io::Write;
    fn field(buf: &mut Vec<u8>, v: Option<i64>) {
        match v {
            Some(v) => {
                let _ = write!(buf, "{v}");
            }
            None => buf.extend_from_slice(b"\\N"),
        }
    }
    let _ = write!(buf, "{}\t{}\t", r.item_id, r.timestamp);
    field(buf, i32_opt(r.high).map(i64::from));
    buf.push(b'\t');
    field(buf, r.high_time);
    buf.push(b'\t');
    field(buf, i32_opt(r.low).map(i64::from));
    buf.push(b'\t');
    field(buf, r.low_time);
    buf.push(b'\n');
}

fn i32_opt(v: Option<i64>) -> Option<i32> {
    v.map(|v| v as i32)
}

/// Items whose rows of a day one packing transaction moves.
const PACK_ITEMS: usize = 512;

/// A packable row as selected from its table.
trait PgRows: Packable + Unpin {
    /// The selected columns, in [`PgRows::read`]'s order.
    const COLUMNS: &'static str;
    fn read(r: &PgRow) -> Result<Self, sqlx::Error>;
}

impl PgRows for LatestPrice {
    const COLUMNS: &'static str = "item_id, EXTRACT(EPOCH FROM timestamp)::int8, high, \
        EXTRACT(EPOCH FROM high_time)::int8, low, EXTRACT(EPOCH FROM low_time)::int8";
    fn read(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(LatestPrice {
            item_id: r.try_get::<i32, _>(0)? as u32,
            timestamp: r.try_get(1)?,
            high: r.try_get::<Option<i32>, _>(2)?.map(i64::from),
            high_time: r.try_get(3)?,
            low: r.try_get::<Option<i32>, _>(4)?.map(i64::from),
            low_time: r.try_get(5)?,
        })
    }
}

impl PgRows for BucketPrice {
    const COLUMNS: &'static str = "item_id, EXTRACT(EPOCH FROM timestamp)::int8, avg_high_price, \
        high_price_volume, avg_low_price, low_price_volume";
    fn read(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(BucketPrice {
            item_id: r.try_get::<i32, _>(0)? as u32,
            timestamp: r.try_get(1)?,
            avg_high_price: r.try_get::<Option<i32>, _>(2)?.map(i64::from),
            high_price_volume: r.try_get(3)?,
            avg_low_price: r.try_get::<Option<i32>, _>(4)?.map(i64::from),
            low_price_volume: r.try_get(5)?,
        })
    }
}

/// A packed row's `item_id, rows, body`.
fn packed_columns(r: &PgRow) -> Result<(ItemId, usize, &[u8]), StoreError> {
    let id: i32 = r.try_get(0)?;
    let rows: i32 = r.try_get(1)?;
    let body: &[u8] = r.try_get(2)?;
    let rows = usize::try_from(rows)
        .map_err(|_| StoreError::Invalid(format!("a packed row of item {id} has {rows} rows")))?;
    Ok((id as ItemId, rows, body))
}

impl PgStore {
    /// Creates the partitions of `table` that `times` (Unix seconds) fall in, once each.
    pub async fn ensure_partitions(
        &self,
        table: &str,
        times: impl Iterator<Item = i64>,
    ) -> Result<(), StoreError> {
        let span = span_of(table);
        let wanted: BTreeSet<(String, i64, i64)> = times.map(|t| partition_of(span, t)).collect();
        let mut known = self.partitions.lock().await;
        for (suffix, start, end) in wanted {
            let name = format!("{table}_p{suffix}");
            if known.contains(&name) {
                continue;
            }
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ('{}') TO ('{}')",
                literal(start),
                literal(end)
            );
            sqlx::query(&sql).execute(&self.pool).await?;
            known.insert(name);
        }
        Ok(())
    }

    /// Names of the partitions of `table`, oldest first (for retention).
    pub async fn partitions_of(&self, table: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 ORDER BY c.relname",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores `ticks` (time, keyframe) and `rows` in one transaction (see
    /// [`crate::ticks`]); a listed tick becomes a keyframe, never the reverse.
    pub(super) async fn insert_latest_ticks(
        &self,
        ticks: &[(i64, bool)],
        rows: &[LatestPrice],
    ) -> Result<u64, StoreError> {
        self.ensure_partitions("prices_latest_1m", rows.iter().map(|r| r.timestamp))
            .await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO latest_ticks (timestamp, keyframe) \
             SELECT to_timestamp(u.ts), u.k FROM UNNEST($1::int8[], $2::bool[]) AS u(ts, k) \
             ON CONFLICT (timestamp) DO UPDATE SET keyframe = latest_ticks.keyframe OR EXCLUDED.keyframe",
        )
        .bind(ticks.iter().map(|t| t.0).collect::<Vec<_>>())
        .bind(ticks.iter().map(|t| t.1).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        // The rows go through `COPY` into this connection's staging table,
        // then into the table by `INSERT … SELECT` (below), which can skip
        // rows already stored; `COPY` into the table itself cannot.
        sqlx::query("SET LOCAL client_min_messages = warning")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS stage_latest (item_id int4, ts int8, high int4, \
             high_time int8, low int4, low_time int8) ON COMMIT DELETE ROWS",
        )
        .execute(&mut *tx)
        .await?;
        let mut copy = tx.copy_in_raw("COPY stage_latest FROM STDIN").await?;
        let mut buf: Vec<u8> = Vec::with_capacity(COPY_BUFFER + 128);
        for r in rows {
            copy_line(&mut buf, r);
            if buf.len() >= COPY_BUFFER {
                copy.send(std::mem::take(&mut buf)).await?;
                buf.reserve(COPY_BUFFER + 128);
            }
        }
        if !buf.is_empty() {
            copy.send(buf).await?;
        }
        copy.finish().await?;
        // Rows already stored are rare (a repeated tick is filtered before
        // here): a plain INSERT first, which skips `ON CONFLICT`'s extra
        // index probe per row; on a duplicate, back to the savepoint and
        // again with `ON CONFLICT DO NOTHING`.
        const INSERT: &str =
            "INSERT INTO prices_latest_1m (item_id, timestamp, high, high_time, low, low_time) \
             SELECT item_id, to_timestamp(ts), high, to_timestamp(high_time), low, to_timestamp(low_time) \
             FROM stage_latest";
        sqlx::query("SAVEPOINT plain").execute(&mut *tx).await?;
        let stored = match sqlx::query(INSERT).execute(&mut *tx).await {
            Ok(done) => done.rows_affected(),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                sqlx::query("ROLLBACK TO SAVEPOINT plain")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("{INSERT} ON CONFLICT DO NOTHING"))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
            Err(e) => return Err(e.into()),
        };
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
        Ok(sqlx::query_as(
            "SELECT EXTRACT(EPOCH FROM timestamp)::int8, keyframe FROM latest_ticks \
             WHERE timestamp >= to_timestamp($1) AND timestamp < to_timestamp($2) ORDER BY timestamp LIMIT $3",
        )
        .bind(bound(from))
        .bind(bound(to))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The newest keyframe at or before `t`.
    pub(super) async fn keyframe_at_or_before(&self, t: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM MAX(timestamp))::int8 FROM latest_ticks \
             WHERE keyframe AND timestamp <= to_timestamp($1)",
        )
        .bind(bound(t))
        .fetch_one(&self.pool)
        .await?)
    }

    pub(super) async fn insert_buckets(
        &self,
        step: BucketStep,
        rows: &[BucketPrice],
    ) -> Result<u64, StoreError> {
        // A row of a packed day is stored already when the packed body has it.
        let packed = self.packed_keys(step, rows).await?;
        let fresh: Vec<BucketPrice>;
        let rows = if packed.is_empty() {
            rows
        } else {
            fresh = rows
                .iter()
                .filter(|r| !packed.contains(&(r.item_id, r.timestamp)))
                .copied()
                .collect();
            &fresh[..]
        };
        self.ensure_partitions(step.table(), rows.iter().map(|r| r.timestamp))
            .await?;
        let sql = format!(
            "INSERT INTO {} (item_id, timestamp, avg_high_price, high_price_volume, avg_low_price, low_price_volume) \
             SELECT u.item_id, to_timestamp(u.ts), u.ah, u.hv, u.al, u.lv \
             FROM UNNEST($1::int4[], $2::int8[], $3::int4[], $4::int8[], $5::int4[], $6::int8[]) \
             AS u(item_id, ts, ah, hv, al, lv) ON CONFLICT DO NOTHING",
            step.table()
        );
        let mut tx = self.pool.begin().await?;
        let mut stored = 0;
        for chunk in chunks(rows, 1, CHUNK_ROWS) {
            stored += sqlx::query(&sql)
                .bind(chunk.iter().map(|r| r.item_id as i32).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.timestamp).collect::<Vec<_>>())
                .bind(
                    chunk
                        .iter()
                        .map(|r| i32_opt(r.avg_high_price))
                        .collect::<Vec<_>>(),
                )
                .bind(
                    chunk
                        .iter()
                        .map(|r| r.high_price_volume)
                        .collect::<Vec<_>>(),
                )
                .bind(
                    chunk
                        .iter()
                        .map(|r| i32_opt(r.avg_low_price))
                        .collect::<Vec<_>>(),
                )
                .bind(chunk.iter().map(|r| r.low_price_volume).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The (item, time) keys of `rows` that a packed day of `step` holds.
    async fn packed_keys(
        &self,
        step: BucketStep,
        rows: &[BucketPrice],
    ) -> Result<HashSet<(ItemId, i64)>, StoreError> {
        let days: BTreeSet<i64> = rows.iter().map(|r| day_of(r.timestamp)).collect();
        let items: BTreeSet<i32> = rows.iter().map(|r| r.item_id as i32).collect();
        if days.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = format!(
            "SELECT item_id, rows, body FROM {} WHERE item_id = ANY($1) \
             AND day = ANY(SELECT to_timestamp(d) FROM UNNEST($2::int8[]) AS d)",
            packed::packed_buckets(step)
        );
        let found = sqlx::query(&sql)
            .bind(items.into_iter().collect::<Vec<_>>())
            .bind(days.into_iter().collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await?;
        let mut keys = HashSet::new();
        for r in &found {
            let (id, n, body) = packed_columns(r)?;
            keys.extend(
                BucketPrice::decode(id, n, body)?
                    .iter()
                    .map(|b| (b.item_id, b.timestamp)),
            );
        }
        Ok(keys)
    }

    pub(super) async fn upsert_items(
        &self,
        items: &[ItemMeta],
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut stored = 0;
        for chunk in chunks(items, 1, CHUNK_ROWS) {
            stored += sqlx::query(
                "INSERT INTO items (item_id, name, examine, members, lowalch, highalch, value, buy_limit, icon, updated_at) \
                 SELECT u.id, u.name, u.examine, u.members, u.lowalch, u.highalch, u.value, u.buy_limit, u.icon, to_timestamp($10) \
                 FROM UNNEST($1::int4[], $2::text[], $3::text[], $4::bool[], $5::int4[], $6::int4[], $7::int4[], $8::int4[], $9::text[]) \
                 AS u(id, name, examine, members, lowalch, highalch, value, buy_limit, icon) \
                 ON CONFLICT (item_id) DO UPDATE SET name = excluded.name, examine = excluded.examine, \
                 members = excluded.members, lowalch = excluded.lowalch, highalch = excluded.highalch, \
                 value = excluded.value, buy_limit = excluded.buy_limit, icon = excluded.icon, updated_at = excluded.updated_at",
            )
            .bind(chunk.iter().map(|m| m.item_id as i32).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.name.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.examine.clone()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.members).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| i32_opt(m.lowalch)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| i32_opt(m.highalch)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| i32_opt(m.value)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| i32_opt(m.buy_limit)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|m| m.icon.clone()).collect::<Vec<_>>())
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(stored)
    }

    pub(super) async fn insert_news(
        &self,
        items: &[NewsItem],
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut stored = 0;
        for n in items {
            stored += sqlx::query(
                "INSERT INTO osrs_news (guid, title, link, published_at, category, fetched_at) \
                 VALUES ($1, $2, $3, to_timestamp($4), $5, to_timestamp($6)) ON CONFLICT DO NOTHING",
            )
            .bind(&n.guid)
            .bind(&n.title)
            .bind(&n.link)
            .bind(n.published_at)
            .bind(&n.category)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(stored)
    }

    pub(super) async fn insert_player_counts(
        &self,
        rows: &[PlayerCount],
    ) -> Result<u64, StoreError> {
        let mut stored = 0;
        for r in rows {
            stored += sqlx::query(
                "INSERT INTO player_counts (timestamp, players) VALUES (to_timestamp($1), $2) ON CONFLICT DO NOTHING",
            )
            .bind(r.timestamp)
            .bind(r.players as i32)
            .execute(&self.pool)
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
        self.rows_in("prices_latest_1m", None, from, to, None).await
    }

    pub(super) async fn load_buckets(
        &self,
        step: BucketStep,
        from: i64,
        to: i64,
    ) -> Result<Vec<BucketPrice>, StoreError> {
        self.rows_in(step.table(), None, from, to, None).await
    }

    /// The rows of a packable `table` (one item's when `item` is given) with
    /// `from <= timestamp < to`, from the table and its packed days,
    /// ordered by time then item, at most `limit`.
    async fn rows_in<T: PgRows>(
        &self,
        table: &str,
        item: Option<ItemId>,
        from: i64,
        to: i64,
        limit: Option<i64>,
    ) -> Result<Vec<T>, StoreError> {
        // One statement per shape (not `$3 IS NULL OR item_id = $3`), so a
        // cached generic plan still uses the (item_id, timestamp) key.
        let sql = format!(
            "SELECT {} FROM {table} WHERE timestamp >= to_timestamp($1) AND timestamp < to_timestamp($2) \
             {} ORDER BY timestamp, item_id LIMIT $3",
            T::COLUMNS,
            if item.is_some() { "AND item_id = $4" } else { "" }
        );
        let mut query = sqlx::query(&sql)
            .bind(bound(from))
            .bind(bound(to))
            .bind(limit);
        if let Some(item) = item {
            query = query.bind(item as i32);
        }
        let live = query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(T::read)
            .collect::<Result<Vec<T>, _>>()?;
        let packed = self.packed_rows::<T>(table, item, from, to, limit).await?;
        let mut all = packed::merge(live, packed, |r| (r.time(), r.item()));
        if let Some(limit) = limit {
            all.truncate(usize::try_from(limit).unwrap_or(0));
        }
        Ok(all)
    }

    /// The rows of `table`'s packed days with `from <= timestamp < to` (one
    /// item's when `item` is given; then at most `limit`), ordered by time
    /// then item.
    async fn packed_rows<T: PgRows>(
        &self,
        table: &str,
        item: Option<ItemId>,
        from: i64,
        to: i64,
        limit: Option<i64>,
    ) -> Result<Vec<T>, StoreError> {
        let Some(packed) = packed_table(table) else {
            return Ok(Vec::new());
        };
        let (from, to) = (bound(from), bound(to));
        let sql = format!(
            "SELECT item_id, rows, body FROM {packed} WHERE day >= to_timestamp($1) AND day < to_timestamp($2) \
             AND last_time >= to_timestamp($3) AND first_time < to_timestamp($2) {} ORDER BY day, item_id",
            if item.is_some() { "AND item_id = $4" } else { "" }
        );
        let mut query = sqlx::query(&sql).bind(day_of(from)).bind(to).bind(from);
        if let Some(item) = item {
            query = query.bind(item as i32);
        }
        let bodies = query.fetch_all(&self.pool).await?;
        let mut out = Vec::new();
        for r in &bodies {
            let (id, rows, body) = packed_columns(r)?;
            out.extend(
                T::decode(id, rows, body)?
                    .into_iter()
                    .filter(|r| r.time() >= from && r.time() < to),
            );
            // One item's days come in order: enough once `limit` are read.
            if item.is_some() && limit.is_some_and(|l| out.len() as i64 >= l) {
                break;
            }
        }
        if item.is_none() {
            out.sort_unstable_by_key(|r| (r.time(), r.item()));
        }
        Ok(out)
    }

    pub(super) async fn load_items(&self) -> Result<Vec<ItemMeta>, StoreError> {
        let rows = sqlx::query(
            "SELECT item_id, name, examine, members, lowalch, highalch, value, buy_limit, icon FROM items ORDER BY item_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r: &PgRow| {
                let int = |i: usize| -> Result<Option<i64>, sqlx::Error> {
                    Ok(r.try_get::<Option<i32>, _>(i)?.map(i64::from))
                };
                Ok(ItemMeta {
                    item_id: r.try_get::<i32, _>(0)? as u32,
                    name: r.try_get(1)?,
                    examine: r.try_get(2)?,
                    members: r.try_get(3)?,
                    lowalch: int(4)?,
                    highalch: int(5)?,
                    value: int(6)?,
                    buy_limit: int(7)?,
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
        sqlx::query(
            "INSERT INTO collector_status (collector, last_success, last_error, last_error_at, consecutive_failures, \
             restarts, rows_written, updated_at) VALUES ($1, to_timestamp($2), $3, to_timestamp($4), $5, $6, $7, to_timestamp($8)) \
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn collector_statuses(&self) -> Result<Vec<CollectorStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT collector, EXTRACT(EPOCH FROM last_success)::int8, last_error, EXTRACT(EPOCH FROM last_error_at)::int8, \
             consecutive_failures, restarts, rows_written FROM collector_status ORDER BY collector",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r: &PgRow| {
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
        sqlx::query(
            "INSERT INTO data_gaps (feed, bucket, detected_at) VALUES ($1, to_timestamp($2), to_timestamp($3)) \
             ON CONFLICT DO NOTHING",
        )
        .bind(feed)
        .bind(bucket)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn fill_gap(
        &self,
        feed: &str,
        bucket: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE data_gaps SET filled_at = to_timestamp($1) WHERE feed = $2 AND bucket = to_timestamp($3) \
             AND filled_at IS NULL",
        )
        .bind(now)
        .bind(feed)
        .bind(bucket)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn open_gaps(&self, feed: &str) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM bucket)::int8 FROM data_gaps WHERE feed = $1 AND filled_at IS NULL ORDER BY bucket",
        )
        .bind(feed)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(super) async fn gaps(&self) -> Result<Vec<DataGap>, StoreError> {
        let rows = sqlx::query(
            "SELECT feed, EXTRACT(EPOCH FROM bucket)::int8, EXTRACT(EPOCH FROM detected_at)::int8, \
             EXTRACT(EPOCH FROM filled_at)::int8 FROM data_gaps ORDER BY feed, bucket",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r: &PgRow| {
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

/// `model_registry` columns in [`rows::EntryTuple`] order, times as Unix seconds.
const REGISTRY_COLUMNS: &str = "version, state, path, sha256, mean_auc, metrics::text, EXTRACT(EPOCH FROM created_at)::int8, \
    EXTRACT(EPOCH FROM activated_at)::int8, EXTRACT(EPOCH FROM deprecated_at)::int8, EXTRACT(EPOCH FROM archived_at)::int8";

impl PgStore {
    pub(super) async fn register_model(&self, e: &ModelEntry) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO model_registry (version, state, path, sha256, mean_auc, metrics, created_at) \
             VALUES ($1, 'PENDING', $2, $3, $4, $5::jsonb, to_timestamp($6))",
        )
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
        sqlx::query("UPDATE model_registry SET state = 'DEPRECATED', deprecated_at = to_timestamp($1) WHERE state = 'ACTIVE'")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE model_registry SET state = 'ACTIVE', activated_at = to_timestamp($1), deprecated_at = NULL WHERE version = $2")
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
            "INSERT INTO model_artifacts (version, meta, weights, sha256) VALUES ($1, $2, $3, $4) \
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
            "SELECT meta, weights, sha256 FROM model_artifacts WHERE version = $1",
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
            "INSERT INTO backtests (version, created_at, report) VALUES ($1, $2, $3) \
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
            "SELECT created_at, report FROM backtests WHERE version = $1",
        )
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(super) async fn archive_model(&self, version: &str, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE model_registry SET state = 'ARCHIVED', archived_at = to_timestamp($1) WHERE version = $2 AND state <> 'ACTIVE'",
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
        self.ensure_partitions("predictions", ticks.iter().map(|t| t.tick_time))
            .await?;
        let mut stored = 0;
        let mut tx = self.pool.begin().await?;
        for t in ticks {
            let n = sqlx::query(
                "INSERT INTO predictions (tick_time, model_version, items, body) \
                 VALUES (to_timestamp($1), $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(t.tick_time)
            .bind(&t.model_version)
            .bind(t.items as i32)
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
            "SELECT EXTRACT(EPOCH FROM tick_time)::int8, model_version, items::int8, body \
             FROM predictions WHERE tick_time = to_timestamp($1)",
        )
        .bind(tick_time)
        .fetch_optional(&self.pool)
        .await?
        .map(rows::prediction_tick))
    }

    /// Ticks of the predictions stored one row per item (before
    /// `predictions_v1` was converted), oldest first; none when converted.
    pub(super) async fn legacy_prediction_ticks(&self) -> Result<Vec<i64>, StoreError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('predictions_v1') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT EXTRACT(EPOCH FROM tick_time)::int8 AS t FROM predictions_v1 ORDER BY t",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub(super) async fn legacy_predictions_at(
        &self,
        tick_time: i64,
    ) -> Result<Vec<PredictionRow>, StoreError> {
        sqlx::query_as::<_, rows::PredictionTuple>(
            "SELECT item_id::int8, EXTRACT(EPOCH FROM tick_time)::int8, EXTRACT(EPOCH FROM observed_at)::int8, \
             model_version, probabilities FROM predictions_v1 WHERE tick_time = to_timestamp($1) ORDER BY item_id",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn inference_statuses(&self) -> Result<Vec<InferenceStatus>, StoreError> {
        Ok(sqlx::query_as::<_, rows::StatusTuple>(
            "SELECT EXTRACT(EPOCH FROM tick_time)::int8, items::int8, latency_ms, model_version, outcome, message \
             FROM inference_status ORDER BY tick_time",
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
        self.rows_in("prices_latest_1m", Some(item), from, to, None)
            .await
    }

    pub(super) async fn item_buckets(
        &self,
        step: BucketStep,
        item: ItemId,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<BucketPrice>, StoreError> {
        self.rows_in(step.table(), Some(item), from, to, Some(limit))
            .await
    }

    pub(super) async fn count(&self, table: &str) -> Result<i64, StoreError> {
        let sql = match packed_table(table) {
            Some(packed) => format!(
                "SELECT ((SELECT COUNT(*) FROM {table}) + (SELECT COALESCE(SUM(rows), 0) FROM {packed}))::int8"
            ),
            None => format!("SELECT COUNT(*) FROM {table}"),
        };
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool).await?)
    }

    pub(super) async fn newest_time(&self, table: &str) -> Result<Option<i64>, StoreError> {
        let sql = match packed_table(table) {
            Some(packed) => format!(
                "SELECT EXTRACT(EPOCH FROM GREATEST((SELECT MAX(timestamp) FROM {table}), \
                 (SELECT MAX(last_time) FROM {packed})))::int8"
            ),
            None => format!("SELECT EXTRACT(EPOCH FROM MAX(timestamp))::int8 FROM {table}"),
        };
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool).await?)
    }

    pub(super) async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let row: Option<String> = sqlx::query_scalar(
            "INSERT INTO service_lease (name, holder, acquired_at, expires_at) \
             VALUES ($1, $2, now(), now() + make_interval(secs => $3)) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
               acquired_at = CASE WHEN service_lease.holder = EXCLUDED.holder \
                 THEN service_lease.acquired_at ELSE now() END, \
               expires_at = EXCLUDED.expires_at \
             WHERE service_lease.holder = EXCLUDED.holder OR service_lease.expires_at < now() \
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    pub(super) async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM service_lease WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub(super) async fn close(&self) {
        self.pool.close().await
    }
}

/// Start and end (Unix seconds) of the partition named by `suffix` (see
/// [`partition_of`]); `None` for a name this store did not make.
fn bounds_of(span: Span, suffix: &str) -> Option<(i64, i64)> {
    match span {
        Span::Day => {
            let d = chrono::NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()?;
            let start = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
            Some((start, start + 86_400))
        }
        Span::Month => {
            let d = chrono::NaiveDate::parse_from_str(&format!("{suffix}01"), "%Y%m%d").ok()?;
            let start = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
            let (_, _, end) = partition_of(Span::Month, start);
            Some((start, end))
        }
    }
}

/// How far apart two partitions of `span` start, at most.
fn period(span: Span) -> i64 {
    match span {
        Span::Day => 86_400,
        Span::Month => 31 * 86_400,
    }
}

impl PgStore {
    pub(super) async fn expire(
        &self,
        what: Expiring,
        before: i64,
        _batch_rows: u64,
    ) -> Result<Expired, StoreError> {
        let table = what.table();
        let mut expired = Expired::default();
        if what.partitioned() {
            // Whole partitions only: a partition goes once its end has passed;
            // its rows are never deleted one by one. A packable table's
            // packed days go alike (same partitioning).
            for (part_of, rows_sql) in std::iter::once((table, "COUNT(*)"))
                .chain(packed_table(table).map(|p| (p, "COALESCE(SUM(rows), 0)::int8")))
            {
                let span = span_of(part_of);
                let prefix = format!("{part_of}_p");
                for name in self.partitions_of(part_of).await? {
                    let Some((_, end)) =
                        name.strip_prefix(&prefix).and_then(|s| bounds_of(span, s))
                    else {
                        continue;
                    };
                    if end > before {
                        continue;
                    }
                    let mut tx = self.pool.begin().await?;
                    let rows: i64 = sqlx::query_scalar(&format!("SELECT {rows_sql} FROM {name}"))
                        .fetch_one(&mut *tx)
                        .await?;
                    sqlx::query(&format!("DROP TABLE {name}"))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    self.partitions.lock().await.remove(&name);
                    expired.rows += rows as u64;
                    expired.partitions += 1;
                }
            }
            let span = span_of(table);
            let prefix = format!("{table}_p");
            if what == Expiring::Latest {
                // The tick list follows: ticks before the oldest partition
                // left (and before `before`) have no rows any more.
                let mut cut = before;
                for name in self.partitions_of(table).await? {
                    if let Some((start, _)) =
                        name.strip_prefix(&prefix).and_then(|s| bounds_of(span, s))
                    {
                        cut = cut.min(start);
                    }
                }
                sqlx::query("DELETE FROM latest_ticks WHERE timestamp < to_timestamp($1)")
                    .bind(bound(cut))
                    .execute(&self.pool)
                    .await?;
            }
        } else {
            let condition = match what {
                Expiring::FilledGaps => {
                    "filled_at IS NOT NULL AND filled_at < to_timestamp($1)".to_string()
                }
                _ => format!("{} < to_timestamp($1)", what.column()),
            };
            expired.rows = sqlx::query(&format!("DELETE FROM {table} WHERE {condition}"))
                .bind(bound(before))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(expired)
    }

    /// Creates the partitions of `now` and the two periods after it, so no
    /// insert waits on DDL.
    pub(super) async fn prepare_partitions(&self, now: i64) -> Result<(), StoreError> {
        for what in Expiring::ALL.into_iter().filter(|w| w.partitioned()) {
            let step = period(span_of(what.table()));
            self.ensure_partitions(what.table(), (0..3).map(|k| now + k * step))
                .await?;
        }
        Ok(())
    }

    /// Moves every row of each packable table dated before the UTC day of
    /// `before` into its packed sibling (see [`crate::packed`]); returns the
    /// rows moved.
    pub(super) async fn pack_closed(&self, before: i64) -> Result<u64, StoreError> {
        Ok(self
            .pack_table::<LatestPrice>("prices_latest_1m", before)
            .await?
            + self
                .pack_table::<BucketPrice>("price_data_5min", before)
                .await?
            + self.pack_table::<BucketPrice>("prices_1h", before).await?)
    }

    async fn pack_table<T: PgRows>(&self, table: &str, before: i64) -> Result<u64, StoreError> {
        let packed = packed_table(table).expect("a packable table");
        let before = bound(day_of(before));
        let mut moved = 0;
        let mut last_day = i64::MIN;
        loop {
            let oldest: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT EXTRACT(EPOCH FROM MIN(timestamp))::int8 FROM {table} WHERE timestamp < to_timestamp($1)"
            ))
            .bind(before)
            .fetch_one(&self.pool)
            .await?;
            let Some(day) = oldest.map(day_of) else {
                break;
            };
            // A day that comes back has taken rows while it was packed:
            // they wait for the next pass (never a loop).
            if day <= last_day {
                break;
            }
            last_day = day;
            moved += self.pack_day::<T>(table, packed, day).await?;
            self.release_packed_space(table, day, before).await?;
        }
        Ok(moved)
    }

    /// Moves one day's rows of `table` into `packed`, a few hundred items
    /// per transaction: the rows deleted are exactly those packed (`DELETE …
    /// RETURNING`), merged into the item's packed day when one exists.
    async fn pack_day<T: PgRows>(
        &self,
        table: &str,
        packed: &str,
        day: i64,
    ) -> Result<u64, StoreError> {
        self.ensure_partitions(packed, std::iter::once(day)).await?;
        let items: Vec<i32> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT item_id FROM {table} \
             WHERE timestamp >= to_timestamp($1) AND timestamp < to_timestamp($2) ORDER BY item_id"
        ))
        .bind(day)
        .bind(day + 86_400)
        .fetch_all(&self.pool)
        .await?;
        let take = format!(
            "DELETE FROM {table} WHERE item_id = ANY($1) \
             AND timestamp >= to_timestamp($2) AND timestamp < to_timestamp($3) RETURNING {}",
            T::COLUMNS
        );
        let existing = format!(
            "SELECT item_id, rows, body FROM {packed} \
             WHERE item_id = ANY($1) AND day = to_timestamp($2) FOR UPDATE"
        );
        let put = format!(
            "INSERT INTO {packed} (item_id, day, rows, first_time, last_time, body) \
             SELECT u.item_id, to_timestamp($1), u.rows, to_timestamp(u.f), to_timestamp(u.l), u.body \
             FROM UNNEST($2::int4[], $3::int4[], $4::int8[], $5::int8[], $6::bytea[]) AS u(item_id, rows, f, l, body) \
             ON CONFLICT (item_id, day) DO UPDATE SET rows = EXCLUDED.rows, \
             first_time = EXCLUDED.first_time, last_time = EXCLUDED.last_time, body = EXCLUDED.body"
        );
        let mut moved = 0;
        for ids in items.chunks(PACK_ITEMS) {
            let mut tx = self.pool.begin().await?;
            let mut taken = sqlx::query(&take)
                .bind(ids)
                .bind(day)
                .bind(day + 86_400)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(T::read)
                .collect::<Result<Vec<T>, _>>()?;
            taken.sort_unstable_by_key(|r| (r.item(), r.time()));
            let mut before: std::collections::HashMap<ItemId, Vec<T>> = Default::default();
            for r in &sqlx::query(&existing)
                .bind(ids)
                .bind(day)
                .fetch_all(&mut *tx)
                .await?
            {
                let (id, n, body) = packed_columns(r)?;
                before.insert(id, T::decode(id, n, body)?);
            }
            let (mut id, mut n, mut first, mut last, mut body) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for run in taken.chunk_by(|a, b| a.item() == b.item()) {
                let item = run[0].item();
                let rows = packed::merge(
                    before.remove(&item).unwrap_or_default(),
                    run.to_vec(),
                    |r| r.time(),
                );
                id.push(item as i32);
                n.push(rows.len() as i32);
                first.push(rows[0].time());
                last.push(rows[rows.len() - 1].time());
                body.push(T::encode(&rows));
            }
            sqlx::query(&put)
                .bind(day)
                .bind(id)
                .bind(n)
                .bind(first)
                .bind(last)
                .bind(body)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            moved += taken.len() as u64;
        }
        Ok(moved)
    }

    /// After a day of `table` was packed: its partition, once wholly before
    /// `before` and empty, is truncated (its files, indexes included, go back
    /// at once; checked under a lock so no late row is lost); a partition
    /// still taking rows (a month of buckets) is vacuumed so its new rows
    /// reuse the space.
    async fn release_packed_space(
        &self,
        table: &str,
        day: i64,
        before: i64,
    ) -> Result<(), StoreError> {
        let (suffix, _, end) = partition_of(span_of(table), day);
        let name = format!("{table}_p{suffix}");
        if end <= before {
            let mut tx = self.pool.begin().await?;
            sqlx::query(&format!("LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"))
                .execute(&mut *tx)
                .await?;
            let empty: bool =
                sqlx::query_scalar(&format!("SELECT NOT EXISTS (SELECT 1 FROM {name})"))
                    .fetch_one(&mut *tx)
                    .await?;
            if empty {
                sqlx::query(&format!("TRUNCATE {name}"))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        } else {
            sqlx::query(&format!("VACUUM {name}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn reclaim_space(&self) -> Result<(), StoreError> {
        // Dropped partitions give their files back at once; the small tables'
        // deleted rows are left to autovacuum.
        Ok(())
    }

    pub(super) async fn oldest_time(&self, what: Expiring) -> Result<Option<i64>, StoreError> {
        let (column, table) = (what.column(), what.table());
        let sql = match packed_table(table) {
            Some(packed) => format!(
                "SELECT EXTRACT(EPOCH FROM LEAST((SELECT MIN({column}) FROM {table}), \
                 (SELECT MIN(first_time) FROM {packed})))::int8"
            ),
            None => format!("SELECT EXTRACT(EPOCH FROM MIN({column}))::int8 FROM {table}"),
        };
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool).await?)
    }

    pub(super) async fn table_bytes(&self, table: &str) -> Result<i64, StoreError> {
        let own = self.relation_bytes(table).await?;
        match packed_table(table) {
            Some(packed) => Ok(own + self.relation_bytes(packed).await?),
            None => Ok(own),
        }
    }

    async fn relation_bytes(&self, table: &str) -> Result<i64, StoreError> {
        // A partitioned table's size is its partitions' (with indexes and
        // TOAST); pg_partition_tree of a plain table has no rows, so a plain
        // table is measured itself.
        Ok(sqlx::query_scalar(
            "SELECT COALESCE((SELECT SUM(pg_total_relation_size(relid)) \
             FROM pg_partition_tree($1::regclass)), pg_total_relation_size($1::regclass))::int8",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await?)
    }

    pub(super) async fn database_bytes(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT pg_database_size(current_database())::int8")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

impl PgStore {
    /// `pg_dump -Fc` of the whole database into `path`.
    pub(super) async fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        let out = tokio::process::Command::new("pg_dump")
            .arg("--format=custom")
            .arg("--file")
            .arg(path)
            .arg("--dbname")
            .arg(&*self.url)
            .output()
            .await
            .map_err(|e| StoreError::Backup(format!("pg_dump could not run: {e}")))?;
        if !out.status.success() {
            return Err(StoreError::Backup(format!(
                "pg_dump failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Puts a `pg_dump -Fc` file back: the archive is checked first
    /// (`pg_restore --list`), then the `public` schema is dropped and made
    /// again and the dump restored into it in one transaction. (`pg_restore
    /// --clean` cannot drop partitions' inherited constraints.)
    pub(super) async fn restore_from(&self, path: &std::path::Path) -> Result<(), StoreError> {
        let run = |args: Vec<std::ffi::OsString>| async move {
            let out = tokio::process::Command::new("pg_restore")
                .args(&args)
                .output()
                .await
                .map_err(|e| StoreError::Backup(format!("pg_restore could not run: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(StoreError::Backup(format!(
                    "pg_restore failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        };
        run(vec!["--list".into(), path.into()]).await?;
        sqlx::query("DROP SCHEMA public CASCADE")
            .execute(&self.pool)
            .await?;
        sqlx::query("CREATE SCHEMA public")
            .execute(&self.pool)
            .await?;
        self.partitions.lock().await.clear();
        run(vec![
            "--no-owner".into(),
            "--exit-on-error".into(),
            "--single-transaction".into(),
            "--dbname".into(),
            (*self.url).into(),
            path.into(),
        ])
        .await
    }
}

impl PgStore {
    /// Hours before `before` holding more than one prediction tick, each with
    /// its first tick.
    pub(super) async fn prediction_hours(
        &self,
        before: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as::<_, (i64, i64)>(
            "SELECT EXTRACT(EPOCH FROM date_trunc('hour', tick_time))::int8 AS hour, \
             EXTRACT(EPOCH FROM MIN(tick_time))::int8 FROM predictions \
             WHERE tick_time < to_timestamp($1) GROUP BY hour HAVING COUNT(*) > 1 ORDER BY hour",
        )
        .bind(bound(before))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Rewrites the predictions partition of the UTC day starting at `day`
    /// (after thinning), so the deleted rows' space goes back to the file
    /// system. Nothing to do when the partition does not exist.
    pub(super) async fn compact_prediction_day(&self, day: i64) -> Result<(), StoreError> {
        let (suffix, _, _) = partition_of(span_of("predictions"), day);
        let name = format!("predictions_p{suffix}");
        if self.partitions_of("predictions").await?.contains(&name) {
            sqlx::query(&format!("VACUUM FULL {name}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn thin_prediction_hour(
        &self,
        hour: i64,
        first: i64,
        _batch_rows: u64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM predictions WHERE tick_time >= to_timestamp($1) AND tick_time < to_timestamp($2) \
             AND tick_time <> to_timestamp($3)",
        )
        .bind(hour)
        .bind(hour + 3600)
        .bind(first)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_are_tab_separated_with_nulls() {
        let mut buf = Vec::new();
        copy_line(
            &mut buf,
            &LatestPrice {
                item_id: 4151,
                timestamp: 1_747_704_177,
                high: Some(1_900_000),
                high_time: Some(1_747_704_100),
                low: None,
                low_time: None,
            },
        );
        copy_line(
            &mut buf,
            &LatestPrice {
                item_id: 2,
                timestamp: 60,
                high: None,
                high_time: None,
                low: Some(150),
                low_time: Some(-5),
            },
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "4151\t1747704177\t1900000\t1747704100\t\\N\t\\N\n2\t60\t\\N\t\\N\t150\t-5\n"
        );
    }

    #[test]
    fn partitions_cover_their_span() {
        // 2025-05-20 01:22:57 UTC
        let (name, start, end) = partition_of(Span::Day, 1_747_704_177);
        assert_eq!(name, "20250520");
        assert_eq!((start, end - start), (1_747_699_200, 86_400));
        let (name, start, end) = partition_of(Span::Month, 1_747_704_177);
        assert_eq!(name, "202505");
        assert_eq!(literal(start), "2025-05-01 00:00:00+00");
        assert_eq!(literal(end), "2025-06-01 00:00:00+00");
        let (name, _, end) = partition_of(Span::Month, 1_765_000_000); // December 2025
        assert_eq!(name, "202512");
        assert_eq!(literal(end), "2026-01-01 00:00:00+00");
        // Names read back to the same bounds.
        assert_eq!(
            bounds_of(Span::Day, "20250520"),
            Some((1_747_699_200, 1_747_785_600))
        );
        let (start, end) = bounds_of(Span::Month, "202512").unwrap();
        assert_eq!(
            (literal(start), literal(end)),
            (
                "2025-12-01 00:00:00+00".into(),
                "2026-01-01 00:00:00+00".into()
            )
        );
        assert_eq!(bounds_of(Span::Day, "notadate"), None);
    }
}
