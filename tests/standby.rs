//! Standby takeover on PostgreSQL: two `gept serve` processes on one
//! database and one replay server. The first takes the lease and collects;
//! the second follows the store (its engine sees every tick). The primary is
//! killed with SIGKILL mid-replay; the follower takes the lease within the
//! bound, collects the rest, and the store ends equal to the recording but
//! for at most the snapshots in flight at the kill (fetched, not yet stored),
//! with no row twice.

mod common;

use common::{expected, mock_status, serve_env, wait_for, Serve};
use gept_replay::{self as mock_api, Clock, MockOptions};
use gept_store::Store;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Snapshots the replay serves.
const SNAPSHOTS: usize = 160;

async fn status(base: &str) -> Option<serde_json::Value> {
    reqwest::get(format!("{base}/api/v1/status"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[test]
fn a_follower_takes_over_when_the_primary_is_killed() {
    gept::service::system().block_on(standby());
}

async fn standby() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let rec = common::recordings();
    let mock = mock_api::start(
        &rec,
        "127.0.0.1:0".parse().unwrap(),
        MockOptions {
            clock: Clock::Step,
            faults: Default::default(),
            seed: 1,
            max_snapshots: Some(SNAPSHOTS),
        },
    )
    .await
    .unwrap();
    let env = |node: &str| {
        let mut env = serve_env(mock.addr, &url);
        for (k, v) in [
            ("GEPT__STANDBY__ENABLED", "true"),
            ("GEPT__STANDBY__NODE", node),
            ("GEPT__STANDBY__LEASE", "3s"),
            ("GEPT__STANDBY__RENEW", "500ms"),
            ("GEPT__STANDBY__FOLLOW_INTERVAL", "200ms"),
            ("GEPT__COLLECTORS__LATEST__INTERVAL", "40ms"),
            ("GEPT__DATABASE__FLUSH_INTERVAL", "10ms"),
            ("GEPT__RETENTION__ENABLED", "false"),
            ("GEPT__BACKUP__ENABLED", "false"),
        ] {
            env.push((k.to_string(), v.to_string()));
        }
        env
    };
    let primary = Serve::start(&env("a"));
    let a = primary.url.clone();
    wait_for("the first node to take the lease", 30, || {
        let a = a.clone();
        async move { status(&a).await.is_some_and(|s| s["role"] == "primary") }
    })
    .await;
    let follower = Serve::start(&env("b"));
    let b = follower.url.clone();
    assert_eq!(status(&b).await.unwrap()["role"], "follower");

    // The follower's engine sees the primary's ticks through the store.
    let addr = mock.addr;
    wait_for("a third of the replay", 120, || async move {
        mock_status(addr).await["served"].as_u64().unwrap() >= SNAPSHOTS as u64 / 3
    })
    .await;
    let bb = b.clone();
    wait_for("the follower to follow the stored ticks", 30, || {
        let b = bb.clone();
        async move { status(&b).await.is_some_and(|s| s["last_tick"].is_i64()) }
    })
    .await;
    assert_eq!(status(&b).await.unwrap()["role"], "follower");

    // kill -9 of the primary: the follower takes over within the bound.
    let mut primary = primary;
    primary.child.kill().unwrap();
    primary.child.wait().unwrap();
    let killed = Instant::now();
    let bb = b.clone();
    wait_for("the follower to take over", 30, || {
        let b = bb.clone();
        async move { status(&b).await.is_some_and(|s| s["role"] == "primary") }
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(3 + 2),
        "took over after {took:?}, more than the lease (3 s) and two renewals"
    );
    wait_for("the replay to finish", 300, || async move {
        mock_status(addr).await["finished"] == true
    })
    .await;

    // The store: the recording, less at most the snapshots in flight at the
    // kill, each row once; every bucket (the new primary back-fills).
    let exp = expected(&rec, SNAPSHOTS);
    let store = Store::connect(&url, 2).await.unwrap();
    let e = &exp;
    let s = &store;
    wait_for(
        "the buckets and the last tick to be stored",
        120,
        || async move {
            let newest_ok = s.newest_time("prices_latest_1m").await.unwrap()
                == e.latest.last().map(|r| r.timestamp);
            let mut buckets_ok = true;
            for (step, rows) in &e.buckets {
                buckets_ok &= s.count(step.table()).await.unwrap() == rows.len() as i64;
            }
            newest_ok && buckets_ok
        },
    )
    .await;
    follower.stop();
    for (step, rows) in &exp.buckets {
        let back = store.load_buckets(*step, 0, i64::MAX / 2).await.unwrap();
        assert!(&back == rows, "{} differs from the recording", step.table());
    }
    let by_tick = |rows: Vec<gept_core::LatestPrice>| {
        let mut m: BTreeMap<i64, Vec<gept_core::LatestPrice>> = BTreeMap::new();
        for r in rows {
            m.entry(r.timestamp).or_default().push(r);
        }
        m
    };
    let want = by_tick(exp.latest.clone());
    let got = by_tick(store.load_latest(0, i64::MAX / 2).await.unwrap());
    for (t, rows) in &got {
        assert_eq!(
            want.get(t),
            Some(rows),
            "tick {t} differs from the recording"
        );
    }
    let missing: Vec<i64> = want
        .keys()
        .filter(|t| !got.contains_key(t))
        .copied()
        .collect();
    assert!(
        missing.len() <= 2,
        "{} snapshots lost at the takeover: {missing:?}",
        missing.len()
    );
    store.close().await;
    common::drop_postgres_database(&url).await;
}
