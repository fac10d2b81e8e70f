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
/// the logits. `n` is the number of validation labels it was fitted on; with
/// none (or one class) it is the identity (a = 1, b = 0).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Platt {
    pub horizons: Vec<u32>,
    pub a: f64,
    pub b: f64,
    pub n: usize,
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
                })
                .collect(),
        }
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
                }
            })
            .collect();
        Calibration { groups }
    }

    /// Turns logits (row-major) into calibrated probabilities in place, then
    /// repairs each row to be monotone in horizon and offset.
    pub fn apply(&self, rows: &mut [f32]) {
        let by_horizon: Vec<(f64, f64)> = HORIZONS_H
            .iter()
            .map(|h| {
                self.groups
                    .iter()
                    .find(|g| g.horizons.contains(h))
                    .map_or((1.0, 0.0), |g| (g.a, g.b))
            })
            .collect();
        for row in rows.chunks_exact_mut(N_TARGETS) {
            for (h, &(a, b)) in by_horizon.iter().enumerate() {
                for k in 0..OFFSETS_BP.len() {
                    let v = &mut row[h * OFFSETS_BP.len() + k];
                    *v = sigmoid(a * *v as f64 + b) as f32;
                }
            }
            monotone(row);
        }
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
    fn repair_gives_monotone_rows() {
        let mut state = 3u64;
        for _ in 0..100 {
            let mut row: Vec<f32> = (0..N_TARGETS)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            monotone(&mut row);
            assert!(is_monotone(&row));
        }
    }
}
