//! History → trained, calibrated, described model; model + period → report.
//! Both go through [`dataset`], i.e. through the serving feature engine.

use crate::calibration::Calibration;
use crate::dataset::{self, Features};
use crate::eval::{self, Report};
use crate::file::{Model, ModelMeta, FORMAT};
use crate::net::{self, TrainOptions};
use gept_core::{target_names, ItemId, ItemMeta, N_TARGETS};
use gept_dataflows::features::{HourInput, TickInput};
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

/// Trains on `ticks` (time order): rows before the validation cut learn only
/// from outcomes known before the cut (no label of a training row looks into
/// validation); validation rows use outcomes up to the last tick. Returns the
/// weights and the description to save with [`Model::save`].
pub fn train(
    ticks: &[TickInput],
    hours: &[HourInput],
    items: &HashMap<ItemId, ItemMeta>,
    split: &Split,
    opts: &TrainOptions,
    device: Device,
    progress: bool,
) -> anyhow::Result<(tch::nn::VarStore, ModelMeta)> {
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
    let trained = net::train(&train, &y_train, &val, &y_val, opts, device, progress)?;
    let inputs = 2 * trained.scaling.len();
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
        }),
        weights: String::new(),
        weights_sha256: String::new(),
    };
    Ok((trained.vs, meta))
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
    hours: &[HourInput],
    items: &HashMap<ItemId, ItemMeta>,
    score_from: i64,
) -> Scored {
    let rows = dataset::features(ticks, hours, items, |t| t >= score_from);
    let series = labels::series_from_ticks(ticks);
    let labels = dataset::labels(&series, &rows.items, &rows.times, |_| i64::MAX);
    let probs = model.predict(&rows.x);
    Scored {
        rows,
        labels,
        probs,
    }
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
