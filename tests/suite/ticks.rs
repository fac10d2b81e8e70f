//! `/latest` ticks stored once (store/src/ticks.rs), on both backends, on
//! recorded snapshots: only what changed is written, and every read gives the
//! ticks back exactly as written, whatever the order of the writes, a
//! restart of the writer, or a retention cut.

use crate::common;

use gept_core::recordings::{self, latest_snapshots};
use gept_core::{wire, LatestPrice};
use gept_store::{Expiring, Store};
use std::collections::HashMap;

/// The first `n` recorded `/latest` snapshots, one vector of rows each
/// (sorted by item), oldest first.
fn recorded_ticks(n: usize) -> Vec<Vec<LatestPrice>> {
    let dir = common::recordings();
    latest_snapshots(&dir.join(recordings::LATEST_FILE))
        .unwrap()
        .take(n)
        .map(|snap| {
            let snap = snap.unwrap();
            let mut rows = wire::parse_latest(snap.body.as_bytes(), snap.timestamp)
                .unwrap()
                .rows;
            rows.sort_by_key(|r| r.item_id);
            rows
        })
        .collect()
}

fn flat(ticks: &[Vec<LatestPrice>]) -> Vec<LatestPrice> {
    ticks.iter().flatten().copied().collect()
}

/// The rows a single writer stores, counted from the rule's statement: every
/// item of the first tick and of the first tick of each UTC hour, else the
/// items whose prices or trade times differ from the tick before.
fn rows_written(ticks: &[Vec<LatestPrice>]) -> usize {
    let mut n = 0;
    for (i, tick) in ticks.iter().enumerate() {
        let t = tick[0].timestamp;
        if i == 0 || ticks[i - 1][0].timestamp / 3600 != t / 3600 {
            n += tick.len();
            continue;
        }
        let before: HashMap<u32, &LatestPrice> =
            ticks[i - 1].iter().map(|r| (r.item_id, r)).collect();
        n += tick
            .iter()
            .filter(|r| {
                let b = before[&r.item_id];
                (b.high, b.high_time, b.low, b.low_time) != (r.high, r.high_time, r.low, r.low_time)
            })
            .count();
    }
    n
}

