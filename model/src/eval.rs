//! Scoring predictions against labels: the report of `gept eval` (and the
//! validation metrics stored with a model), and its two plots as SVG.

use crate::metrics::{self, Bin};
use gept_core::{target_names, HORIZONS_H, N_TARGETS, OFFSETS_BP};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetMetrics {
    pub name: String,
    pub auc: Option<f64>,
    pub within_item_auc: Option<f64>,
    pub brier: Option<f64>,
    pub ece: Option<f64>,
    pub base_rate: Option<f64>,
    pub n: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Mean of the targets' AUC (those with both classes).
    pub mean_auc: Option<f64>,
    /// Mean of the targets' within-item AUC.
    pub mean_within_item_auc: Option<f64>,
    /// Mean of the targets' Brier score.
    pub mean_brier: Option<f64>,
    pub rows: usize,
    pub items: usize,
    pub targets: Vec<TargetMetrics>,
    /// Reliability bins over every scored (row, target).
    pub reliability: Vec<Bin>,
}

fn mean(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Scores probabilities (row-major, `N_TARGETS` per row) of rows of `items`
/// against labels (0/1, anything else unknown), for the targets whose horizon
/// is at most `max_horizon_h`.
pub fn evaluate(probs: &[f32], labels: &[u8], items: &[u32], max_horizon_h: u32) -> Report {
    let names = target_names();
    let (mut all_s, mut all_y) = (Vec::new(), Vec::new());
    let mut targets = Vec::new();
    for (t, name) in names.iter().enumerate() {
        if HORIZONS_H[t / OFFSETS_BP.len()] > max_horizon_h {
            continue;
        }
        let (mut s, mut y, mut g) = (Vec::new(), Vec::new(), Vec::new());
        for (row, l) in labels.chunks_exact(N_TARGETS).enumerate() {
            if l[t] <= 1 {
                s.push(probs[row * N_TARGETS + t]);
                y.push(l[t] == 1);
                g.push(items[row]);
            }
        }
        let n = s.len();
        targets.push(TargetMetrics {
            name: name.clone(),
            auc: metrics::auc(&s, &y),
            within_item_auc: metrics::within_group_auc(&g, &s, &y),
            brier: metrics::brier(&s, &y),
            ece: metrics::ece(&s, &y),
            base_rate: (n > 0).then(|| y.iter().filter(|&&v| v).count() as f64 / n as f64),
            n,
        });
        all_s.extend(s);
        all_y.extend(y);
    }
    let mut distinct: Vec<u32> = items.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    Report {
        mean_auc: mean(targets.iter().map(|t| t.auc)),
        mean_within_item_auc: mean(targets.iter().map(|t| t.within_item_auc)),
        mean_brier: mean(targets.iter().map(|t| t.brier)),
        rows: labels.len() / N_TARGETS,
        items: distinct.len(),
        reliability: metrics::reliability(&all_s, &all_y, 10),
        targets,
    }
}

/// Figures of a set of targets (a horizon group, an offset): the means of
/// the targets' metrics (as the report's means are), labels summed, the
/// base rate pooled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetFigures {
    pub labels: usize,
    pub auc: Option<f64>,
    pub within_item_auc: Option<f64>,
    pub brier: Option<f64>,
    pub ece: Option<f64>,
    pub base_rate: Option<f64>,
}

/// [`SetFigures`] of `targets`.
pub fn set_figures<'a>(targets: impl Iterator<Item = &'a TargetMetrics> + Clone) -> SetFigures {
    let labels = targets.clone().map(|t| t.n).sum();
    let positives: f64 = targets
        .clone()
        .filter_map(|t| t.base_rate.map(|r| r * t.n as f64))
        .sum();
    SetFigures {
        labels,
        auc: mean(targets.clone().map(|t| t.auc)),
        within_item_auc: mean(targets.clone().map(|t| t.within_item_auc)),
        brier: mean(targets.clone().map(|t| t.brier)),
        ece: mean(targets.map(|t| t.ece)),
        base_rate: (labels > 0).then(|| positives / labels as f64),
    }
}

