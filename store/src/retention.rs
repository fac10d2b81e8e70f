//! What retention needs from a store: removing expired rows (whole partitions
//! on PostgreSQL, bounded batches on SQLite), partitions created ahead of
//! time, space given back, and `/5m` and `/1h` rows derived from the
//! 1-minute ticks about to expire (`downsample`).

use gept_core::{BucketPrice, BucketStep, ItemId, LatestPrice};
use std::collections::BTreeMap;

/// A table retention may shorten, with its time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expiring {
    Latest,
    FiveMinute,
    OneHour,
    Predictions,
    InferenceStatus,
    /// Gaps that were filled (open gaps are never removed).
    FilledGaps,
}

impl Expiring {
    /// Every table retention may shorten.
    pub const ALL: [Expiring; 6] = [
        Expiring::Latest,
        Expiring::FiveMinute,
        Expiring::OneHour,
        Expiring::Predictions,
        Expiring::InferenceStatus,
        Expiring::FilledGaps,
    ];

    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            Expiring::Latest => "prices_latest_1m",
            Expiring::FiveMinute => "price_data_5min",
            Expiring::OneHour => "prices_1h",
            Expiring::Predictions => "predictions",
            Expiring::InferenceStatus => "inference_status",
            Expiring::FilledGaps => "data_gaps",
        }
    }

    /// The column whose time decides expiry.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Expiring::Latest | Expiring::FiveMinute | Expiring::OneHour => "timestamp",
            Expiring::Predictions | Expiring::InferenceStatus => "tick_time",
            Expiring::FilledGaps => "filled_at",
        }
    }

    /// The primary key columns (batched deletes select them).
    pub(crate) fn key(self) -> &'static str {
        match self {
            Expiring::Latest | Expiring::FiveMinute | Expiring::OneHour => "item_id, timestamp",
            Expiring::Predictions | Expiring::InferenceStatus => "tick_time",
            Expiring::FilledGaps => "feed, bucket",
        }
    }

    /// Whether PostgreSQL range-partitions the table by its time column.
    pub(crate) fn partitioned(self) -> bool {
        matches!(
            self,
            Expiring::Latest | Expiring::FiveMinute | Expiring::OneHour | Expiring::Predictions
        )
    }
}

/// What one expiry removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Rows deleted (on PostgreSQL: the rows of the dropped partitions).
    pub rows: u64,
    /// Whole partitions dropped (PostgreSQL).
    pub partitions: u64,
}

/// `/5m` or `/1h` rows from 1-minute ticks: for each item and bucket
/// `[start, start + step)`, the distinct trades the ticks show (a `high` with
/// its `high_time`, a `low` with its `low_time`) whose time falls in the
/// bucket and in `[from, to)`. The average price of a side is the mean of its
/// distinct trades, rounded to the nearest gp; its volume is their count.
///
/// A tick shows only the newest trade of each side, so the volume is a lower
/// bound of the upstream's and the average weighs each observed trade once:
/// this is what the ticks know, used only where the upstream bucket was never
/// collected (inserts never replace an upstream row). A bucket where neither
/// side traded gives no row, as upstream.
pub fn downsample(ticks: &[LatestPrice], step: BucketStep, from: i64, to: i64) -> Vec<BucketPrice> {
    type Side = BTreeMap<(i64, i64), ()>;
    let mut trades: BTreeMap<(ItemId, i64), (Side, Side)> = BTreeMap::new();
    let s = step.seconds();
    let mut add = |item: ItemId, price: Option<i64>, time: Option<i64>, high: bool| {
        let (Some(p), Some(t)) = (price, time) else {
            return;
        };
        if t < from || t >= to || p <= 0 {
            return;
        }
        let bucket = t - t.rem_euclid(s);
        let entry = trades.entry((item, bucket)).or_default();
        let side = if high { &mut entry.0 } else { &mut entry.1 };
        side.insert((t, p), ());
    };
    for r in ticks {
        add(r.item_id, r.high, r.high_time, true);
        add(r.item_id, r.low, r.low_time, false);
    }
    let mean = |side: &Side| -> Option<i64> {
        if side.is_empty() {
            return None;
        }
        let sum: i128 = side.keys().map(|(_, p)| *p as i128).sum();
        let n = side.len() as i128;
        Some(((2 * sum + n) / (2 * n)) as i64)
    };
    trades
        .into_iter()
        .map(|((item, bucket), (highs, lows))| BucketPrice {
            item_id: item,
            timestamp: bucket,
            avg_high_price: mean(&highs),
            high_price_volume: highs.len() as i64,
            avg_low_price: mean(&lows),
            low_price_volume: lows.len() as i64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: i64, high: i64, ht: i64, low: i64, lt: i64) -> LatestPrice {
        LatestPrice {
            item_id: 4151,
            timestamp: t,
            high: Some(high),
            high_time: Some(ht),
            low: Some(low),
            low_time: Some(lt),
        }
    }

    #[test]
    fn distinct_trades_by_their_time_make_the_bucket() {
        // Buckets of 5 minutes from 1,000,200. The same trade seen by two
        // ticks counts once; a trade belongs to the bucket of its own time.
        let ticks = [
            tick(1_000_260, 100, 1_000_230, 90, 1_000_100),
            tick(1_000_320, 100, 1_000_230, 91, 1_000_310),
            tick(1_000_380, 103, 1_000_370, 91, 1_000_310),
            tick(1_000_560, 104, 1_000_510, 91, 1_000_310),
        ];
        let rows = downsample(&ticks, BucketStep::FiveMinutes, 1_000_200, 1_001_000);
        assert_eq!(
            rows,
            vec![
                BucketPrice {
                    item_id: 4151,
                    timestamp: 1_000_200,
                    // 100 and 103 (rounded half up: 101.5 → 102); one low at 91.
                    avg_high_price: Some(102),
                    high_price_volume: 2,
                    avg_low_price: Some(91),
                    low_price_volume: 1,
                },
                BucketPrice {
                    item_id: 4151,
                    timestamp: 1_000_500,
                    avg_high_price: Some(104),
                    high_price_volume: 1,
                    avg_low_price: None,
                    low_price_volume: 0,
                },
            ]
        );
        // The low at 1,000,100 lies before `from`: it makes no row.
        assert!(rows.iter().all(|r| r.timestamp >= 1_000_200));
    }
}
