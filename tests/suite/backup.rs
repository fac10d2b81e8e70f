//! Backups on both backends, on real recorded rows: a backup while the store
//! is in use, rotation to `keep`, a failed backup that leaves nothing behind,
//! and restore putting back every table exactly.

use crate::common;

use gept_core::recordings::{self, bucket_snapshots, latest_snapshots, read_all};
use gept_core::{wire, BucketStep, CollectorStatus, N_TARGETS};
use gept_store::{InferenceStatus, ModelEntry, ModelState, PredictionRow, Store, TABLES};

/// Every table's rows, read through the store, as comparable text.
async fn contents(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(format!("{t}: {}", store.count(t).await.unwrap()));
    }
    let latest = store.load_latest(i64::MIN + 1, i64::MAX - 1).await.unwrap();
    out.push(format!("{latest:?}"));
    for step in [BucketStep::FiveMinutes, BucketStep::OneHour] {
        out.push(format!(
            "{:?}",
            store
                .load_buckets(step, i64::MIN + 1, i64::MAX - 1)
                .await
                .unwrap()
        ));
    }
    out.push(format!("{:?}", store.load_items().await.unwrap()));
    let ticks: std::collections::BTreeSet<i64> = latest.iter().map(|r| r.timestamp).collect();
    for t in ticks {
        out.push(format!("{:?}", store.predictions_at(t).await.unwrap()));
    }
    out.push(format!("{:?}", store.inference_statuses().await.unwrap()));
    out.push(format!("{:?}", store.models().await.unwrap()));
    out.push(format!("{:?}", store.collector_statuses().await.unwrap()));
    out.push(format!("{:?}", store.gaps().await.unwrap()));
    out
}

async fn fill(store: &Store) {
    store.migrate().await.unwrap();
    let dir = common::recordings();
    let mut latest = Vec::new();
    for snap in latest_snapshots(&dir.join(recordings::LATEST_FILE))
        .unwrap()
        .take(12)
    {
        let snap = snap.unwrap();
        latest.extend(
            wire::parse_latest(snap.body.as_bytes(), snap.timestamp)
                .unwrap()
                .rows,
        );
    }
    store.insert_latest(&latest).await.unwrap();
    for (step, file) in [
        (BucketStep::OneHour, recordings::HOURLY_FILE),
        (BucketStep::FiveMinutes, recordings::FIVE_MINUTE_FILE),
    ] {
        let rows: Vec<_> = bucket_snapshots(&dir.join(file))
            .unwrap()
            .iter()
            .take(6)
            .flat_map(|b| wire::parse_bucket(b.body.as_bytes()).unwrap().rows)
            .collect();
        store.insert_buckets(step, &rows).await.unwrap();
    }
    let items = wire::parse_mapping(&read_all(&dir.join(recordings::MAPPING_FILE)).unwrap())
        .unwrap()
        .rows;
    store.upsert_items(&items, 1_747_700_000).await.unwrap();
    let tick = latest[0].timestamp;
    let predictions: Vec<PredictionRow> = latest
        .iter()
        .filter(|r| r.timestamp == tick)
        .map(|r| PredictionRow {
            item_id: r.item_id,
            tick_time: tick,
            observed_at: r.high_time.unwrap_or(tick),
            model_version: "v1".into(),
            probabilities: (0..N_TARGETS)
                .map(|k| k as f32 / N_TARGETS as f32)
                .collect(),
        })
        .collect();
    store.insert_predictions(&predictions).await.unwrap();
    store
        .put_inference_status(
            &InferenceStatus {
                tick_time: tick,
                items: predictions.len() as i64,
                latency_ms: 7.5,
                model_version: Some("v1".into()),
                outcome: "ok".into(),
                message: None,
            },
            tick,
        )
        .await
        .unwrap();
    store
        .register_model(&ModelEntry {
            version: "v1".into(),
            state: ModelState::Pending,
            path: "/models/v1".into(),
            sha256: "0".repeat(64),
            mean_auc: Some(0.9),
            metrics: "{\"mean_auc\":0.9}".into(),
            created_at: tick,
            activated_at: None,
            deprecated_at: None,
            archived_at: None,
        })
        .await
        .unwrap();
    store.activate_model("v1", tick + 1).await.unwrap();
    store
        .put_collector_status(
            &CollectorStatus {
                collector: "latest".into(),
                rows_written: latest.len() as i64,
                ..Default::default()
            },
            tick,
        )
        .await
        .unwrap();
    store.record_gap("1h", tick - 3600, tick).await.unwrap();
    // PostgreSQL: the rows packed by day as retention leaves them (the
    // `_packed` tables travel with the backup); SQLite packs nothing.
    let packed = store.pack_closed(i64::MAX / 2).await.unwrap();
    assert_eq!(
        packed > 0,
        matches!(store, Store::Postgres(_)),
        "{packed} rows packed"
    );
}

async fn round_trip(store: &Store) {
    fill(store).await;
    let before = contents(store).await;
    let dir = tempfile::tempdir().unwrap();
    let mut made = Vec::new();
    for _ in 0..3 {
        let (path, bytes) = gept_actors::backup::backup_now(store, dir.path(), 2)
            .await
            .unwrap();
        assert!(bytes > 0 && path.is_file());
        made.push(path);
    }
    // Rotation: the newest two are kept; nothing partial is left.
    let left = gept_actors::backup::backups_in(dir.path());
    assert_eq!(left, made[1..].to_vec());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

    // The store changes after the backup: rows deleted, a model archived.
    store
        .expire(gept_store::Expiring::Latest, i64::MAX - 1, 1_000)
        .await
        .unwrap();
    store
        .insert_latest(&[gept_core::LatestPrice {
            item_id: 2,
            timestamp: 1_900_000_000,
            high: Some(1),
            high_time: Some(1),
            low: Some(1),
            low_time: Some(1),
        }])
        .await
        .unwrap();
    assert_ne!(contents(store).await, before);
    store.restore_from(&made[2]).await.unwrap();
    assert_eq!(contents(store).await, before, "the restore differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backup_rotates_and_restores_every_table() {
    let (store, _dir) = common::sqlite_store().await;
    round_trip(&store).await;
    // A backup that cannot be written leaves no file and no partial one.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("b.partial")).unwrap();
    assert!(store.backup_to(&dir.path().join("b.db")).await.is_err());
    assert!(!dir.path().join("b.db").exists());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backup_rotates_and_restores_every_table() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let store = Store::connect(&url, 4).await.unwrap();
    round_trip(&store).await;
    store.close().await;
    common::drop_postgres_database(&url).await;
}
