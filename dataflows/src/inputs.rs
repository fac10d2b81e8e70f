//! Feature-engine inputs read from recorded API responses: `/latest`
//! snapshots as ticks, `/5m` and `/1h` recordings as buckets, `/mapping` as
//! item constants. Training, evaluation, benchmarks, `gept features` and the
//! tests read recordings through these functions only.

use crate::features::{self, BucketInput, TickInput};
use gept_core::recordings::{bucket_snapshots, latest_snapshots, read_all};
use gept_core::wire;
use gept_core::{BucketStep, ItemId, ItemMeta};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Reads the first `max` `/latest` snapshots of a recording as ticks (in
/// time order, one per time).
pub fn load_ticks(path: &Path, max: Option<usize>) -> anyhow::Result<Vec<TickInput>> {
    let snaps = stream_ticks(path, max)?
        .map(|t| t.map(|t| (t.time, t.rows)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(features::ticks_from(snaps))
}

/// The first `max` `/latest` snapshots of a recording parsed one at a time,
/// in file order, holding only the current one: for replaying a recording
/// larger than memory. [`load_ticks`] is this, collected and put in time
/// order.
pub fn stream_ticks(
    path: &Path,
    max: Option<usize>,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<TickInput>>> {
    Ok(latest_snapshots(path)?
        .take(max.unwrap_or(usize::MAX))
        .map(|snap| {
            let snap = snap?;
            let rows = wire::parse_latest(snap.body.as_bytes(), snap.timestamp)?.rows;
            Ok(TickInput {
                time: snap.timestamp,
                rows,
            })
        }))
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

/// `/1h` buckets of several recordings and the `/5m` buckets of one, by
/// start, each (step, start) once.
pub fn load_bucket_files(
    hourly: &[PathBuf],
    five_minute: Option<&Path>,
) -> anyhow::Result<Vec<BucketInput>> {
    let mut buckets = Vec::new();
    for p in hourly {
        buckets.extend(load_hours(Some(p))?);
    }
    buckets.extend(load_buckets(five_minute, BucketStep::FiveMinutes)?);
    buckets.sort_by_key(|b| (b.start, b.step));
    buckets.dedup_by_key(|b| (b.start, b.step));
    Ok(buckets)
}
