//! The activation gates of the model registry.

use crate::eval::TargetMetrics;

/// A candidate's mean AUC must reach this.
pub const MIN_MEAN_AUC: f64 = 0.55;
/// At least half of the targets must have an AUC above this.
pub const MIN_TARGET_AUC: f64 = 0.52;
/// A candidate may trail the active model's mean AUC by at most this.
pub const MAX_REGRESSION: f64 = 0.02;

/// Why a candidate may or may not be activated.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// Applies the gates to a candidate's validation metrics, against the active
/// model's mean AUC when there is one. Targets without an AUC (one class in
/// validation) count as not above the bar.
pub fn check(
    mean_auc: Option<f64>,
    targets: &[TargetMetrics],
    active_mean_auc: Option<f64>,
) -> Verdict {
    let mut reasons = Vec::new();
    let mut passed = true;
    match mean_auc {
        Some(m) if m >= MIN_MEAN_AUC => reasons.push(format!("mean AUC {m:.4} ≥ {MIN_MEAN_AUC}")),
        Some(m) => {
            passed = false;
            reasons.push(format!("mean AUC {m:.4} < {MIN_MEAN_AUC}"));
        }
        None => {
            passed = false;
            reasons.push("no validation AUC".into());
        }
    }
    // Targets whose horizon outlasts the validation span have no label to
    // judge them by: they are left out (and reported); a target with labels
    // of one class only still counts as not above the bar.
    let judged: Vec<&TargetMetrics> = targets.iter().filter(|t| t.n > 0).collect();
    let above = judged
        .iter()
        .filter(|t| t.auc.is_some_and(|a| a > MIN_TARGET_AUC))
        .count();
    let unjudged = targets.len() - judged.len();
    let note = if unjudged > 0 {
        format!(" ({unjudged} without validation labels not judged)")
    } else {
        String::new()
    };
    if judged.is_empty() || 2 * above < judged.len() {
        passed = false;
        reasons.push(format!(
            "only {above} of {} targets have AUC > {MIN_TARGET_AUC}{note}",
            judged.len()
        ));
    } else {
        reasons.push(format!(
            "{above} of {} targets have AUC > {MIN_TARGET_AUC}{note}",
            judged.len()
        ));
    }
    if let (Some(active), Some(m)) = (active_mean_auc, mean_auc) {
        if m < active - MAX_REGRESSION {
            passed = false;
            reasons.push(format!(
                "mean AUC {m:.4} trails the active model's {active:.4} by more than {MAX_REGRESSION}"
            ));
        } else {
            reasons.push(format!(
                "within {MAX_REGRESSION} of the active model's {active:.4}"
            ));
        }
    }
    Verdict { passed, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(aucs: &[Option<f64>]) -> Vec<TargetMetrics> {
        aucs.iter()
            .enumerate()
            .map(|(i, &auc)| TargetMetrics {
                name: format!("t{i}"),
                auc,
                within_item_auc: None,
                brier: None,
                ece: None,
                base_rate: None,
                n: 10,
            })
            .collect()
    }

    #[test]
    fn gates() {
        let good = targets(&[Some(0.6), Some(0.53), Some(0.51), None]);
        assert!(check(Some(0.56), &good, None).passed);
        assert!(!check(Some(0.549), &good, None).passed, "mean below 0.55");
        let few = targets(&[Some(0.6), Some(0.51), Some(0.51), None]);
        assert!(
            !check(Some(0.56), &few, None).passed,
            "one of four above 0.52"
        );
        assert!(
            check(Some(0.56), &good, Some(0.58)).passed,
            "0.02 behind is allowed"
        );
        assert!(
            !check(Some(0.56), &good, Some(0.581)).passed,
            "more than 0.02 behind"
        );
        assert!(!check(None, &good, None).passed);
        // Targets without validation labels are not judged; one-class ones are.
        let mut short = targets(&[Some(0.6), Some(0.55), None, None, None]);
        short[2].n = 0;
        short[3].n = 0;
        short[4].n = 0;
        assert!(check(Some(0.56), &short, None).passed, "2 of 2 judged");
        short[1].auc = None;
        assert!(check(Some(0.56), &short, None).passed, "1 of 2 judged");
        short[0].auc = Some(0.5);
        assert!(!check(Some(0.56), &short, None).passed, "0 of 2 judged");
        let none = targets(&[None, None])
            .into_iter()
            .map(|t| TargetMetrics { n: 0, ..t });
        assert!(
            !check(Some(0.56), &none.collect::<Vec<_>>(), None).passed,
            "nothing judged"
        );
    }
}
