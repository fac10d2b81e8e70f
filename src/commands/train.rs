//! `gept train`: history through the feature graphs, labels, the tch model,
//! calibration, and a self-describing model directory.

use crate::cli::TrainArgs;
use gept_core::config::Config;
use gept_model::net::TrainOptions;
use gept_model::pipeline::{self, Split};
use gept_model::Model;

pub fn run(args: &TrainArgs, config: Option<&Config>) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.validation_fraction > 0.0 && args.validation_fraction < 1.0,
        "--validation-fraction must lie strictly between 0 and 1"
    );
    anyhow::ensure!(args.stride >= 1, "--stride must be at least 1");
    let known = gept_dataflows::features::feature_names();
    let exclude: Vec<String> = match &args.exclude_features {
        Some(list) => list.iter().filter(|f| !f.is_empty()).cloned().collect(),
        None => TrainOptions::default().exclude,
    };
    if let Some(f) = exclude.iter().find(|f| !known.contains(f)) {
        anyhow::bail!("--exclude-features: no feature is called {f:?} (see docs/FEATURES.md)");
    }
    let device = args.device.device()?;
    let opts = TrainOptions {
        hidden: args.hidden.clone(),
        max_epochs: args.epochs,
        patience: args.patience,
        seed: args.seed,
        max_seconds: args.max_minutes.map(|m| m * 60.0),
        exclude,
        lr_decay: args.lr_decay,
        ..TrainOptions::default()
    };
    let split = Split {
        validation_fraction: args.validation_fraction,
        stride: args.stride,
    };
    let (vs, meta) = if args.history.from_db {
        // From the store: streamed an hour at a time, in bounded memory.
        let config = config.ok_or_else(|| anyhow::anyhow!("--from-db needs a configuration"))?;
        let started = std::time::Instant::now();
        let (from, until) = (
            args.history.since.unwrap_or(i64::MIN / 2),
            args.history.until.unwrap_or(i64::MAX / 2),
        );
        let mut rows = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let store = gept_store::Store::connect(&config.database_url()?, 2).await?;
                let rows = gept_model::stream::split_rows_from_store(
                    &store,
                    from,
                    until,
                    &split,
                    !args.quiet,
                )
                .await;
                store.close().await;
                rows
            })?;
        eprintln!("train: device {device:?}");
        if args.shuffle_labels {
            shuffle_rows(&mut rows.y_train, args.seed);
        }
        let active = match &args.compare_with {
            Some(dir) => Some(Model::load(dir, device)?),
            None => None,
        };
        pipeline::train_rows(
            rows,
            &split,
            &opts,
            device,
            !args.quiet,
            started,
            active.as_ref(),
        )?
    } else {
        anyhow::ensure!(
            !args.shuffle_labels && args.compare_with.is_none(),
            "--shuffle-labels and --compare-with go with --from-db"
        );
        let history = args.history.load(config)?;
        eprintln!(
            "train: {} ticks, {} /1h and /5m buckets, {} items with constants; device {device:?}",
            history.ticks.len(),
            history.hours.len(),
            history.items.len()
        );
        pipeline::train(
            &history.ticks,
            &history.hours,
            &history.items,
            &split,
            &opts,
            device,
            !args.quiet,
        )?
    };
    let meta = Model::save(&args.out, &vs, meta)?;
    let mean = |key: &str| {
        meta.metrics[key]
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.4}"))
    };
    println!(
        "model {} written to {} in {:.0} s: validation mean AUC {}, mean within-item AUC {}, mean Brier {}",
        meta.version,
        args.out.display(),
        meta.training["seconds"].as_f64().unwrap_or(0.0),
        mean("mean_auc"),
        mean("mean_within_item_auc"),
        mean("mean_brier"),
    );
    Ok(())
}

/// Permutes label rows (`N_TARGETS` each) among themselves, seeded: the
/// features keep no relation to their labels.
fn shuffle_rows(y: &mut [u8], seed: i64) {
    let n = y.len() / gept_core::N_TARGETS;
    let mut state = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        for t in 0..gept_core::N_TARGETS {
            y.swap(i * gept_core::N_TARGETS + t, j * gept_core::N_TARGETS + t);
        }
    }
}