/// A reliability diagram: observed fill rate against mean predicted
/// probability per bin, with the diagonal.
pub fn reliability_svg(bins: &[Bin], title: &str) -> String {
    let (w, h, m) = (480.0, 480.0, 50.0);
    let side = w - 2.0 * m;
    let x = |p: f64| m + p * side;
    let y = |p: f64| h - m - p * side;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>
<rect x="{m}" y="{m}" width="{side}" height="{side}" fill="none" stroke="#888"/>
<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="4 4"/>
"##,
        w / 2.0,
        escape(title),
        x(0.0),
        y(0.0),
        x(1.0),
        y(1.0)
    );
    for i in 0..=10 {
        let p = i as f64 / 10.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{p:.1}</text><text x="{}" y="{}" text-anchor="end">{p:.1}</text>"#,
            x(p),
            h - m + 16.0,
            m - 6.0,
            y(p) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">mean predicted probability</text><text transform="translate(14 {}) rotate(-90)" text-anchor="middle">observed fill rate</text>"#,
        w / 2.0,
        h - 12.0,
        h / 2.0
    );
    let points: Vec<(f64, f64, usize)> = bins
        .iter()
        .filter_map(|b| Some((b.mean_predicted?, b.observed_rate?, b.n)))
        .collect();
    let path: Vec<String> = points
        .iter()
        .map(|(p, o, _)| format!("{:.1},{:.1}", x(*p), y(*o)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        path.join(" ")
    );
    for (p, o, n) in points {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#1f77b4"><title>n = {n}</title></circle>"##,
            x(p),
            y(o)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A heatmap of AUC by horizon (rows) × offset (columns); blank cells for
/// targets not scored or with one class.
pub fn auc_heatmap_svg(targets: &[TargetMetrics], title: &str) -> String {
    let (cell_w, cell_h, left, top) = (70.0, 24.0, 60.0, 60.0);
    let horizons: Vec<u32> = HORIZONS_H
        .iter()
        .copied()
        .filter(|h| {
            targets
                .iter()
                .any(|t| t.name.starts_with(&format!("fill_{h}h_")))
        })
        .collect();
    let w = left + cell_w * OFFSETS_BP.len() as f64 + 20.0;
    let h = top + cell_h * horizons.len() as f64 + 30.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>
"#,
        w / 2.0,
        escape(title)
    );
    for (k, bp) in OFFSETS_BP.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.2}%</text>"#,
            left + cell_w * (k as f64 + 0.5),
            top - 8.0,
            *bp as f64 / 100.0
        );
    }
    for (r, hz) in horizons.iter().enumerate() {
        let cy = top + cell_h * r as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{hz} h</text>"#,
            left - 8.0,
            cy + cell_h * 0.65
        );
        for (k, bp) in OFFSETS_BP.iter().enumerate() {
            let name = gept_core::target_name(*hz, *bp);
            let auc = targets.iter().find(|t| t.name == name).and_then(|t| t.auc);
            // 0.5 → white, 1.0 → deep green, below 0.5 → red.
            let fill = match auc {
                Some(a) if a >= 0.5 => {
                    let f = ((a - 0.5) * 2.0).min(1.0);
                    format!(
                        "rgb({},{},{})",
                        (255.0 * (1.0 - f)) as u8,
                        (255.0 - 120.0 * f) as u8,
                        (255.0 * (1.0 - f)) as u8
                    )
                }
                Some(a) => {
                    let f = ((0.5 - a) * 2.0).min(1.0);
                    format!(
                        "rgb(255,{},{})",
                        (255.0 * (1.0 - f)) as u8,
                        (255.0 * (1.0 - f)) as u8
                    )
                }
                None => "#eee".into(),
            };
            let x = left + cell_w * k as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{cy}" width="{cell_w}" height="{cell_h}" fill="{fill}" stroke="white"/><text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                x + cell_w / 2.0,
                cy + cell_h * 0.65,
                auc.map_or("–".into(), |a| format!("{a:.3}"))
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
