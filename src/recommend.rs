//! Ranked flips from the latest predictions.
//!
//! For each item and each (horizon, offset) that the risk and style allow:
//! buy = floor(low·(1 − o)), sell = ceil(high·(1 + o)) (the labels' exact
//! prices), tax by the rule in force at the tick (`gept_core::tax`), and
//! expected profit per unit = P(fill) × (sell − buy − tax). The item's best
//! choice is kept; items are ranked by expected profit of the quantity a slot
//! can hold (capital / slots, the buy limit per 4 hours, and a quarter of
//! the last hour's traded volume, [`VOLUME_SHARE`]), and the top `slots`
//! are returned.
//!
//! Filters: no `/1h` volume known yet, too little volume (fewer units
//! traded in the last hour than the quantity we would buy, or under 10), a manipulated look (a spread over
//! three times its 24 h mean and over 5 %, or an hourly volume over five
//! times the item's mean), probabilities under the risk's minimum, and no
//! profit after tax. [`Screening`] counts the items each rule left out, so
//! an empty answer says why.

use gept_actors::inference::{Market, Prediction};
use gept_core::{tax, ItemId, ItemMeta, HORIZONS_H, OFFSETS_BP};
use gept_dataflows::labels::{buy_price, sell_price};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// The share of the last hour's traded volume one recommendation buys at
/// most: an offer competes with everyone else at its price, and positions as
/// large as the whole hour's volume were where the backtest lost most
/// (BENCHMARKS.md, "Backtest").
pub const VOLUME_SHARE: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    Active,
    Hybrid,
    Passive,
}

impl std::str::FromStr for Risk {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Risk::Low),
            "medium" => Ok(Risk::Medium),
            "high" => Ok(Risk::High),
            other => Err(format!("risk {other:?} is not low, medium or high")),
        }
    }
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Style::Active),
            "hybrid" => Ok(Style::Hybrid),
            "passive" => Ok(Style::Passive),
            other => Err(format!("style {other:?} is not active, hybrid or passive")),
        }
    }
}

impl Risk {
    /// Offsets (basis points) and the least fill probability accepted.
    fn offsets_and_floor(self) -> (&'static [u32], f32) {
        match self {
            Risk::Low => (&[125, 150], 0.5),
            Risk::Medium => (&[150, 175, 200], 0.3),
            Risk::High => (&[200, 225, 250], 0.15),
        }
    }
}

impl Style {
    /// Horizons (hours) a player of this style waits.
    fn horizons(self) -> &'static [u32] {
        match self {
            Style::Active => &[1, 2, 3, 4],
            Style::Hybrid => &[4, 5, 6, 7, 8, 9, 10, 11, 12],
            Style::Passive => &[12, 16, 20, 24, 32, 40, 48],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub capital: i64,
    pub risk: Risk,
    pub style: Style,
    pub slots: usize,
    pub exclude: HashSet<ItemId>,
    /// Horizons the model could not calibrate (no validation label): never
    /// recommended on.
    pub uncalibrated: Vec<u32>,
    /// How items are ranked (the backtest's peers use the other one).
    pub ranking: Ranking,
}

/// How the best target per item is chosen and items are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// Expected profit of the quantity a slot holds: P × profit per unit ×
    /// quantity (ours).
    #[default]
    ExpectedProfit,
    /// Expected value per unit of the single best target, P × profit per
    /// unit, ignoring how many a slot can hold: the system we replace, as
    /// far as its description allows reconstructing it.
    UnitValue,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recommendation {
    pub item_id: ItemId,
    pub name: String,
    pub buy_price: i64,
    pub sell_price: i64,
    pub quantity: i64,
    pub fill_probability: f32,
    pub tax_per_item: i64,
    pub profit_per_item: i64,
    /// Expected value of the flip (probability × profit × quantity); ranked
    /// on exactly, answered in whole gp.
    #[serde(serialize_with = "whole_gp")]
    pub expected_profit: f64,
    pub capital_required: i64,
    pub expected_hours: u32,
    pub target: String,
    pub reason: String,
}

/// Money in answers is whole gp: an expected value rounded to the nearest.
fn whole_gp<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(v.round() as i64)
}

