//! `gept features`: a recording through the feature dataflow, out as CSV.

use crate::cli::FeaturesArgs;
use gept_core::recordings::{bucket_snapshots, latest_snapshots, read_all};
use gept_core::wire;
use gept_core::{BucketStep, ItemId, ItemMeta};
use gept_dataflows::features::{self, BucketInput, FeatureRow, TickInput};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Reads the first `max` `/latest` snapshots of a recording as ticks.
pub fn load_ticks(path: &Path, max: Option<usize>) -> anyhow::Result<Vec<TickInput>> {
    let mut snaps = Vec::new();
    for snap in latest_snapshots(path)?.take(max.unwrap_or(usize::MAX)) {
        let snap = snap?;
        snaps.push((
            snap.timestamp,
            wire::parse_latest(snap.body.as_bytes(), snap.timestamp)?.rows,
        ));
    }
    Ok(features::ticks_from(snaps))
}

/// Reads a `/1h` recording as bucket inputs, by start.
pub fn load_hours(path: Option<&Path>) -> anyhow::Result<Vec<BucketInput>> {
    load_buckets(path, BucketStep::OneHour)
}

/// Reads a `/5m` or `/1h` recording as bucket inputs, by start.
pub fn load_buckets(path: Option<&Path>, step: BucketStep) -> anyhow::Result<Vec<BucketInput>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    bucket_snapshots(path)?
        .iter()
        .map(|b| {
            let p = wire::parse_bucket(b.body.as_bytes())?;
            Ok(BucketInput {
                step,
                start: p.timestamp,
                rows: p.rows,
            })
        })
        .collect()
}

/// Reads a `/mapping` recording as item constants by id (empty without one).
pub fn load_items(path: Option<&Path>) -> anyhow::Result<HashMap<ItemId, ItemMeta>> {
    let Some(path) = path else {
        return Ok(HashMap::new());
    };
    let parsed = wire::parse_mapping(&read_all(path)?)?;
    Ok(parsed.rows.into_iter().map(|m| (m.item_id, m)).collect())
}

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
    let hours = Arc::new(crate::commands::history::load_bucket_files(
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
        features::drive(worker, &ticks, &hours, &items, |_, rows| {
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
