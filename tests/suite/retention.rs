//! Retention on both backends with an injected clock, on real recorded rows:
//! expired ticks, predictions and status rows removed (whole partitions on
//! PostgreSQL, the next ones created ahead), rows inside the window
//! untouched, and the `/5m` and `/1h` rows filled in from the expired ticks
//! equal to a plain recomputation written here.

use crate::common;

use gept_actors::retention::{run_pass, PassReport, Policy};
use gept_core::recordings::{self, bucket_snapshots, latest_snapshots};
use gept_core::{wire, BucketPrice, BucketStep, ItemId, LatestPrice, N_TARGETS};
use gept_store::{Expiring, InferenceStatus, PredictionRow, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DAY: i64 = 86_400;

/// About two days of the recording, for a subset of the items on the full
/// recordings (every item of the excerpt).
struct Data {
    latest: Vec<LatestPrice>,
    five: Vec<BucketPrice>,
    hour: Vec<BucketPrice>,
}

fn keep(item: ItemId) -> bool {
    common::shared_recordings().is_none() || item.is_multiple_of(16)
}

fn data() -> Data {
    let dir = common::recordings();
    let mut latest = Vec::new();
    for snap in latest_snapshots(&dir.join(recordings::LATEST_FILE))
        .unwrap()
        .take(600)
    {
        let snap = snap.unwrap();
        let parsed = wire::parse_latest(snap.body.as_bytes(), snap.timestamp).unwrap();
        latest.extend(parsed.rows.into_iter().filter(|r| keep(r.item_id)));
    }
    latest.sort_by_key(|r| (r.timestamp, r.item_id));
    let last = latest.last().unwrap().timestamp;
    let buckets = |file: &str| -> Vec<BucketPrice> {
        let mut rows: Vec<BucketPrice> = bucket_snapshots(&dir.join(file))
            .unwrap()
            .iter()
            .flat_map(|b| wire::parse_bucket(b.body.as_bytes()).unwrap().rows)
            .filter(|r| keep(r.item_id) && r.timestamp <= last)
            .collect();
        rows.sort_by_key(|r| (r.timestamp, r.item_id));
        rows
    };
    Data {
        five: buckets(recordings::FIVE_MINUTE_FILE),
        hour: buckets(recordings::HOURLY_FILE),
        latest,
    }
}

/// The plain recomputation: every distinct trade the ticks show with its time
/// in `[from, to)`, grouped by item and bucket; the mean price rounded half up
/// and the count, per side.
/// Distinct (time, price) trades of the high and the low side.
type Trades = [BTreeSet<(i64, i64)>; 2];

fn recompute(ticks: &[LatestPrice], step: i64, from: i64, to: i64) -> Vec<BucketPrice> {
    let mut trades: BTreeMap<(ItemId, i64), Trades> = BTreeMap::new();
    for r in ticks {
        for (side, price, time) in [(0, r.high, r.high_time), (1, r.low, r.low_time)] {
            if let (Some(p), Some(t)) = (price, time) {
                if t >= from && t < to && p > 0 {
                    trades.entry((r.item_id, t / step * step)).or_default()[side].insert((t, p));
                }
            }
        }
    }
    let avg = |s: &BTreeSet<(i64, i64)>| -> Option<i64> {
        if s.is_empty() {
            return None;
        }
        let sum: i64 = s.iter().map(|(_, p)| p).sum();
        let n = s.len() as f64;
        Some((sum as f64 / n + 0.5).floor() as i64)
    };
    trades
        .into_iter()
        .map(|((item, ts), [h, l])| BucketPrice {
            item_id: item,
            timestamp: ts,
            avg_high_price: avg(&h),
            high_price_volume: h.len() as i64,
            avg_low_price: avg(&l),
            low_price_volume: l.len() as i64,
        })
        .collect()
}

/// Upstream rows, plus recomputed ones where upstream has no row of that
/// item and bucket.
fn union(upstream: &[BucketPrice], ours: Vec<BucketPrice>) -> Vec<BucketPrice> {
    let have: BTreeSet<(ItemId, i64)> = upstream.iter().map(|r| (r.item_id, r.timestamp)).collect();
    let mut all: Vec<BucketPrice> = upstream.to_vec();
    all.extend(
        ours.into_iter()
            .filter(|r| !have.contains(&(r.item_id, r.timestamp))),
    );
    all.sort_by_key(|r| (r.timestamp, r.item_id));
    all
}

async fn retention_on(store: &Store) -> PassReport {
    store.migrate().await.unwrap();
    let d = data();
    let first = d.latest.first().unwrap().timestamp;
    let first_day = first - first.rem_euclid(DAY);
    store.insert_latest(&d.latest).await.unwrap();
    store
        .insert_buckets(BucketStep::FiveMinutes, &d.five)
        .await
        .unwrap();
    store
        .insert_buckets(BucketStep::OneHour, &d.hour)
        .await
        .unwrap();
    let ticks: BTreeSet<i64> = d.latest.iter().map(|r| r.timestamp).collect();
    let predictions: Vec<PredictionRow> = ticks
        .iter()
        .map(|&t| PredictionRow {
            item_id: d.latest[0].item_id,
            tick_time: t,
            observed_at: t,
            model_version: "m".into(),
            probabilities: vec![0.5; N_TARGETS],
        })
        .collect();
    store.insert_predictions(&predictions).await.unwrap();
    for &t in &ticks {
        store
            .put_inference_status(
                &InferenceStatus {
                    tick_time: t,
                    items: 1,
                    latency_ms: 1.0,
                    model_version: Some("m".into()),
                    outcome: "ok".into(),
                    message: None,
                },
                t,
            )
            .await
            .unwrap();
    }

    // The clock: noon of the third day. Ticks, predictions and status kept
    // for one day; /5m for 90 days; /1h forever.
    let now = first_day + 2 * DAY + 12 * 3600;
    let cutoff = first_day + DAY;
    let policy = Policy {
        keep: BTreeMap::from([
            (Expiring::Latest, Some(Duration::from_secs(36 * 3600))),
            (
                Expiring::FiveMinute,
                Some(Duration::from_secs(90 * DAY as u64)),
            ),
            (Expiring::OneHour, None),
            (Expiring::Predictions, Some(Duration::from_secs(36 * 3600))),
            (
                Expiring::InferenceStatus,
                Some(Duration::from_secs(DAY as u64)),
            ),
            (Expiring::FilledGaps, Some(Duration::from_secs(DAY as u64))),
        ]),
        // Every tick for 12 h (whole days: from the third day on), then the
        // first tick of each hour.
        predictions_full: Some(Duration::from_secs(12 * 3600)),
        batch_rows: 1_000,
        pack_after: Duration::from_secs(2 * 3600),
    };
    assert_eq!(policy.cutoff(Expiring::Latest, now), Some(cutoff));
    let expired_ticks = d.latest.iter().filter(|r| r.timestamp < cutoff).count();
    assert!(expired_ticks > 0 && expired_ticks < d.latest.len());

    let stored_before = store.count("prices_latest_1m").await.unwrap();
    let report = run_pass(store, &policy, now).await.unwrap();

    // Ticks: exactly those inside the window are left, untouched.
    let kept: Vec<LatestPrice> = d
        .latest
        .iter()
        .filter(|r| r.timestamp >= cutoff)
        .copied()
        .collect();
    assert_eq!(
        store.load_latest(i64::MIN + 1, i64::MAX - 1).await.unwrap(),
        kept
    );
    // Ticks are stored once (changes between keyframes): the rows deleted
    // are the stored rows that went, fewer than the observations expired.
    let stored_after = store.count("prices_latest_1m").await.unwrap();
    assert_eq!(
        report.deleted["prices_latest_1m"],
        (stored_before - stored_after) as u64
    );
    assert!(stored_after > 0 && report.deleted["prices_latest_1m"] > 0);
    assert!(report.deleted["prices_latest_1m"] <= expired_ticks as u64);
    // Predictions: the first day deleted, the second thinned to the first
    // tick of each hour, the third kept whole. Status rows: the first day
    // deleted.
    let pred_cutoff = policy.cutoff(Expiring::Predictions, now).unwrap();
    assert_eq!(pred_cutoff, cutoff);
    let full_from = first_day + 2 * DAY;
    let mut hourly: BTreeMap<i64, i64> = BTreeMap::new();
    for &t in ticks.iter().filter(|&&t| t >= pred_cutoff && t < full_from) {
        let first = hourly.entry(t / 3600).or_insert(t);
        *first = (*first).min(t);
    }
    let whole: Vec<i64> = ticks.iter().copied().filter(|&t| t >= full_from).collect();
    assert!(!hourly.is_empty() && !whole.is_empty());
    let mut expected: Vec<i64> = hourly
        .values()
        .copied()
        .chain(whole.iter().copied())
        .collect();
    expected.sort();
    let mut stored = Vec::new();
    for &t in &ticks {
        if !store.predictions_at(t).await.unwrap().is_empty() {
            stored.push(t);
        }
    }
    assert_eq!(stored, expected, "the predictions left after thinning");
    let thinned = ticks
        .iter()
        .filter(|&&t| t >= pred_cutoff && t < full_from)
        .count()
        - hourly.len();
    assert!(thinned > 0);
    assert_eq!(report.thinned, thinned as u64);
    let kept_status = ticks.iter().filter(|&&t| t >= cutoff).count() as i64;
    assert_eq!(store.count("inference_status").await.unwrap(), kept_status);
    // Buckets: upstream rows untouched, the expired days' ticks recomputed
    // where upstream has none.
    let five = store
        .load_buckets(BucketStep::FiveMinutes, i64::MIN + 1, i64::MAX - 1)
        .await
        .unwrap();
    assert_eq!(
        five,
        union(&d.five, recompute(&d.latest, 300, first_day, cutoff))
    );
    let hour = store
        .load_buckets(BucketStep::OneHour, i64::MIN + 1, i64::MAX - 1)
        .await
        .unwrap();
    assert_eq!(
        hour,
        union(&d.hour, recompute(&d.latest, 3600, first_day, cutoff))
    );
    assert!(report.downsampled > 0, "the expired day had trades to keep");
    assert_eq!(
        report.downsampled as usize,
        five.len() + hour.len() - d.five.len() - d.hour.len()
    );
    // A second pass finds nothing more to do.
    // Each table's size is measured: the kept ticks take room, an empty
    // table next to nothing, and no table more than the whole database.
    let ticks = report.table_bytes["prices_latest_1m"];
    assert!(ticks > 0, "{:?}", report.table_bytes);
    // A plain (unpartitioned) table with rows has a size too.
    assert!(
        report.table_bytes["inference_status"] > 0,
        "{:?}",
        report.table_bytes
    );
    assert!(
        report
            .table_bytes
            .values()
            .all(|&b| b <= report.database_bytes.max(ticks)),
        "{:?} of {}",
        report.table_bytes,
        report.database_bytes
    );
    assert!(
        report.table_bytes["service_lease"] < ticks,
        "{:?}",
        report.table_bytes
    );
    let again = run_pass(store, &policy, now).await.unwrap();
    assert_eq!(again.downsampled, 0);
    assert_eq!(again.thinned, 0);
    assert!(again.deleted.values().all(|&n| n == 0), "{again:?}");
    assert_eq!(again.packed, 0, "a packed day is packed once");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_sqlite_removes_what_expired_and_keeps_the_rest() {
    let (store, _dir) = common::sqlite_store().await;
    let report = retention_on(&store).await;
    assert_eq!(report.packed, 0, "SQLite rows are not packed");
    // SQLite gives the space back: no free pages left after the pass.
    let Store::Sqlite(s) = &store else {
        unreachable!()
    };
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(free, 0, "incremental vacuum left free pages");
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(mode, 2, "auto_vacuum = INCREMENTAL");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_postgres_drops_partitions_and_creates_the_next() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let store = Store::connect(&url, 4).await.unwrap();
    let report = retention_on(&store).await;
    let Store::Postgres(pg) = &store else {
        unreachable!()
    };
    let d = data();
    let first = d.latest[0].timestamp;
    let first_day = first - first.rem_euclid(DAY);
    let now = first_day + 2 * DAY + 12 * 3600;
    packed_days_read_as_before(&store, pg, &d, first_day, report.packed).await;
    let day_name = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("prices_latest_1m_p%Y%m%d")
            .to_string()
    };
    let parts = pg.partitions_of("prices_latest_1m").await.unwrap();
    assert!(!parts.contains(&day_name(first_day)), "{parts:?}");
    // The thinned day's predictions partition was rewritten: its pages hold
    // the rows kept, not the space of the rows deleted.
    let thinned = chrono::DateTime::from_timestamp(first_day + DAY, 0)
        .unwrap()
        .format("predictions_p%Y%m%d")
        .to_string();
    let (rows, bytes): (i64, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT COUNT(*) FROM {thinned}), pg_relation_size('{thinned}')"
    ))
    .fetch_one(&pg.pool)
    .await
    .unwrap();
    assert!(rows > 0, "the thinned day kept no row");
    assert!(
        bytes <= rows * 600 + 16_384,
        "{thinned}: {bytes} bytes for {rows} rows: the deleted rows' space was not given back"
    );
    for ahead in 0..3 {
        assert!(
            parts.contains(&day_name(now + ahead * DAY)),
            "partition {} days ahead missing: {parts:?}",
            ahead
        );
    }
    store.close().await;
    common::drop_postgres_database(&url).await;
}

