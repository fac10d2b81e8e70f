//! The fill model: input encoding, the network and its training loop.
//!
//! Inputs: each feature the model reads becomes its position in the training
//! distribution (quantiles, centred, unit variance); a null becomes 0 with a
//! missing flag beside it, so the network sees 2 × features inputs.
//!
//! Network: a shared MLP trunk, then one non-negative increment per target
//! (softplus) and one base logit per row. The logit of (horizon h, offset o)
//! is base + Σ_{h' ≤ h} Σ_{o' ≥ o} increment(h', o'): by construction it never
//! falls with a longer horizon and never rises with a farther offset.

use crate::dataset::Features;
use crate::metrics;
use gept_core::{N_TARGETS, OFFSETS_BP};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Reduction, Tensor};

/// Scaling of one input feature: its empirical distribution on the training
/// rows, as quantiles. A value becomes its position in that distribution
/// (a piecewise-linear CDF, ties at their middle), centred and scaled to unit
/// variance: heavy tails, prices in the millions and counts near zero all
/// land in [−√3, √3], and a value beyond the training range stays at the edge
/// instead of being extrapolated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scaling {
    /// Ascending; empty when the feature had no value in training (it then
    /// encodes as 0).
    pub quantiles: Vec<f32>,
    /// The model does not read this feature (see [`TrainOptions::exclude`]):
    /// it takes no inputs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unused: bool,
}

/// Quantiles kept per feature.
const QUANTILES: usize = 101;

impl Scaling {
    /// Fits one scaling per column of `features` on at most 200,000 rows.
    pub fn fit(features: &Features) -> Vec<Scaling> {
        let stride = (features.len() / 200_000).max(1);
        (0..features.width())
            .map(|f| {
                let mut v: Vec<f32> = (0..features.len())
                    .step_by(stride)
                    .map(|r| features.row(r)[f])
                    .filter(|x| x.is_finite())
                    .collect();
                v.sort_unstable_by(f32::total_cmp);
                let quantiles = if v.is_empty() {
                    Vec::new()
                } else {
                    (0..QUANTILES)
                        .map(|q| v[(v.len() - 1) * q / (QUANTILES - 1)])
                        .collect()
                };
                Scaling {
                    quantiles,
                    unused: false,
                }
            })
            .collect()
    }

    /// The encoded value of a finite `v`.
    pub fn apply(&self, v: f32) -> f32 {
        let e = &self.quantiles;
        if e.len() < 2 {
            return 0.0;
        }
        // One search: the first quantile above v; a tie (v equal to some
        // quantiles, e.g. the many zero volumes) needs the second.
        let hi = e.partition_point(|&q| q <= v);
        let lo = if hi > 0 && e[hi - 1] == v {
            e[..hi].partition_point(|&q| q < v)
        } else {
            hi
        };
        let last = (e.len() - 1) as f32;
        let u = if hi > lo {
            (lo + hi - 1) as f32 / 2.0 / last
        } else if lo == 0 {
            0.0
        } else if lo == e.len() {
            1.0
        } else {
            let (a, b) = (e[lo - 1], e[lo]);
            ((lo - 1) as f32 + (v - a) / (b - a)) / last
        };
        (u - 0.5) * 12f32.sqrt()
    }
}

/// Network inputs per row: two per used feature.
pub fn input_width(scaling: &[Scaling]) -> usize {
    2 * scaling.iter().filter(|s| !s.unused).count()
}

/// Raw rows per step of [`Encoder::encode_rows`] and [`predict_logits`].
const CHUNK_ROWS: usize = 65_536;

/// The input encoding of [`Scaling`] as tensor operations, on the model's
/// device and in torch's threads: per used feature the scaled value (0 when
/// null) and a missing flag. Bit for bit the values of [`Scaling::apply`]
/// (the same f32 operations in the same order; a test checks it), at a
/// fraction of the cost: one `searchsorted` per side over a
/// [features, quantiles] tensor instead of a branchy search per value.
#[derive(Debug)]
pub struct Encoder {
    /// Columns of the raw rows the model reads, ascending.
    columns: Tensor,
    /// [used, longest] quantiles, each row padded with +∞ (never ≤ or < a
    /// finite value, so the searches ignore the padding).
    quantiles: Tensor,
    /// [used, 1]: each feature's number of quantiles.
    len: Tensor,
    /// [used, 1]: that number − 1, as f32 (at least 1).
    last: Tensor,
    /// [used, 1]: fewer than two quantiles (the feature encodes as 0).
    flat: Tensor,
    features: i64,
    used: i64,
    device: Device,
}

