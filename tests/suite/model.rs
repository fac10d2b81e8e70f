//! Labels against a brute-force labeller on the real recording, the dataset's
//! freedom from look-ahead, and the model's life: train, save, load (checked),
//! predict (monotone, calibrated), evaluate, register with the gates, on
//! SQLite and PostgreSQL.

use crate::common;

use gept_core::recordings::{self, LATEST_FILE};
use gept_core::{HORIZONS_H, N_TARGETS, OFFSETS_BP};
use gept_dataflows::features::TickInput;
use gept_dataflows::inputs::{load_hours, load_items, load_ticks};
use gept_dataflows::labels::{label_series, series_from_ticks, Obs, UNKNOWN};
use gept_model::calibration::is_monotone;
use gept_model::dataset;
use gept_model::net::TrainOptions;
use gept_model::Model;
use gept_store::{ModelEntry, ModelState};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The brute-force labeller: for each (T, offset), walk forward through
/// (T, T + 48 h] once, noting the first buy and the best sell after it, and
/// read each horizon's label as the walk passes T + H. Prices in i128.
fn brute_force(obs: &[Obs]) -> Vec<[u8; N_TARGETS]> {
    let last = obs.last().map_or(i64::MIN, |o| o.t);
    obs.iter()
        .enumerate()
        .map(|(i, o)| {
            let mut row = [UNKNOWN; N_TARGETS];
            for (k, &bp) in OFFSETS_BP.iter().enumerate() {
                let buy = (o.low as i128 * (10_000 - bp as i128)) / 10_000;
                let sell = (o.high as i128 * (10_000 + bp as i128) + 9_999) / 10_000;
                for (h, &hours) in HORIZONS_H.iter().enumerate() {
                    let until = o.t + hours as i64 * 3600;
                    if until > last {
                        continue;
                    }
                    // A buy by a trade after T, then a sale by a trade
                    // after the buy was seen.
                    let mut bought = None;
                    let mut filled = false;
                    for later in &obs[i + 1..] {
                        if later.t > until {
                            break;
                        }
                        if bought.is_none() && later.low as i128 <= buy && later.low_time > o.t {
                            bought = Some(later.t);
                        }
                        if bought.is_some_and(|b| later.high as i128 >= sell && later.high_time > b)
                        {
                            filled = true;
                            break;
                        }
                    }
                    row[h * OFFSETS_BP.len() + k] = u8::from(filled);
                }
            }
            row
        })
        .collect()
}

/// `/latest` snapshots in the recordings the tests read.
fn snapshot_count(dir: &Path) -> usize {
    recordings::open(&dir.join(LATEST_FILE))
        .unwrap()
        .lines()
        .count()
}

/// Snapshots the shared model trains on: the first 420 (35 h) of the full
/// recordings, or the first 60 % of the in-repo excerpt.
fn training_snapshots(dir: &Path) -> usize {
    420.min(snapshot_count(dir) * 6 / 10)
}

#[test]
fn labels_equal_a_brute_force_labeller_on_the_recording() {
    let dir = common::recordings();
    // 700 snapshots (about 58 h) so that 48 h labels exist.
    let ticks = load_ticks(&dir.join(LATEST_FILE), Some(700)).unwrap();
    let series = series_from_ticks(&ticks);
    let mut ids: Vec<u32> = series.keys().copied().collect();
    ids.sort_unstable();
    // Every 25th item (all of them on the small excerpt).
    let step = if ids.len() > 400 { 25 } else { 1 };
    let (mut ones, mut zeros, mut unknown, mut checked) = (0, 0, 0, 0);
    for id in ids.iter().step_by(step) {
        let obs = &series[id];
        let ours = label_series(obs, |_| i64::MAX);
        let brute = brute_force(obs);
        for (j, (a, b)) in ours.iter().zip(&brute).enumerate() {
            assert_eq!(a, b, "item {id}, observation {j} at {}", obs[j].t);
            for v in a {
                match v {
                    0 => zeros += 1,
                    1 => ones += 1,
                    _ => unknown += 1,
                }
            }
        }
        checked += 1;
    }
    eprintln!("labels: {checked} items, {ones} ones, {zeros} zeros, {unknown} unknown");
    assert!(ones > 1000 && zeros > 1000 && unknown > 1000);
}

/// Ticks after `cut` altered: prices moved, half the items dropped, a new
/// item, nulls.
fn alter_after(ticks: &mut [TickInput], cut: i64) {
    for tick in ticks.iter_mut().filter(|t| t.time > cut) {
        let mut n = 0u32;
        tick.rows.retain(|_| {
            n += 1;
            n.is_multiple_of(2)
        });
        for r in &mut tick.rows {
            r.high = r.high.map(|h| h * 11 / 10 + 1);
            if r.item_id % 7 == 0 {
                r.low = None;
            }
        }
        let mut extra = tick.rows[0];
        extra.item_id = 999_999;
        tick.rows.push(extra);
    }
}

