//! The offer advisor: how likely an offer a player has placed (or is about
//! to place) fills, at the current market, from the model's surface.
//!
//! The model predicts round trips: for horizon H and offset o, a buy at
//! `buy_price(low, o)` fills and then a sell at `sell_price(high, o)` fills
//! within H (dataflows/src/labels.rs). An offer is placed on that surface:
//!
//! - **Price → position.** At the current market each model offset gives one
//!   price per side (the labels' exact integer prices). An offer's price is
//!   interpolated linearly between the two neighbouring offset prices, which
//!   gives a fractional position between offsets; at an offset's price it is
//!   exactly that offset, so the probability is exactly the model's output.
//!   A price nearer the market than the 1.25 % price is clamped to 1.25 %
//!   (`clamped: "nearer"`: it fills at least that often); one further than
//!   the 2.5 % price is clamped to 2.5 % (`clamped: "further"`: at most that
//!   often). The model cannot vouch for more.
//! - **Monotone.** Before interpolating, each horizon's probabilities are
//!   made non-increasing in the offset (a running minimum from 1.25 %: a
//!   price further from the market never fills more often), then each
//!   offset's non-decreasing in the horizon (a running maximum from 1 h:
//!   waiting longer never fills less often). Where the model's own outputs
//!   are already monotone (the common case) they pass unchanged.
//! - **Horizon.** Probabilities are answered at each model horizon from now;
//!   the offer's own deadline (`placed_at + horizon_hours`) is interpolated
//!   linearly in hours between model horizons, from 0 at 0 h, and clamped at
//!   48 h.
//! - **Round trip.** The other leg is priced at the same position on the
//!   other side (floor for a buy, ceil for a sell, as the labels); its
//!   profit is after the GE tax of the tick's date; the expected profit is
//!   the deadline probability × profit per item × quantity, in whole gp.
//! - **Price for a target probability.** The furthest price from the market
//!   (the best for the player) whose probability at the horizon still reaches
//!   the target, rounded towards the market; when even the 1.25 % price does
//!   not reach it, the 1.25 % price with `reachable: false`.

use gept_actors::inference::{Market, Prediction};
use gept_core::{tax, ItemId, ItemMeta, HORIZONS_H, OFFSETS_BP};
use gept_dataflows::labels::{buy_price, sell_price};
use serde::{Deserialize, Serialize};

const N_OFF: usize = OFFSETS_BP.len();
const N_H: usize = HORIZONS_H.len();

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

/// An offer to judge, as `POST /api/v1/offers/check` and the websocket's
/// `offers` message take it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The client's own name for the offer (websocket alerts repeat it).
    #[serde(default)]
    pub id: Option<String>,
    pub item_id: ItemId,
    pub side: Side,
    /// Price per item, gp.
    pub price: i64,
    pub quantity: i64,
    /// When the offer was placed (Unix seconds); absent: at the current tick.
    #[serde(default)]
    pub placed_at: Option<i64>,
    /// How long the player will leave it (hours from `placed_at`); default 4.
    #[serde(default)]
    pub horizon_hours: Option<f64>,
    /// The probability the answer's `target` price reaches; default 0.5.
    #[serde(default)]
    pub target_probability: Option<f64>,
    /// Websocket alerts: told when the deadline probability drops below it.
    #[serde(default)]
    pub threshold: Option<f64>,
}

pub const DEFAULT_HORIZON_HOURS: f64 = 4.0;
pub const DEFAULT_TARGET_PROBABILITY: f64 = 0.5;

impl Offer {
    /// Checks the fields a client sent; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.price <= 0 {
            return Err(format!("price {} must be positive (gp)", self.price));
        }
        if self.quantity <= 0 {
            return Err(format!("quantity {} must be positive", self.quantity));
        }
        let h = self.horizon();
        if !(h.is_finite() && h > 0.0 && h <= 24.0 * 30.0) {
            return Err(format!("horizon_hours {h} must be above 0 and at most 720"));
        }
        for (name, v) in [
            ("target_probability", self.target_probability),
            ("threshold", self.threshold),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0 && v < 1.0) {
                    return Err(format!("{name} {v} must be between 0 and 1 (exclusive)"));
                }
            }
        }
        if self.id.as_ref().is_some_and(|id| id.len() > 64) {
            return Err("id is over 64 bytes".into());
        }
        Ok(())
    }

    pub fn horizon(&self) -> f64 {
        self.horizon_hours.unwrap_or(DEFAULT_HORIZON_HOURS)
    }
}

