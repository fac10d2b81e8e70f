//! History → trained, calibrated, described model; model + period → report.
//! Both go through [`dataset`], i.e. through the serving feature engine.

use crate::calibration::Calibration;
use crate::dataset::{self, Features};
use crate::eval::{self, Report};
use crate::file::{Model, ModelMeta, FORMAT};
use crate::net::{self, TrainOptions};
use gept_core::{target_names, ItemId, ItemMeta, N_TARGETS};
use gept_dataflows::features::{BucketInput, TickInput};
use gept_dataflows::labels;
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tch::Device;

/// How history is split into training and validation rows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Split {
    /// Share of the period, at its end, held out for validation.
    pub validation_fraction: f64,
    /// Every `stride`-th tick becomes rows.
    pub stride: usize,
}

impl Default for Split {
    fn default() -> Self {
        Split {
            validation_fraction: 0.2,
            stride: 2,
        }
    }
}

/// Times of every `stride`-th tick at or after `from`.
fn kept_ticks(ticks: &[TickInput], from: i64, stride: usize) -> HashSet<i64> {
    ticks
        .iter()
        .filter(|t| t.time >= from)
        .step_by(stride.max(1))
        .map(|t| t.time)
        .collect()
}

/// Training and validation rows of a period, as `train` uses them.
pub struct SplitRows {
    pub first_tick: i64,
    /// Validation starts here.
    pub cut: i64,
    pub last_tick: i64,
    pub train: Features,
    pub y_train: Vec<u8>,
    pub val: Features,
    pub y_val: Vec<u8>,
}