#[test]
fn dataset_features_at_t_do_not_depend_on_anything_after_t() {
    let dir = common::recordings();
    let mut ticks = load_ticks(&dir.join(LATEST_FILE), Some(60)).unwrap();
    let mut hours = load_hours(Some(&dir.join(recordings::HOURLY_FILE))).unwrap();
    let items = load_items(Some(&dir.join(recordings::MAPPING_FILE))).unwrap();
    let cut = ticks[40].time;
    let before = dataset::features(&ticks, &hours, &items, |t| t <= cut);
    alter_after(&mut ticks, cut);
    for h in hours.iter_mut().filter(|h| h.start + 3600 > cut) {
        for r in &mut h.rows {
            r.high_price_volume += 1_000;
        }
    }
    let after_all = dataset::features(&ticks, &hours, &items, |_| true);
    let after = dataset::features(&ticks, &hours, &items, |t| t <= cut);
    assert!(before.len() > 40 * 30);
    assert_eq!(before.items, after.items);
    assert_eq!(before.times, after.times);
    let same = before
        .x
        .iter()
        .zip(&after.x)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "features at or before the cut changed");
    // The alteration did reach the rows after the cut.
    assert!(after_all.items.contains(&999_999));
}

/// A model trained once per test run on the first [`training_snapshots`].
fn trained_model() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = DIR.get_or_init(|| {
        let dir = common::recordings();
        let opts = TrainOptions {
            hidden: vec![64, 32],
            max_epochs: common::test_epochs(3),
            ..TrainOptions::default()
        };
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("model");
        common::train_model(&dir, training_snapshots(&dir), opts, &out);
        (tmp, out)
    });
    path
}

