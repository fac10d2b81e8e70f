//! History for training and evaluation: ticks, `/1h` buckets and item
//! constants, from recordings or from the configured database.

use crate::cli::HistoryArgs;
use gept_core::config::Config;
use gept_core::{BucketStep, ItemId, ItemMeta};
use gept_dataflows::features::{self, BucketInput, TickInput};
use gept_dataflows::inputs::{load_bucket_files, load_items, load_ticks};
use gept_store::Store;
use std::collections::HashMap;

/// Everything the feature engine and the labeller read.
pub struct History {
    pub ticks: Vec<TickInput>,
    pub hours: Vec<BucketInput>,
    pub items: HashMap<ItemId, ItemMeta>,
}

impl History {
    pub fn load(args: &HistoryArgs, config: Option<&Config>) -> anyhow::Result<History> {
        let mut history = if args.from_db {
            let config =
                config.ok_or_else(|| anyhow::anyhow!("--from-db needs a configuration"))?;
            Self::from_store(config, args.until.unwrap_or(i64::MAX - 1))?
        } else {
            let latest = args
                .latest
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("--latest FILE or --from-db is required"))?;
            History {
                ticks: load_ticks(latest, None)?,
                hours: load_bucket_files(&args.hourly, args.five_minute.as_deref())?,
                items: load_items(args.mapping.as_deref())?,
            }
        };
        if let Some(until) = args.until {
            history.ticks.retain(|t| t.time <= until);
            history
                .hours
                .retain(|b| b.start + b.step.seconds() <= until);
        }
        anyhow::ensure!(!history.ticks.is_empty(), "no /latest ticks in the history");
        Ok(history)
    }

    fn from_store(config: &Config, until: i64) -> anyhow::Result<History> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let store =
                Store::connect(&config.database_url()?, config.database.max_connections).await?;
            let latest = store.load_latest(i64::MIN + 1, until + 1).await?;
            let mut buckets = Vec::new();
            for step in [BucketStep::OneHour, BucketStep::FiveMinutes] {
                for row in store.load_buckets(step, i64::MIN + 1, until + 1).await? {
                    buckets.push((step, row));
                }
            }
            buckets.sort_by_key(|(step, row)| (row.timestamp, *step));
            let items = store.load_items().await?;
            store.close().await;
            let mut snaps: Vec<(i64, Vec<gept_core::LatestPrice>)> = Vec::new();
            for row in latest {
                match snaps.last_mut() {
                    Some((t, rows)) if *t == row.timestamp => rows.push(row),
                    _ => snaps.push((row.timestamp, vec![row])),
                }
            }
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
        })
    }
}
