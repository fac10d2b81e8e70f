//! `gept eval`: a model scored on a period it never saw.

use crate::cli::EvalArgs;
use gept_core::duration;
use gept_core::N_TARGETS;
use gept_dataflows::inputs::load_bucket_files;
use gept_dataflows::inputs::{load_items, load_ticks};
use gept_model::eval::{auc_heatmap_svg, reliability_svg};
use gept_model::Model;
use gept_model::{dataset, pipeline};

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let max_horizon = duration::parse(&args.max_horizon)
        .map_err(|e| anyhow::anyhow!("--max-horizon: {e}"))?
        .as_secs();
    anyhow::ensure!(
        max_horizon >= 3600 && max_horizon % 3600 == 0,
        "--max-horizon must be a whole number of hours, e.g. 12h"
    );
    let max_horizon_h = (max_horizon / 3600) as u32;
    let model = match &args.model {
        Some(dir) => Some(Model::load(dir, args.device.device()?)?),
        None => None,
    };
    let latest = load_ticks(&args.latest, None)?;
    anyhow::ensure!(
        !latest.is_empty(),
        "{} holds no ticks",
        args.latest.display()
    );
    let mut score_from = latest[0].time;
    let mut ticks = match &args.history {
        Some(h) => load_ticks(h, None)?
            .into_iter()
            .filter(|t| t.time < score_from)
            .collect(),
        None => Vec::new(),
    };
    let history_ticks = ticks.len();
    ticks.extend(latest);
    if let Some(from) = args.from {
        score_from = score_from.max(from);
    }
    let hours = load_bucket_files(&args.hourly, args.five_minute.as_deref())?;
    let items = load_items(args.mapping.as_deref())?;
    let (mut rows, mut labels) = pipeline::rows_to_score(&ticks, &hours, &items, score_from);
    if !args.items.is_empty() {
        let keep: Vec<usize> = (0..rows.len())
            .filter(|&i| args.items.contains(&rows.items[i]))
            .collect();
        labels = keep
            .iter()
            .flat_map(|&i| labels[i * N_TARGETS..(i + 1) * N_TARGETS].iter().copied())
            .collect();
        rows = rows.select(&keep);
    }
    if let Some(path) = &args.export_rows {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        let n = dataset::write_csv(&mut out, &rows, &labels, |_| true)?;
        std::io::Write::flush(&mut out)?;
        eprintln!("eval: {n} scored rows written to {}", path.display());
    }
    let (probs, version) = match (&model, &args.predictions) {
        (Some(model), _) => (model.predict(&rows.x), model.meta.version.clone()),
        (None, Some(path)) => (
            pipeline::read_predictions(path, &rows)?,
            format!("predictions from {}", path.display()),
        ),
        (None, None) => anyhow::bail!("--model or --predictions is required"),
    };
    let scored = pipeline::Scored {
        rows,
        labels,
        probs,
    };
    let report = pipeline::evaluate(&scored, max_horizon_h);
    // The same rows scored on the probabilities as published and stored
    // (integers p × 10,000): the resolution must not move the figures.
    let published = pipeline::evaluate(
        &pipeline::Scored {
            probs: scored
                .probs
                .iter()
                .map(|&p| gept_core::from_p_units(gept_core::p_units(p)))
                .collect(),
            ..scored
        },
        max_horizon_h,
    );
    let last = ticks.last().map_or(score_from, |t| t.time);
    std::fs::create_dir_all(&args.report)?;
    let mut json = serde_json::to_value(&report)?;
    let largest = |f: fn(&gept_model::eval::TargetMetrics) -> Option<f64>| {
        report
            .targets
            .iter()
            .zip(&published.targets)
            .filter_map(|(a, b)| Some((f(a)? - f(b)?).abs()))
            .fold(0.0f64, f64::max)
    };
    let moved = serde_json::json!({
        "mean_auc": published.mean_auc,
        "mean_within_item_auc": published.mean_within_item_auc,
        "mean_brier": published.mean_brier,
        "largest_target_change": {
            "auc": largest(|t| t.auc),
            "within_item_auc": largest(|t| t.within_item_auc),
            "brier": largest(|t| t.brier),
            "ece": largest(|t| t.ece),
        },
    });
    json["as_published"] = moved;
    json["model_version"] = version.clone().into();
    json["max_horizon_h"] = max_horizon_h.into();
    json["scored_from"] = score_from.into();
    json["last_tick"] = last.into();
    json["history_ticks"] = history_ticks.into();
    std::fs::write(
        args.report.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let title = format!("model {version}");
    std::fs::write(
        args.report.join("reliability.svg"),
        reliability_svg(&report.reliability, &format!("Reliability, {title}")),
    )?;
    std::fs::write(
        args.report.join("auc_heatmap.svg"),
        auc_heatmap_svg(
            &report.targets,
            &format!("AUC by horizon × offset, {title}"),
        ),
    )?;
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9}",
        "target", "auc", "item_auc", "brier", "ece", "base", "n"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for t in &report.targets {
        println!(
            "{:<22} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9}",
            t.name,
            f(t.auc),
            f(t.within_item_auc),
            f(t.brier),
            f(t.ece),
            t.base_rate.map_or("-".into(), |b| format!("{b:.3}")),
            t.n
        );
    }
    println!(
        "mean AUC {}, mean within-item AUC {}, mean Brier {} over {} rows of {} items; report in {}",
        f(report.mean_auc),
        f(report.mean_within_item_auc),
        f(report.mean_brier),
        report.rows,
        report.items,
        args.report.display()
    );
    println!(
        "as published and stored (p × 10,000): mean AUC {}, mean within-item AUC {}, mean Brier {}; \
         largest change of a target's AUC {:.1e}, within-item AUC {:.1e}, Brier {:.1e}, ECE {:.1e}",
        f(published.mean_auc),
        f(published.mean_within_item_auc),
        f(published.mean_brier),
        json["as_published"]["largest_target_change"]["auc"].as_f64().unwrap_or(0.0),
        json["as_published"]["largest_target_change"]["within_item_auc"].as_f64().unwrap_or(0.0),
        json["as_published"]["largest_target_change"]["brier"].as_f64().unwrap_or(0.0),
        json["as_published"]["largest_target_change"]["ece"].as_f64().unwrap_or(0.0),
    );
    Ok(())
}
