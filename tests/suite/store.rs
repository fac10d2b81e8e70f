//! The store on both backends: migrations on an empty database, exact
//! round-trips of real recorded rows (nulls included), idempotent re-inserts.

use crate::common;

use gept_core::recordings::{self, bucket_snapshots, latest_snapshots};
use gept_core::{wire, BucketStep, CollectorStatus, LatestPrice};
use gept_store::Store;

/// Real rows: the first `n` `/latest` snapshots of the recording.
fn latest_rows(n: usize) -> Vec<LatestPrice> {
    let dir = common::recordings();
    let mut rows = Vec::new();
    for snap in latest_snapshots(&dir.join(recordings::LATEST_FILE))
        .unwrap()
        .take(n)
    {
        let snap = snap.unwrap();
        rows.extend(
            wire::parse_latest(snap.body.as_bytes(), snap.timestamp)
                .unwrap()
                .rows,
        );
    }
    rows.sort_by_key(|r| (r.timestamp, r.item_id));
    rows
}

fn bucket_rows(file: &str) -> Vec<gept_core::BucketPrice> {
    let dir = common::recordings();
    let mut rows: Vec<_> = bucket_snapshots(&dir.join(file))
        .unwrap()
        .iter()
        .flat_map(|b| wire::parse_bucket(b.body.as_bytes()).unwrap().rows)
        .collect();
    rows.sort_by_key(|r| (r.timestamp, r.item_id));
    rows
}

async fn exercise(store: &Store) {
    store.migrate().await.unwrap();
    // Applying again is a no-op.
    store.migrate().await.unwrap();
    for table in gept_store::TABLES {
        let n = store.count(table).await.unwrap();
        if table != "_sqlx_migrations" {
            assert_eq!(n, 0, "{table} is not empty after migration");
        }
    }

    // /latest: 12 snapshots (an hour) of every item.
    let rows = latest_rows(12);
    assert!(
        rows.iter().any(|r| r.high.is_none()) && rows.iter().any(|r| r.low.is_none()),
        "need null sides"
    );
    assert_eq!(store.insert_latest(&rows).await.unwrap(), rows.len() as u64);
    assert_eq!(
        store.insert_latest(&rows).await.unwrap(),
        0,
        "re-insert stored rows again"
    );
    assert_eq!(store.insert_latest(&rows[..10]).await.unwrap(), 0);
    assert_eq!(store.count("latest_ticks").await.unwrap(), 12);
    let back = store.load_latest(i64::MIN / 2, i64::MAX / 2).await.unwrap();
    assert_eq!(back, rows, "round trip changed /latest rows");

    // /1h and /5m buckets, every recorded one.
    for (step, file) in [
        (BucketStep::OneHour, recordings::HOURLY_FILE),
        (BucketStep::FiveMinutes, recordings::FIVE_MINUTE_FILE),
    ] {
        let rows = bucket_rows(file);
        assert!(rows
            .iter()
            .any(|r| r.avg_low_price.is_none() && r.low_price_volume == 0));
        assert_eq!(
            store.insert_buckets(step, &rows).await.unwrap(),
            rows.len() as u64
        );
        assert_eq!(store.insert_buckets(step, &rows).await.unwrap(), 0);
        let back = store.load_buckets(step, 0, i64::MAX / 2).await.unwrap();
        assert_eq!(back, rows, "round trip changed {step:?} rows");
        assert_eq!(
            store.newest_time(step.table()).await.unwrap(),
            rows.iter().map(|r| r.timestamp).max()
        );
    }

    // Items, with missing buy limits and alch values kept as nulls.
    let mapping =
        gept_core::recordings::read_all(&common::recordings().join(recordings::MAPPING_FILE))
            .unwrap();
    let items = wire::parse_mapping(&mapping).unwrap().rows;
    store.upsert_items(&items, 1_747_700_000).await.unwrap();
    store.upsert_items(&items, 1_747_700_060).await.unwrap();
    assert_eq!(store.load_items().await.unwrap(), items);

    // Collector status and gaps.
    let status = CollectorStatus {
        collector: "latest".into(),
        last_success: Some(1_747_704_177),
        last_error: Some("HTTP 500".into()),
        last_error_at: Some(1_747_704_100),
        consecutive_failures: 0,
        restarts: 2,
        rows_written: 4161,
    };
    store
        .put_collector_status(&status, 1_747_704_200)
        .await
        .unwrap();
    store
        .put_collector_status(&status, 1_747_704_260)
        .await
        .unwrap();
    assert_eq!(store.collector_statuses().await.unwrap(), vec![status]);
    store
        .record_gap("1h", 1_747_702_800, 1_747_710_000)
        .await
        .unwrap();
    store
        .record_gap("1h", 1_747_702_800, 1_747_710_060)
        .await
        .unwrap();
    store
        .record_gap("1h", 1_747_706_400, 1_747_710_000)
        .await
        .unwrap();
    assert_eq!(
        store.open_gaps("1h").await.unwrap(),
        vec![1_747_702_800, 1_747_706_400]
    );
    store
        .fill_gap("1h", 1_747_702_800, 1_747_711_000)
        .await
        .unwrap();
    assert_eq!(store.open_gaps("1h").await.unwrap(), vec![1_747_706_400]);
    let gaps = store.gaps().await.unwrap();
    assert_eq!(gaps.len(), 2);
    assert_eq!(gaps[0].filled_at, Some(1_747_711_000));
    assert_eq!(gaps[0].detected_at, 1_747_710_000);
}

