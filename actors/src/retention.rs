//! Retention: keeps the store at a plateau. A pass (scheduled by [`spawn`],
//! or on demand from the admin route, both through [`run_pass`]):
//!
//! 1. creates the partitions of now and the next two periods (PostgreSQL), so
//!    no insert waits on DDL;
//! 2. fills in `/5m` and `/1h` rows from the 1-minute ticks about to expire,
//!    where the upstream's were never collected (`Store::downsample_latest`);
//! 3. removes what is older than each table's retention: whole partitions on
//!    PostgreSQL, bounded batches on SQLite (`Store::expire`);
//! 4. thins predictions older than `predictions_full` to the first tick of
//!    each UTC hour (`Store::thin_predictions`);
//! 5. gives the space back (`Store::reclaim_space`) and measures the database.
//!
//! The pass's clock is the newest stored `/latest` tick, never ahead of the
//! wall clock ([`clock`]): a feed that stops, or a replay of old recordings,
//! never loses the history it has; with no tick stored nothing expires.
//!
//! Expiry works in whole UTC days: a table kept for 30 days holds 30 to 31
//! days, on both backends (a PostgreSQL partition is a day of ticks or
//! predictions; a month of buckets, which therefore go when their whole month
//! has expired).

use gept_core::config::RetentionConfig;
use gept_core::metrics as m;
use gept_store::{Expiring, Store, StoreError};
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400;

/// How long each table keeps its rows; `None` keeps them forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub keep: BTreeMap<Expiring, Option<Duration>>,
    /// Predictions older than this keep only the first tick of each hour.
    pub predictions_full: Option<Duration>,
    pub batch_rows: u64,
    /// Closed days are packed (PostgreSQL) once over this long.
    pub pack_after: Duration,
}

impl Policy {
    /// The policy of the configuration (a zero duration keeps forever).
    pub fn from_config(c: &RetentionConfig) -> Self {
        let forever_if_zero = |d: Duration| (!d.is_zero()).then_some(d);
        Policy {
            keep: BTreeMap::from([
                (Expiring::Latest, forever_if_zero(c.latest)),
                (Expiring::FiveMinute, forever_if_zero(c.five_minute)),
                (Expiring::OneHour, forever_if_zero(c.one_hour)),
                (Expiring::Predictions, forever_if_zero(c.predictions)),
                (Expiring::InferenceStatus, forever_if_zero(c.status)),
                (Expiring::FilledGaps, forever_if_zero(c.status)),
            ]),
            predictions_full: forever_if_zero(c.predictions_full),
            batch_rows: c.batch_rows,
            pack_after: c.pack_after,
        }
    }

    /// The expiry time of `what` at `now`: the start of the UTC day that is
    /// its retention before now; `None` when kept forever.
    pub fn cutoff(&self, what: Expiring, now: i64) -> Option<i64> {
        day_cutoff(self.keep.get(&what).copied().flatten()?, now)
    }
}

/// The start of the UTC day that is `keep` before `now`.
fn day_cutoff(keep: Duration, now: i64) -> Option<i64> {
    let t = now - keep.as_secs() as i64;
    Some(t - t.rem_euclid(DAY))
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    /// Rows removed, by table.
    pub deleted: BTreeMap<&'static str, u64>,
    /// Prediction rows removed by thinning to one tick an hour.
    pub thinned: u64,
    /// Partitions dropped, by table (PostgreSQL).
    pub partitions_dropped: BTreeMap<&'static str, u64>,
    /// `/5m` and `/1h` rows filled in from expiring ticks.
    pub downsampled: u64,
    /// `/latest`, `/5m` and `/1h` rows moved into packed days (PostgreSQL).
    pub packed: u64,
    /// Bytes in use after the pass.
    pub database_bytes: i64,
    /// Bytes each table takes with its indexes after the pass.
    pub table_bytes: std::collections::BTreeMap<&'static str, i64>,
}

/// One retention pass at `now` (Unix seconds).
pub async fn run_pass(store: &Store, policy: &Policy, now: i64) -> Result<PassReport, StoreError> {
    let mut report = PassReport::default();
    store.prepare_partitions(now).await?;
    // Ticks about to expire: their buckets first, a day at a time (bounded
    // memory), then the ticks.
    if let (Some(cutoff), Some(oldest)) = (
        policy.cutoff(Expiring::Latest, now),
        store.oldest_time(Expiring::Latest).await?,
    ) {
        let mut day = oldest - oldest.rem_euclid(DAY);
        while day < cutoff {
            report.downsampled += store.downsample_latest(day, day + DAY).await?;
            day += DAY;
        }
    }
    // Closed days into one row per item (PostgreSQL), after downsampling
    // read the expiring ticks and before expiry drops whole days.
    report.packed = store
        .pack_closed(now - policy.pack_after.as_secs() as i64)
        .await?;
    for what in Expiring::ALL {
        let Some(cutoff) = policy.cutoff(what, now) else {
            continue;
        };
        let expired = store.expire(what, cutoff, policy.batch_rows).await?;
        report.deleted.insert(what.table(), expired.rows);
        if expired.partitions > 0 {
            report
                .partitions_dropped
                .insert(what.table(), expired.partitions);
        }
    }
    // Predictions past their full-resolution window: one tick an hour.
    if let Some(full) = policy
        .predictions_full
        .and_then(|keep| day_cutoff(keep, now))
    {
        report.thinned = store.thin_predictions(full, policy.batch_rows).await?;
    }
    store.reclaim_space().await?;
    report.database_bytes = store.database_bytes().await?;
    for table in gept_store::TABLES {
        match store.table_bytes(table).await {
            Ok(bytes) => {
                report.table_bytes.insert(table, bytes);
            }
            Err(e) => tracing::warn!(table, error = %e, "measuring a table's size failed"),
        }
    }
    Ok(report)
}