impl Encoder {
    pub fn new(scaling: &[Scaling], device: Device) -> Encoder {
        let used: Vec<(usize, &Scaling)> = scaling
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.unused)
            .collect();
        let longest = used
            .iter()
            .map(|(_, s)| s.quantiles.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut q = vec![f32::INFINITY; used.len() * longest];
        for (row, (_, s)) in q.chunks_exact_mut(longest).zip(&used) {
            row[..s.quantiles.len()].copy_from_slice(&s.quantiles);
        }
        let n = used.len() as i64;
        let lens: Vec<i64> = used.iter().map(|(_, s)| s.quantiles.len() as i64).collect();
        let columns: Vec<i64> = used.iter().map(|&(c, _)| c as i64).collect();
        let len = Tensor::from_slice(&lens).view([n, 1]).to(device);
        Encoder {
            columns: Tensor::from_slice(&columns).to(device),
            quantiles: Tensor::from_slice(&q).view([n, longest as i64]).to(device),
            last: (&len - 1).clamp_min(1).to_kind(Kind::Float),
            flat: len.lt(2),
            len,
            features: scaling.len() as i64,
            used: n,
            device,
        }
    }

    /// Network inputs per row.
    pub fn inputs(&self) -> usize {
        2 * self.used as usize
    }

    /// Encodes raw rows [rows, features] (NaN or ±∞ for null) on this
    /// encoder's device as inputs [rows, 2 × used].
    pub fn encode(&self, x: &Tensor) -> Tensor {
        let rows = x.size()[0];
        if self.used == 0 {
            return Tensor::zeros([rows, 0], (Kind::Float, self.device));
        }
        // [used, rows]: one search per feature row over its quantiles.
        let v = x
            .index_select(1, &self.columns)
            .transpose(0, 1)
            .contiguous();
        let missing = v.isfinite().logical_not();
        let v = v.masked_fill(&missing, 0.0);
        // hi: the first quantile above v; lo: the first at or above it
        // (below hi exactly when v ties some quantiles).
        let hi = v.searchsorted(&self.quantiles, false, true, "right", None::<Tensor>);
        let lo = v.searchsorted(&self.quantiles, false, false, "left", None::<Tensor>);
        let below = (&lo - 1).clamp_min(0);
        let above = lo.minimum(&(&self.len - 1)).clamp_min(0);
        let a = self.quantiles.gather(1, &below, false);
        let b = self.quantiles.gather(1, &above, false);
        let between = ((&lo - 1).to_kind(Kind::Float) + (&v - &a) / (&b - &a)) / &self.last;
        let tie = (&lo + &hi - 1).to_kind(Kind::Float) / 2.0 / &self.last;
        let u = between
            .where_scalarother(&lo.ne_tensor(&self.len), 1.0)
            .where_scalarother(&lo.ne(0), 0.0);
        let u = tie.where_self(&hi.gt_tensor(&lo), &u);
        let scaled =
            ((u - 0.5) * f64::from(12f32.sqrt())).masked_fill(&missing.logical_or(&self.flat), 0.0);
        Tensor::stack(&[scaled, missing.to_kind(Kind::Float)], 2)
            .permute([1, 0, 2])
            .reshape([rows, 2 * self.used])
    }

    /// Encodes row-major raw rows (`features` values each) into one tensor
    /// [rows, inputs] on this encoder's device, 65,536 rows at a time so
    /// that the intermediate tensors stay small.
    pub fn encode_rows(&self, x: &[f32]) -> Tensor {
        let f = self.features.max(1) as usize;
        let rows = (x.len() / f) as i64;
        let out = Tensor::zeros([rows, 2 * self.used], (Kind::Float, self.device));
        tch::no_grad(|| {
            for (i, chunk) in x.chunks(CHUNK_ROWS * f).enumerate() {
                let n = (chunk.len() / f) as i64;
                let raw = Tensor::from_slice(chunk)
                    .view([n, f as i64])
                    .to(self.device);
                out.narrow(0, (i * CHUNK_ROWS) as i64, n)
                    .copy_(&self.encode(&raw));
            }
        });
        out
    }
}