#[tokio::test]
async fn sqlite_round_trips_real_rows() {
    let (store, _dir) = common::sqlite_store().await;
    exercise(&store).await;
}

#[tokio::test]
async fn postgres_round_trips_real_rows() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let store = Store::connect(&url, 4).await.unwrap();
    exercise(&store).await;
    // Time-series rows landed in daily / monthly partitions.
    let gept_store::Store::Postgres(pg) = &store else {
        panic!("not postgres")
    };
    let parts = pg.partitions_of("prices_latest_1m").await.unwrap();
    assert!(
        !parts.is_empty()
            && parts
                .iter()
                .all(|p| p.starts_with("prices_latest_1m_p2025")),
        "{parts:?}"
    );
    assert!(pg
        .partitions_of("prices_1h")
        .await
        .unwrap()
        .contains(&"prices_1h_p202505".to_string()));
    store.close().await;
    common::drop_postgres_database(&url).await;
}

/// The store writer while PostgreSQL goes away and comes back (a proxy cuts
/// every connection): a flush during the outage fails and keeps its rows;
/// after the database returns, the store holds every row exactly once.
#[test]
fn the_writer_loses_nothing_and_duplicates_nothing_through_an_outage() {
    gept::service::system().block_on(writer_through_an_outage());
}

async fn writer_through_an_outage() {
    use actix::Actor;
    use gept_actors::writer::{Flush, Rows, StoreWriter, Write};
    let Some(url) = common::postgres_database().await else {
        return;
    };
    // Migrate directly, then reach the database through the proxy.
    let direct = Store::connect(&url, 2).await.unwrap();
    direct.migrate().await.unwrap();
    let (proxy, proxied) = common::proxied_postgres(&url).await;
    let store = Store::connect(&proxied, 2).await.unwrap();
    let writer = StoreWriter::new(
        store.clone(),
        1_000_000,
        std::time::Duration::from_secs(3600),
    )
    .start();

    let rows = latest_rows(12);
    let by_tick: Vec<Vec<LatestPrice>> = {
        let mut ticks: Vec<Vec<LatestPrice>> = Vec::new();
        for r in &rows {
            match ticks.last_mut() {
                Some(t) if t[0].timestamp == r.timestamp => t.push(*r),
                _ => ticks.push(vec![*r]),
            }
        }
        ticks
    };
    assert!(by_tick.len() >= 12, "{} ticks", by_tick.len());
    // Before the outage: stored.
    for t in &by_tick[..4] {
        writer.send(Write(Rows::Latest(t.clone()))).await.unwrap();
    }
    writer.send(Flush).await.unwrap().unwrap();
    // The outage: writes are accepted, flushes fail and keep the rows.
    proxy.cut();
    for t in &by_tick[4..8] {
        writer.send(Write(Rows::Latest(t.clone()))).await.unwrap();
    }
    let failed = writer.send(Flush).await.unwrap();
    assert!(failed.is_err(), "a flush with the database gone must fail");
    // Rows of an earlier tick again (a collector retrying) must not duplicate.
    writer
        .send(Write(Rows::Latest(by_tick[2].clone())))
        .await
        .unwrap();
    // The database returns.
    proxy.restore();
    for t in &by_tick[8..] {
        writer.send(Write(Rows::Latest(t.clone()))).await.unwrap();
    }
    common::wait_for("the writer to flush after the database returns", 60, || {
        let writer = writer.clone();
        async move { writer.send(Flush).await.unwrap().is_ok() }
    })
    .await;
    let stored = direct
        .load_latest(i64::MIN + 1, i64::MAX - 1)
        .await
        .unwrap();
    assert_eq!(stored.len(), rows.len(), "every row once");
    assert_eq!(stored, rows, "exactly the recorded rows");
    store.close().await;
    direct.close().await;
    common::drop_postgres_database(&url).await;
}

