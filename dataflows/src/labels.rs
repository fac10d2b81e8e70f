//! Fill labels of the 108 targets, computed from an item's observed series.
//!
//! At observation T of an item, for horizon H and offset o (in basis points):
//! buy = floor(low_T·(10000−o)/10000), sell = ceil(high_T·(10000+o)/10000),
//! both in exact integer arithmetic. t_b is the first observation in
//! (T, T+H] with low ≤ buy from a trade made after T (its lowTime > T); the
//! label is 1 if t_b exists and some observation in [t_b, T+H] has
//! high ≥ sell from a trade made after t_b (highTime > t_b), else 0; it is
//! unknown when T+H lies after the last observation the labeller may see (the
//! item's last observation, or an earlier cut-off for training without
//! look-ahead into validation).
//!
//! Fresh trades only: `/latest` repeats an item's last price at every poll,
//! however old, so a price seen again is not a trade. Without the trade
//! times a sale "filled" on a high traded before the buy, a round trip no
//! player could have made (the backtest's simulated player, who needs a
//! trade after each offer went in, never could).
//!
//! The series is the features' series (docs/FEATURES.md): a null side is
//! carried forward and the series starts at the first observation with both
//! sides known; trade times are carried too and never go back. Each
//! (T, offset) costs one O(log n) descent over a sparse table of lows, then
//! one O(1) range maximum of highs per horizon.

use crate::features::TickInput;
use gept_core::{ItemId, LatestPrice, HORIZONS_H, N_TARGETS, OFFSETS_BP};
use std::collections::HashMap;

/// Label value of a target whose outcome is not known.
pub const UNKNOWN: u8 = 2;

/// One observation of an item's series, prices carried forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obs {
    pub t: i64,
    pub high: i64,
    pub low: i64,
    /// The newest instant-buy (high) and instant-sell (low) trade times
    /// known at `t` (`/latest` highTime, lowTime), carried over nulls and
    /// never going back along a series; [`NO_TRADE`] while none is known.
    pub high_time: i64,
    pub low_time: i64,
}

/// Trade time of a side with no trade known yet: older than any offer.
pub const NO_TRADE: i64 = i64::MIN;

/// Buy price at offset `bp` basis points below `low`: floor, exactly.
pub fn buy_price(low: i64, bp: u32) -> i64 {
    (low * (10_000 - bp as i64)).div_euclid(10_000)
}

/// Sell price at offset `bp` basis points above `high`: ceil, exactly.
pub fn sell_price(high: i64, bp: u32) -> i64 {
    let n = high * (10_000 + bp as i64);
    n.div_euclid(10_000) + i64::from(n.rem_euclid(10_000) != 0)
}

/// One item's carried sides and trade times.
#[derive(Debug, Clone, Copy)]
struct Carried {
    high: Option<i64>,
    low: Option<i64>,
    high_time: i64,
    low_time: i64,
}

impl Default for Carried {
    fn default() -> Self {
        Carried {
            high: None,
            low: None,
            high_time: NO_TRADE,
            low_time: NO_TRADE,
        }
    }
}

/// Each item's last known high and low, and the newest trade time of each
/// side, as the labels' series sees them: a `/latest` row's null keeps the
/// value before; a trade time never goes back; an item is in the series once
/// both sides are known. The one implementation for the training labels, the
/// streamed dataset and the live accuracy monitor.
#[derive(Debug, Default, Clone)]
pub struct CarriedPrices(HashMap<ItemId, Carried>);

impl CarriedPrices {
    /// Applies one `/latest` row observed at `t`; answers the item's
    /// observation once both sides are known.
    pub fn apply(&mut self, t: i64, row: &LatestPrice) -> Option<Obs> {
        let c = self.0.entry(row.item_id).or_default();
        c.high = row.high.or(c.high);
        c.low = row.low.or(c.low);
        c.high_time = c.high_time.max(row.high_time.unwrap_or(NO_TRADE));
        c.low_time = c.low_time.max(row.low_time.unwrap_or(NO_TRADE));
        Self::obs(c, t)
    }

    /// The item's carried observation at `t`, when both sides are known.
    pub fn get(&self, item: ItemId, t: i64) -> Option<Obs> {
        self.0.get(&item).and_then(|c| Self::obs(c, t))
    }

    fn obs(c: &Carried, t: i64) -> Option<Obs> {
        Some(Obs {
            t,
            high: c.high?,
            low: c.low?,
            high_time: c.high_time,
            low_time: c.low_time,
        })
    }
}