/// The time retention measures ages from: the newest stored `/latest` tick,
/// at most `wall`; `None` when no tick is stored (then nothing expires).
pub async fn clock(store: &Store, wall: i64) -> Result<Option<i64>, StoreError> {
    Ok(store
        .newest_time("prices_latest_1m")
        .await?
        .map(|t| t.min(wall)))
}

/// A pass on the retention [`clock`]: only partitions are prepared while no
/// tick is stored.
pub async fn run_now(store: &Store, policy: &Policy) -> Result<PassReport, StoreError> {
    let wall = chrono::Utc::now().timestamp();
    match clock(store, wall).await? {
        Some(now) => run_and_record(store, policy, now).await,
        None => {
            // Nothing to expire yet; partitions are still made ahead.
            match store.prepare_partitions(wall).await {
                Ok(()) => {
                    metrics::counter!(m::RETENTION_RUNS, "outcome" => "ok").increment(1);
                    metrics::gauge!(m::RETENTION_LAST_SUCCESS).set(wall as f64);
                    Ok(PassReport::default())
                }
                Err(e) => {
                    metrics::counter!(m::RETENTION_RUNS, "outcome" => "error").increment(1);
                    tracing::warn!(error = %e, "retention pass failed; the next one retries");
                    Err(e)
                }
            }
        }
    }
}

/// [`run_pass`] with its outcome logged and counted in metrics.
pub async fn run_and_record(
    store: &Store,
    policy: &Policy,
    now: i64,
) -> Result<PassReport, StoreError> {
    let started = std::time::Instant::now();
    match run_pass(store, policy, now).await {
        Ok(report) => {
            metrics::counter!(m::RETENTION_RUNS, "outcome" => "ok").increment(1);
            for (table, n) in &report.deleted {
                metrics::counter!(m::RETENTION_ROWS_DELETED, "table" => *table).increment(*n);
            }
            for (table, n) in &report.partitions_dropped {
                metrics::counter!(m::RETENTION_PARTITIONS_DROPPED, "table" => *table).increment(*n);
            }
            metrics::counter!(m::RETENTION_ROWS_DOWNSAMPLED).increment(report.downsampled);
            metrics::counter!(m::RETENTION_ROWS_PACKED).increment(report.packed);
            metrics::counter!(m::RETENTION_ROWS_DELETED, "table" => "predictions_thinned")
                .increment(report.thinned);
            metrics::gauge!(m::RETENTION_LAST_SUCCESS).set(now as f64);
            metrics::gauge!(m::DATABASE_BYTES).set(report.database_bytes as f64);
            for (table, bytes) in &report.table_bytes {
                metrics::gauge!(m::TABLE_BYTES, "table" => *table).set(*bytes as f64);
            }
            tracing::info!(
                deleted = ?report.deleted,
                partitions_dropped = ?report.partitions_dropped,
                downsampled = report.downsampled,
                packed = report.packed,
                database_bytes = report.database_bytes,
                seconds = started.elapsed().as_secs_f64(),
                "retention pass done"
            );
            Ok(report)
        }
        Err(e) => {
            metrics::counter!(m::RETENTION_RUNS, "outcome" => "error").increment(1);
            tracing::warn!(error = %e, "retention pass failed; the next one retries");
            Err(e)
        }
    }
}

/// Runs a pass at start and then every `interval` plus a random share of
/// `jitter`, until `cancel` fires. A pass that fails or panics is counted and
/// logged, and the schedule goes on.
pub fn spawn(
    store: Store,
    config: &RetentionConfig,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let policy = Policy::from_config(config);
    let (interval, jitter) = (config.interval, config.jitter);
    tokio::spawn(async move {
        loop {
            let pass = {
                let (store, policy) = (store.clone(), policy.clone());
                tokio::spawn(async move {
                    let _ = run_now(&store, &policy).await;
                })
            };
            tokio::select! {
                result = pass => if let Err(e) = result {
                    metrics::counter!(m::RETENTION_RUNS, "outcome" => "error").increment(1);
                    tracing::error!(error = %e, "retention pass panicked; the next one retries");
                },
                _ = cancel.cancelled() => return,
            }
            let extra = if jitter.is_zero() {
                Duration::ZERO
            } else {
                jitter.mul_f64(rand::thread_rng().gen_range(0.0..1.0))
            };
            tokio::select! {
                _ = tokio::time::sleep(interval + extra) => {}
                _ = cancel.cancelled() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_are_whole_days_and_zero_keeps_forever() {
        let config = gept_core::config::Config::load_with_env(None, Vec::new())
            .unwrap()
            .retention;
        let policy = Policy::from_config(&config);
        // 2025-06-30 13:20 UTC; 30 days before is 2025-05-31 13:20 → 2025-05-31 00:00.
        let now = 1_751_241_600 + 13 * 3600 + 1200;
        assert_eq!(policy.cutoff(Expiring::Latest, now), Some(1_748_649_600));
        assert_eq!(
            policy.cutoff(Expiring::OneHour, now),
            None,
            "/1h is kept forever"
        );
    }
}