/// Replays `ticks` through the feature engine and splits the rows at the
/// validation cut: training labels only use outcomes known before the cut,
/// validation labels everything up to the last tick.
pub fn split_rows(
    ticks: &[TickInput],
    hours: &[BucketInput],
    items: &HashMap<ItemId, ItemMeta>,
    split: &Split,
    progress: bool,
) -> anyhow::Result<SplitRows> {
    let started = Instant::now();
    anyhow::ensure!(ticks.len() >= 2, "training needs at least two ticks");
    let (first, last) = (ticks[0].time, ticks[ticks.len() - 1].time);
    let cut = last - ((last - first) as f64 * split.validation_fraction) as i64;
    let keep = kept_ticks(ticks, first, split.stride);
    let all = dataset::features(ticks, hours, items, |t| keep.contains(&t));
    let features_s = started.elapsed().as_secs_f64();
    let series = labels::series_from_ticks(ticks);
    let y = dataset::labels(&series, &all.items, &all.times, |t| {
        if t < cut {
            cut
        } else {
            last
        }
    });
    let labels_s = started.elapsed().as_secs_f64() - features_s;
    let (train_idx, val_idx): (Vec<usize>, Vec<usize>) =
        (0..all.len()).partition(|&i| all.times[i] < cut);
    let rows_of = |idx: &[usize]| -> Vec<u8> {
        idx.iter()
            .flat_map(|&r| y[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
            .collect()
    };
    let (train, y_train) = (all.select(&train_idx), rows_of(&train_idx));
    let (val, y_val) = (all.select(&val_idx), rows_of(&val_idx));
    drop(all);
    if progress {
        eprintln!(
            "dataset: {} training rows, {} validation rows, {} features ({features_s:.1} s features, {labels_s:.1} s labels); validation from {}",
            train.len(),
            val.len(),
            train.width(),
            chrono::DateTime::from_timestamp(cut, 0).unwrap_or_default()
        );
    }
    Ok(SplitRows {
        first_tick: first,
        cut,
        last_tick: last,
        train,
        y_train,
        val,
        y_val,
    })
}

/// Calendar features that `span` seconds of training rows cannot teach: a
/// cycle not covered twice leaves values that serving meets and training
/// never saw (three days of history hold no Friday), and the network
/// extrapolates into them. Weekly features need 14 days, daily ones 2.
pub fn uncovered_calendar_features(span: i64) -> Vec<String> {
    let mut out = Vec::new();
    if span < 14 * 86_400 {
        out.extend(["dow_sin", "dow_cos", "is_weekend"]);
    }
    if span < 2 * 86_400 {
        out.extend(["hour_sin", "hour_cos", "peak_hour"]);
    }
    out.into_iter().map(String::from).collect()
}

/// Trains on `ticks` (time order): rows before the validation cut learn only
/// from outcomes known before the cut (no label of a training row looks into
/// validation); validation rows use outcomes up to the last tick. Returns the
/// weights and the description to save with [`Model::save`].
pub fn train(
    ticks: &[TickInput],
    hours: &[BucketInput],
    items: &HashMap<ItemId, ItemMeta>,
    split: &Split,
    opts: &TrainOptions,
    device: Device,
    progress: bool,
) -> anyhow::Result<(tch::nn::VarStore, ModelMeta)> {
    let started = Instant::now();
    let rows = split_rows(ticks, hours, items, split, progress)?;
    train_rows(rows, split, opts, device, progress, started, None)
}

/// Trains on split rows (from [`split_rows`] or
/// [`crate::stream::split_rows_from_store`]); `started` dates the training
/// for its reported seconds. With `compare`, that model (the ACTIVE one) is
/// scored beside the new one on the validation rows after its own last
/// training tick (rows it never saw), into `training.compared`.
pub fn train_rows(
    rows: SplitRows,
    split: &Split,
    opts: &TrainOptions,
    device: Device,
    progress: bool,
    started: Instant,
    compare: Option<&Model>,
) -> anyhow::Result<(tch::nn::VarStore, ModelMeta)> {
    let (first, cut, last) = (rows.first_tick, rows.cut, rows.last_tick);
    let (mut train, mut y_train, val, y_val) = (rows.train, rows.y_train, rows.val, rows.y_val);
    retain_labelled(&mut train, &mut y_train);
    let mut opts = opts.clone();
    for f in uncovered_calendar_features(cut - first) {
        if !opts.exclude.contains(&f) {
            opts.exclude.push(f);
        }
    }
    if progress && !opts.exclude.is_empty() {
        eprintln!(
            "features not read by this model: {}",
            opts.exclude.join(", ")
        );
    }
    let opts = &opts;
    let trained = net::train(&train, &y_train, &val, &y_val, opts, device, progress)?;
    let inputs = net::input_width(&trained.scaling);
    let val_logits = net::predict_logits(
        &trained.net,
        &net::encode(&val.x, &trained.scaling),
        inputs,
        device,
    );
    let calibration = Calibration::fit(&val_logits, &y_val);
    let mut probs = val_logits;
    calibration.apply(&mut probs);
    let report = eval::evaluate(&probs, &y_val, &val.items, u32::MAX);
    let compared = compare.map(|active| compare_on_unseen(active, &val, &y_val, &probs));
    let meta = ModelMeta {
        format: FORMAT.into(),
        version: String::new(),
        created_at: chrono::Utc::now().timestamp(),
        features: train.names.clone(),
        targets: target_names(),
        scaling: trained.scaling.clone(),
        hidden: opts.hidden.clone(),
        calibration,
        metrics: serde_json::to_value(&report)?,
        training: serde_json::json!({
            "options": opts,
            "split": split,
            "device": format!("{device:?}"),
            "first_tick": first,
            "validation_from": cut,
            "last_tick": last,
            "training_rows": train.len(),
            "validation_rows": val.len(),
            "epochs": trained.epochs,
            "best_epoch": trained.best_epoch,
            "seconds": started.elapsed().as_secs_f64(),
            "compared": compared,
        }),
        weights: String::new(),
        weights_sha256: String::new(),
        recalibrated_from: None,
    };
    Ok((trained.vs, meta))
}

/// Drops the rows without any known label, in place (no second copy of
/// the training set).
fn retain_labelled(f: &mut Features, y: &mut Vec<u8>) {
    let w = f.width();
    let mut j = 0;
    for i in 0..f.len() {
        if y[i * N_TARGETS..(i + 1) * N_TARGETS]
            .iter()
            .any(|&l| l <= 1)
        {
            if i != j {
                f.x.copy_within(i * w..(i + 1) * w, j * w);
                y.copy_within(i * N_TARGETS..(i + 1) * N_TARGETS, j * N_TARGETS);
                f.items[j] = f.items[i];
                f.times[j] = f.times[i];
            }
            j += 1;
        }
    }
    f.x.truncate(j * w);
    y.truncate(j * N_TARGETS);
    f.items.truncate(j);
    f.times.truncate(j);
}

/// `active` and the new model's probabilities `probs` scored on the
/// validation rows after `active`'s last training tick.
fn compare_on_unseen(
    active: &Model,
    val: &Features,
    y_val: &[u8],
    probs: &[f32],
) -> serde_json::Value {
    let after = active.meta.training["last_tick"]
        .as_i64()
        .unwrap_or(i64::MIN);
    let idx: Vec<usize> = (0..val.len()).filter(|&i| val.times[i] > after).collect();
    let pick = |v: &[u8]| -> Vec<u8> {
        idx.iter()
            .flat_map(|&r| v[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
            .collect()
    };
    let y = pick(y_val);
    let new: Vec<f32> = idx
        .iter()
        .flat_map(|&r| probs[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
        .collect();
    let rows = val.select(&idx);
    let old = active.predict(&rows.x);
    let summary =
        |r: &Report| serde_json::json!({"mean_auc": r.mean_auc, "mean_brier": r.mean_brier});
    serde_json::json!({
        "version": active.meta.version,
        "after": after,
        "rows": idx.len(),
        "new": summary(&eval::evaluate(&new, &y, &rows.items, u32::MAX)),
        "active": summary(&eval::evaluate(&old, &y, &rows.items, u32::MAX)),
    })
}

/// Rows scored by [`evaluate`]: features, labels and the model's probabilities.
pub struct Scored {
    pub rows: Features,
    pub labels: Vec<u8>,
    pub probs: Vec<f32>,
}

/// Replays `ticks` (history first) and scores the rows of ticks at or after
/// `score_from`; outcomes use everything up to the last tick.
pub fn score(
    model: &Model,
    ticks: &[TickInput],
    hours: &[BucketInput],
    items: &HashMap<ItemId, ItemMeta>,
    score_from: i64,
) -> Scored {
    let (rows, labels) = rows_to_score(ticks, hours, items, score_from);
    let probs = model.predict(&rows.x);
    Scored {
        rows,
        labels,
        probs,
    }
}

/// The rows (and labels) of the ticks at or after `score_from`, features
/// computed over all of `ticks`.
pub fn rows_to_score(
    ticks: &[TickInput],
    hours: &[BucketInput],
    items: &HashMap<ItemId, ItemMeta>,
    score_from: i64,
) -> (Features, Vec<u8>) {
    let rows = dataset::features(ticks, hours, items, |t| t >= score_from);
    let series = labels::series_from_ticks(ticks);
    let labels = dataset::labels(&series, &rows.items, &rows.times, |_| i64::MAX);
    (rows, labels)
}

/// Reads predictions of another model from CSV (`item_id,timestamp,<target
/// names>`; targets not in the file are 0) for the rows of `rows`, in their
/// order. Every row must be present.
pub fn read_predictions(path: &std::path::Path, rows: &Features) -> anyhow::Result<Vec<f32>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    anyhow::ensure!(
        header.len() >= 3 && header[0] == "item_id" && header[1] == "timestamp",
        "{}: the header must start with item_id,timestamp",
        path.display()
    );
    let names = target_names();
    let columns: Vec<Option<usize>> = header[2..]
        .iter()
        .map(|h| names.iter().position(|n| n == h))
        .collect();
    let mut by_row: HashMap<(ItemId, i64), Vec<f32>> = HashMap::new();
    for (n, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        anyhow::ensure!(
            cells.len() == header.len(),
            "{}: line {} has {} cells",
            path.display(),
            n + 2,
            cells.len()
        );
        let key = (cells[0].parse()?, cells[1].parse()?);
        let mut p = vec![0.0f32; N_TARGETS];
        for (c, cell) in columns.iter().zip(&cells[2..]) {
            if let Some(t) = c {
                p[*t] = cell.parse()?;
            }
        }
        by_row.insert(key, p);
    }
    let mut out = Vec::with_capacity(rows.len() * N_TARGETS);
    for i in 0..rows.len() {
        let p = by_row.get(&(rows.items[i], rows.times[i])).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no prediction for item {} at {}",
                path.display(),
                rows.items[i],
                rows.times[i]
            )
        })?;
        out.extend_from_slice(p);
    }
    Ok(out)
}

/// The report of [`score`]d rows for horizons up to `max_horizon_h`.
pub fn evaluate(scored: &Scored, max_horizon_h: u32) -> Report {
    eval::evaluate(
        &scored.probs,
        &scored.labels,
        &scored.rows.items,
        max_horizon_h,
    )
}