/// Whole gp with thousands separators: 1234567 → "1,234,567".
pub fn gp(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// How the predicted items fared against the rules: each item is counted
/// once, under the first rule that left it out, or as a candidate.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Screening {
    /// Items with predictions at the tick.
    pub predicted: usize,
    pub excluded: usize,
    /// Every horizon of the style is uncalibrated in this model.
    pub uncalibrated: usize,
    /// No item facts or no positive prices.
    pub no_price: usize,
    /// No `/1h` volume known for the item yet.
    pub no_volume_data: usize,
    /// Fewer than 10 units traded in the last hour.
    pub low_volume: usize,
    /// A spread or volume spike (manipulation guard).
    pub manipulated: usize,
    /// No target of this risk and style reaches the risk's least probability.
    pub below_probability: usize,
    /// No target left a profit after the GE tax.
    pub no_profit_after_tax: usize,
    /// Capital per slot buys none at the price.
    pub unaffordable: usize,
    /// Items that passed every rule (the best `slots` are answered).
    pub candidates: usize,
}

impl Screening {
    /// Why no item passed, in words, naming the rules that left most out;
    /// `None` when some did.
    pub fn why_empty(&self) -> Option<String> {
        if self.candidates > 0 {
            return None;
        }
        if self.predicted == 0 {
            return Some("no item was predicted at this tick".into());
        }
        let mut reasons: Vec<(usize, &str)> = [
            (self.excluded, "excluded by the request"),
            (
                self.uncalibrated,
                "have no calibrated horizon for this style in the serving model (its validation had no label that long; a model trained on more history will)",
            ),
            (self.no_price, "without prices or item facts"),
            (
                self.no_volume_data,
                "without /1h volume data yet (it arrives with the first hourly bucket, within the hour after the service starts)",
            ),
            (self.low_volume, "traded fewer than 10 units in the last hour"),
            (self.manipulated, "show a spread or volume spike"),
            (
                self.below_probability,
                "have no offer this risk and style allow with a fill probability at the risk's minimum",
            ),
            (self.no_profit_after_tax, "make no profit after the GE tax"),
            (self.unaffordable, "cost more than the capital per slot"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .collect();
        reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
        let list: Vec<String> = reasons
            .iter()
            .map(|(n, why)| format!("{n} {why}"))
            .collect();
        Some(format!(
            "no recommendation: of {} predicted items, {}",
            self.predicted,
            list.join("; ")
        ))
    }
}

/// The ranked recommendations for `req` at `tick_time`, and how the
/// predicted items fared against the rules.
pub fn recommend(
    req: &Request,
    tick_time: i64,
    predictions: &HashMap<ItemId, std::sync::Arc<Prediction>>,
    market: &HashMap<ItemId, std::sync::Arc<Market>>,
    items: &HashMap<ItemId, ItemMeta>,
) -> (Vec<Recommendation>, Screening) {
    let (offsets, floor) = req.risk.offsets_and_floor();
    let horizons: Vec<u32> = req
        .style
        .horizons()
        .iter()
        .copied()
        .filter(|h| !req.uncalibrated.contains(h))
        .collect();
    let per_slot = req.capital / req.slots.max(1) as i64;
    let mut out: Vec<Recommendation> = Vec::new();
    let mut screening = Screening {
        predicted: predictions.len(),
        ..Screening::default()
    };
    for (id, pred) in predictions {
        if req.exclude.contains(id) {
            screening.excluded += 1;
            continue;
        }
        if horizons.is_empty() {
            screening.uncalibrated += 1;
            continue;
        }
        let (Some(m), Some(meta)) = (market.get(id), items.get(id)) else {
            screening.no_price += 1;
            continue;
        };
        if m.low <= 0 || m.high <= 0 {
            screening.no_price += 1;
            continue;
        }
        let Some(volume) = m.volume_1h else {
            screening.no_volume_data += 1;
            continue;
        };
        if volume < 10.0 {
            screening.low_volume += 1;
            continue;
        }
        let spread_spike = match (m.spread_pct, m.spread_ma_24h) {
            (Some(s), Some(avg)) => s > 0.05 && s > 3.0 * avg,
            _ => false,
        };
        let volume_spike = m
            .volume_mean
            .is_some_and(|avg| avg > 0.0 && volume > 5.0 * avg);
        if spread_spike || volume_spike {
            screening.manipulated += 1;
            continue;
        }
        let mut best: Option<Recommendation> = None;
        // The furthest rule any of the item's targets passed.
        let mut passed = 0u8;
        for (h, hours) in HORIZONS_H.iter().enumerate() {
            if !horizons.contains(hours) {
                continue;
            }
            for (k, bp) in OFFSETS_BP.iter().enumerate() {
                if !offsets.contains(bp) {
                    continue;
                }
                let p = pred.probabilities[h * OFFSETS_BP.len() + k];
                if p < floor {
                    continue;
                }
                passed = passed.max(1);
                let (buy, sell) = (buy_price(m.low, *bp), sell_price(m.high, *bp));
                if buy <= 0 {
                    continue;
                }
                let tax = tax::tax(*id, sell, tick_time);
                let profit = sell - buy - tax;
                if profit <= 0 {
                    continue;
                }
                passed = passed.max(2);
                let limit = meta.buy_limit.unwrap_or(i64::MAX);
                let quantity = (per_slot / buy)
                    .min(limit)
                    .min((volume * VOLUME_SHARE) as i64);
                if quantity <= 0 {
                    continue;
                }
                let expected = p as f64 * profit as f64 * quantity as f64;
                let score = |p: f32, profit: i64, expected: f64| match req.ranking {
                    Ranking::ExpectedProfit => expected,
                    Ranking::UnitValue => p as f64 * profit as f64,
                };
                if best.as_ref().is_none_or(|b| {
                    score(p, profit, expected)
                        > score(b.fill_probability, b.profit_per_item, b.expected_profit)
                }) {
                    best = Some(Recommendation {
                        item_id: *id,
                        name: meta.name.clone(),
                        buy_price: buy,
                        sell_price: sell,
                        quantity,
                        fill_probability: p,
                        tax_per_item: tax,
                        profit_per_item: profit,
                        expected_profit: expected,
                        capital_required: buy * quantity,
                        expected_hours: *hours,
                        target: gept_core::target_name(*hours, *bp),
                        reason: format!(
                            "{:.0}% chance to buy at {buy} and sell at {sell} within {hours} h; \
                             {profit} gp a unit after {tax} gp tax; {volume:.0} traded last hour",
                            p * 100.0
                        ),
                    });
                }
            }
        }
        match (&best, passed) {
            (Some(_), _) => screening.candidates += 1,
            (None, 0) => screening.below_probability += 1,
            (None, 1) => screening.no_profit_after_tax += 1,
            (None, _) => screening.unaffordable += 1,
        }
        out.extend(best);
    }
    let key = |r: &Recommendation| match req.ranking {
        Ranking::ExpectedProfit => r.expected_profit,
        Ranking::UnitValue => r.fill_probability as f64 * r.profit_per_item as f64,
    };
    out.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.item_id.cmp(&b.item_id)));
    out.truncate(req.slots);
    (out, screening)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gp_groups_thousands() {
        assert_eq!(gp(0), "0");
        assert_eq!(gp(999), "999");
        assert_eq!(gp(1_000), "1,000");
        assert_eq!(gp(-1_234_567), "-1,234,567");
    }
}