/// Where an offer's price sits between the model's offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    /// Fractional index into `OFFSETS_BP` (0 = 1.25 %, 5 = 2.5 %).
    x: f64,
    clamped: Option<&'static str>,
}

/// The model's surface for one item, made monotone: `p[h][k]`.
#[derive(Debug, Clone)]
pub struct Surface {
    p: [[f64; N_OFF]; N_H],
}

impl Surface {
    pub fn of(pred: &Prediction) -> Surface {
        let mut p = [[0.0; N_OFF]; N_H];
        for (h, row) in p.iter_mut().enumerate() {
            for (k, v) in row.iter_mut().enumerate() {
                *v = f64::from(pred.probabilities[h * N_OFF + k]).clamp(0.0, 1.0);
            }
            for k in 1..N_OFF {
                row[k] = row[k].min(row[k - 1]);
            }
        }
        for h in 1..N_H {
            let prev = p[h - 1];
            for (v, below) in p[h].iter_mut().zip(prev) {
                *v = v.max(below);
            }
        }
        Surface { p }
    }

    /// At model horizon index `h` and fractional offset position `x`.
    fn at(&self, h: usize, x: f64) -> f64 {
        let k = (x.floor() as usize).min(N_OFF - 1);
        let f = x - k as f64;
        if k + 1 >= N_OFF || f <= 0.0 {
            return self.p[h][k];
        }
        self.p[h][k] * (1.0 - f) + self.p[h][k + 1] * f
    }

    /// At `hours` from now (linear between model horizons, 0 at 0 h,
    /// clamped at the longest).
    fn at_hours(&self, hours: f64, x: f64) -> f64 {
        if hours <= 0.0 {
            return 0.0;
        }
        let mut prev = (0.0, 0.0);
        for (h, &hh) in HORIZONS_H.iter().enumerate() {
            let v = self.at(h, x);
            let hh = f64::from(hh);
            if hours == hh {
                return v;
            }
            if hours < hh {
                let f = (hours - prev.0) / (hh - prev.0);
                return prev.1 + (v - prev.1) * f;
            }
            prev = (hh, v);
        }
        prev.1
    }
}

/// The prices each model offset gives on a side at the market.
fn grid(side: Side, m: &Market) -> [i64; N_OFF] {
    let mut g = [0; N_OFF];
    for (k, &bp) in OFFSETS_BP.iter().enumerate() {
        g[k] = match side {
            Side::Buy => buy_price(m.low, bp),
            Side::Sell => sell_price(m.high, bp),
        };
    }
    g
}

/// Signed distance of a price from the market on a side: larger is further
/// (a lower buy, a higher sell).
fn away(side: Side, price: i64) -> i64 {
    match side {
        Side::Buy => -price,
        Side::Sell => price,
    }
}

fn position(side: Side, price: i64, g: &[i64; N_OFF]) -> Position {
    let d = away(side, price);
    if d <= away(side, g[0]) {
        let clamped = (d < away(side, g[0])).then_some("nearer");
        return Position { x: 0.0, clamped };
    }
    if d >= away(side, g[N_OFF - 1]) {
        let clamped = (d > away(side, g[N_OFF - 1])).then_some("further");
        // The nearest offset with this price (prices repeat on cheap items).
        let k = (0..N_OFF)
            .find(|&k| away(side, g[k]) >= d)
            .unwrap_or(N_OFF - 1);
        return Position {
            x: k as f64,
            clamped,
        };
    }
    for k in 1..N_OFF {
        let (a, b) = (away(side, g[k - 1]), away(side, g[k]));
        if d <= b {
            let x = if b == a {
                (k - 1) as f64
            } else {
                (k - 1) as f64 + (d - a) as f64 / (b - a) as f64
            };
            return Position { x, clamped: None };
        }
    }
    Position {
        x: (N_OFF - 1) as f64,
        clamped: None,
    }
}

