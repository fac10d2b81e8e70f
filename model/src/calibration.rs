//! Calibration per horizon group (Platt scaling on the model's logits, fitted
//! on the validation split) and the monotone repair that keeps every row
//! non-decreasing in horizon and non-increasing in offset.

use gept_core::{HORIZONS_H, N_TARGETS, OFFSETS_BP};
use serde::{Deserialize, Serialize};

/// Horizon groups, in hours, that share one calibration.
pub const HORIZON_GROUPS: [&[u32]; 5] = [
    &[1, 2, 3, 4],
    &[5, 6, 7, 8],
    &[9, 10, 11, 12],
    &[16, 20, 24],
    &[32, 40, 48],
];

/// p = σ(a·z + b) for the targets of `horizons`; `a` > 0 keeps the order of
/// the logits. `n` is the number of labels it was fitted on; with none (or
/// one class) it is the identity (a = 1, b = 0) and the group is
/// uncalibrated. `live`: fitted on the service's matured live rows (a group
/// validation had no label for), not on the validation split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Platt {
    pub horizons: Vec<u32>,
    pub a: f64,
    pub b: f64,
    pub n: usize,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub groups: Vec<Platt>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Fits σ(a·z + b) to (z, y) by Newton's method on the log loss (a tiny ridge
/// keeps it defined when the classes separate).
fn fit_platt(z: &[f32], y: &[bool]) -> (f64, f64) {
    let (mut a, mut b) = (1.0f64, 0.0f64);
    if z.is_empty() || y.iter().all(|&v| v) || y.iter().all(|&v| !v) {
        return (a, b);
    }
    let ridge = 1e-6 * z.len() as f64;
    for _ in 0..50 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) =
            (ridge * (a - 1.0), ridge * b, ridge, 0.0, ridge);
        for (&zi, &yi) in z.iter().zip(y) {
            let zi = zi as f64;
            let p = sigmoid(a * zi + b);
            let r = p - f64::from(u8::from(yi));
            let w = (p * (1.0 - p)).max(1e-12);
            ga += r * zi;
            gb += r;
            haa += w * zi * zi;
            hab += w * zi;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    (a.max(1e-3), b)
}

/// The logit of a probability as published (`p_units`: 0 and 1 are
/// clamped half a unit inside).
pub fn logit(p: f32) -> f32 {
    let eps = 0.5 / gept_core::P_SCALE;
    let p = p.clamp(eps, 1.0 - eps);
    (p / (1.0 - p)).ln()
}

/// Fits p' = σ(a·logit(p) + b) to served probabilities `p` of an
/// uncalibrated group (σ of the logits, so this is the Platt scaling of the
/// logits themselves) and their labels; the identity with one class.
pub fn fit_on_probabilities(p: &[f32], y: &[bool]) -> (f64, f64) {
    let z: Vec<f32> = p.iter().map(|&p| logit(p)).collect();
    fit_platt(&z, y)
}

impl Calibration {
    /// The identity calibration.
    pub fn identity() -> Self {
        Calibration {
            groups: HORIZON_GROUPS
                .iter()
                .map(|h| Platt {
                    horizons: h.to_vec(),
                    a: 1.0,
                    b: 0.0,
                    n: 0,
                    live: false,
                })
                .collect(),
        }
    }

    /// Horizons of the groups fitted on no label (the identity).
    pub fn uncalibrated_horizons(&self) -> Vec<u32> {
        self.groups
            .iter()
            .filter(|g| g.n == 0)
            .flat_map(|g| g.horizons.iter().copied())
            .collect()
    }

    /// Horizons of the groups fitted on matured live rows.
    pub fn live_calibrated_horizons(&self) -> Vec<u32> {
        self.groups
            .iter()
            .filter(|g| g.live && g.n > 0)
            .flat_map(|g| g.horizons.iter().copied())
            .collect()
    }

    /// Fits each group on `logits` (row-major, `N_TARGETS` per row) and
    /// `labels` (0, 1, or anything else for unknown).
    pub fn fit(logits: &[f32], labels: &[u8]) -> Self {
        let groups = HORIZON_GROUPS
            .iter()
            .map(|hours| {
                let (mut z, mut y) = (Vec::new(), Vec::new());
                for (h, horizon) in HORIZONS_H.iter().enumerate() {
                    if !hours.contains(horizon) {
                        continue;
                    }
                    for k in 0..OFFSETS_BP.len() {
                        let t = h * OFFSETS_BP.len() + k;
                        for (row, l) in labels.chunks_exact(N_TARGETS).enumerate() {
                            if l[t] <= 1 {
                                z.push(logits[row * N_TARGETS + t]);
                                y.push(l[t] == 1);
                            }
                        }
                    }
                }
                let (a, b) = fit_platt(&z, &y);
                Platt {
                    horizons: hours.to_vec(),
                    a,
                    b,
                    n: z.len(),
                    live: false,
                }
            })
            .collect();
        Calibration { groups }
    }