/// After the pass at noon of the third day (packing days that ended 2 h
/// before): the second day's ticks and the first two days' buckets live in
/// the packed tables only, the row partitions they left are empty and small,
/// every read (`retention_on` checked the whole-table reads) gives the same
/// rows, a repeated bucket is not stored twice, and a bucket written late
/// into a packed day is read at once and packed by the next pass.
async fn packed_days_read_as_before(
    store: &Store,
    pg: &gept_store::postgres::PgStore,
    d: &Data,
    first_day: i64,
    packed: u64,
) {
    let open_from = first_day + 2 * DAY;
    assert!(packed > 0, "the pass packed nothing");
    for table in ["prices_latest_1m", "price_data_5min", "prices_1h"] {
        let left: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE timestamp < to_timestamp($1)"
        ))
        .bind(open_from)
        .fetch_one(&pg.pool)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table}: rows of closed days left unpacked");
        let in_packed: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(SUM(rows), 0)::int8 FROM {table}_packed"
        ))
        .fetch_one(&pg.pool)
        .await
        .unwrap();
        assert!(in_packed > 0, "{table}: nothing packed");
    }
    // The packed day's tick partition was emptied and its space given back.
    let day2 = chrono::DateTime::from_timestamp(first_day + DAY, 0)
        .unwrap()
        .format("prices_latest_1m_p%Y%m%d")
        .to_string();
    let bytes: i64 = sqlx::query_scalar(&format!("SELECT pg_total_relation_size('{day2}')"))
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert!(
        bytes <= 16_384,
        "{day2} still takes {bytes} bytes after packing"
    );

    // One item's reads across packed and open days equal the whole reads
    // filtered to it: a busy item, the rows of the packed second day and
    // of the open third.
    let all = store.load_latest(i64::MIN + 1, i64::MAX - 1).await.unwrap();
    let item = d.latest[d.latest.len() / 2].item_id;
    let mine: Vec<LatestPrice> = all.iter().filter(|r| r.item_id == item).copied().collect();
    assert!(
        mine.iter().any(|r| r.timestamp < open_from)
            && mine.iter().any(|r| r.timestamp >= open_from)
    );
    let read = store
        .item_latest(item, i64::MIN + 1, i64::MAX / 2, i64::MAX)
        .await
        .unwrap();
    assert_eq!(read, mine, "item {item}'s ticks");
    let five = store
        .load_buckets(BucketStep::FiveMinutes, i64::MIN + 1, i64::MAX - 1)
        .await
        .unwrap();
    let busy = five[five.len() / 2].item_id;
    let want: Vec<BucketPrice> = five.iter().filter(|r| r.item_id == busy).copied().collect();
    assert!(want.len() > 12 && want[0].timestamp < open_from);
    let busy_five = |limit| {
        store.item_buckets(
            BucketStep::FiveMinutes,
            busy,
            i64::MIN + 1,
            i64::MAX / 2,
            limit,
        )
    };
    assert_eq!(busy_five(1_000_000).await.unwrap(), want);
    // With a limit: the first rows, from the packed days.
    assert_eq!(busy_five(12).await.unwrap(), want[..12]);
    // From inside a packed day to inside the open one.
    let (from, to) = (open_from - 3 * 3600, open_from + 3 * 3600);
    let window: Vec<LatestPrice> = all
        .iter()
        .filter(|r| r.timestamp >= from && r.timestamp < to)
        .copied()
        .collect();
    assert!(!window.is_empty());
    assert_eq!(store.load_latest(from, to).await.unwrap(), window);

    // Repeats are not stored again, packed or not.
    let count = store.count("price_data_5min").await.unwrap();
    assert_eq!(count, five.len() as i64);
    assert_eq!(
        store
            .insert_buckets(BucketStep::FiveMinutes, &d.five)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.count("price_data_5min").await.unwrap(), count);
    assert_eq!(
        store.newest_time("price_data_5min").await.unwrap(),
        five.last().map(|r| r.timestamp)
    );

    // A late bucket for a packed day: stored, read at once, packed next pass.
    let late_at = first_day + DAY + 300 * 7;
    let absent = five
        .iter()
        .map(|r| r.item_id)
        .find(|&i| {
            !five
                .iter()
                .any(|r| r.item_id == i && r.timestamp == late_at)
        })
        .unwrap_or(1);
    let late = BucketPrice {
        item_id: absent,
        timestamp: late_at,
        avg_high_price: Some(1_234),
        high_price_volume: 5,
        avg_low_price: None,
        low_price_volume: 0,
    };
    assert_eq!(
        store
            .insert_buckets(BucketStep::FiveMinutes, &[late])
            .await
            .unwrap(),
        1
    );
    let mut with_late = five.clone();
    with_late.push(late);
    with_late.sort_by_key(|r| (r.timestamp, r.item_id));
    let read_all = || async {
        store
            .load_buckets(BucketStep::FiveMinutes, i64::MIN + 1, i64::MAX - 1)
            .await
            .unwrap()
    };
    assert_eq!(read_all().await, with_late);
    let moved = store.pack_closed(open_from).await.unwrap();
    assert_eq!(moved, 1, "the late row alone is packed");
    assert_eq!(read_all().await, with_late);
    assert_eq!(store.count("price_data_5min").await.unwrap(), count + 1);
}
