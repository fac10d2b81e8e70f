//! Collectors end to end over real HTTP: `gept serve` against the replay
//! server on the real recordings, into SQLite and PostgreSQL; with faults and
//! crashes; across a gap in collection.

mod common;

use common::{assert_exact, expected, matches, mock_status, serve_env, wait_for, Serve};
use gept::service::Service;
use gept_actors::supervise::Faults as CollectorFaults;
use gept_core::recordings::{self, bucket_snapshots};
use gept_core::{wire, BucketPrice, BucketStep};
use gept_replay::{self as mock_api, Clock, FaultKind, Faults, MockOptions};
use gept_store::Store;
use std::collections::BTreeSet;

/// Snapshots the two exact replays serve: 700 of the recording's 1,424 (58 h,
/// past the 48 h horizon, every feed's gaps and nulls), so that both replays
/// running at once stay well inside their bounds on two cores.
const REPLAYED: usize = 700;

/// Replays `n` snapshots into a fresh database at `url` and checks the store
/// holds exactly the recording.
async fn replay_exact(url: &str, n: Option<usize>, faults: Faults, panic_rate: f64) -> String {
    let dir = common::recordings();
    let options = MockOptions {
        clock: Clock::Step,
        faults,
        seed: 7,
        max_snapshots: n,
    };
    let mock = mock_api::start(&dir, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let total = mock_status(mock.addr).await["total"].as_u64().unwrap() as usize;
    let exp = expected(&dir, total);
    let mut env = serve_env(mock.addr, url);
    if panic_rate > 0.0 {
        env.push(("GEPT__UPSTREAM__TIMEOUT".into(), "500ms".into()));
    }
    // The service in this process, as `gept serve` starts it, with panics
    // injected into the collectors (a path only tests have).
    let config = gept_core::config::Config::load_with_env(None, env).unwrap();
    let service = Service::start_with_faults(
        &config,
        CollectorFaults {
            collector_panic_rate: panic_rate,
            ..CollectorFaults::none()
        },
    )
    .await
    .unwrap();
    let serve_url = format!("http://{}", service.addr);
    let addr = mock.addr;
    wait_for("the replay to finish", 600, || async move {
        mock_status(addr).await["finished"] == true
    })
    .await;
    // Faults stop; the collectors must converge on exactly the recording.
    reqwest::Client::new()
        .post(format!("http://{addr}/_mock/faults"))
        .json(&Faults::default())
        .send()
        .await
        .unwrap();
    let store = Store::connect(url, 2).await.unwrap();
    wait_for("the store to hold the recording", 300, || {
        let (store, exp) = (&store, &exp);
        async move { matches(store, exp).await }
    })
    .await;
    let metrics = reqwest::get(format!("{serve_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let report = service.shutdown().await;
    assert!(
        report.clean(),
        "the service did not stop cleanly: {report:?}"
    );
    assert_exact(&store, &exp).await;
    // Collectors report themselves.
    let statuses = store.collector_statuses().await.unwrap();
    let names: BTreeSet<&str> = statuses.iter().map(|s| s.collector.as_str()).collect();
    for name in ["latest", "5m", "1h", "mapping"] {
        assert!(
            names.contains(name),
            "no collector_status row for {name}: {statuses:?}"
        );
    }
    let latest = statuses.iter().find(|s| s.collector == "latest").unwrap();
    assert!(latest.rows_written >= exp.latest.len() as i64);
    assert!(latest.last_success.is_some());
    assert_eq!(
        store.count("items").await.unwrap() > 0,
        dir.join(recordings::MAPPING_FILE).is_file()
    );
    store.close().await;
    mock.stop().await;
    metrics
}

#[test]
fn replay_into_sqlite_stores_exactly_the_recording() {
    gept::service::system().block_on(replay_into_sqlite());
}

async fn replay_into_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("gept.db").display());
    let metrics = replay_exact(&url, Some(REPLAYED), Faults::default(), 0.0).await;
    assert!(
        metrics.contains("gept_observations_ingested_total{feed=\"latest\"}"),
        "{metrics}"
    );
    // The feature engine consumed the collectors' ticks.
    assert!(
        metric(&metrics, "gept_feature_rows_total", "") > 0.0,
        "{metrics}"
    );
}

#[test]
fn replay_into_postgres_stores_exactly_the_recording() {
    gept::service::system().block_on(replay_into_postgres());
}

async fn replay_into_postgres() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    replay_exact(&url, Some(REPLAYED), Faults::default(), 0.0).await;
    common::drop_postgres_database(&url).await;
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn faults_and_crashes_lose_nothing() {
    gept::service::system().block_on(faults_and_crashes());
}

async fn faults_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("gept.db").display());
    let faults = Faults {
        rate: 0.25,
        kinds: vec![
            FaultKind::ServerError,
            FaultKind::TooManyRequests,
            FaultKind::Slow,
            FaultKind::Truncated,
            FaultKind::Malformed,
        ],
        slow_ms: 1_500,
    };
    let metrics = replay_exact(&url, Some(120), faults, 0.1).await;
    assert!(
        metric(
            &metrics,
            "gept_collector_restarts_total",
            "collector=\"latest\""
        ) > 0.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "gept_collector_errors_total",
            "collector=\"latest\""
        ) > 0.0
    );
    assert!(metric(&metrics, "gept_upstream_errors_total", "kind=\"status\"") > 0.0);
    assert!(metric(&metrics, "gept_upstream_errors_total", "kind=\"body\"") > 0.0);
    assert!(metric(&metrics, "gept_upstream_errors_total", "kind=\"timeout\"") > 0.0);
    assert!(
        metric(
            &metrics,
            "gept_upstream_errors_total",
            "kind=\"rate_limited\""
        ) > 0.0
    );
    let store = Store::connect(&url, 1).await.unwrap();
    let statuses = store.collector_statuses().await.unwrap();
    let latest = statuses.iter().find(|s| s.collector == "latest").unwrap();
    assert!(
        latest.restarts > 0 && latest.last_error.is_some(),
        "{latest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_buckets_are_recorded_and_back_filled() {
    let dir = common::recordings();
    let options = MockOptions {
        clock: Clock::Step,
        faults: Faults::default(),
        seed: 1,
        max_snapshots: Some(45),
    };
    let mock = mock_api::start(&dir, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let addr = mock.addr;
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", db.path().join("gept.db").display());
    let mut env = serve_env(addr, &url);
    // The test drives the clock itself, one /latest request per 5 minutes.
    env.push(("GEPT__COLLECTORS__LATEST__ENABLED".into(), "false".into()));
    let advance = |n: usize| async move {
        for _ in 0..n {
            reqwest::get(format!("http://{addr}/api/v1/osrs/latest"))
                .await
                .unwrap();
        }
    };
    let store = Store::connect(&url, 2).await.unwrap();
    let hour_now = |now: i64| now.div_euclid(3600) * 3600 - 3600;

    advance(12).await;
    let serve = Serve::start(&env);
    let now = mock_status(addr).await["now"].as_i64().unwrap();
    wait_for("the first hours to be stored", 60, || {
        let store = &store;
        async move { hour_times(store).await.last() == Some(&hour_now(now)) }
    })
    .await;
    serve.stop();
    let before = hour_times(&store).await;

    // Down for 30 snapshots (2.5 hours of recorded time).
    advance(30).await;
    let now = mock_status(addr).await["now"].as_i64().unwrap();
    let serve = Serve::start(&env);
    wait_for("the missed hours to be back-filled", 60, || {
        let store = &store;
        async move {
            let gaps = store.gaps().await.unwrap();
            !gaps.is_empty()
                && gaps.iter().all(|g| g.filled_at.is_some())
                && hour_times(store).await.last() == Some(&hour_now(now))
        }
    })
    .await;
    serve.stop();
    let gaps = store.gaps().await.unwrap();
    let last_before = *before.last().unwrap();
    let missed: Vec<i64> = (1..)
        .map(|k| last_before + k * 3600)
        .take_while(|t| *t < hour_now(now))
        .collect();
    let gap_buckets: Vec<i64> = gaps
        .iter()
        .filter(|g| g.feed == "1h")
        .map(|g| g.bucket)
        .collect();
    assert_eq!(
        gap_buckets, missed,
        "recorded gaps are not the missed hours"
    );
    // Every recorded hour up to now is stored, the back-filled ones included.
    let exp = expected(&dir, 42);
    let hourly: Vec<BucketPrice> = exp
        .buckets
        .iter()
        .find(|(s, _)| *s == BucketStep::OneHour)
        .unwrap()
        .1
        .iter()
        .filter(|r| r.timestamp >= before[0])
        .cloned()
        .collect();
    let back = store
        .load_buckets(BucketStep::OneHour, 0, i64::MAX / 2)
        .await
        .unwrap();
    assert_eq!(back, hourly);
    assert!(
        missed
            .iter()
            .all(|m| back.iter().any(|r| r.timestamp == *m)),
        "a missed hour is still missing"
    );
    store.close().await;
    mock.stop().await;
}

#[test]
fn serve_refuses_to_start_without_a_user_agent() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gept"))
        .arg("serve")
        .env("GEPT__UPSTREAM__USER_AGENT", "")
        .env("GEPT__DATA__DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("User-Agent"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_items_history_is_back_filled_from_timeseries() {
    // The small excerpt: every item of its mapping is new to an empty store.
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/osrs");
    let options = MockOptions {
        clock: Clock::Step,
        faults: Faults::default(),
        seed: 1,
        max_snapshots: None,
    };
    let mock = mock_api::start(&dir, "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let addr = mock.addr;
    for _ in 0..24 {
        reqwest::get(format!("http://{addr}/api/v1/osrs/latest"))
            .await
            .unwrap();
    }
    let now = mock_status(addr).await["now"].as_i64().unwrap();
    let mapping =
        wire::parse_mapping(&recordings::read_all(&dir.join(recordings::MAPPING_FILE)).unwrap())
            .unwrap();
    let items: BTreeSet<u32> = mapping.rows.iter().map(|m| m.item_id).collect();
    let expect = |file: &str, step: i64| {
        let mut rows: Vec<BucketPrice> = bucket_snapshots(&dir.join(file))
            .unwrap()
            .iter()
            .flat_map(|b| wire::parse_bucket(b.body.as_bytes()).unwrap().rows)
            .filter(|r| items.contains(&r.item_id) && r.timestamp + step <= now)
            .collect();
        rows.sort_by_key(|r| (r.timestamp, r.item_id));
        rows
    };
    let (hourly, five) = (
        expect(recordings::HOURLY_FILE, 3600),
        expect(recordings::FIVE_MINUTE_FILE, 300),
    );
    assert!(!hourly.is_empty() && !five.is_empty());

    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", db.path().join("gept.db").display());
    let mut env = serve_env(addr, &url);
    for (k, v) in [
        ("GEPT__COLLECTORS__LATEST__ENABLED", "false"),
        ("GEPT__COLLECTORS__5M__ENABLED", "false"),
        ("GEPT__COLLECTORS__1H__ENABLED", "false"),
        ("GEPT__COLLECTORS__TIMESERIES__ENABLED", "true"),
        ("GEPT__COLLECTORS__TIMESERIES__INTERVAL", "10ms"),
    ] {
        env.push((k.into(), v.into()));
    }
    let serve = Serve::start(&env);
    let store = Store::connect(&url, 2).await.unwrap();
    wait_for("the history of every new item", 120, || {
        let (store, hourly, five) = (&store, &hourly, &five);
        async move {
            store.count("prices_1h").await.unwrap() == hourly.len() as i64
                && store.count("price_data_5min").await.unwrap() == five.len() as i64
        }
    })
    .await;
    serve.stop();
    assert_eq!(
        store
            .load_buckets(BucketStep::OneHour, 0, i64::MAX / 2)
            .await
            .unwrap(),
        hourly
    );
    assert_eq!(
        store
            .load_buckets(BucketStep::FiveMinutes, 0, i64::MAX / 2)
            .await
            .unwrap(),
        five
    );
    assert_eq!(store.count("items").await.unwrap(), items.len() as i64);
    store.close().await;
    mock.stop().await;
}

/// The distinct `/1h` bucket starts stored, ascending.
async fn hour_times(store: &Store) -> Vec<i64> {
    let mut times: Vec<i64> = store
        .load_buckets(BucketStep::OneHour, 0, i64::MAX / 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.timestamp)
        .collect();
    times.dedup();
    times
}