/// Every item's series from ticks in time order, by item.
pub fn series_from_ticks(ticks: &[TickInput]) -> HashMap<ItemId, Vec<Obs>> {
    let mut carried = CarriedPrices::default();
    let mut series: HashMap<ItemId, Vec<Obs>> = HashMap::new();
    for tick in ticks {
        for r in &tick.rows {
            if let Some(o) = carried.apply(tick.time, r) {
                series.entry(r.item_id).or_default().push(o);
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
/// last) is [`UNKNOWN`]; pass `|_| i64::MAX` to use everything. Trade times
/// must not go back along the series (as [`CarriedPrices`] makes them): the
/// first observation with a trade after a given time is then a binary search.
pub fn label_series(obs: &[Obs], known_until: impl Fn(i64) -> i64) -> Vec<[u8; N_TARGETS]> {
    let n = obs.len();
    let mut out = vec![[UNKNOWN; N_TARGETS]; n];
    if n == 0 {
        return out;
    }
    debug_assert!(obs
        .windows(2)
        .all(|w| w[0].high_time <= w[1].high_time && w[0].low_time <= w[1].low_time));
    let series_last = obs[n - 1].t;
    let lows = Sparse::new(obs.iter().map(|o| o.low).collect(), false);
    let highs = Sparse::new(obs.iter().map(|o| o.high).collect(), true);
    let times: Vec<i64> = obs.iter().map(|o| o.t).collect();
    // The first observation whose low (high) comes from a trade after `t`.
    let low_after = |t: i64| obs.partition_point(|o| o.low_time <= t);
    let high_after = |t: i64| obs.partition_point(|o| o.high_time <= t);
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
        let buys_from = low_after(o.t).max(i + 1);
        for (k, &bp) in OFFSETS_BP.iter().enumerate() {
            let (buy, sell) = (buy_price(o.low, bp), sell_price(o.high, bp));
            let first_buy = lows.first_at_most(buys_from, buy);
            // The sale is placed when the buy is seen filled.
            let sells_from = match times.get(first_buy) {
                Some(&t_b) => high_after(t_b).max(first_buy),
                None => n,
            };
            for (h, &hours) in HORIZONS_H.iter().enumerate() {
                if o.t + hours as i64 * 3600 > last {
                    continue;
                }
                let end = ends[h];
                let filled = sells_from <= end && highs.query(sells_from, end) >= sell;
                out[i][h * OFFSETS_BP.len() + k] = u8::from(filled);
            }
        }
    }
    out
}

/// One observation's targets followed as later observations arrive: the
/// rule of [`label_series`], kept incrementally (the live accuracy monitor
/// labels predictions tick by tick with it, without holding the series).
/// Per offset it keeps the first later time a fresh low reached the buy
/// price and the first time at or after it a high traded after that reached
/// the sell price; a target of horizon H is filled when that second time is
/// at most T+H.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenLabels {
    pub t: i64,
    buy: [i64; OFFSETS_BP.len()],
    sell: [i64; OFFSETS_BP.len()],
    /// `i64::MAX`: not yet.
    bought: [i64; OFFSETS_BP.len()],
    filled: [i64; OFFSETS_BP.len()],
}

impl OpenLabels {
    /// The targets of observation `at` (its carried prices set the offers).
    pub fn new(at: Obs) -> Self {
        OpenLabels {
            t: at.t,
            buy: OFFSETS_BP.map(|bp| buy_price(at.low, bp)),
            sell: OFFSETS_BP.map(|bp| sell_price(at.high, bp)),
            bought: [i64::MAX; OFFSETS_BP.len()],
            filled: [i64::MAX; OFFSETS_BP.len()],
        }
    }

    /// Applies a later observation of the same series, in time order.
    pub fn observe(&mut self, o: Obs) {
        // Fills are ordered by offset (a wider offer fills no earlier), so
        // once the widest has filled every one has: nothing left to learn.
        if o.t <= self.t || self.filled[OFFSETS_BP.len() - 1] != i64::MAX {
            return;
        }
        for k in 0..OFFSETS_BP.len() {
            if self.bought[k] == i64::MAX && o.low <= self.buy[k] && o.low_time > self.t {
                self.bought[k] = o.t;
            }
            if self.bought[k] != i64::MAX
                && self.filled[k] == i64::MAX
                && o.high >= self.sell[k]
                && o.high_time > self.bought[k]
            {
                self.filled[k] = o.t;
            }
        }
    }

    /// The labels, targets in canonical order, when `last` is the series'
    /// last observation so far: [`UNKNOWN`] where T+H lies after it.
    pub fn labels(&self, last: i64) -> [u8; N_TARGETS] {
        let mut out = [UNKNOWN; N_TARGETS];
        for (h, &hours) in HORIZONS_H.iter().enumerate() {
            let until = self.t + hours as i64 * 3600;
            if until > last {
                continue;
            }
            for k in 0..OFFSETS_BP.len() {
                out[h * OFFSETS_BP.len() + k] = u8::from(self.filled[k] <= until);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_labels_follow_label_series_observation_by_observation() {
        // A random walk with gaps between observations, nudged so that
        // offers at every offset fill and fail.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut t, mut mid) = (0i64, 10_000i64);
        let mut obs: Vec<Obs> = Vec::new();
        for _ in 0..4_000 {
            let before = t;
            t += 60 * (1 + (next() % 40) as i64);
            mid = (mid + (next() % 301) as i64 - 150).max(100);
            let spread = (next() % 400) as i64;
            let (mut high, mut low) = (mid + spread, mid - spread / 2);
            let (mut high_time, mut low_time) = (before, before);
            if let Some(prev) = obs.last() {
                // Each side: a new trade at a new price, a new trade at the
                // old price, or no trade (the old price repeated).
                for (value, time, old, old_time) in [
                    (&mut high, &mut high_time, prev.high, prev.high_time),
                    (&mut low, &mut low_time, prev.low, prev.low_time),
                ] {
                    match next() % 3 {
                        0 => *time = t - (next() % 60) as i64,
                        1 => (*value, *time) = (old, t - (next() % 60) as i64),
                        _ => (*value, *time) = (old, old_time),
                    }
                }
            }
            obs.push(Obs {
                t,
                high,
                low,
                high_time,
                low_time,
            });
        }
        let want = label_series(&obs, |_| i64::MAX);
        let mut filled = 0;
        for (i, o) in obs.iter().enumerate() {
            let mut open = OpenLabels::new(*o);
            for later in &obs[i + 1..] {
                open.observe(*later);
            }
            assert_eq!(open.labels(t), want[i], "observation {i}");
            // Midway, what is known matches a labeller cut there.
            let cut = obs[(i + 50).min(obs.len() - 1)].t;
            let mut open = OpenLabels::new(*o);
            obs[i + 1..]
                .iter()
                .take_while(|l| l.t <= cut)
                .for_each(|l| open.observe(*l));
            assert_eq!(open.labels(cut), label_series(&obs, |_| cut)[i]);
            filled += want[i].iter().filter(|&&l| l == 1).count();
            if i == 300 {
                break;
            }
        }
        assert!(filled > 0, "some offers fill");
    }

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
        // Both sides traded just before each observation.
        let o = |t: i64, high, low| Obs {
            t: t * 60,
            high,
            low,
            high_time: t * 60 - 1,
            low_time: t * 60 - 1,
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

    #[test]
    fn only_trades_after_the_offer_fill_it() {
        // At T = 0: buy at 1.25% below 1000 is 987, sell above 1010 is 1023.
        let o = |t: i64, high, high_time: i64, low, low_time: i64| Obs {
            t: t * 60,
            high,
            low,
            high_time: high_time * 60,
            low_time: low_time * 60,
        };
        let first = |series: &[Obs]| {
            let mut open = OpenLabels::new(series[0]);
            series[1..].iter().for_each(|x| open.observe(*x));
            let labels = label_series(series, |_| i64::MAX)[0];
            assert_eq!(open.labels(series.last().unwrap().t), labels);
            labels[OFFSETS_BP.len()] // 2 h, 1.25 %
        };
        let end = o(30 * 60, 1000, 30 * 60, 1000, 30 * 60);
        // The high of 1030 was traded at 5 min; the buy fills at 20 min;
        // /latest keeps showing 1030 but nobody bought at it again.
        let stale_high = [
            o(0, 1010, -1, 1000, -1),
            o(10, 1030, 5, 1000, -1),
            o(20, 1030, 5, 985, 18),
            o(30, 1030, 5, 990, 25),
            end,
        ];
        assert_eq!(first(&stale_high), 0, "a high from before the buy");
        // The same, with a new trade at 1030 after the buy: it fills.
        let mut fresh = stale_high;
        fresh[3].high_time = 28 * 60;
        assert_eq!(first(&fresh), 1, "a trade at the high after the buy");
        // A low of 985 traded before T and repeated since: no buy.
        let stale_low = [o(0, 1010, -1, 985, -2), o(10, 1030, 8, 985, -2), end];
        assert_eq!(first(&stale_low), 0, "a low from before the offer");
        // The buy and the sale seen at one observation: the high was
        // traded before the buy was seen, so it does not count.
        let same = [o(0, 1010, -1, 1000, -1), o(10, 1030, 9, 985, 9), end];
        assert_eq!(first(&same), 0, "the sale is placed after the buy is seen");
    }
}
