//! Domain types every crate shares: one definition each.

use serde::{Deserialize, Serialize};

/// An OSRS item id. The API sends ids as string keys; we keep them as integers.
pub type ItemId = u32;

/// Unix seconds, UTC.
pub type UnixSeconds = i64;

/// One item's entry in a `/latest` response, observed at `timestamp`.
///
/// `timestamp` is the observation time of the poll (the HTTP `Date` header of
/// the response), not one of the item's own trade times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestPrice {
    pub item_id: ItemId,
    pub timestamp: UnixSeconds,
    pub high: Option<i64>,
    pub high_time: Option<UnixSeconds>,
    pub low: Option<i64>,
    pub low_time: Option<UnixSeconds>,
}

/// The step of an averaged bucket feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BucketStep {
    FiveMinutes,
    OneHour,
}

impl BucketStep {
    /// Length of one bucket in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            BucketStep::FiveMinutes => 300,
            BucketStep::OneHour => 3600,
        }
    }

    /// The API path segment and `timestep` value: `5m` or `1h`.
    pub fn as_str(self) -> &'static str {
        match self {
            BucketStep::FiveMinutes => "5m",
            BucketStep::OneHour => "1h",
        }
    }

    /// The table that stores this feed (names as the old system had them).
    pub fn table(self) -> &'static str {
        match self {
            BucketStep::FiveMinutes => "price_data_5min",
            BucketStep::OneHour => "prices_1h",
        }
    }
}

/// One item's averaged prices and volumes in a `/5m` or `/1h` bucket that
/// starts at `timestamp`. An average is `None` (with volume 0) when that side
/// did not trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketPrice {
    pub item_id: ItemId,
    pub timestamp: UnixSeconds,
    pub avg_high_price: Option<i64>,
    pub high_price_volume: i64,
    pub avg_low_price: Option<i64>,
    pub low_price_volume: i64,
}

/// Item metadata from `/mapping`. `buy_limit` and the alch values may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta {
    pub item_id: ItemId,
    pub name: String,
    pub examine: Option<String>,
    pub members: bool,
    pub lowalch: Option<i64>,
    pub highalch: Option<i64>,
    pub value: Option<i64>,
    pub buy_limit: Option<i64>,
    pub icon: Option<String>,
}

/// A news item from the OSRS RSS feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewsItem {
    pub guid: String,
    pub title: String,
    pub link: String,
    pub published_at: Option<UnixSeconds>,
    pub category: Option<String>,
}

/// Players online, as the OSRS home page states it at `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerCount {
    pub timestamp: UnixSeconds,
    pub players: i64,
}

/// A bucket that should have been stored but was not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataGap {
    pub feed: String,
    pub bucket: UnixSeconds,
    pub detected_at: UnixSeconds,
    pub filled_at: Option<UnixSeconds>,
}

/// Health of one collector as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CollectorStatus {
    pub collector: String,
    pub last_success: Option<UnixSeconds>,
    pub last_error: Option<String>,
    pub last_error_at: Option<UnixSeconds>,
    pub consecutive_failures: i64,
    pub restarts: i64,
    pub rows_written: i64,
}

/// Horizons of the fill targets, in hours.
pub const HORIZONS_H: [u32; 18] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 20, 24, 32, 40, 48,
];
/// Offsets of the fill targets, in basis points (1.25% = 125 bp).
pub const OFFSETS_BP: [u32; 6] = [125, 150, 175, 200, 225, 250];
/// Number of targets: horizons × offsets.
pub const N_TARGETS: usize = HORIZONS_H.len() * OFFSETS_BP.len();

/// The resolution probabilities are published and stored at: integers
/// p × `P_SCALE` (10⁻⁴) in the stream, the compact snapshot and the store.
pub const P_SCALE: f32 = 10_000.0;

/// A probability as the integer published and stored: p × [`P_SCALE`],
/// rounded, p clamped to [0, 1] first.
pub fn p_units(p: f32) -> u16 {
    (p.clamp(0.0, 1.0) * P_SCALE).round() as u16
}

/// The probability of a published or stored integer: units / [`P_SCALE`].
pub fn from_p_units(units: u16) -> f32 {
    units as f32 / P_SCALE
}

/// Name of a target, e.g. `fill_1h_1.25pct`, `fill_48h_2pct`... formatted as
/// the old system did: the offset in percent with trailing zeros trimmed to
/// two decimals at most (`2.0` → `2.0`, kept with one decimal).
pub fn target_name(horizon_h: u32, offset_bp: u32) -> String {
    let whole = offset_bp / 100;
    let frac = offset_bp % 100;
    let pct = if frac == 0 {
        format!("{whole}.0")
    } else if frac.is_multiple_of(10) {
        format!("{whole}.{}", frac / 10)
    } else {
        format!("{whole}.{frac:02}")
    };
    format!("fill_{horizon_h}h_{pct}pct")
}

/// All 108 target names in canonical order: horizon-major, then offset.
pub fn target_names() -> Vec<String> {
    HORIZONS_H
        .iter()
        .flat_map(|&h| OFFSETS_BP.iter().map(move |&o| target_name(h, o)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_are_canonical() {
        let names = target_names();
        assert_eq!(names.len(), N_TARGETS);
        assert_eq!(names[0], "fill_1h_1.25pct");
        assert_eq!(names[1], "fill_1h_1.5pct");
        assert_eq!(names[3], "fill_1h_2.0pct");
        assert_eq!(names[107], "fill_48h_2.5pct");
    }
}
