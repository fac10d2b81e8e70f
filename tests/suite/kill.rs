//! `kill -9` of `gept serve` at a random snapshot of a replay, then a
//! restart: every tick stored before the kill is stored once and unchanged,
//! only the snapshot in flight (and those served while the service was down)
//! are missing, the missed span is recorded in `data_gaps`, and the `/5m` and
//! `/1h` buckets over it are back-filled, so they end exactly as recorded.

use crate::common;

use common::{expected, mock_status, serve_env, wait_for, Serve};
use gept_core::LatestPrice;
use gept_replay::{self as mock_api, Clock, Faults, MockOptions};
use gept_store::Store;
use std::collections::BTreeSet;

fn tick_times(rows: &[LatestPrice]) -> Vec<i64> {
    let set: BTreeSet<i64> = rows.iter().map(|r| r.timestamp).collect();
    set.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_loses_only_the_snapshot_in_flight_and_records_the_gap() {
    let dir = common::recordings();
    let options = MockOptions {
        clock: Clock::Step,
        faults: Faults::default(),
        seed: 3,
        max_snapshots: Some(60),
    };
    let mock = mock_api::start(&dir, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let addr = mock.addr;
    let total = mock_status(addr).await["total"].as_u64().unwrap() as usize;
    let exp = expected(&dir, total);
    let recorded = tick_times(&exp.latest);
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", db.path().join("gept.db").display());
    let env = serve_env(addr, &url);

    // The snapshot to kill at: random, printed so a failure can be replayed
    // (GEPT_TEST_KILL_AT).
    let kill_at: u64 = std::env::var("GEPT_TEST_KILL_AT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            8 + u64::from(nanos) % 24
        });
    println!("kill -9 once the replay has served {kill_at} snapshots (GEPT_TEST_KILL_AT)");
    let mut serve = Serve::start(&env);
    wait_for("the snapshot to kill at", 120, || async move {
        mock_status(addr).await["served"].as_u64().unwrap() >= kill_at
    })
    .await;
    serve.child.kill().unwrap(); // SIGKILL
    serve.child.wait().unwrap();

    // Acknowledged: what the database holds now (the journal is only
    // written while the database is away; it is empty here).
    let store = Store::connect(&url, 2).await.unwrap();
    let acked = tick_times(&store.load_latest(0, i64::MAX / 2).await.unwrap());
    let journal = common::journal_dir(&url);
    assert!(
        std::fs::read_dir(&journal).map_or(true, |d| d
            .filter_map(Result::ok)
            .all(|f| f.metadata().map_or(true, |m| m.len() == 0))),
        "the writer journal holds rows with the database up"
    );
    assert!(!acked.is_empty(), "nothing was stored before the kill");
    assert_eq!(
        acked,
        recorded[..acked.len()],
        "the stored ticks are not the recording's first ticks"
    );
    let served_at_kill = mock_status(addr).await["served"].as_u64().unwrap() as usize;
    // Each tick is stored before the next is fetched: only the one in
    // flight may be missing.
    assert!(
        acked.len() + 1 >= served_at_kill,
        "{} ticks stored of {served_at_kill} served before the kill",
        acked.len()
    );

    // Down for four snapshots (20 minutes of recorded time), then back.
    for _ in 0..4 {
        reqwest::get(format!("http://{addr}/api/v1/osrs/latest"))
            .await
            .unwrap();
    }
    let resumed_after = mock_status(addr).await["now"].as_i64().unwrap();
    let serve = Serve::start(&env);
    let last = *recorded.last().unwrap();
    wait_for("the replay to be stored after the restart", 300, || {
        let (store, exp) = (&store, &exp);
        async move {
            if store.newest_time("prices_latest_1m").await.unwrap() != Some(last) {
                return false;
            }
            for (step, rows) in &exp.buckets {
                if store.count(step.table()).await.unwrap() != rows.len() as i64 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    serve.stop();

    // /latest: exactly the acknowledged ticks and those after the restart,
    // each once, row for row as recorded; nothing in between.
    let after: Vec<i64> = recorded
        .iter()
        .copied()
        .filter(|t| *t > resumed_after)
        .collect();
    let want_times: Vec<i64> = acked.iter().chain(after.iter()).copied().collect();
    let back = store.load_latest(0, i64::MAX / 2).await.unwrap();
    assert_eq!(tick_times(&back), want_times);
    let want: Vec<LatestPrice> = exp
        .latest
        .iter()
        .filter(|r| want_times.binary_search(&r.timestamp).is_ok())
        .copied()
        .collect();
    assert!(back == want, "a stored tick differs from the recording");
    // The gap: keyed by the last tick before it, closed at once.
    let gaps = store.gaps().await.unwrap();
    let latest_gaps: Vec<_> = gaps.iter().filter(|g| g.feed == "latest").collect();
    assert_eq!(latest_gaps.len(), 1, "{gaps:?}");
    assert_eq!(latest_gaps[0].bucket, *acked.last().unwrap());
    assert!(latest_gaps[0].filled_at.is_some());
    // The buckets over the gap were back-filled: all of them, as recorded.
    for (step, rows) in &exp.buckets {
        let stored = store.load_buckets(*step, 0, i64::MAX / 2).await.unwrap();
        assert!(
            &stored == rows,
            "{} differs from the recording",
            step.table()
        );
    }
    store.close().await;
    mock.stop().await;
}
