//! Fill labels of the 108 targets, computed from an item's observed series.
//!
//! At observation T of an item, for horizon H and offset o (in basis points):
//! buy = floor(low_T·(10000−o)/10000), sell = ceil(high_T·(10000+o)/10000),
//! both in exact integer arithmetic. t_b is the first observation in
//! (T, T+H] with low ≤ buy; the label is 1 if t_b exists and some observation
//! in [t_b, T+H] has high ≥ sell, else 0; it is unknown when T+H lies after
//! the last observation the labeller may see (the item's last observation,
//! or an earlier cut-off for training without look-ahead into validation).
//!
//! The series is the features' series (docs/FEATURES.md): a null side is
//! carried forward and the series starts at the first observation with both
//! sides known. Each (T, offset) costs one O(log n) descent over a sparse
//! table of lows, then one O(1) range maximum of highs per horizon.

use crate::features::TickInput;
use gept_core::{ItemId, HORIZONS_H, N_TARGETS, OFFSETS_BP};
use std::collections::HashMap;

/// Label value of a target whose outcome is not known.
pub const UNKNOWN: u8 = 2;

/// One observation of an item's series, prices carried forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obs {
    pub t: i64,
    pub high: i64,
    pub low: i64,
}

/// Buy price at offset `bp` basis points below `low`: floor, exactly.
pub fn buy_price(low: i64, bp: u32) -> i64 {
    (low * (10_000 - bp as i64)).div_euclid(10_000)
}

/// Sell price at offset `bp` basis points above `high`: ceil, exactly.
pub fn sell_price(high: i64, bp: u32) -> i64 {
    let n = high * (10_000 + bp as i64);
    n.div_euclid(10_000) + i64::from(n.rem_euclid(10_000) != 0)
}

/// Every item's series from ticks in time order, by item.
pub fn series_from_ticks(ticks: &[TickInput]) -> HashMap<ItemId, Vec<Obs>> {
    let mut carried: HashMap<ItemId, (Option<i64>, Option<i64>)> = HashMap::new();
    let mut series: HashMap<ItemId, Vec<Obs>> = HashMap::new();
    for tick in ticks {
        for r in &tick.rows {
            let c = carried.entry(r.item_id).or_default();
            c.0 = r.high.or(c.0);
            c.1 = r.low.or(c.1);
            if let (Some(high), Some(low)) = *c {
                series.entry(r.item_id).or_default().push(Obs {
                    t: tick.time,
                    high,
                    low,
                });
            }
        }
    }
    series
}

/// A sparse table answering range minimum (or maximum) queries in O(1).
struct Sparse {
    levels: Vec<Vec<i64>>,
    max: bool,
}

impl Sparse {
    fn new(values: Vec<i64>, max: bool) -> Self {
        let pick = |a: i64, b: i64| if max { a.max(b) } else { a.min(b) };
        let mut levels = vec![values];
        let mut width = 1;
        while 2 * width <= levels[0].len() {
            let prev = levels.last().expect("level 0 exists");
            let next = (0..prev.len() - width)
                .map(|i| pick(prev[i], prev[i + width]))
                .collect();
            levels.push(next);
            width *= 2;
        }
        Sparse { levels, max }
    }

    /// The extreme over `[from, to]` (inclusive, non-empty).
    fn query(&self, from: usize, to: usize) -> i64 {
        let len = to - from + 1;
        let k = (usize::BITS - 1 - len.leading_zeros()) as usize;
        let (a, b) = (self.levels[k][from], self.levels[k][to + 1 - (1 << k)]);
        if self.max {
            a.max(b)
        } else {
            a.min(b)
        }
    }

    /// First index ≥ `from` whose value is ≤ `limit` (a minimum table), or
    /// the length when there is none.
    fn first_at_most(&self, from: usize, limit: i64) -> usize {
        let n = self.levels[0].len();
        let mut pos = from;
        for k in (0..self.levels.len()).rev() {
            if pos + (1 << k) <= n && self.levels[k][pos] > limit {
                pos += 1 << k;
            }
        }
        pos
    }
}

