//! Evaluation metrics of probabilistic binary predictions: ROC AUC (ties
//! averaged), within-item AUC, Brier score and expected calibration error.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// ROC AUC of `scores` against `labels` by the rank-sum (Mann–Whitney)
/// statistic, tied scores sharing their mean rank; `None` when one class is
/// absent.
pub fn auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len());
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mean_rank = (i + j + 2) as f64 / 2.0;
        let tied_pos = order[i..=j].iter().filter(|&&k| labels[k]).count();
        rank_sum += mean_rank * tied_pos as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// AUC computed per group (item) and averaged over the groups with both
/// classes; `None` when no group has both.
pub fn within_group_auc(groups: &[u32], scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut by: HashMap<u32, (Vec<f32>, Vec<bool>)> = HashMap::new();
    for ((g, s), l) in groups.iter().zip(scores).zip(labels) {
        let e = by.entry(*g).or_default();
        e.0.push(*s);
        e.1.push(*l);
    }
    let aucs: Vec<f64> = by.values().filter_map(|(s, l)| auc(s, l)).collect();
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
}

/// Mean squared error of the probabilities.
pub fn brier(scores: &[f32], labels: &[bool]) -> Option<f64> {
    (!scores.is_empty()).then(|| {
        scores
            .iter()
            .zip(labels)
            .map(|(&s, &l)| (s as f64 - f64::from(u8::from(l))).powi(2))
            .sum::<f64>()
            / scores.len() as f64
    })
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub n: usize,
    pub mean_predicted: Option<f64>,
    pub observed_rate: Option<f64>,
}

/// Reliability bins of equal width over [0, 1].
pub fn reliability(scores: &[f32], labels: &[bool], bins: usize) -> Vec<Bin> {
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for (&s, &l) in scores.iter().zip(labels) {
        let b = ((s as f64 * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += s as f64;
        sums[b].2 += usize::from(l);
    }
    sums.iter()
        .enumerate()
        .map(|(b, &(n, sum, pos))| Bin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            n,
            mean_predicted: (n > 0).then(|| sum / n as f64),
            observed_rate: (n > 0).then(|| pos as f64 / n as f64),
        })
        .collect()
}

/// Expected calibration error over 10 equal-width bins: the bins' |mean
/// predicted − observed rate| weighted by their share of rows.
pub fn ece(scores: &[f32], labels: &[bool]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let total = scores.len() as f64;
    Some(
        reliability(scores, labels, 10)
            .iter()
            .filter_map(|b| Some(b.n as f64 / total * (b.mean_predicted? - b.observed_rate?).abs()))
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AUC by its definition: P(score+ > score−) + ½ P(equal), over all pairs.
    fn auc_pairs(scores: &[f32], labels: &[bool]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &a) in scores.iter().enumerate() {
            for (j, &b) in scores.iter().enumerate() {
                if labels[i] && !labels[j] {
                    pairs += 1.0;
                    wins += if a > b {
                        1.0
                    } else if a == b {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        wins / pairs
    }

    #[test]
    fn auc_matches_the_pairwise_definition_with_ties() {
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.2, 0.9, 0.1];
        let labels = [false, false, true, true, true, false, false, true, true];
        let a = auc(&scores, &labels).unwrap();
        assert!((a - auc_pairs(&scores, &labels)).abs() < 1e-12, "{a}");
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auc(&[0.1, 0.9], &[false, true]), Some(1.0));
    }

    #[test]
    fn within_group_auc_ignores_one_class_groups() {
        let groups = [1, 1, 1, 2, 2, 3, 3];
        let scores = [0.1, 0.5, 0.9, 0.9, 0.1, 0.3, 0.4];
        let labels = [false, true, true, false, true, true, true];
        // Group 1: 1.0, group 2: 0.0, group 3 has one class.
        assert_eq!(within_group_auc(&groups, &scores, &labels), Some(0.5));
    }

    #[test]
    fn calibration_errors() {
        let scores = [0.25f32, 0.25, 0.25, 0.25];
        let labels = [true, false, false, false];
        assert!(ece(&scores, &labels).unwrap() < 1e-9);
        assert!((brier(&scores, &labels).unwrap() - 0.1875).abs() < 1e-9);
        let off = [0.95f32; 4];
        assert!((ece(&off, &labels).unwrap() - 0.7).abs() < 1e-6);
    }
}
