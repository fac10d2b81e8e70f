//! Predictions stored one row per tick (`store/src/predictions.rs`), on
//! SQLite and PostgreSQL: every tick read back as written (to the stored
//! quantum), a tick stored whole and once, and a database written before
//! (a row per item and tick) converted when the store opens.

use crate::common;
use gept_core::recordings::LATEST_FILE;
use gept_core::N_TARGETS;
use gept_dataflows::inputs::load_ticks;
use gept_store::{encode_probabilities, PredictionRow, Store};

/// Predictions for the first `n` recorded ticks: every recorded item, with
/// probabilities drawn from its prices (so they differ by item and tick),
/// varying with the target.
fn recorded(n: usize) -> Vec<PredictionRow> {
    let ticks = load_ticks(&common::recordings().join(LATEST_FILE), Some(n)).unwrap();
    assert_eq!(ticks.len(), n);
    ticks
        .iter()
        .flat_map(|t| {
            t.rows.iter().map(move |r| {
                let seed = (r.high.unwrap_or(7) ^ r.low.unwrap_or(3)) as f32;
                PredictionRow {
                    item_id: r.item_id,
                    tick_time: t.time,
                    observed_at: r.high_time.unwrap_or(t.time).min(t.time),
                    model_version: "20250520-000000-abc".into(),
                    probabilities: (0..N_TARGETS)
                        .map(|k| ((seed * 0.618 + k as f32 * 0.0041).fract()).clamp(0.0, 1.0))
                        .collect(),
                }
            })
        })
        .collect()
}

/// Rows as stored: each probability as published (10⁻⁴).
fn quantised(rows: &[PredictionRow]) -> Vec<PredictionRow> {
    rows.iter()
        .map(|r| PredictionRow {
            probabilities: gept_store::decode_probabilities(&encode_probabilities(
                &r.probabilities,
            ))
            .unwrap(),
            ..r.clone()
        })
        .collect()
}

/// The ticks of `rows`, in order (rows come tick by tick).
fn tick_times(rows: &[PredictionRow]) -> Vec<i64> {
    let mut t: Vec<i64> = rows.iter().map(|r| r.tick_time).collect();
    t.dedup();
    t
}

/// Every tick of `times` reads back as `expected` holds it.
async fn assert_stored(store: &Store, expected: &[PredictionRow], times: &[i64]) {
    for &t in times {
        assert_eq!(
            store.predictions_at(t).await.unwrap(),
            of_tick(expected, t),
            "tick {t}"
        );
    }
}

fn of_tick(rows: &[PredictionRow], t: i64) -> Vec<PredictionRow> {
    let mut out: Vec<PredictionRow> = rows.iter().filter(|r| r.tick_time == t).cloned().collect();
    out.sort_by_key(|r| r.item_id);
    out
}

/// Opens a fresh store at `url` and stores and reads recorded ticks.
async fn round_trip(url: &str) {
    let owned = Store::connect(url, 2).await.unwrap();
    owned.migrate().await.unwrap();
    let store = &owned;
    let rows = recorded(3);
    let times = tick_times(&rows);
    assert_eq!(times.len(), 3);
    let per_tick = of_tick(&rows, times[0]).len();
    assert!(per_tick > 4_000, "{per_tick} items in a recorded tick");
    // The first tick alone, then all three: the first is not stored twice.
    let first = of_tick(&rows, times[0]);
    assert_eq!(
        store.insert_predictions(&first).await.unwrap(),
        per_tick as u64
    );
    let stored = store.insert_predictions(&rows).await.unwrap();
    assert_eq!(stored as usize, rows.len() - per_tick);
    // A repeat of part of a stored tick is ignored, not merged.
    assert_eq!(store.insert_predictions(&first[..10]).await.unwrap(), 0);
    assert_stored(store, &quantised(&rows), &times).await;
    assert!(store.predictions_at(times[0] + 1).await.unwrap().is_empty());
    // One tick from two model versions is refused, and nothing stored.
    let mut mixed: Vec<PredictionRow> = first[..2]
        .iter()
        .map(|r| PredictionRow {
            tick_time: times[0] + 60,
            ..r.clone()
        })
        .collect();
    mixed[1].model_version = "another".into();
    assert!(store.insert_predictions(&mixed).await.is_err());
    assert!(store
        .predictions_at(times[0] + 60)
        .await
        .unwrap()
        .is_empty());
    owned.close().await;
}