/// The writer's memory bound through an outage, and a restart in the middle
/// of it: with the database cut, rows over the bound go to the journal (the
/// rows in memory never exceed the bound plus one batch); the writer is then
/// dropped as a killed process's would be, a new one opens the same journal,
/// and once the database returns every row is stored exactly once, in order,
/// and the journal is empty.
#[test]
fn the_writer_spills_to_its_journal_and_a_new_writer_stores_it() {
    gept::service::system().block_on(writer_spills_to_journal());
}

async fn writer_spills_to_journal() {
    use actix::Actor;
    use gept_actors::journal::Journal;
    use gept_actors::writer::{Flush, Held, Rows, StoreWriter, Write};
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let direct = Store::connect(&url, 2).await.unwrap();
    direct.migrate().await.unwrap();
    let (proxy, proxied) = common::proxied_postgres(&url).await;
    let journal_dir = tempfile::tempdir().unwrap();

    let rows = latest_rows(12);
    let mut by_tick: Vec<Vec<LatestPrice>> = Vec::new();
    for r in &rows {
        match by_tick.last_mut() {
            Some(t) if t[0].timestamp == r.timestamp => t.push(*r),
            _ => by_tick.push(vec![*r]),
        }
    }
    assert!(by_tick.len() >= 12, "{} ticks", by_tick.len());
    let per_tick = by_tick.iter().map(Vec::len).max().unwrap();
    let bound = 2 * per_tick;

    let store = Store::connect(&proxied, 2).await.unwrap();
    let writer = StoreWriter::new(
        store.clone(),
        1_000_000,
        std::time::Duration::from_secs(3600),
    )
    .with_journal(Journal::open(journal_dir.path()).unwrap(), bound)
    .start();
    for t in &by_tick[..3] {
        writer.send(Write(Rows::Latest(t.clone()))).await.unwrap();
    }
    writer.send(Flush).await.unwrap().unwrap();
    proxy.cut();
    for t in &by_tick[3..10] {
        writer.send(Write(Rows::Latest(t.clone()))).await.unwrap();
        assert!(writer.send(Flush).await.unwrap().is_err());
        let (held, _) = writer.send(Held).await.unwrap();
        assert!(
            held <= bound + per_tick,
            "{held} rows in memory, bound {bound}"
        );
    }
    let (held, journal_bytes) = writer.send(Held).await.unwrap();
    assert!(journal_bytes > 0, "nothing spilled ({held} rows held)");
    // The process dies: its memory is gone (what was held is lost, as in a
    // real crash), its journal stays.
    let lost_in_memory = held;
    drop(writer);
    store.close().await;

    // A new writer on the same journal, the database back.
    proxy.restore();
    let store = Store::connect(&proxied, 2).await.unwrap();
    let writer = StoreWriter::new(
        store.clone(),
        1_000_000,
        std::time::Duration::from_secs(3600),
    )
    .with_journal(Journal::open(journal_dir.path()).unwrap(), bound)
    .start();
    for t in &by_tick[10..] {
        writer.send(Write(Rows::Latest(t.clone()))).await.unwrap();
    }
    writer.send(Flush).await.unwrap().unwrap();
    let (held, journal_bytes) = writer.send(Held).await.unwrap();
    assert_eq!((held, journal_bytes), (0, 0));
    let stored = direct
        .load_latest(i64::MIN + 1, i64::MAX - 1)
        .await
        .unwrap();
    // Every row but those only in the dead writer's memory, each once.
    assert_eq!(stored.len() + lost_in_memory, rows.len());
    let want: std::collections::BTreeSet<_> =
        rows.iter().map(|r| (r.timestamp, r.item_id)).collect();
    let got: std::collections::BTreeSet<_> =
        stored.iter().map(|r| (r.timestamp, r.item_id)).collect();
    assert_eq!(got.len(), stored.len(), "a row stored twice");
    assert!(got.is_subset(&want));
    for t in &by_tick[..3] {
        assert!(
            got.contains(&(t[0].timestamp, t[0].item_id)),
            "a row stored before the outage is missing"
        );
    }
    for t in &by_tick[10..] {
        assert!(
            got.contains(&(t[0].timestamp, t[0].item_id)),
            "a row written after the restart is missing"
        );
    }
    store.close().await;
    direct.close().await;
    common::drop_postgres_database(&url).await;
}