/// The network.
#[derive(Debug)]
pub struct Net {
    trunk: nn::Sequential,
    increments: nn::Linear,
    base: nn::Linear,
    /// The lattice sum as a constant 0/1 matrix [N_TARGETS, N_TARGETS]:
    /// entry (source, target) is 1 when the source's horizon ≤ the target's
    /// and the source's offset ≥ the target's. One matrix product replaces
    /// two cumulative sums over strided views.
    lattice: Tensor,
}

impl Net {
    /// A network with freshly drawn weights (from torch's process-global
    /// generator, seeded by [`train`]).
    pub fn new(p: &nn::Path, inputs: i64, hidden: &[i64]) -> Net {
        Self::build(p, inputs, hidden, true)
    }

    /// A network whose weights are about to be loaded: zeros, drawing
    /// nothing from the global generator, so that loading a model never
    /// changes a training's random stream in the same process.
    pub fn for_loading(p: &nn::Path, inputs: i64, hidden: &[i64]) -> Net {
        Self::build(p, inputs, hidden, false)
    }

    fn build(p: &nn::Path, inputs: i64, hidden: &[i64], draw: bool) -> Net {
        let config = || {
            if draw {
                nn::LinearConfig::default()
            } else {
                nn::LinearConfig {
                    ws_init: nn::Init::Const(0.0),
                    bs_init: Some(nn::Init::Const(0.0)),
                    bias: true,
                }
            }
        };
        let mut trunk = nn::seq();
        let mut width = inputs;
        for (i, &h) in hidden.iter().enumerate() {
            trunk = trunk
                .add(nn::linear(p / format!("trunk{i}"), width, h, config()))
                .add_fn(|x| x.relu());
            width = h;
        }
        let mut increments = nn::linear(p / "increments", width, N_TARGETS as i64, config());
        if let Some(bs) = increments.bs.as_mut() {
            // softplus(−3) ≈ 0.05: the 108 increments start small.
            tch::no_grad(|| {
                let _ = bs.fill_(-3.0);
            });
        }
        let base = nn::linear(p / "base", width, 1, config());
        let k = OFFSETS_BP.len();
        let lattice: Vec<f32> = (0..N_TARGETS)
            .flat_map(|src| {
                (0..N_TARGETS)
                    .map(move |dst| f32::from(u8::from(src / k <= dst / k && src % k >= dst % k)))
            })
            .collect();
        let lattice = Tensor::from_slice(&lattice)
            .view([N_TARGETS as i64, N_TARGETS as i64])
            .to(p.device());
        Net {
            trunk,
            increments,
            base,
            lattice,
        }
    }

    /// Logits [rows, N_TARGETS] of encoded inputs [rows, inputs].
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let h = self.trunk.forward(x);
        let inc = self.increments.forward(&h).softplus();
        inc.matmul(&self.lattice) + self.base.forward(&h)
    }
}

/// Logits of raw rows (row-major, NaN for null), encoded and passed
/// through the network in batches, with no gradient.
pub fn predict_logits(net: &Net, encoder: &Encoder, x: &[f32]) -> Vec<f32> {
    let f = encoder.features.max(1) as usize;
    let mut out = Vec::with_capacity(x.len() / f * N_TARGETS);
    tch::no_grad(|| {
        for chunk in x.chunks(CHUNK_ROWS * f) {
            let n = (chunk.len() / f) as i64;
            let raw = Tensor::from_slice(chunk)
                .view([n, f as i64])
                .to(encoder.device);
            let z = net
                .logits(&encoder.encode(&raw))
                .to(Device::Cpu)
                .contiguous()
                .view([-1]);
            out.extend(Vec::<f32>::try_from(&z).expect("f32 logits"));
        }
    });
    out
}

/// Mean AUC over the targets with both classes among `labels`.
pub fn mean_auc(scores: &[f32], labels: &[u8]) -> Option<f64> {
    let aucs: Vec<f64> = (0..N_TARGETS)
        .filter_map(|t| {
            let (mut s, mut y) = (Vec::new(), Vec::new());
            for (row, l) in labels.chunks_exact(N_TARGETS).enumerate() {
                if l[t] <= 1 {
                    s.push(scores[row * N_TARGETS + t]);
                    y.push(l[t] == 1);
                }
            }
            metrics::auc(&s, &y)
        })
        .collect();
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
}