/// The names of the tables in `store` starting with `prefix`.
async fn tables_like(store: &Store, prefix: &str) -> Vec<String> {
    let like = format!("{prefix}%");
    match store {
        Store::Sqlite(s) => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?",
        )
        .bind(like)
        .fetch_all(&s.pool)
        .await
        .unwrap(),
        Store::Postgres(s) => sqlx::query_scalar(
            "SELECT relname::text FROM pg_class WHERE relkind IN ('r', 'p') AND relname LIKE $1",
        )
        .bind(like)
        .fetch_all(&s.pool)
        .await
        .unwrap(),
    }
}

/// A database at the migration before `predictions` held a row per tick,
/// with predictions stored a row per item and tick (as `u16` and, from
/// before quantisation, as `f32`), opened by this store: every tick is
/// converted, the old table dropped; opening again changes nothing.
async fn converts_old_rows(url: &str, before: usize, old: &[&str]) {
    let sqlite = url.starts_with("sqlite:");
    let dir = if sqlite {
        "store/migrations/sqlite"
    } else {
        "store/migrations/postgres"
    };
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new(dir))
        .await
        .unwrap();
    migrator.migrations = migrator.migrations[..before].to_vec().into();
    let rows = recorded(3);
    let times = tick_times(&rows);
    // The old schema and its rows: the last tick as f32 (from before
    // quantisation), the second with every other item.
    let old_store = Store::connect(url, 2).await.unwrap();
    let insert = if sqlite {
        "INSERT INTO predictions (item_id, tick_time, observed_at, model_version, probabilities) VALUES ($1, $2, $3, $4, $5)"
    } else {
        "INSERT INTO predictions (item_id, tick_time, observed_at, model_version, probabilities) \
         VALUES ($1, to_timestamp($2), to_timestamp($3), $4, $5)"
    };
    let body = |r: &PredictionRow| -> Vec<u8> {
        if r.tick_time == times[2] {
            r.probabilities
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        } else {
            r.probabilities
                .iter()
                .flat_map(|p| ((p * 65_535.0).round() as u16).to_le_bytes())
                .collect()
        }
    };
    // The old u16 form's own rounding (1/65,535) comes before the store's.
    let v1 = |r: &PredictionRow| -> PredictionRow {
        if r.tick_time == times[2] {
            return r.clone();
        }
        PredictionRow {
            probabilities: r
                .probabilities
                .iter()
                .map(|p| (p * 65_535.0).round() / 65_535.0)
                .collect(),
            ..r.clone()
        }
    };
    let written: Vec<&PredictionRow> = rows
        .iter()
        .enumerate()
        .filter(|(i, r)| i % 2 == 0 || r.tick_time != times[1])
        .map(|(_, r)| r)
        .collect();
    // The same statements on either backend's pool (PostgreSQL casts the
    // int8 binds on assignment).
    macro_rules! write_old {
        ($pool:expr) => {{
            migrator.run($pool).await.unwrap();
            for sql in old {
                sqlx::query(sql).execute($pool).await.unwrap();
            }
            let mut tx = $pool.begin().await.unwrap();
            for r in &written {
                sqlx::query(insert)
                    .bind(r.item_id as i64)
                    .bind(r.tick_time)
                    .bind(r.observed_at)
                    .bind(&r.model_version)
                    .bind(body(r))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }};
    }
    match &old_store {
        Store::Sqlite(s) => write_old!(&s.pool),
        Store::Postgres(s) => write_old!(&s.pool),
    }
    old_store.close().await;

    let store = Store::connect(url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let expected: Vec<PredictionRow> = quantised(&written.into_iter().map(v1).collect::<Vec<_>>());
    let second = of_tick(&expected, times[1]).len();
    assert!(
        second > 1_000 && second < of_tick(&expected, times[0]).len(),
        "{second} items in the second tick"
    );
    assert_stored(&store, &expected, &times).await;
    assert_eq!(
        tables_like(&store, "predictions_v1").await,
        Vec::<String>::new()
    );
    // Opening again: nothing to convert, nothing changed.
    store.migrate().await.unwrap();
    assert_stored(&store, &expected, &times).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_stores_a_tick_of_predictions_as_one_row() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("p.db").display()
    ))
    .await;
}

#[tokio::test]
async fn postgres_stores_a_tick_of_predictions_as_one_row() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    round_trip(&url).await;
}

#[tokio::test]
async fn sqlite_converts_predictions_stored_a_row_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    converts_old_rows(&url, 6, &[]).await;
}

#[tokio::test]
async fn postgres_converts_predictions_stored_a_row_per_item() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    // The old store made a partition a day, named predictions_pYYYYMMDD.
    converts_old_rows(
        &url,
        5,
        &[
            "CREATE TABLE predictions_p20250520 PARTITION OF predictions \
           FOR VALUES FROM ('2025-05-20 00:00:00+00') TO ('2025-05-21 00:00:00+00')",
        ],
    )
    .await;
}
