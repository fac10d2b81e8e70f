//! Live accuracy equals an offline evaluation of the same predictions on the
//! same matured rows. Recorded ticks and `/1h` buckets are stored and
//! published into a service with a model ACTIVE, as the collectors do; the
//! monitor samples one tick per 10 minutes of tick time. Offline, the rows
//! of the same sampled ticks are labelled from the whole replayed series
//! with the training labeller (`gept_model::dataset::labels`) and scored by
//! `gept eval`'s code on the probabilities the service published (as
//! stored, `u16`); `/api/v1/accuracy` answers the same figures per target,
//! and `/metrics` and `/api/v1/status` carry them. With the drift margin set
//! below zero the groups with validation figures report drift. The groups
//! the 8-hour model's validation had no label for are fitted on the same
//! matured rows (equal to the offline fit), and the ready ones become a
//! recalibrated ACTIVE version that the inference then serves.

mod common;

use gept::service::Service;
use gept_core::recordings::{HOURLY_FILE, LATEST_FILE};
use gept_core::{ItemId, N_TARGETS};
use gept_dataflows::inputs::{load_hours, load_ticks};
use gept_dataflows::labels::series_from_ticks;
use gept_model::net::TrainOptions;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Ticks replayed (the recordings hold one about every 5 minutes: ~12 h).
const TICKS: usize = 150;
/// The monitor's sample period.
const SAMPLE: i64 = 600;

#[test]
fn live_accuracy_equals_an_offline_evaluation_of_the_same_rows() {
    gept::service::system().block_on(accuracy());
}