/// Features a model leaves unread unless told otherwise: price levels that
/// repeat `mid` (high, low and their moving averages) and constants that
/// only scale it. With them the network memorises items' prices in the
/// training days; without them held-out AUC is higher (docs/MODEL.md).
pub const DEFAULT_EXCLUDE: [&str; 14] = [
    "high",
    "low",
    "mid_ma_1h",
    "mid_ma_4h",
    "mid_ma_24h",
    "high_ma_1h",
    "high_ma_4h",
    "high_ma_24h",
    "low_ma_1h",
    "low_ma_4h",
    "low_ma_24h",
    "buy_limit_value",
    "item_value",
    "highalch",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub hidden: Vec<i64>,
    pub batch: usize,
    pub learning_rate: f64,
    pub max_epochs: usize,
    pub patience: usize,
    pub seed: i64,
    /// Stops after the epoch that passes this many seconds.
    pub max_seconds: Option<f64>,
    /// Features the network does not read (by name).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The learning rate of epoch e is learning_rate · lr_decay^(e − 1).
    #[serde(default = "no_decay")]
    pub lr_decay: f64,
}

fn no_decay() -> f64 {
    1.0
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            hidden: vec![128, 64],
            batch: 2048,
            learning_rate: 2e-3,
            max_epochs: 12,
            patience: 2,
            seed: 42,
            max_seconds: None,
            exclude: DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
            lr_decay: 0.6,
        }
    }
}

/// One epoch's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_auc: Option<f64>,
    pub seconds: f64,
}

/// A trained network with the weights of its best validation epoch.
pub struct Trained {
    pub vs: nn::VarStore,
    pub net: Net,
    pub scaling: Vec<Scaling>,
    pub epochs: Vec<Epoch>,
    pub best_epoch: usize,
}

/// Rows with at least one known label.
fn labelled_rows(y: &[u8]) -> Vec<usize> {
    y.chunks_exact(N_TARGETS)
        .enumerate()
        .filter(|(_, l)| l.iter().any(|&v| v <= 1))
        .map(|(i, _)| i)
        .collect()
}

