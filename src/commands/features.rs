//! `gept features`: a recording through the feature dataflow, out as CSV.

use crate::cli::FeaturesArgs;
use gept_dataflows::features::{self, FeatureRow};
use gept_dataflows::inputs::{load_bucket_files, load_items, load_ticks};
use std::io::Write;
use std::sync::Arc;

/// Writes rows as CSV lines (no header).
pub fn write_rows(out: &mut impl Write, rows: &[FeatureRow]) -> std::io::Result<()> {
    for r in rows {
        write!(out, "{},{}", r.item_id, r.timestamp)?;
        for v in &r.values {
            match v {
                Some(x) => write!(out, ",{x}")?,
                None => write!(out, ",")?,
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

pub fn run(args: &FeaturesArgs) -> anyhow::Result<()> {
    let config = if args.timely.is_empty() {
        timely::Config::thread()
    } else {
        timely::Config::from_args(args.timely.iter().cloned())
            .map_err(|e| anyhow::anyhow!("timely options: {e}"))?
    };
    let ticks = Arc::new(load_ticks(&args.latest, args.max_snapshots)?);
    let hours = Arc::new(load_bucket_files(
        args.hourly.as_slice(),
        args.five_minute.as_deref(),
    )?);
    let items = Arc::new(load_items(args.mapping.as_deref())?);
    let out = args.out.clone();
    let guards = timely::execute(config, move |worker| -> anyhow::Result<usize> {
        let mut file = if worker.index() == 0 {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&out)?);
            writeln!(
                f,
                "item_id,timestamp,{}",
                features::feature_names().join(",")
            )?;
            Some(f)
        } else {
            None
        };
        let mut written = 0;
        let mut failed = None;
        features::drive(worker, ticks.iter(), &hours, &items, |_, rows| {
            if let Some(f) = file.as_mut() {
                written += rows.len();
                if let Err(e) = write_rows(f, &rows) {
                    failed.get_or_insert(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        if let Some(mut f) = file {
            f.flush()?;
        }
        Ok(written)
    })
    .map_err(|e| anyhow::anyhow!("timely: {e}"))?;
    for result in guards.join() {
        let written = result.map_err(|e| anyhow::anyhow!("worker failed: {e}"))??;
        if written > 0 {
            eprintln!("features: wrote {written} rows to {}", args.out.display());
        }
    }
    Ok(())
}