async fn exercise(
    store: &Store,
    reopen: impl std::future::Future<Output = Store>,
    whole_days: bool,
) {
    store.migrate().await.unwrap();
    // 40 snapshots about 5 minutes apart: three UTC hours and more.
    let ticks = recorded_ticks(40);
    let all = flat(&ticks);
    assert!(ticks.iter().all(|t| !t.is_empty()));

    // One tick at a time, as the collector's writes arrive; the tick at 20
    // comes late, after 21..30 (a late write).
    for (i, tick) in ticks.iter().enumerate().take(30) {
        if i != 20 {
            assert_eq!(store.insert_latest(tick).await.unwrap(), tick.len() as u64);
        }
    }
    assert_eq!(
        store.insert_latest(&ticks[20]).await.unwrap(),
        ticks[20].len() as u64
    );
    // A repeat of stored ticks (whole or in part) stores nothing.
    assert_eq!(store.insert_latest(&ticks[3]).await.unwrap(), 0);
    assert_eq!(store.insert_latest(&ticks[25][..10]).await.unwrap(), 0);
    // The rest in one call (a journal replayed after an outage), from a new
    // connection (a restarted writer: its first tick is a keyframe).
    let second = reopen.await;
    assert_eq!(
        second.insert_latest(&flat(&ticks[30..])).await.unwrap(),
        flat(&ticks[30..]).len() as u64
    );

    let back = store.load_latest(i64::MIN + 1, i64::MAX - 1).await.unwrap();
    assert_eq!(back.len(), all.len());
    assert!(back == all, "the ticks read back differ from those written");
    assert_eq!(store.count("latest_ticks").await.unwrap(), 40);
    assert_eq!(
        store.newest_time("prices_latest_1m").await.unwrap(),
        Some(ticks[39][0].timestamp)
    );

    // The saving. A straight run (no late tick, no restart) stores exactly
    // the rule's rows; here the late tick and the restart each add one
    // keyframe, and the tick after the late one became a keyframe too.
    let stored = store.count("prices_latest_1m").await.unwrap() as usize;
    let straight = rows_written(&ticks);
    assert!(stored >= straight, "{stored} < {straight}");
    assert!(
        stored <= straight + 3 * ticks[20].len(),
        "{stored} rows stored, the rule gives {straight} + 3 keyframes"
    );
    assert!(
        stored * 2 < all.len(),
        "stored {stored} rows for {} observations: not even half saved",
        all.len()
    );
    println!(
        "ticks stored once: {stored} rows for {} observations ({:.1} %)",
        all.len(),
        100.0 * stored as f64 / all.len() as f64
    );

    // Reads from inside an hour, from between two ticks, and of one item.
    for (a, b) in [(17, 30), (5, 6), (33, 40)] {
        let from = ticks[a][0].timestamp;
        let to = ticks[b - 1][0].timestamp + 1;
        let want: Vec<LatestPrice> = flat(&ticks[a..b]);
        assert!(
            store.load_latest(from, to).await.unwrap() == want,
            "[{a}, {b})"
        );
        let between = store.load_latest(from - 1, to).await.unwrap();
        assert!(between == want, "[{a}, {b}) read from a second earlier");
    }
    // Items with a null side, a busy one and one that rarely trades.
    let counts: HashMap<u32, usize> = all.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.item_id).or_default() += 1;
        m
    });
    let null_side = all.iter().find(|r| r.high.is_none()).unwrap().item_id;
    for item in [null_side, 2, 4151, 13190] {
        if !counts.contains_key(&item) {
            continue;
        }
        let from = ticks[7][0].timestamp + 1;
        let want: Vec<LatestPrice> = all
            .iter()
            .filter(|r| r.item_id == item && r.timestamp >= from)
            .take(12)
            .copied()
            .collect();
        assert_eq!(want.len(), 12);
        let got = store
            .item_latest(item, from, i64::MAX / 2, 12)
            .await
            .unwrap();
        assert_eq!(got, want, "item {item}");
    }

    // Retention: a cut inside an hour keeps every later tick whole (the cut
    // moves back to the keyframe they are read from); a cut at an hour's
    // start removes everything before it.
    let inside = ticks[26][0].timestamp;
    store.expire(Expiring::Latest, inside, 500).await.unwrap();
    let kept = store.load_latest(inside, i64::MAX / 2).await.unwrap();
    let want: Vec<LatestPrice> = all
        .iter()
        .filter(|r| r.timestamp >= inside)
        .copied()
        .collect();
    assert!(kept == want, "a cut inside an hour lost a later tick");
    if whole_days {
        // PostgreSQL drops whole days: a cut at the next day's start drops
        // the day's partition, and the tick list follows.
        let next_day = (ticks[39][0].timestamp / 86_400 + 1) * 86_400;
        store.expire(Expiring::Latest, next_day, 500).await.unwrap();
        assert!(store
            .load_latest(i64::MIN + 1, i64::MAX - 1)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.count("latest_ticks").await.unwrap(), 0);
        assert_eq!(store.count("prices_latest_1m").await.unwrap(), 0);
        return;
    }
    let hour = ticks[39][0].timestamp / 3600 * 3600;
    store.expire(Expiring::Latest, hour, 500).await.unwrap();
    let kept = store.load_latest(i64::MIN + 1, i64::MAX - 1).await.unwrap();
    let want: Vec<LatestPrice> = all
        .iter()
        .filter(|r| r.timestamp >= hour)
        .copied()
        .collect();
    assert!(!want.is_empty() && kept == want, "a cut at an hour's start");
    let listed = store.count("latest_ticks").await.unwrap() as usize;
    assert_eq!(listed, tick_count_from(&ticks, hour));
}

fn tick_count_from(ticks: &[Vec<LatestPrice>], from: i64) -> usize {
    ticks.iter().filter(|t| t[0].timestamp >= from).count()
}

#[tokio::test]
async fn sqlite_stores_each_tick_once_and_reads_it_whole() {
    let (store, dir) = common::sqlite_store().await;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("gept.db").display());
    exercise(
        &store,
        async move { Store::connect(&url, 2).await.unwrap() },
        false,
    )
    .await;
}

#[tokio::test]
async fn postgres_stores_each_tick_once_and_reads_it_whole() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let store = Store::connect(&url, 4).await.unwrap();
    exercise(
        &store,
        async move { Store::connect(&url, 2).await.unwrap() },
        true,
    )
    .await;
}