/// Labels of every observation of one series (index `i` is `obs[i]`'s),
/// targets in canonical order (horizon-major, then offset). An outcome at T
/// that needs an observation after `known_until(T)` (or after the series'
/// last) is [`UNKNOWN`]; pass `|_| i64::MAX` to use everything.
pub fn label_series(obs: &[Obs], known_until: impl Fn(i64) -> i64) -> Vec<[u8; N_TARGETS]> {
    let n = obs.len();
    let mut out = vec![[UNKNOWN; N_TARGETS]; n];
    if n == 0 {
        return out;
    }
    let series_last = obs[n - 1].t;
    let lows = Sparse::new(obs.iter().map(|o| o.low).collect(), false);
    let highs = Sparse::new(obs.iter().map(|o| o.high).collect(), true);
    let times: Vec<i64> = obs.iter().map(|o| o.t).collect();
    // Per horizon, the last index inside (T, T+H]; advanced monotonically.
    let mut ends = [0usize; HORIZONS_H.len()];
    for (i, o) in obs.iter().enumerate() {
        for (h, &hours) in HORIZONS_H.iter().enumerate() {
            let until = o.t + hours as i64 * 3600;
            let mut e = ends[h].max(i);
            while e + 1 < n && times[e + 1] <= until {
                e += 1;
            }
            ends[h] = e;
        }
        let last = series_last.min(known_until(o.t));
        for (k, &bp) in OFFSETS_BP.iter().enumerate() {
            let (buy, sell) = (buy_price(o.low, bp), sell_price(o.high, bp));
            let first_buy = lows.first_at_most(i + 1, buy);
            for (h, &hours) in HORIZONS_H.iter().enumerate() {
                if o.t + hours as i64 * 3600 > last {
                    continue;
                }
                let end = ends[h];
                let filled = first_buy <= end && highs.query(first_buy, end) >= sell;
                out[i][h * OFFSETS_BP.len() + k] = u8::from(filled);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_in_integers() {
        // In f64, ceil(2000 × 1.0175) is 2036; the exact answer is 2035.
        assert_eq!(sell_price(2000, 175), 2035);
        assert_eq!(sell_price(2000, 200), 2040);
        assert_eq!(sell_price(1, 125), 2);
        assert_eq!(buy_price(2000, 175), 1965);
        assert_eq!(buy_price(1, 125), 0);
        assert_eq!(buy_price(2_147_483_647, 250), 2_093_796_555);
        assert_eq!(sell_price(2_147_483_647, 250), 2_201_170_739);
    }

    #[test]
    fn fills_need_a_buy_then_a_sell_inside_the_horizon() {
        let o = |t: i64, high, low| Obs {
            t: t * 60,
            high,
            low,
        };
        // Buy at 1.25% below 1000 is 987; sell above 1010 is 1023 (ceil 1022.625).
        let series = [
            o(0, 1010, 1000),
            o(10, 1030, 1000), // a sell before any buy does not count
            o(70, 1010, 987),  // buy at 70 min: outside the 1 h horizon
            o(80, 1023, 990),  // sell after the buy
            o(30 * 60, 1000, 1000),
        ];
        let labels = label_series(&series, |_| i64::MAX);
        let target = |h: usize, k: usize| labels[0][h * OFFSETS_BP.len() + k];
        assert_eq!(target(0, 0), 0, "1 h: the buy comes after the horizon");
        assert_eq!(target(1, 0), 1, "2 h: buy at 70 min, sell at 80 min");
        assert_eq!(target(1, 1), 0, "1.5%: buy 985 never reached");
        // The last observation's every label is unknown; T+48h beyond it too.
        assert!(labels[4].iter().all(|&l| l == UNKNOWN));
        assert_eq!(labels[0][N_TARGETS - 1], UNKNOWN);
        // A cut-off before 80 min hides the sell.
        let cut = label_series(&series, |_| 75 * 60);
        assert_eq!(cut[0][OFFSETS_BP.len()], UNKNOWN);
    }
}