/// The price at fractional position `x` on a side, rounded as the labels
/// round (a buy down, a sell up).
fn price_at(side: Side, g: &[i64; N_OFF], x: f64) -> i64 {
    let k = (x.floor() as usize).min(N_OFF - 1);
    let f = x - k as f64;
    if k + 1 >= N_OFF || f <= 0.0 {
        return g[k];
    }
    let v = g[k] as f64 + (g[k + 1] - g[k]) as f64 * f;
    match side {
        Side::Buy => v.floor() as i64,
        Side::Sell => v.ceil() as i64,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HorizonProbability {
    pub hours: u32,
    pub probability: f64,
    /// False where the model could not calibrate this horizon.
    pub calibrated: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Deadline {
    /// `placed_at + horizon_hours`, Unix seconds.
    pub at: i64,
    pub remaining_hours: f64,
    pub probability: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetPrice {
    pub probability: f64,
    /// The best price for the player whose probability at the offer's
    /// horizon (from now) still reaches `probability`.
    pub price: i64,
    /// Its probability on the surface.
    pub price_probability: f64,
    /// False when even the 1.25 % price falls short (its price is answered).
    pub reachable: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundTrip {
    pub buy_price: i64,
    pub sell_price: i64,
    pub tax_per_item: i64,
    pub profit_per_item: i64,
    /// Deadline probability × profit per item × quantity, whole gp.
    pub expected_profit: i64,
}

/// The advisor's answer for one offer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub id: Option<String>,
    pub item_id: ItemId,
    pub name: String,
    pub side: Side,
    pub price: i64,
    pub quantity: i64,
    pub tick_time: i64,
    pub market_low: i64,
    pub market_high: i64,
    /// The offer's distance from the market in the model's terms, percent.
    pub offset_pct: f64,
    /// "nearer" / "further" when the price lies outside the model's offsets.
    pub clamped: Option<&'static str>,
    /// The round trip's probability at each model horizon from now.
    pub horizons: Vec<HorizonProbability>,
    pub deadline: Deadline,
    pub target: TargetPrice,
    pub round_trip: RoundTrip,
    /// Over the buy limit (4 h) when the item has one.
    pub over_buy_limit: bool,
}

/// Judges `offer` on the item's prediction and market at `tick_time`.
pub fn check(
    offer: &Offer,
    pred: &Prediction,
    market: &Market,
    meta: Option<&ItemMeta>,
    tick_time: i64,
    uncalibrated: &[u32],
) -> Result<Check, String> {
    offer.validate()?;
    if market.low <= 0 || market.high <= 0 {
        return Err(format!("item {} has no market prices yet", offer.item_id));
    }
    let surface = Surface::of(pred);
    let g = grid(offer.side, market);
    let pos = position(offer.side, offer.price, &g);
    let horizons = HORIZONS_H
        .iter()
        .enumerate()
        .map(|(h, &hours)| HorizonProbability {
            hours,
            probability: surface.at(h, pos.x),
            calibrated: !uncalibrated.contains(&hours),
        })
        .collect();
    let placed = offer.placed_at.unwrap_or(tick_time).min(tick_time);
    let horizon = offer.horizon();
    let at = placed + (horizon * 3600.0).round() as i64;
    let remaining_hours = (at - tick_time) as f64 / 3600.0;
    let deadline_p = surface.at_hours(remaining_hours, pos.x);

    // The other leg at the same position.
    let other = match offer.side {
        Side::Buy => Side::Sell,
        Side::Sell => Side::Buy,
    };
    let other_price = price_at(other, &grid(other, market), pos.x);
    let (buy, sell) = match offer.side {
        Side::Buy => (offer.price, other_price),
        Side::Sell => (other_price, offer.price),
    };
    let tax_per_item = tax::tax(offer.item_id, sell, tick_time);
    let profit_per_item = sell - buy - tax_per_item;
    let expected_profit =
        (deadline_p * profit_per_item as f64 * offer.quantity as f64).round() as i64;

    let q = offer
        .target_probability
        .unwrap_or(DEFAULT_TARGET_PROBABILITY);
    let target = price_for(&surface, offer.side, &g, horizon, q);
    let offset_pct = {
        let base = match offer.side {
            Side::Buy => market.low,
            Side::Sell => market.high,
        } as f64;
        (away(offer.side, offer.price) as f64 - away(offer.side, base as i64) as f64) / base * 100.0
    };
    Ok(Check {
        id: offer.id.clone(),
        item_id: offer.item_id,
        name: meta.map(|m| m.name.clone()).unwrap_or_default(),
        side: offer.side,
        price: offer.price,
        quantity: offer.quantity,
        tick_time,
        market_low: market.low,
        market_high: market.high,
        offset_pct: (offset_pct * 1e4).round() / 1e4,
        clamped: pos.clamped,
        horizons,
        deadline: Deadline {
            at,
            remaining_hours: (remaining_hours * 1e4).round() / 1e4,
            probability: deadline_p,
        },
        target,
        round_trip: RoundTrip {
            buy_price: buy,
            sell_price: sell,
            tax_per_item,
            profit_per_item,
            expected_profit,
        },
        over_buy_limit: offer.side == Side::Buy
            && meta
                .and_then(|m| m.buy_limit)
                .is_some_and(|l| offer.quantity > l),
    })
}

/// The best price (furthest from the market) whose probability within
/// `hours` from now reaches `q`.
fn price_for(surface: &Surface, side: Side, g: &[i64; N_OFF], hours: f64, q: f64) -> TargetPrice {
    let p = |x: f64| surface.at_hours(hours, x);
    let nearest = p(0.0);
    if nearest < q {
        return TargetPrice {
            probability: q,
            price: g[0],
            price_probability: nearest,
            reachable: false,
        };
    }
    // p is non-increasing in x: bisect for the largest x with p(x) ≥ q, then
    // round the price towards the market so that it still reaches q.
    let (mut lo, mut hi) = (0.0f64, (N_OFF - 1) as f64);
    if p(hi) >= q {
        lo = hi;
    } else {
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if p(mid) >= q {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let mut price = price_at(side, g, lo);
    // Rounding may step past q: walk back towards the market one gp at a time
    // (at most the gap to the 1.25 % price, which reaches q).
    loop {
        let x = position(side, price, g).x;
        if p(x) >= q || away(side, price) <= away(side, g[0]) {
            return TargetPrice {
                probability: q,
                price,
                price_probability: p(x),
                reachable: true,
            };
        }
        price += match side {
            Side::Buy => 1,
            Side::Sell => -1,
        };
    }
}

/// What the websocket's offer watcher remembers per registered offer.
#[derive(Debug, Clone)]
pub struct Watched {
    pub offer: Offer,
    /// Set once an alert was sent; cleared when the probability recovers.
    pub alerted: bool,
}

impl Watched {
    /// The offer as the watcher checks it: its target probability is the
    /// threshold, so the check's `target` is the relist price (an offer
    /// placed now for the same horizon that reaches the threshold).
    pub fn as_checked(&self) -> Offer {
        Offer {
            target_probability: self.offer.threshold.or(self.offer.target_probability),
            ..self.offer.clone()
        }
    }
}

/// An alert for a watched offer whose deadline probability fell below its
/// threshold at this check (`c` from `check(&w.as_checked(), …)`); `None`
/// otherwise. Edge-triggered: once per fall, re-armed when it recovers.
pub fn alert(w: &mut Watched, c: &Check) -> Option<serde_json::Value> {
    let threshold = w.offer.threshold?;
    if c.deadline.probability >= threshold {
        w.alerted = false;
        return None;
    }
    if w.alerted {
        return None;
    }
    w.alerted = true;
    Some(serde_json::json!({
        "type": "offer_alert",
        "id": w.offer.id,
        "item_id": c.item_id,
        "side": c.side,
        "price": c.price,
        "tick_time": c.tick_time,
        "probability": c.deadline.probability,
        "threshold": threshold,
        "remaining_hours": c.deadline.remaining_hours,
        "relist_price": c.target.price,
        "relist_probability": c.target.price_probability,
        "relist_reachable": c.target.reachable,
        "relist_horizon_hours": w.offer.horizon(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gept_core::N_TARGETS;
    use std::sync::Arc;

    fn pred(f: impl Fn(usize, usize) -> f32) -> Prediction {
        let mut p = vec![0.0; N_TARGETS];
        for h in 0..N_H {
            for k in 0..N_OFF {
                p[h * N_OFF + k] = f(h, k);
            }
        }
        Prediction {
            item_id: 4151,
            tick_time: 0,
            observed_at: 0,
            model_version: Arc::from("t"),
            probabilities: p,
        }
    }

    fn market(low: i64, high: i64) -> Market {
        Market {
            latest: gept_core::LatestPrice {
                item_id: 4151,
                timestamp: 0,
                high: Some(high),
                high_time: None,
                low: Some(low),
                low_time: None,
            },
            high,
            low,
            spread_pct: None,
            spread_ma_24h: None,
            volume_1h: Some(1000.0),
            volume_mean: None,
        }
    }

    fn offer(side: Side, price: i64) -> Offer {
        Offer {
            id: None,
            item_id: 4151,
            side,
            price,
            quantity: 10,
            placed_at: None,
            horizon_hours: Some(4.0),
            target_probability: Some(0.5),
            threshold: None,
        }
    }

    // A monotone surface: falls with the offset, rises with the horizon.
    fn smooth(h: usize, k: usize) -> f32 {
        (0.2 + 0.04 * h as f32 - 0.05 * k as f32).clamp(0.0, 1.0)
    }

    #[test]
    fn at_an_offsets_price_the_answer_is_the_models_output() {
        let p = pred(smooth);
        let m = market(1_000_000, 1_020_000);
        for (k, &bp) in OFFSETS_BP.iter().enumerate() {
            let c = check(
                &offer(Side::Buy, buy_price(m.low, bp)),
                &p,
                &m,
                None,
                0,
                &[],
            )
            .unwrap();
            for (h, hp) in c.horizons.iter().enumerate() {
                assert_eq!(hp.probability, f64::from(p.probabilities[h * N_OFF + k]));
            }
            let c = check(
                &offer(Side::Sell, sell_price(m.high, bp)),
                &p,
                &m,
                None,
                0,
                &[],
            )
            .unwrap();
            assert_eq!(
                c.horizons[3].probability,
                f64::from(p.probabilities[3 * N_OFF + k])
            );
            assert_eq!(c.clamped, None);
        }
    }

    #[test]
    fn probability_is_monotone_in_price_and_clamped_outside_the_offsets() {
        // A non-monotone model output is made monotone.
        let p = pred(|h, k| if k == 3 { 0.9 } else { smooth(h, k) });
        let m = market(100_000, 102_000);
        let mut last = f64::INFINITY;
        for price in (96_000..=100_500).rev().step_by(7) {
            let c = check(&offer(Side::Buy, price), &p, &m, None, 0, &[]).unwrap();
            let v = c.horizons[5].probability;
            assert!(v <= last + 1e-12, "buy at {price}: {v} after {last}");
            last = v;
        }
        let near = check(&offer(Side::Buy, 100_000), &p, &m, None, 0, &[]).unwrap();
        assert_eq!(near.clamped, Some("nearer"));
        let far = check(&offer(Side::Buy, 90_000), &p, &m, None, 0, &[]).unwrap();
        assert_eq!(far.clamped, Some("further"));
        let mut last = f64::INFINITY;
        for price in (101_000..=106_000).step_by(11) {
            let v = check(&offer(Side::Sell, price), &p, &m, None, 0, &[])
                .unwrap()
                .horizons[5]
                .probability;
            assert!(v <= last + 1e-12);
            last = v;
        }
    }

    #[test]
    fn the_deadline_counts_from_placement_and_interpolates_hours() {
        let p = pred(smooth);
        let m = market(1_000_000, 1_020_000);
        let price = buy_price(m.low, 150);
        // Placed 2 h before the tick with a 4 h horizon: 2 h remain.
        let mut o = offer(Side::Buy, price);
        o.placed_at = Some(10_000 - 7200);
        let c = check(&o, &p, &m, None, 10_000, &[]).unwrap();
        assert_eq!(c.deadline.remaining_hours, 2.0);
        assert_eq!(
            c.deadline.probability,
            f64::from(p.probabilities[N_OFF + 1])
        );
        // 1.5 h remain: halfway between 1 h and 2 h.
        o.placed_at = Some(10_000 - 9000);
        let c = check(&o, &p, &m, None, 10_000, &[]).unwrap();
        let want = (f64::from(p.probabilities[1]) + f64::from(p.probabilities[N_OFF + 1])) / 2.0;
        assert!((c.deadline.probability - want).abs() < 1e-9);
        // Past its horizon: nothing more fills in its time.
        o.placed_at = Some(10_000 - 5 * 3600);
        assert_eq!(
            check(&o, &p, &m, None, 10_000, &[])
                .unwrap()
                .deadline
                .probability,
            0.0
        );
    }

    #[test]
    fn the_target_price_reaches_the_target_and_no_further() {
        let p = pred(smooth);
        let m = market(1_000_000, 1_020_000);
        let mut o = offer(Side::Buy, 990_000);
        o.target_probability = Some(0.3);
        let c = check(&o, &p, &m, None, 0, &[]).unwrap();
        assert!(c.target.reachable);
        assert!(c.target.price_probability >= 0.3);
        // One gp further from the market falls short.
        let mut further = o.clone();
        further.price = c.target.price - 1;
        let f = check(&further, &p, &m, None, 0, &[]).unwrap();
        assert!(f.deadline.probability < 0.3, "{}", f.deadline.probability);
        // Out of reach: above the nearest offset's probability.
        o.target_probability = Some(0.99);
        let c = check(&o, &p, &m, None, 0, &[]).unwrap();
        assert!(!c.target.reachable);
        assert_eq!(c.target.price, buy_price(m.low, 125));
    }

    #[test]
    fn the_round_trip_is_taxed_and_alerts_fire_once_per_fall() {
        let p = pred(smooth);
        let m = market(1_000_000, 1_020_000);
        let mut o = offer(Side::Buy, buy_price(m.low, 200));
        o.threshold = Some(0.2);
        let c = check(&o, &p, &m, None, 1_700_000_000, &[]).unwrap();
        assert_eq!(c.round_trip.sell_price, sell_price(m.high, 200));
        assert_eq!(
            c.round_trip.tax_per_item,
            tax::tax(4151, c.round_trip.sell_price, 1_700_000_000)
        );
        assert_eq!(
            c.round_trip.profit_per_item,
            c.round_trip.sell_price - c.round_trip.buy_price - c.round_trip.tax_per_item
        );
        let mut w = Watched {
            offer: o.clone(),
            alerted: false,
        };
        let c = check(&w.as_checked(), &p, &m, None, 1_700_000_000, &[]).unwrap();
        // 4 h at 2 %: 0.2 + 0.12 − 0.15 = 0.17 < 0.2: fires, once, with a
        // relist price that reaches the threshold.
        let a = alert(&mut w, &c).expect("an alert");
        assert!(a["relist_probability"].as_f64().unwrap() >= 0.2);
        assert!(a["relist_price"].as_i64().unwrap() > o.price);
        assert!(alert(&mut w, &c).is_none());
        let high = check(&o, &pred(|_, _| 0.9), &m, None, 1_700_000_000, &[]).unwrap();
        assert!(alert(&mut w, &high).is_none());
        assert!(!w.alerted, "recovering re-arms");
        assert!(alert(&mut w, &c).is_some());
    }
}