#[test]
fn a_trained_model_describes_itself_and_predicts_monotone_calibrated_fills() {
    let dir = trained_model();
    let model = Model::load(dir, tch::Device::Cpu).unwrap();
    let meta = &model.meta;
    assert_eq!(meta.targets.len(), N_TARGETS);
    assert_eq!(meta.features, gept_dataflows::features::feature_names());
    assert_eq!(meta.weights_sha256.len(), 64);
    assert!(meta.version.ends_with(&meta.weights_sha256[..12]));
    assert_eq!(meta.calibration.groups.len(), 5);
    assert!(
        meta.calibration.groups[0].n > 0,
        "the 1–4 h group was fitted"
    );
    let mean_auc = meta.metrics["mean_auc"].as_f64().unwrap();
    assert!(mean_auc > 0.6, "validation mean AUC {mean_auc}");
    // Training labels never look past the validation cut.
    let t = &meta.training;
    assert!(t["validation_from"].as_i64() > t["first_tick"].as_i64());
    // Predictions on unseen ticks after the training period.
    let rec = common::recordings();
    let trained = training_snapshots(&rec);
    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(trained + 80)).unwrap();
    let from = ticks[trained + 20].time;
    let rows = dataset::features(&ticks, &[], &Default::default(), |t| t >= from);
    let probs = model.predict(&rows.x);
    assert_eq!(probs.len(), rows.len() * N_TARGETS);
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(probs.chunks_exact(N_TARGETS).all(is_monotone));
    // Distinct items get distinct predictions.
    let first: Vec<&[f32]> = probs.chunks_exact(N_TARGETS).take(50).collect();
    assert!(first.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn a_tampered_model_is_refused() {
    let dir = trained_model();
    let tmp = tempfile::tempdir().unwrap();
    for f in ["model.json", "weights.safetensors"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let weights = tmp.path().join("weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let err = Model::load(tmp.path(), tch::Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    // Features other than this build's are refused too.
    std::fs::copy(dir.join("weights.safetensors"), &weights).unwrap();
    let text = std::fs::read_to_string(dir.join("model.json"))
        .unwrap()
        .replace("\"mid_ma_1h\"", "\"mid_ma_2h\"");
    std::fs::write(tmp.path().join("model.json"), text).unwrap();
    let err = Model::load(tmp.path(), tch::Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("mid_ma_2h"), "{err}");
}

/// Writes the first `n` lines of the recording after skipping `skip`, as plain JSONL.
fn cut_recording(src: &Path, skip: usize, n: usize, out: &Path) {
    let reader = recordings::open(src).unwrap();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for line in reader.lines().skip(skip).take(n) {
        writeln!(w, "{}", line.unwrap()).unwrap();
    }
}

#[test]
fn eval_writes_a_report_and_plots_for_a_later_period() {
    let dir = trained_model();
    let rec = common::recordings();
    let tmp = tempfile::tempdir().unwrap();
    let (history, latest) = (
        tmp.path().join("history.jsonl"),
        tmp.path().join("latest.jsonl"),
    );
    // History: up to 270 snapshots before the end of training; the scored
    // period: up to 200 after it (the model never saw them).
    let trained = training_snapshots(&rec);
    let later = 200.min(snapshot_count(&rec) - trained);
    assert!(later >= 100, "too little left to score: {later} snapshots");
    let kept = 270.min(trained);
    cut_recording(&rec.join(LATEST_FILE), trained - kept, kept, &history);
    cut_recording(&rec.join(LATEST_FILE), trained, later, &latest);
    let report = tmp.path().join("report");
    let status = Command::new(env!("CARGO_BIN_EXE_gept"))
        .args(["eval", "--model"])
        .arg(dir)
        .arg("--history")
        .arg(&history)
        .arg("--latest")
        .arg(&latest)
        .arg("--hourly")
        .arg(rec.join(recordings::HOURLY_FILE))
        .arg("--mapping")
        .arg(rec.join(recordings::MAPPING_FILE))
        .args(["--max-horizon", "6h", "--device", "cpu", "--report"])
        .arg(&report)
        .status()
        .unwrap();
    assert!(status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 6 * OFFSETS_BP.len(), "horizons 1–6 h");
    for t in targets {
        for key in [
            "name",
            "auc",
            "within_item_auc",
            "brier",
            "ece",
            "base_rate",
            "n",
        ] {
            assert!(t.get(key).is_some(), "{key} missing in {t}");
        }
        assert!(t["n"].as_u64().unwrap() > 1000);
    }
    let mean = json["mean_auc"].as_f64().unwrap();
    let within = json["mean_within_item_auc"].as_f64().unwrap();
    assert!(
        mean > 0.55 && within > 0.5,
        "mean AUC {mean}, within-item {within}"
    );
    for svg in ["reliability.svg", "auc_heatmap.svg"] {
        let text = std::fs::read_to_string(report.join(svg)).unwrap();
        assert!(text.starts_with("<svg") && text.contains("</svg>"));
    }
}

fn entry(version: &str, mean_auc: f64, created_at: i64) -> ModelEntry {
    ModelEntry {
        version: version.into(),
        state: ModelState::Pending,
        path: format!("/models/{version}"),
        sha256: "0".repeat(64),
        mean_auc: Some(mean_auc),
        metrics: serde_json::json!({"mean_auc": mean_auc, "targets": []}).to_string(),
        created_at,
        activated_at: None,
        deprecated_at: None,
        archived_at: None,
    }
}

async fn registry_lifecycle(store: &gept_store::Store) {
    store.migrate().await.unwrap();
    store.register_model(&entry("a", 0.6, 100)).await.unwrap();
    store.register_model(&entry("b", 0.7, 200)).await.unwrap();
    assert!(store.register_model(&entry("a", 0.6, 100)).await.is_err());
    assert_eq!(store.active_model().await.unwrap(), None);
    store.activate_model("a", 300).await.unwrap();
    store.activate_model("b", 400).await.unwrap();
    let models = store.models().await.unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(
        (models[0].state, models[0].deprecated_at),
        (ModelState::Deprecated, Some(400))
    );
    assert_eq!(
        (models[1].state, models[1].activated_at),
        (ModelState::Active, Some(400))
    );
    assert_eq!(models[1].mean_auc, Some(0.7));
    let metrics: serde_json::Value = serde_json::from_str(&models[1].metrics).unwrap();
    assert_eq!(metrics["mean_auc"], 0.7);
    assert!(
        store.archive_model("b", 500).await.is_err(),
        "the ACTIVE model cannot be archived"
    );
    store.archive_model("a", 500).await.unwrap();
    assert!(store.activate_model("a", 600).await.is_err(), "archived");
    assert!(store.activate_model("nope", 600).await.is_err());

    // The files travel with the row; a model without them loads from its path.
    assert_eq!(store.model_artifact("a").await.unwrap(), None);
    let cache = tempfile::tempdir().unwrap();
    let a = &models[0];
    assert_eq!(
        gept_model::registry::materialise(store, a, cache.path())
            .await
            .unwrap(),
        Path::new("/models/a")
    );
    let artifact = gept_store::ModelArtifact {
        meta: b"{}".to_vec(),
        weights: (0..=255u8).cycle().take(70_000).collect(),
        sha256: "0".repeat(64),
    };
    store.put_model_artifact("a", &artifact).await.unwrap();
    assert_eq!(
        store.model_artifact("a").await.unwrap().as_ref(),
        Some(&artifact)
    );
    // Its weights do not hash to the registry's sha256: refused, nothing written.
    let refused = gept_model::registry::materialise(store, a, cache.path())
        .await
        .unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn registry_lifecycle_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    registry_lifecycle(&store).await;
}

#[tokio::test]
async fn registry_lifecycle_on_postgres() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let store = gept_store::Store::connect(&url, 4).await.unwrap();
    registry_lifecycle(&store).await;
    store.close().await;
    common::drop_postgres_database(&url).await;
}

#[test]
fn gept_model_register_applies_the_gates_and_activates() {
    let dir = trained_model();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("gept.db").display());
    let gept = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gept"))
            .args(args)
            .env("GEPT__DATABASE__URL", &url)
            .output()
            .unwrap()
    };
    let out = gept(&["model", "register", dir.to_str().unwrap(), "--activate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("is ACTIVE"), "{stdout}");
    // A copy whose metrics fail the gates registers but does not activate.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(
        dir.join("weights.safetensors"),
        bad.join("weights.safetensors"),
    )
    .unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    meta["version"] = "bad-model".into();
    meta["metrics"]["mean_auc"] = 0.51.into();
    std::fs::write(bad.join("model.json"), meta.to_string()).unwrap();
    let out = gept(&["model", "register", bad.to_str().unwrap(), "--activate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fails the activation gates"));
    let out = gept(&["model", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["version"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&("bad-model", "PENDING")), "{states:?}");
    assert_eq!(states.iter().filter(|(_, s)| *s == "ACTIVE").count(), 1);
}

/// A store holding the recordings' first `snapshots` ticks, the buckets that
/// end by the last of them, and the item constants.
async fn store_with_history(snapshots: usize) -> (gept_store::Store, tempfile::TempDir, i64) {
    use gept_core::recordings::{FIVE_MINUTE_FILE, HOURLY_FILE, LATEST_FILE, MAPPING_FILE};
    use gept_core::BucketStep;
    use gept_dataflows::inputs::{load_buckets, load_items, load_ticks};
    let rec = common::recordings();
    let (store, dir) = common::sqlite_store().await;
    store.migrate().await.unwrap();
    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(snapshots)).unwrap();
    let last = ticks.last().unwrap().time;
    for t in &ticks {
        store.insert_latest(&t.rows).await.unwrap();
    }
    for (file, step) in [
        (HOURLY_FILE, BucketStep::OneHour),
        (FIVE_MINUTE_FILE, BucketStep::FiveMinutes),
    ] {
        for b in load_buckets(Some(&rec.join(file)), step).unwrap() {
            if b.start + step.seconds() <= last {
                store.insert_buckets(step, &b.rows).await.unwrap();
            }
        }
    }
    let items = load_items(Some(&rec.join(MAPPING_FILE))).unwrap();
    store
        .upsert_items(&items.into_values().collect::<Vec<_>>(), 0)
        .await
        .unwrap();
    (store, dir, last)
}

/// Rows streamed from the store an hour at a time equal the rows of the
/// whole history in memory: features bit for bit, labels, the split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_streamed_from_the_store_equal_the_rows_of_the_whole_history() {
    use gept_model::pipeline::{split_rows, Split};
    let (store, _dir, _) = store_with_history(150).await;
    let split = Split {
        validation_fraction: 0.3,
        stride: 3,
    };
    let history = gept_model::history::History::from_store(&store, i64::MAX - 1)
        .await
        .unwrap();
    let batch = split_rows(
        &history.ticks,
        &history.hours,
        &history.items,
        &split,
        false,
    )
    .unwrap();
    drop(history);
    let streamed = gept_model::stream::split_rows_from_store(
        &store,
        i64::MIN / 2,
        i64::MAX / 2,
        &split,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (streamed.first_tick, streamed.cut, streamed.last_tick),
        (batch.first_tick, batch.cut, batch.last_tick)
    );
    for (what, s, b, ys, yb) in [
        (
            "training",
            &streamed.train,
            &batch.train,
            &streamed.y_train,
            &batch.y_train,
        ),
        (
            "validation",
            &streamed.val,
            &batch.val,
            &streamed.y_val,
            &batch.y_val,
        ),
    ] {
        assert!(b.len() > 100, "{what}: {} rows", b.len());
        assert_eq!(s.items, b.items, "{what} items");
        assert_eq!(s.times, b.times, "{what} times");
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(bits(&s.x) == bits(&b.x), "{what} features differ");
        assert!(ys == yb, "{what} labels differ");
        assert!(yb.contains(&1) && yb.contains(&0));
    }
}