async fn accuracy() {
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
    let url = common::sqlite_with_active_model(tmp.path(), "gept.db", &meta, &model_dir).await;
    let config = common::in_process_config(
        &url,
        &[
            ("GEPT__ACCURACY__SAMPLE", "10m"),
            ("GEPT__ACCURACY__WINDOW", "30d"),
            ("GEPT__ACCURACY__INTERVAL", "1h"),
            ("GEPT__ACCURACY__MIN_LABELS", "1"),
            ("GEPT__ACCURACY__DRIFT_BRIER_MARGIN", "-1.0"),
            ("GEPT__ACCURACY__DRIFT_ECE_MARGIN", "1.0"),
            ("GEPT__ACCURACY__RECALIBRATE_MIN_LABELS", "2000"),
        ],
    );
    let service = Service::start(&config).await.unwrap();
    let mut stream = service.inference.stream.subscribe();

    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(TICKS)).unwrap();
    assert_eq!(ticks.len(), TICKS);
    let hours = load_hours(Some(&rec.join(HOURLY_FILE))).unwrap();
    common::feed_recorded(&service, &ticks, &hours).await;

    // What the service published, per tick and item.
    let last = ticks.last().unwrap().time;
    let mut published: BTreeMap<i64, BTreeMap<ItemId, Vec<f32>>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !published.contains_key(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = tokio::time::timeout(left, stream.recv())
            .await
            .expect("the last tick is predicted within 180 s")
            .expect("the stream is open and kept up");
        let items = published.entry(p.tick_time).or_default();
        for q in &p.predictions {
            items.insert(q.item_id, q.probabilities.clone());
        }
    }
    // The inference thread hands a tick to the monitor just after the
    // stream: publish until the monitor has applied the last one.
    let monitor = service.accuracy.clone().expect("the monitor is on");
    common::wait_for("the monitor to apply the last tick", 120, || {
        let monitor = monitor.clone();
        async move {
            let m = monitor.clone();
            tokio::task::spawn_blocking(move || m.publish_now(Duration::from_secs(60)))
                .await
                .unwrap()
                && monitor.report.load().through == Some(last)
        }
    })
    .await;

    // Offline: the first tick with predictions in each 10-minute period,
    // each predicted item observed at it, labelled from the whole series.
    let series = series_from_ticks(&ticks);
    let (mut items, mut times, mut probs) = (Vec::new(), Vec::new(), Vec::new());
    let mut period = None;
    for (&t, preds) in &published {
        if preds.is_empty() || period == Some(t.div_euclid(SAMPLE)) {
            continue;
        }
        period = Some(t.div_euclid(SAMPLE));
        for (&item, p) in preds {
            if series
                .get(&item)
                .is_some_and(|obs| obs.binary_search_by_key(&t, |o| o.t).is_ok())
            {
                items.push(item);
                times.push(t);
                probs.extend(
                    gept_store::decode_probabilities(&gept_store::encode_probabilities(p)).unwrap(),
                );
            }
        }
    }
    let labels = gept_model::dataset::labels(&series, &items, &times, |_| i64::MAX);
    // Rows with no known label are not scored live; drop them here too.
    let keep: Vec<usize> = (0..items.len())
        .filter(|&r| {
            labels[r * N_TARGETS..(r + 1) * N_TARGETS]
                .iter()
                .any(|&l| l <= 1)
        })
        .collect();
    let pick = |v: &[f32]| -> Vec<f32> {
        keep.iter()
            .flat_map(|&r| v[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
            .collect()
    };
    let offline = gept_model::eval::evaluate(
        &pick(&probs),
        &keep
            .iter()
            .flat_map(|&r| labels[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
            .collect::<Vec<_>>(),
        &keep.iter().map(|&r| items[r]).collect::<Vec<_>>(),
        48,
    );
    assert!(offline.rows > 100, "{} offline rows", offline.rows);

    let base = format!("http://{}", service.addr);
    let live: serde_json::Value = common::get_json(format!("{base}/api/v1/accuracy")).await;
    assert_eq!(live["through"], last);
    let models = live["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{live}");
    let m = &models[0];
    assert_eq!(m["version"], meta.version.as_str());
    assert_eq!(m["rows"], offline.rows);
    assert_eq!(m["items"], offline.items);
    let targets = m["targets"].as_array().unwrap();
    assert_eq!(targets.len(), N_TARGETS);
    let close = |a: &serde_json::Value, b: Option<f64>, what: &str| match (a.as_f64(), b) {
        (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{what}: live {a}, offline {b}"),
        (None, None) => {}
        (a, b) => panic!("{what}: live {a:?}, offline {b:?}"),
    };
    let mut scored = 0;
    for (live, off) in targets.iter().zip(&offline.targets) {
        assert_eq!(live["name"], off.name.as_str());
        assert_eq!(live["n"], off.n, "{}", off.name);
        close(&live["auc"], off.auc, &format!("{} auc", off.name));
        close(&live["brier"], off.brier, &format!("{} brier", off.name));
        close(&live["ece"], off.ece, &format!("{} ece", off.name));
        close(
            &live["within_item_auc"],
            off.within_item_auc,
            &format!("{} within-item auc", off.name),
        );
        scored += usize::from(off.n > 0);
    }
    // 12 h of ticks: the 1 h to 11 h horizons matured for some rows.
    assert!(scored >= 6 * 10, "{scored} targets with matured labels");

    // Groups: 1-4h has labels and validation figures, so (margin −1) drift;
    // 32-48h has neither and cannot drift.
    let groups = m["groups"].as_array().unwrap();
    let short = groups.iter().find(|g| g["group"] == "1-4h").unwrap();
    assert!(short["labels"].as_u64().unwrap() > 0);
    assert!(short["validation"]["brier"].is_f64(), "{short}");
    assert_eq!(short["drift"], true);
    let long = groups.iter().find(|g| g["group"] == "32-48h").unwrap();
    assert_eq!(
        (long["labels"].as_u64(), &long["drift"]),
        (Some(0), &false.into())
    );
    let bins = short["reliability"].as_array().unwrap();
    let binned: u64 = bins.iter().map(|b| b["n"].as_u64().unwrap()).sum();
    assert_eq!(binned, short["labels"].as_u64().unwrap());

    // The same figures in /metrics and /api/v1/status.
    let metrics = common::get_text(format!("{base}/metrics")).await;
    let brier = common::metric_value(&metrics, "gept_accuracy_brier{group=\"1-4h\"}").unwrap();
    assert!((brier - short["brier"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(
        common::metric_value(&metrics, "gept_accuracy_drift{group=\"1-4h\"}"),
        Some(1.0)
    );
    let status: serde_json::Value = common::status(&base).await;
    assert_eq!(status["accuracy"]["version"], meta.version.as_str());
    assert_eq!(status["accuracy"]["drift"], true);

    // Live recalibration: the groups the model's validation had no label
    // for are fitted on the matured rows (the same fit offline on the same
    // probabilities and labels), and those with enough labels and a
    // held-out Brier no worse become a new ACTIVE version, same weights.
    let uncalibrated: Vec<&gept_model::calibration::Platt> = meta
        .calibration
        .groups
        .iter()
        .filter(|g| g.n == 0)
        .collect();
    assert!(
        !uncalibrated.is_empty(),
        "the 8 h model calibrates every group"
    );
    let proposal = &live["recalibration"];
    assert_eq!(proposal["version"], meta.version.as_str(), "{proposal}");
    let fits = proposal["groups"].as_array().unwrap();
    assert_eq!(
        fits.iter()
            .map(|g| g["horizons_h"].clone())
            .collect::<Vec<_>>(),
        uncalibrated
            .iter()
            .map(|g| serde_json::json!(g.horizons))
            .collect::<Vec<_>>()
    );
    let offline_probs = pick(&probs);
    let offline_labels: Vec<u8> = keep
        .iter()
        .flat_map(|&r| labels[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
        .collect();
    let mut ready = Vec::new();
    for fit in fits {
        let hours: Vec<u32> = serde_json::from_value(fit["horizons_h"].clone()).unwrap();
        let (mut p, mut y) = (Vec::new(), Vec::new());
        for (t, (&q, &l)) in offline_probs.iter().zip(&offline_labels).enumerate() {
            let h = gept_core::HORIZONS_H[(t % N_TARGETS) / gept_core::OFFSETS_BP.len()];
            if l <= 1 && hours.contains(&h) {
                p.push(q);
                y.push(l == 1);
            }
        }
        assert_eq!(fit["labels"], p.len(), "{fit}");
        if p.is_empty() {
            assert_eq!(fit["ready"], false, "{fit}");
            continue;
        }
        let (a, b) = gept_model::calibration::fit_on_probabilities(&p, &y);
        let (la, lb) = (fit["a"].as_f64().unwrap(), fit["b"].as_f64().unwrap());
        assert!(
            (a - la).abs() < 1e-6 && (b - lb).abs() < 1e-6,
            "{fit}: offline a={a} b={b}"
        );
        if fit["ready"] == true {
            assert!(
                fit["holdout_brier_after"].as_f64() <= fit["holdout_brier_before"].as_f64(),
                "{fit}"
            );
            ready.push((hours, a, b, p.len()));
        }
    }
    assert!(!ready.is_empty(), "no group was ready: {proposal}");
    let prefix = format!("{}-live-", meta.version);
    let store = service.store.clone();
    common::wait_for("the recalibrated model to be ACTIVE", 120, || {
        let (store, prefix) = (store.clone(), prefix.clone());
        async move {
            store
                .active_model()
                .await
                .unwrap()
                .is_some_and(|a| a.version.starts_with(&prefix))
        }
    })
    .await;
    let active = service.store.active_model().await.unwrap().unwrap();
    let artifact = service
        .store
        .model_artifact(&active.version)
        .await
        .unwrap()
        .expect("registered with its files");
    let recal: gept_model::ModelMeta = serde_json::from_slice(&artifact.meta).unwrap();
    assert_eq!(
        recal.recalibrated_from.as_deref(),
        Some(meta.version.as_str())
    );
    assert_eq!(recal.weights_sha256, meta.weights_sha256);
    for g in &recal.calibration.groups {
        match ready.iter().find(|r| r.0 == g.horizons) {
            Some((_, a, b, n)) => {
                assert!(g.live && g.n == *n, "{g:?}");
                assert!((g.a - a).abs() < 1e-6 && (g.b - b).abs() < 1e-6, "{g:?}");
            }
            None => {
                let was = meta
                    .calibration
                    .groups
                    .iter()
                    .find(|o| o.horizons == g.horizons);
                assert_eq!(Some(g), was);
            }
        }
    }
    let now_live: Vec<u32> = ready.iter().flat_map(|r| r.0.iter().copied()).collect();
    common::wait_for("the inference to serve the recalibrated model", 60, || {
        let (base, version) = (base.clone(), active.version.clone());
        async move {
            let s: serde_json::Value = common::status(&base).await;
            s["model"]["version"] == version.as_str()
        }
    })
    .await;
    let status: serde_json::Value = common::status(&base).await;
    let listed =
        |key: &str| -> Vec<u32> { serde_json::from_value(status["model"][key].clone()).unwrap() };
    assert_eq!(listed("live_calibrated_horizons"), now_live);
    assert!(
        listed("uncalibrated_horizons")
            .iter()
            .all(|h| !now_live.contains(h)),
        "{status}"
    );
    let metrics = common::get_text(format!("{base}/metrics")).await;
    assert_eq!(
        common::metric_value(&metrics, "gept_recalibrations_total{outcome=\"activated\"}"),
        Some(1.0)
    );

    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");

    // A restart on the same store: the new monitor rebuilds its rows from
    // the stored ticks and predictions and answers the same figures.
    let service = Service::start(&config).await.unwrap();
    let monitor = service.accuracy.clone().expect("the monitor is on");
    assert!(monitor.publish_now(Duration::from_secs(120)));
    let again: serde_json::Value =
        common::get_json(format!("http://{}/api/v1/accuracy", service.addr)).await;
    assert_eq!(again["through"], last, "{again}");
    let restored = &again["models"].as_array().unwrap()[0];
    assert_eq!(restored["version"], meta.version.as_str());
    assert_eq!(
        (&restored["rows"], &restored["items"]),
        (&m["rows"], &m["items"])
    );
    // Equal up to float summation order (rows are kept by item in a hash map).
    fn same(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() < 1e-9,
                    "{at}: {x} after the restart, {y} before"
                );
            }
            (Value::Array(x), Value::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{at}");
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    same(x, y, &format!("{at}[{i}]"));
                }
            }
            (Value::Object(x), Value::Object(y)) => {
                assert_eq!(
                    x.keys().collect::<Vec<_>>(),
                    y.keys().collect::<Vec<_>>(),
                    "{at}"
                );
                for (k, v) in x {
                    same(v, &y[k], &format!("{at}.{k}"));
                }
            }
            _ => assert_eq!(a, b, "{at}"),
        }
    }
    same(&restored["targets"], &m["targets"], "targets");
    same(&restored["groups"], &m["groups"], "groups");
    same(&restored["offsets"], &m["offsets"], "offsets");
    // The recalibrated model is still the one served, and the proposal for
    // its parent (no longer ACTIVE) is not registered again.
    assert_eq!(
        service.store.active_model().await.unwrap().unwrap().version,
        active.version
    );
    assert_eq!(
        service.store.models().await.unwrap().len(),
        2,
        "the parent and its one recalibration"
    );
    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");
}