/// Trains on (`train`, `y_train`) with early stopping on the validation mean
/// AUC of (`val`, `y_val`); labels row-major, `N_TARGETS` per row, values
/// other than 0/1 unknown (masked out of the loss).
pub fn train(
    train: &Features,
    y_train: &[u8],
    val: &Features,
    y_val: &[u8],
    opts: &TrainOptions,
    device: Device,
    progress: bool,
) -> anyhow::Result<Trained> {
    // The torch generator is process-global: trainings in one process take
    // turns so that a seed reproduces its model.
    static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(opts.seed);
    let started = Instant::now();
    let keep = labelled_rows(y_train);
    anyhow::ensure!(!keep.is_empty(), "no training row has a known label");
    // Unlabelled rows are left out; when there are none (the pipeline drops
    // them in place first) the rows are used as they are, not copied.
    let (selected, y_selected);
    let (train, y_train) = if keep.len() == train.len() {
        (train, y_train)
    } else {
        selected = train.select(&keep);
        y_selected = keep
            .iter()
            .flat_map(|&r| y_train[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
            .collect::<Vec<u8>>();
        (&selected, &y_selected[..])
    };
    let mut scaling = Scaling::fit(train);
    for (s, name) in scaling.iter_mut().zip(&train.names) {
        s.unused = opts.exclude.contains(name);
    }
    let encoder = Encoder::new(&scaling, device);
    let inputs = encoder.inputs();
    anyhow::ensure!(inputs > 0, "every feature is excluded");
    let x = encoder.encode_rows(&train.x);
    let y = Tensor::from_slice(y_train).view([train.len() as i64, N_TARGETS as i64]);
    let mask = y.le(1).to_kind(Kind::Float).to(device);
    let y = y.clamp_max(1).to_kind(Kind::Float).to(device);
    // Validation: a fixed subsample of labelled rows for the per-epoch AUC.
    let val_rows = labelled_rows(y_val);
    let stride = (val_rows.len() / 150_000).max(1);
    let val_idx: Vec<usize> = val_rows.into_iter().step_by(stride).collect();
    let val_sub = val.select(&val_idx);
    let y_val_sub: Vec<u8> = val_idx
        .iter()
        .flat_map(|&r| y_val[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
        .collect();

    let vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), inputs as i64, &opts.hidden);
    let mut best = nn::VarStore::new(device);
    let _best_net = Net::new(&best.root(), inputs as i64, &opts.hidden);
    let mut opt = nn::Adam::default().build(&vs, opts.learning_rate)?;
    let n = train.len() as i64;
    let batches = (n as usize).div_ceil(opts.batch);
    let mut epochs: Vec<Epoch> = Vec::new();
    let (mut best_auc, mut best_epoch, mut since_best) = (f64::NEG_INFINITY, 0, 0);
    for epoch in 1..=opts.max_epochs {
        opt.set_lr(opts.learning_rate * opts.lr_decay.powi(epoch as i32 - 1));
        let bar = if progress {
            let b = ProgressBar::new(batches as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix:>2} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(epoch.to_string());
            b
        } else {
            ProgressBar::hidden()
        };
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let (mut loss_sum, mut weight_sum) = (0.0f64, 0.0f64);
        for b in 0..batches as i64 {
            let from = b * opts.batch as i64;
            let idx = perm.narrow(0, from, (opts.batch as i64).min(n - from));
            let (xb, yb, mb) = (
                x.index_select(0, &idx),
                y.index_select(0, &idx),
                mask.index_select(0, &idx),
            );
            let known = mb.sum(Kind::Float);
            let loss = net.logits(&xb).binary_cross_entropy_with_logits(
                &yb,
                Some(&mb),
                None::<&Tensor>,
                Reduction::Sum,
            ) / known.clamp_min(1.0);
            opt.backward_step(&loss);
            let k = known.double_value(&[]);
            loss_sum += loss.double_value(&[]) * k;
            weight_sum += k;
            if b % 50 == 0 {
                bar.set_message(format!(
                    "loss {:.4} val auc {}",
                    loss_sum / weight_sum.max(1.0),
                    epochs
                        .last()
                        .and_then(|e| e.validation_auc)
                        .map_or("-".into(), |a| format!("{a:.4}"))
                ));
            }
            bar.inc(1);
        }
        let logits = predict_logits(&net, &encoder, &val_sub.x);
        let auc = mean_auc(&logits, &y_val_sub);
        let record = Epoch {
            epoch,
            train_loss: loss_sum / weight_sum.max(1.0),
            validation_auc: auc,
            seconds: started.elapsed().as_secs_f64(),
        };
        bar.finish_with_message(format!(
            "loss {:.4} val auc {}",
            record.train_loss,
            auc.map_or("-".into(), |a| format!("{a:.4}"))
        ));
        epochs.push(record);
        // Without validation labels the last epoch is kept.
        let score = auc.unwrap_or(epoch as f64);
        if score > best_auc {
            best_auc = score;
            best_epoch = epoch;
            since_best = 0;
            best.copy(&vs)?;
        } else {
            since_best += 1;
        }
        if since_best >= opts.patience
            || opts
                .max_seconds
                .is_some_and(|m| started.elapsed().as_secs_f64() >= m)
        {
            break;
        }
    }
    let mut vs = vs;
    vs.copy(&best)?;
    Ok(Trained {
        vs,
        net,
        scaling,
        epochs,
        best_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling(q: &[f32]) -> Scaling {
        Scaling {
            quantiles: q.to_vec(),
            unused: false,
        }
    }

    #[test]
    fn quantile_scaling_is_a_centred_piecewise_linear_cdf() {
        let s = scaling(&[0.0, 10.0, 20.0, 30.0, 40.0]);
        let r3 = 3f32.sqrt();
        assert!((s.apply(20.0)).abs() < 1e-6, "the median encodes as 0");
        assert!(
            (s.apply(-5.0) + r3).abs() < 1e-6,
            "below the range: the low edge"
        );
        assert!(
            (s.apply(1e9) - r3).abs() < 1e-6,
            "above the range: the high edge"
        );
        // 25 lies halfway between the quantiles 0.5 and 0.75.
        let u = 0.625f32;
        assert!((s.apply(25.0) - (u - 0.5) * 12f32.sqrt()).abs() < 1e-6);
        // Monotone.
        let xs: Vec<f32> = (-10..60).map(|x| x as f32).collect();
        assert!(xs.windows(2).all(|w| s.apply(w[0]) <= s.apply(w[1])));
    }

    #[test]
    fn tied_quantiles_encode_at_their_middle() {
        // Half the values are 0 (counts of a quiet item).
        let s = scaling(&[0.0, 0.0, 0.0, 5.0, 9.0]);
        assert!((s.apply(0.0) - (0.25 - 0.5) * 12f32.sqrt()).abs() < 1e-6);
        assert_eq!(scaling(&[]).apply(3.0), 0.0);
        assert_eq!(scaling(&[2.0]).apply(3.0), 0.0);
    }

    #[test]
    fn unused_features_take_no_inputs_and_nulls_get_a_flag() {
        let mut sc = vec![
            scaling(&[0.0, 1.0]),
            scaling(&[0.0, 1.0]),
            scaling(&[0.0, 1.0]),
        ];
        sc[1].unused = true;
        assert_eq!(input_width(&sc), 4);
        let x = [0.5, 7.0, f32::NAN, 1.0, 7.0, 0.0];
        let encoder = Encoder::new(&sc, Device::Cpu);
        assert_eq!(encoder.inputs(), 4);
        let e = Vec::<f32>::try_from(encoder.encode_rows(&x).view([-1])).unwrap();
        assert_eq!(e.len(), 8);
        assert_eq!(&e[2..4], &[0.0, 1.0], "a null is 0 with its flag set");
        assert_eq!(e[1], 0.0);
    }

    /// Raw rows of `features` values: exact quantiles (ties included),
    /// values between and beyond them, nulls and infinities.
    fn awkward_rows(sc: &[Scaling], rows: usize) -> Vec<f32> {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut x = Vec::with_capacity(rows * sc.len());
        for _ in 0..rows {
            for s in sc {
                let r = next();
                x.push(match r % 8 {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    3 | 4 if !s.quantiles.is_empty() => {
                        s.quantiles[(r >> 8) as usize % s.quantiles.len()]
                    }
                    _ => ((r >> 11) % 200_000) as f32 / 100.0 - 500.0,
                });
            }
        }
        x
    }

    #[test]
    fn the_tensor_encoding_is_the_scalar_definition_bit_for_bit() {
        let wide: Vec<f32> = (0..101).map(|i| (i as f32 * 0.37).powi(2) - 50.0).collect();
        let mut sc = vec![
            scaling(&[]),
            scaling(&[2.0]),
            scaling(&[0.0, 1.0]),
            scaling(&[0.0, 0.0, 0.0, 5.0, 9.0]),
            scaling(&wide),
            scaling(&[1.0, 2.0, 3.0]),
            scaling(&[-3.0, 7.5, 7.5, 7.5, 7.5, 7.5, 1e6]),
        ];
        sc[5].unused = true;
        let rows = 5_000;
        let x = awkward_rows(&sc, rows);
        let encoder = Encoder::new(&sc, Device::Cpu);
        assert_eq!(encoder.inputs(), 12);
        let got = Vec::<f32>::try_from(encoder.encode_rows(&x).view([-1])).unwrap();
        let mut want = Vec::with_capacity(rows * encoder.inputs());
        for row in x.chunks_exact(sc.len()) {
            for (v, s) in row.iter().zip(&sc).filter(|(_, s)| !s.unused) {
                if v.is_finite() {
                    want.extend([s.apply(*v), 0.0]);
                } else {
                    want.extend([0.0, 1.0]);
                }
            }
        }
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "input {i}: {g} against {w}");
        }
        // The rows cover every branch: ties, both edges, between, nulls.
        assert!(want.iter().any(|&w| w == (0.25 - 0.5) * 12f32.sqrt()));
        let edge = |u: f32| (u - 0.5) * 12f32.sqrt();
        assert!(want.iter().any(|&w| w == edge(0.0)), "below the range");
        assert!(want.iter().any(|&w| w == edge(1.0)), "above the range");
        assert!(want.chunks_exact(2).any(|p| p[1] == 1.0));
    }
}
