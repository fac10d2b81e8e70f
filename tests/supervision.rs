//! Supervision of the feature engine and the inference: panics injected into
//! each (through the test-only fault path) during a replay of recorded ticks
//! and buckets, stored and published as the collectors do. Both restart, the
//! engine re-warms from the store, and every tick of the faulted run carries
//! exactly the probabilities of a clean run, the crashed ticks included; the
//! restarts are counted in `/metrics`.

mod common;

use futures::FutureExt;
use gept::service::Service;
use gept_actors::supervise::Faults;
use gept_core::recordings::{HOURLY_FILE, LATEST_FILE};
use gept_core::ItemId;
use gept_dataflows::inputs::{load_hours, load_ticks};
use gept_model::net::TrainOptions;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Ticks replayed in each run.
const TICKS: usize = 60;

/// Per tick: each item's probabilities.
type Run = BTreeMap<i64, BTreeMap<ItemId, Vec<f32>>>;

#[test]
fn engine_and_inference_restart_with_the_probabilities_of_an_uninterrupted_run() {
    gept::service::system().block_on(supervision());
}

async fn supervision() {
    let rec = common::recordings();
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    let meta = common::train_model(
        &rec,
        100,
        TrainOptions {
            hidden: vec![16],
            max_epochs: 1,
            ..TrainOptions::default()
        },
        &model_dir,
    );
    let model = (&meta, model_dir.as_path());

    let clean = replay(&rec, tmp.path(), "clean", model, Faults::none()).await;
    assert_eq!(
        clean.runs.len(),
        TICKS,
        "the clean run predicted every tick"
    );
    assert!(
        clean.runs.values().all(|items| !items.is_empty()),
        "every tick predicted some items"
    );
    assert_eq!(clean.restarts, (0, 0));

    // The engine crashes inside its 15th tick, the inference inside its
    // 30th: both within the replay, the second after the engine re-warmed.
    let faulted = replay(
        &rec,
        tmp.path(),
        "faulted",
        model,
        Faults {
            engine_panic_on_tick: Some(15),
            inference_panic_on_tick: Some(30),
            // Down long enough for /readyz to be seen saying so.
            engine_restart_hold: Some(Duration::from_secs(2)),
            ..Faults::none()
        },
    )
    .await;
    assert_eq!(faulted.restarts, (1, 1), "one restart of each part");
    assert_eq!(
        faulted.runs.keys().collect::<Vec<_>>(),
        clean.runs.keys().collect::<Vec<_>>(),
        "every tick predicted, the crashed ones too"
    );
    for (tick, items) in &clean.runs {
        let other = &faulted.runs[tick];
        assert_eq!(
            other.keys().collect::<Vec<_>>(),
            items.keys().collect::<Vec<_>>(),
            "items at tick {tick}"
        );
        for (item, p) in items {
            assert!(
                other[item] == *p,
                "tick {tick}, item {item}: probabilities differ after the restart"
            );
        }
    }
}

struct Outcome {
    runs: Run,
    /// Restarts of (features, inference) read from `/metrics`.
    restarts: (u64, u64),
}

/// Replays the first [`TICKS`] ticks (and the `/1h` buckets two minutes
/// after they end) into a fresh service on SQLite with the model ACTIVE,
/// storing each before publishing it as a collector does.
async fn replay(
    rec: &Path,
    dir: &Path,
    name: &str,
    (meta, model_dir): (&gept_model::ModelMeta, &Path),
    faults: Faults,
) -> Outcome {
    let url = common::sqlite_with_active_model(dir, &format!("{name}.db"), meta, model_dir).await;
    let config = common::in_process_config(&url, &[]);
    let service = Service::start_with_faults(&config, faults).await.unwrap();
    let mut stream = service.inference.stream.subscribe();

    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(TICKS)).unwrap();
    assert_eq!(ticks.len(), TICKS);
    let hours = load_hours(Some(&rec.join(HOURLY_FILE))).unwrap();
    common::feed_recorded(&service, &ticks, &hours).await;
    if faults.engine_panic_on_tick.is_some() {
        // /readyz names the feature engine as down while it restarts, and
        // as running again after.
        let readyz = format!("http://{}/readyz", service.addr);
        let engine_ok = |url: String| async move {
            let r = reqwest::get(url).await.unwrap();
            let body: serde_json::Value = r.json().await.unwrap();
            body["checks"]["feature_engine"]["ok"].as_bool().unwrap()
        };
        let u = readyz.clone();
        common::wait_for("/readyz to say the engine is down", 30, || {
            engine_ok(u.clone()).then(|ok| async move { !ok })
        })
        .await;
        let u = readyz.clone();
        common::wait_for("/readyz to say the engine runs again", 30, || {
            engine_ok(u.clone())
        })
        .await;
    }

    let last = ticks.last().unwrap().time;
    let mut runs = Run::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !runs.contains_key(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let published = tokio::time::timeout(left, stream.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: the last tick was not predicted within 120 s ({} of {TICKS} were)",
                    runs.len()
                )
            })
            .expect("the stream is open and kept up");
        let items = runs.entry(published.tick_time).or_default();
        for p in &published.predictions {
            items.insert(p.item_id, p.probabilities.clone());
        }
    }

    let metrics = reqwest::get(format!("http://{}/metrics", service.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let restarts = |component: &str| -> u64 {
        let key = format!("gept_component_restarts_total{{component=\"{component}\"}}");
        common::metric_value(&metrics, &key)
            .unwrap_or_else(|| panic!("{key} missing from /metrics")) as u64
    };
    let outcome = Outcome {
        restarts: (restarts("features"), restarts("inference")),
        runs,
    };
    let report = service.shutdown().await;
    assert!(report.clean(), "{name}: {report:?}");
    outcome
}
