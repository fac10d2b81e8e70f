//! History for training and evaluation: `/latest` ticks, `/1h` and `/5m`
//! buckets and item constants, from recordings or from a store.

use gept_core::{BucketStep, ItemId, ItemMeta};
use gept_dataflows::features::{self, BucketInput, TickInput};
use gept_dataflows::inputs::{load_bucket_files, load_items, load_ticks};
use gept_store::{Store, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Everything the feature engine and the labeller read.
pub struct History {
    pub ticks: Vec<TickInput>,
    /// `/1h` and `/5m` buckets, by (start, step).
    pub hours: Vec<BucketInput>,
    pub items: HashMap<ItemId, ItemMeta>,
}

impl History {
    /// From recordings: a `/latest` recording, `/1h` recordings, an optional
    /// `/5m` recording and an optional `/mapping`.
    pub fn from_recordings(
        latest: &Path,
        hourly: &[PathBuf],
        five_minute: Option<&Path>,
        mapping: Option<&Path>,
    ) -> anyhow::Result<History> {
        Ok(History {
            ticks: load_ticks(latest, None)?,
            hours: load_bucket_files(hourly, five_minute)?,
            items: load_items(mapping)?,
        })
    }

    /// Everything a store holds up to `until` (inclusive), in memory.
    pub async fn from_store(store: &Store, until: i64) -> Result<History, StoreError> {
        Self::from_store_between(store, i64::MIN + 1, until).await
    }

    /// What a store holds from `from` to `until` (inclusive), in memory.
    pub async fn from_store_between(
        store: &Store,
        from: i64,
        until: i64,
    ) -> Result<History, StoreError> {
        let latest = store.load_latest(from, until + 1).await?;
        let mut buckets = Vec::new();
        for step in [BucketStep::OneHour, BucketStep::FiveMinutes] {
            for row in store.load_buckets(step, from, until + 1).await? {
                buckets.push((step, row));
            }
        }
        buckets.sort_by_key(|(step, row)| (row.timestamp, *step));
        let items = store.load_items().await?;
        let snaps = gept_core::runs_by_time(latest, |r| r.timestamp);
        let mut hours: Vec<BucketInput> = Vec::new();
        for (step, row) in buckets {
            match hours.last_mut() {
                Some(h) if h.start == row.timestamp && h.step == step => h.rows.push(row),
                _ => hours.push(BucketInput {
                    step,
                    start: row.timestamp,
                    rows: vec![row],
                }),
            }
        }
        Ok(History {
            ticks: features::ticks_from(snaps),
            hours,
            items: items.into_iter().map(|m| (m.item_id, m)).collect(),
        })
    }

    /// Drops ticks after `until` and buckets that complete after it.
    pub fn truncate(&mut self, until: i64) {
        self.ticks.retain(|t| t.time <= until);
        self.hours.retain(|b| b.start + b.step.seconds() <= until);
    }
}
