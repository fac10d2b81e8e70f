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
        if self.quantiles.len() < 2 {
            return 0.0;
        }
        // One search: the first quantile above v.
        self.apply_at(v, self.quantiles.partition_point(|&q| q <= v))
    }

    /// [`Scaling::apply`] with a guess of where `v` falls (the index of the
    /// first quantile above it, as this returned for the same item and
    /// feature at the last tick, where most features stay): when the guess
    /// is right two comparisons replace the search. The value is the same
    /// bit for bit whatever the guess; `hint` is set to the index found.
    pub fn apply_hinted(&self, v: f32, hint: &mut u16) -> f32 {
        let e = &self.quantiles;
        if e.len() < 2 {
            return 0.0;
        }
        let g = usize::from(*hint);
        let hi = if g <= e.len() && (g == 0 || e[g - 1] <= v) && (g == e.len() || v < e[g]) {
            g
        } else {
            e.partition_point(|&q| q <= v)
        };
        *hint = hi as u16;
        self.apply_at(v, hi)
    }

    /// The encoded value of `v` whose first quantile above is at `hi`.
    fn apply_at(&self, v: f32, hi: usize) -> f32 {
        let e = &self.quantiles;
        // A tie (v equal to some quantiles, e.g. the many zero volumes)
        // needs the first quantile equal to it too.
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

/// Encodes rows (row-major, NaN for null) as network inputs: per used
/// feature the scaled value (0 when null) and a missing flag.
///
/// One thread: splitting a full tick over two threads halved this step but
/// slowed the torch forward pass that follows by more (its worker threads
/// still spin on both cores). The same encoding as torch operations (two
/// `searchsorted` over a [features, quantiles] tensor) measured 3.8× slower
/// than this loop on a full tick (BENCHMARKS.md, "Inference").
pub fn encode(x: &[f32], scaling: &[Scaling]) -> Vec<f32> {
    let f = scaling.len().max(1);
    let mut out = vec![0f32; x.len() / f * input_width(scaling)];
    encode_rows(x, scaling, &mut out, None);
    out
}

/// [`encode`] with a guess per row and used feature of where each value
/// falls among its quantiles (see [`Scaling::apply_hinted`]), updated to
/// where each fell: the inference thread keeps `hints` from one tick to the
/// next (its rows come in item order). Hints of another length are reset.
/// The encoding is the same bit for bit whatever the hints.
pub fn encode_hinted(x: &[f32], scaling: &[Scaling], hints: &mut Vec<u16>) -> Vec<f32> {
    let width = input_width(scaling);
    let rows = x.len() / scaling.len().max(1);
    if hints.len() != rows * width / 2 {
        hints.clear();
        hints.resize(rows * width / 2, 0);
    }
    let mut out = vec![0f32; rows * width];
    encode_rows(x, scaling, &mut out, Some(hints));
    out
}

/// [`encode`] into `out` (zeroed, `input_width` values per row), with the
/// search guided by `hints` when given (see [`encode_hinted`]).
fn encode_rows(x: &[f32], scaling: &[Scaling], out: &mut [f32], mut hints: Option<&mut [u16]>) {
    let f = scaling.len().max(1);
    let width = input_width(scaling);
    if width == 0 {
        return;
    }
    for (r, (row, o)) in x
        .chunks_exact(f)
        .zip(out.chunks_exact_mut(width))
        .enumerate()
    {
        let mut k = 0;
        for (v, s) in row.iter().zip(scaling) {
            if s.unused {
                continue;
            }
            if v.is_finite() {
                o[k] = match hints.as_deref_mut() {
                    Some(h) => s.apply_hinted(*v, &mut h[r * width / 2 + k / 2]),
                    None => s.apply(*v),
                };
            } else {
                o[k + 1] = 1.0;
            }
            k += 2;
        }
    }
}

/// Rows encoded per step of [`encode_tensor`] and [`predict_logits`].
const CHUNK_ROWS: usize = 65_536;

/// Encodes rows into one tensor [rows, inputs] on `device`, a chunk at a
/// time: the encoded matrix exists once (a training set of millions of rows
/// no longer holds it both as a vector and as the tensor copied from it).
pub fn encode_tensor(x: &[f32], scaling: &[Scaling], device: Device) -> Tensor {
    let f = scaling.len().max(1);
    let width = input_width(scaling);
    let rows = x.len() / f;
    let out = Tensor::zeros([rows as i64, width as i64], (Kind::Float, device));
    let mut chunk = vec![0f32; CHUNK_ROWS.min(rows) * width];
    for (i, part) in x.chunks(CHUNK_ROWS * f).enumerate() {
        let n = part.len() / f;
        let encoded = &mut chunk[..n * width];
        encoded.fill(0.0);
        encode_rows(part, scaling, encoded, None);
        out.narrow(0, (i * CHUNK_ROWS) as i64, n as i64).copy_(
            &Tensor::from_slice(encoded)
                .view([n as i64, width as i64])
                .to(device),
        );
    }
    out
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

/// Logits of encoded rows, in batches, with no gradient.
pub fn predict_logits(net: &Net, encoded: &[f32], inputs: usize, device: Device) -> Vec<f32> {
    let rows = encoded.len() / inputs;
    let mut out = Vec::with_capacity(rows * N_TARGETS);
    tch::no_grad(|| {
        for chunk in encoded.chunks(CHUNK_ROWS * inputs) {
            let n = (chunk.len() / inputs) as i64;
            let x = Tensor::from_slice(chunk)
                .view([n, inputs as i64])
                .to(device);
            let z = net.logits(&x).to(Device::Cpu).contiguous().view([-1]);
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
    let inputs = input_width(&scaling);
    anyhow::ensure!(inputs > 0, "every feature is excluded");
    let x = encode_tensor(&train.x, &scaling, device);
    // Labels and their mask stay one byte each until a batch needs them as
    // floats: as f32 matrices beside the inputs they were the peak of a
    // 14-day training (2 × 1.3 GB for 3M rows).
    let y = Tensor::from_slice(y_train).view([train.len() as i64, N_TARGETS as i64]);
    let mask = y.le(1).to(device);
    let y = y.clamp_max(1).to(device);
    // Validation: a fixed subsample of labelled rows for the per-epoch AUC.
    let val_rows = labelled_rows(y_val);
    let stride = (val_rows.len() / 150_000).max(1);
    let val_idx: Vec<usize> = val_rows.into_iter().step_by(stride).collect();
    let val_sub = val.select(&val_idx);
    let y_val_sub: Vec<u8> = val_idx
        .iter()
        .flat_map(|&r| y_val[r * N_TARGETS..(r + 1) * N_TARGETS].iter().copied())
        .collect();
    let val_encoded = encode(&val_sub.x, &scaling);

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
                y.index_select(0, &idx).to_kind(Kind::Float),
                mask.index_select(0, &idx).to_kind(Kind::Float),
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
        let logits = predict_logits(&net, &val_encoded, inputs, device);
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
        let e = encode(&x, &sc);
        assert_eq!(e.len(), 8);
        assert_eq!(&e[2..4], &[0.0, 1.0], "a null is 0 with its flag set");
        assert_eq!(e[1], 0.0);
    }

    /// Raw rows: exact quantiles (ties included), values between and beyond
    /// them, nulls and infinities.
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

    /// The scaling's definition, naively: counts instead of searches.
    fn by_counting(e: &[f32], v: f32) -> f32 {
        if e.len() < 2 {
            return 0.0;
        }
        let hi = e.iter().filter(|&&q| q <= v).count();
        let lo = e.iter().filter(|&&q| q < v).count();
        let last = (e.len() - 1) as f32;
        let u = if hi > lo {
            (lo + hi - 1) as f32 / 2.0 / last
        } else if lo == 0 {
            0.0
        } else if lo == e.len() {
            1.0
        } else {
            ((lo - 1) as f32 + (v - e[lo - 1]) / (e[lo] - e[lo - 1])) / last
        };
        (u - 0.5) * 12f32.sqrt()
    }

    /// Scalings of every awkward shape: none, one quantile, two, ties at
    /// the start and in the middle, 101 quantiles, and an unused feature.
    fn awkward_scalings() -> Vec<Scaling> {
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
        sc
    }

    #[test]
    fn the_searches_are_the_definition_bit_for_bit_and_the_tensor_the_rows() {
        let sc = awkward_scalings();
        let rows = 5_000;
        let x = awkward_rows(&sc, rows);
        let (mut ties, mut below, mut above, mut between) = (0, 0, 0, 0);
        for row in x.chunks_exact(sc.len()) {
            for (v, s) in row.iter().zip(&sc).filter(|(v, _)| v.is_finite()) {
                let (got, want) = (s.apply(*v), by_counting(&s.quantiles, *v));
                assert_eq!(got.to_bits(), want.to_bits(), "{v} in {:?}", s.quantiles);
                let e = &s.quantiles;
                if e.len() >= 2 {
                    match () {
                        _ if e.contains(v) => ties += 1,
                        _ if *v < e[0] => below += 1,
                        _ if *v > e[e.len() - 1] => above += 1,
                        _ => between += 1,
                    }
                }
            }
        }
        assert!(ties > 0 && below > 0 && above > 0 && between > 0);
        // Encoding into a tensor a chunk at a time gives the same rows,
        // across a chunk boundary.
        let rows = CHUNK_ROWS + 7;
        let x = awkward_rows(&sc, rows);
        let tensor = encode_tensor(&x, &sc, Device::Cpu);
        assert_eq!(tensor.size(), [rows as i64, input_width(&sc) as i64]);
        let flat = Vec::<f32>::try_from(tensor.view([-1])).unwrap();
        let want = encode(&x, &sc);
        assert!(flat
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(flat.len(), want.len());
    }

    #[test]
    fn hinted_encoding_is_the_plain_one_bit_for_bit_whatever_the_hints() {
        let sc = awkward_scalings();
        let rows = 3_000;
        let x = awkward_rows(&sc, rows);
        let want = encode(&x, &sc);
        let same = |got: &[f32]| {
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        // No hints yet (reset to 0), the hints the first call left (every
        // guess right), hints of another tick's rows (mostly wrong), and
        // hints out of any quantile range.
        let mut hints = vec![7u16; 3];
        let first = encode_hinted(&x, &sc, &mut hints);
        assert!(same(&first), "hints reset");
        assert_eq!(hints.len(), rows * input_width(&sc) / 2);
        assert!(same(&encode_hinted(&x, &sc, &mut hints)), "hints right");
        let other = awkward_rows(&sc, rows + 1);
        let mut stale = Vec::new();
        encode_hinted(&other[sc.len()..], &sc, &mut stale);
        assert!(
            same(&encode_hinted(&x, &sc, &mut stale)),
            "hints of other values"
        );
        let mut wild = vec![u16::MAX; hints.len()];
        assert!(
            same(&encode_hinted(&x, &sc, &mut wild)),
            "hints out of range"
        );
        // Each value's own hint is where the plain search put it.
        for (row, h) in x
            .chunks_exact(sc.len())
            .zip(hints.chunks_exact(input_width(&sc) / 2))
        {
            let used = row.iter().zip(&sc).filter(|(_, s)| !s.unused);
            for ((v, s), &g) in used.zip(h) {
                if v.is_finite() && s.quantiles.len() >= 2 {
                    assert_eq!(usize::from(g), s.quantiles.partition_point(|&q| q <= *v));
                }
            }
        }
    }
}