    /// Turns logits (row-major, `N_TARGETS` per row) into calibrated
    /// probabilities in place, then repairs each row to be monotone.
    pub fn apply(&self, rows: &mut [f32]) {
        if rows.is_empty() {
            return;
        }
        let z = tch::Tensor::from_slice(rows).view([-1, N_TARGETS as i64]);
        let p = self.sigmoid_tensor(&z).contiguous().view([-1]);
        rows.copy_from_slice(&Vec::<f32>::try_from(&p).expect("f32 probabilities"));
        rows.chunks_exact_mut(N_TARGETS).for_each(monotone);
    }

    /// σ(a·z + b) of a tensor of logits [rows, N_TARGETS] (any device), each
    /// target with its group's (a, b); vectorised by torch. Rows still need
    /// [`monotone`]: groups differ, so horizon order can break at a group
    /// boundary (offset order cannot: a > 0 within a row's horizon).
    pub fn sigmoid_tensor(&self, z: &tch::Tensor) -> tch::Tensor {
        let (a, b): (Vec<f32>, Vec<f32>) = (0..N_TARGETS)
            .map(|t| {
                let h = HORIZONS_H[t / OFFSETS_BP.len()];
                self.groups
                    .iter()
                    .find(|g| g.horizons.contains(&h))
                    .map_or((1.0, 0.0), |g| (g.a as f32, g.b as f32))
            })
            .unzip();
        let device = z.device();
        let a = tch::Tensor::from_slice(&a).to(device);
        let b = tch::Tensor::from_slice(&b).to(device);
        (z * a + b).sigmoid()
    }
}

/// Makes one row of probabilities non-decreasing in horizon (a running
/// maximum down the horizons) and then non-increasing in offset (a running
/// minimum across the offsets); the second step keeps the first's order.
pub fn monotone(row: &mut [f32]) {
    let k = OFFSETS_BP.len();
    for h in 1..HORIZONS_H.len() {
        for o in 0..k {
            row[h * k + o] = row[h * k + o].max(row[(h - 1) * k + o]);
        }
    }
    for h in 0..HORIZONS_H.len() {
        for o in 1..k {
            row[h * k + o] = row[h * k + o].min(row[h * k + o - 1]);
        }
    }
}

/// Whether a row is non-decreasing in horizon and non-increasing in offset.
pub fn is_monotone(row: &[f32]) -> bool {
    let k = OFFSETS_BP.len();
    (0..HORIZONS_H.len()).all(|h| {
        (0..k).all(|o| {
            let v = row[h * k + o];
            (h == 0 || v >= row[(h - 1) * k + o]) && (o == 0 || v <= row[h * k + o - 1])
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_known_scaling() {
        // Labels drawn deterministically from p = σ(2z − 1).
        let mut z = Vec::new();
        let mut y = Vec::new();
        let mut state = 7u64;
        for i in 0..20_000 {
            let zi = (i % 200) as f32 / 50.0 - 2.0;
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            z.push(zi);
            y.push(u < sigmoid(2.0 * zi as f64 - 1.0));
        }
        let (a, b) = fit_platt(&z, &y);
        assert!(
            (a - 2.0).abs() < 0.15 && (b + 1.0).abs() < 0.1,
            "a={a} b={b}"
        );
    }

    #[test]
    fn calibrated_rows_are_monotone_and_follow_their_group() {
        let mut state = 3u64;
        let mut rows: Vec<f32> = (0..100 * N_TARGETS)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 40) as f32 / (1u64 << 20) as f32 - 8.0
            })
            .collect();
        let mut c = Calibration::identity();
        c.groups[4].a = 0.5;
        c.groups[4].b = -1.0;
        let raw = rows.clone();
        c.apply(&mut rows);
        assert!(rows.chunks_exact(N_TARGETS).all(is_monotone));
        assert_ne!(raw, rows);
        // A row already monotone in its calibrated values keeps σ(a·z + b).
        let mono: Vec<f32> = (0..N_TARGETS)
            .map(|t| (t / OFFSETS_BP.len()) as f32 * 0.3 - (t % OFFSETS_BP.len()) as f32 * 0.2)
            .collect();
        c.groups[4].a = 1.0;
        c.groups[4].b = 0.5;
        let mut p = mono.clone();
        c.apply(&mut p);
        let group = |t: usize| {
            if HORIZONS_H[t / OFFSETS_BP.len()] >= 32 {
                (1.0, 0.5)
            } else {
                (1.0, 0.0)
            }
        };
        let expected: Vec<f32> = mono
            .iter()
            .enumerate()
            .map(|(t, &z)| {
                let (a, b) = group(t);
                sigmoid(a * z as f64 + b) as f32
            })
            .collect();
        assert!(is_monotone(&expected));
        for (t, (q, e)) in p.iter().zip(&expected).enumerate() {
            assert!((q - e).abs() < 1e-6, "target {t}: {q} vs {e}");
        }
    }
}
