//! Does it make money? A backtest of the recommendations against the
//! heuristics players use, through the code `gept serve` runs.
//!
//! A recorded or stored period is replayed through the serving feature
//! engine (`gept_dataflows::features::drive`), the model (`Model::predict`),
//! the market view (`MarketBook`, as the inference thread keeps it) and the
//! ranking (`recommend::recommend`); a simulated player trades on it:
//!
//! - **Slots and capital.** Each round trip takes one GE slot: its buy, then
//!   its sell in the same slot. A buy locks `price × quantity` of the cash
//!   until it fills or is cancelled; stock is valued at the then low minus
//!   the tax. The player re-plans every `replan_seconds` and whenever a slot
//!   frees, filling free slots with the strategy's best candidates (an item
//!   with an open offer is not bought again).
//! - **Fills, by the labels' rule, never with look-ahead.** At each
//!   observation of the item after the buy was placed, a buy at P fills
//!   while the market's low is at or below P; the sell is placed when the
//!   buy has filled and fills while the high is at or above its price (from
//!   that observation on). The low (high) must come from a trade made after
//!   the offer was placed (`/latest` `lowTime`/`highTime`), because `/latest`
//!   repeats an item's last price every minute, however old, and a sell at a
//!   months-old mistaken high would otherwise "fill" (the labels count the
//!   same fresh trades, `gept_dataflows::labels`). **Partially**: when the item's newest complete
//!   `/1h` bucket gives the side's traded volume (lows for a buy, highs for a
//!   sell), an offer takes at most `volume_share` of it, spread evenly over
//!   the hour, per elapsed second since the offer was last seen; without
//!   volume data it fills whole, as the labels assume.
//! - **Buy limits** per item over a rolling 4 h of bought units; the **GE tax
//!   of the sale's date** (`gept_core::tax`, exemptions dated too).
//! - **Cancels and relists.** A buy still unfilled at its horizon is
//!   cancelled (a partly filled one keeps its units and sells them). A sell
//!   unsold at its horizon is relisted at the then high, for 4 h more. The
//!   model strategies also cancel an untouched buy at a re-plan when the
//!   model's probability that it fills by its deadline (the offer advisor,
//!   `offers::check`) has fallen below `relist_ratio` of the probability it
//!   was placed at.
//!
//! Strategies, each in its own simulated account: `model` (ours: the
//! recommendations as served), `old_ranking` (the same candidates ranked by
//! the expected value per unit of each item's single best target, as the
//! system we replace ranked them), `margin_flip` (buy at the current low,
//! sell at the current high, ranked by margin after tax × the quantity a
//! slot can hold: what players do by hand) and `random` (liquid items with a
//! positive margin picked at random, margin-flip prices: the floor).

use crate::offers;
use crate::recommend::{self, Ranking, Request, Risk, Style};
use gept_actors::inference::{Market, MarketBook, Prediction};
use gept_core::{tax, ItemId, ItemMeta, LatestPrice, N_TARGETS};
use gept_dataflows::features::{BucketInput, TickInput};
use gept_dataflows::labels;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The GE's buy-limit window.
pub const LIMIT_WINDOW: i64 = 4 * 3600;
/// An unsold sell is relisted at the market for this long.
pub const RELIST_SECONDS: i64 = 4 * 3600;

/// What one simulated player does.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub capital: i64,
    pub slots: usize,
    pub risk: Risk,
    pub style: Style,
    /// Re-plan at least this often (seconds of market time).
    pub replan_seconds: i64,
    /// Share of a side's hourly traded volume one offer may take.
    pub volume_share: f64,
    /// The model strategies cancel an untouched buy whose deadline
    /// probability fell below this share of the probability at placement.
    pub relist_ratio: f64,
    /// How long the margin-flip and random strategies leave a round trip.
    pub peer_horizon_h: u32,
    pub seed: u64,
}

impl Settings {
    pub fn new(capital: i64, risk: Risk, style: Style) -> Settings {
        Settings {
            capital,
            slots: 8,
            risk,
            style,
            replan_seconds: 300,
            volume_share: recommend::VOLUME_SHARE,
            relist_ratio: 0.5,
            peer_horizon_h: 4,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Model,
    OldRanking,
    MarginFlip,
    Random,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Model,
        Strategy::OldRanking,
        Strategy::MarginFlip,
        Strategy::Random,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Model => "model",
            Strategy::OldRanking => "old_ranking",
            Strategy::MarginFlip => "margin_flip",
            Strategy::Random => "random",
        }
    }

    fn uses_model(self) -> bool {
        matches!(self, Strategy::Model | Strategy::OldRanking)
    }
}

/// A trading decision (the no-look-ahead test compares them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub time: i64,
    pub action: &'static str,
    pub item: ItemId,
    pub price: i64,
    pub quantity: i64,
}

/// A round trip a strategy proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub item: ItemId,
    pub buy: i64,
    pub sell: i64,
    pub quantity: i64,
    pub horizon_h: u32,
    /// The model's probability that the round trip completes in time.
    pub predicted: Option<f32>,
}

/// An item's market at an observation, as fills see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    pub high: i64,
    pub low: i64,
    /// Units traded per hour at the high (instant buys) and at the low
    /// (instant sells), from the newest complete `/1h` bucket.
    pub high_volume_h: Option<f64>,
    pub low_volume_h: Option<f64>,
    /// When the high and the low last traded (`/latest` `highTime`,
    /// `lowTime`): a fill needs a trade after the offer was placed.
    pub high_time: Option<i64>,
    pub low_time: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Buy,
    Sell,
}

#[derive(Debug, Clone)]
struct Order {
    trip: usize,
    leg: Leg,
    price: i64,
    quantity: i64,
    filled: i64,
    placed_at: i64,
    deadline: i64,
    last_seen: i64,
}

/// One simulated account.
#[derive(Debug)]
pub struct Sim {
    pub settings: Settings,
    /// Free cash.
    pub cash: i64,
    /// Cash locked in open buys.
    pub reserved: i64,
    orders: Vec<Order>,
    trips: Vec<Trip>,
    window: HashMap<ItemId, VecDeque<(i64, i64)>>,
    pub decisions: Vec<Decision>,
    /// (time, equity) after each observed tick.
    pub equity: Vec<(i64, i64)>,
    last_plan: Option<i64>,
    freed: bool,
    quotes: HashMap<ItemId, Quote>,
    /// ∫ (equity − cash) / equity dt and ∫ dt.
    used: (f64, f64),
    buys_placed: usize,
    buys_filled: usize,
}

impl Sim {
    pub fn new(settings: Settings) -> Sim {
        Sim {
            cash: settings.capital,
            settings,
            reserved: 0,
            orders: Vec::new(),
            trips: Vec::new(),
            window: HashMap::new(),
            decisions: Vec::new(),
            equity: Vec::new(),
            last_plan: None,
            freed: false,
            quotes: HashMap::new(),
            used: (0.0, 0.0),
            buys_placed: 0,
            buys_filled: 0,
        }
    }

    pub fn free_slots(&self) -> usize {
        self.settings.slots.saturating_sub(self.orders.len())
    }

    /// Items with an open offer.
    pub fn open_items(&self) -> HashSet<ItemId> {
        self.orders
            .iter()
            .map(|o| self.trips[o.trip].item)
            .collect()
    }

    /// Units of `item` bought in the 4 h before `t`.
    pub fn bought_in_window(&mut self, item: ItemId, t: i64) -> i64 {
        let w = self.window.entry(item).or_default();
        while w.front().is_some_and(|&(at, _)| at <= t - LIMIT_WINDOW) {
            w.pop_front();
        }
        w.iter().map(|&(_, q)| q).sum()
    }

    /// Whether a plan is due at `t` (the cadence, or a slot freed).
    pub fn plan_due(&self, t: i64) -> bool {
        self.free_slots() > 0
            && (self.freed
                || self
                    .last_plan
                    .is_none_or(|p| t - p >= self.settings.replan_seconds))
    }

    /// Places `plan`'s buy at `t`, its quantity cut to the buy limit left
    /// and the cash; answers whether anything was placed.
    pub fn place(&mut self, t: i64, plan: &Plan, limit: Option<i64>) -> bool {
        if self.free_slots() == 0 || plan.buy <= 0 || self.open_items().contains(&plan.item) {
            return false;
        }
        let left = limit.map_or(i64::MAX, |l| l - self.bought_in_window(plan.item, t));
        let quantity = plan.quantity.min(left).min(self.cash / plan.buy);
        if quantity <= 0 {
            return false;
        }
        let horizon_end = t + i64::from(plan.horizon_h) * 3600;
        self.cash -= quantity * plan.buy;
        self.reserved += quantity * plan.buy;
        self.trips.push(Trip {
            item: plan.item,
            placed_at: t,
            horizon_end,
            predicted: plan.predicted,
            planned_sell: plan.sell,
            buy_price: plan.buy,
            bought: 0,
            sold: 0,
            proceeds: 0,
            done_at: None,
        });
        self.orders.push(Order {
            trip: self.trips.len() - 1,
            leg: Leg::Buy,
            price: plan.buy,
            quantity,
            filled: 0,
            placed_at: t,
            deadline: horizon_end,
            last_seen: t,
        });
        self.buys_placed += 1;
        self.decisions.push(Decision {
            time: t,
            action: "buy",
            item: plan.item,
            price: plan.buy,
            quantity,
        });
        true
    }

    /// Cancels open order `i` at `t`: a buy's unfilled rest is refunded and
    /// its filled units go on sale; answers whether the slot freed.
    fn cancel_buy(&mut self, i: usize, t: i64, action: &'static str) {
        let o = self.orders[i].clone();
        debug_assert_eq!(o.leg, Leg::Buy);
        let refund = (o.quantity - o.filled) * o.price;
        self.reserved -= refund;
        self.cash += refund;
        let (trip, filled) = (o.trip, o.filled);
        self.decisions.push(Decision {
            time: t,
            action,
            item: self.trips[trip].item,
            price: o.price,
            quantity: o.quantity - o.filled,
        });
        if filled > 0 {
            self.start_sale(i, t);
        } else {
            self.orders.remove(i);
            self.trips[trip].done_at = Some(t);
            self.freed = true;
        }
    }

    /// Turns buy order `i` (filled as far as it goes) into the trip's sell.
    fn start_sale(&mut self, i: usize, t: i64) {
        let o = &mut self.orders[i];
        let trip = &self.trips[o.trip];
        *o = Order {
            trip: o.trip,
            leg: Leg::Sell,
            price: trip.planned_sell,
            quantity: o.filled,
            filled: 0,
            placed_at: t,
            deadline: trip.horizon_end.max(t),
            last_seen: t,
        };
    }

    /// Units an offer may take at an observation `dt` seconds after it was
    /// last seen, given the side's hourly volume.
    fn capacity(&self, volume_h: Option<f64>, dt: i64, remaining: i64) -> i64 {
        match volume_h {
            None => remaining,
            Some(v) => {
                let cap = (v * self.settings.volume_share * dt as f64 / 3600.0).floor() as i64;
                cap.clamp(0, remaining)
            }
        }
    }

    /// Applies the observations of tick `t` (items observed at it): fills,
    /// then expiries and relists.
    pub fn observe(&mut self, t: i64, quotes: &HashMap<ItemId, Quote>) {
        for o in &self.orders {
            let item = self.trips[o.trip].item;
            if let Some(q) = quotes.get(&item) {
                self.quotes.insert(item, *q);
            }
        }
        let mut i = 0;
        while i < self.orders.len() {
            let item = self.trips[self.orders[i].trip].item;
            let quote = quotes.get(&item).copied();
            let mut removed = false;
            if let Some(q) = quote {
                let o = self.orders[i].clone();
                let remaining = o.quantity - o.filled;
                let dt = t - o.last_seen;
                // A trade at the price after the offer went in.
                let traded = |at: Option<i64>| at.is_some_and(|a| a > o.placed_at);
                match o.leg {
                    Leg::Buy if t > o.placed_at && q.low <= o.price && traded(q.low_time) => {
                        let fill = self.capacity(q.low_volume_h, dt, remaining);
                        if fill > 0 {
                            let trip = &mut self.trips[o.trip];
                            if trip.bought == 0 {
                                self.buys_filled += 1;
                            }
                            trip.bought += fill;
                            self.reserved -= fill * o.price;
                            self.window.entry(item).or_default().push_back((t, fill));
                            self.orders[i].filled += fill;
                        }
                    }
                    Leg::Sell if t >= o.placed_at && q.high >= o.price && traded(q.high_time) => {
                        let fill = self.capacity(q.high_volume_h, dt, remaining);
                        if fill > 0 {
                            let cash = fill * (o.price - tax::tax(item, o.price, t));
                            self.cash += cash;
                            self.trips[o.trip].sold += fill;
                            self.trips[o.trip].proceeds += cash;
                            self.orders[i].filled += fill;
                        }
                    }
                    _ => {}
                }
                self.orders[i].last_seen = t;
                let o = &self.orders[i];
                match o.leg {
                    Leg::Buy if o.filled == o.quantity => {
                        // The sale is placed now and may fill at this same
                        // observation, as the labels allow.
                        self.start_sale(i, t);
                        continue;
                    }
                    Leg::Sell if o.filled == o.quantity => {
                        self.trips[o.trip].done_at = Some(t);
                        self.orders.remove(i);
                        self.freed = true;
                        removed = true;
                    }
                    _ => {}
                }
            }
            if !removed {
                let o = &self.orders[i];
                if t >= o.deadline {
                    match o.leg {
                        Leg::Buy => {
                            let freed_before = self.orders.len();
                            self.cancel_buy(i, t, "cancel_expired");
                            removed = self.orders.len() < freed_before;
                        }
                        Leg::Sell => {
                            // Relist the rest at the market's high.
                            let high = self.quotes.get(&item).map_or(o.price, |q| q.high);
                            let rest = o.quantity - o.filled;
                            let o = &mut self.orders[i];
                            *o = Order {
                                price: high,
                                quantity: rest,
                                filled: 0,
                                placed_at: t,
                                deadline: t + RELIST_SECONDS,
                                last_seen: t,
                                ..o.clone()
                            };
                            self.decisions.push(Decision {
                                time: t,
                                action: "relist_sell",
                                item,
                                price: high,
                                quantity: rest,
                            });
                        }
                    }
                }
            }
            if !removed {
                i += 1;
            }
        }
    }

    /// The account's value at `t`: cash, locked cash, and stock at the last
    /// seen low minus the tax.
    pub fn value(&self, t: i64) -> i64 {
        let stock: i64 = self
            .orders
            .iter()
            .map(|o| {
                let item = self.trips[o.trip].item;
                let held = match o.leg {
                    Leg::Buy => o.filled,
                    Leg::Sell => o.quantity - o.filled,
                };
                let low = self.quotes.get(&item).map_or(o.price, |q| q.low);
                held * (low - tax::tax(item, low, t))
            })
            .sum();
        self.cash + self.reserved + stock
    }

    /// Records the equity after tick `t`.
    pub fn mark(&mut self, t: i64) {
        let v = self.value(t);
        if let Some(&(t0, v0)) = self.equity.last() {
            let dt = (t - t0) as f64;
            if v0 > 0 {
                self.used.0 += dt * (v0 - self.cash).max(0) as f64 / v0 as f64;
            }
            self.used.1 += dt;
        }
        self.equity.push((t, v));
    }

    /// The account's figures over the period.
    pub fn report(&self, strategy: Strategy) -> StrategyReport {
        let capital = self.settings.capital;
        let end = self.equity.last().map_or(capital, |e| e.1);
        let hours = match (self.equity.first(), self.equity.last()) {
            (Some(a), Some(b)) => (b.0 - a.0) as f64 / 3600.0,
            _ => 0.0,
        };
        let profit = end - capital;
        let mut peak = capital;
        let mut drawdown = 0.0f64;
        for &(_, v) in &self.equity {
            peak = peak.max(v);
            drawdown = drawdown.max((peak - v) as f64 / peak as f64);
        }
        let completed: Vec<&Trip> = self
            .trips
            .iter()
            .filter(|t| t.bought > 0 && t.sold == t.bought && t.done_at.is_some())
            .collect();
        let mean_hours = (!completed.is_empty()).then(|| {
            completed
                .iter()
                .map(|t| (t.done_at.unwrap_or(t.placed_at) - t.placed_at) as f64 / 3600.0)
                .sum::<f64>()
                / completed.len() as f64
        });
        // Calibration of the decisions taken: predicted probability against
        // completion in time.
        let last = self.equity.last().map_or(0, |e| e.0);
        let judged: Vec<&Trip> = self.trips.iter().filter(|t| t.judged(last)).collect();
        let calibration = (!judged.is_empty()).then(|| Calibration {
            trips: judged.len(),
            mean_predicted: judged
                .iter()
                .map(|t| f64::from(t.predicted.unwrap_or_default()))
                .sum::<f64>()
                / judged.len() as f64,
            realised: judged
                .iter()
                .filter(|t| {
                    t.bought > 0
                        && t.sold == t.bought
                        && t.done_at.is_some_and(|d| d <= t.horizon_end)
                })
                .count() as f64
                / judged.len() as f64,
            labelled: None,
        });
        StrategyReport {
            strategy,
            profit,
            roi: profit as f64 / capital as f64,
            profit_per_slot_hour: if hours > 0.0 {
                profit as f64 / (self.settings.slots as f64 * hours)
            } else {
                0.0
            },
            round_trips: self.trips.len(),
            buys_filled: self.buys_filled,
            fill_rate: if self.buys_placed > 0 {
                self.buys_filled as f64 / self.buys_placed as f64
            } else {
                0.0
            },
            completed: completed.len(),
            mean_hours_to_complete: mean_hours,
            capital_utilisation: if self.used.1 > 0.0 {
                self.used.0 / self.used.1
            } else {
                0.0
            },
            max_drawdown: drawdown,
            calibration,
            final_equity: end,
            open_at_end: self.orders.len(),
            trips: self.trips.clone(),
            equity: self.equity.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Calibration {
    /// Round trips whose horizon ended within the period.
    pub trips: usize,
    pub mean_predicted: f64,
    /// Share of them bought and sold in full within their horizon.
    pub realised: f64,
    /// Share of them whose target happened, by the training labels' rule
    /// (a fresh trade at or below the buy price, then one at or above the
    /// sell price, within the horizon; `gept_dataflows::labels`), whatever
    /// the quantity: the event the model predicts, so `mean_predicted`
    /// against it is the model's calibration on the decisions taken, and
    /// against `realised` what the size of the position and the market's
    /// volume cost on top.
    pub labelled: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StrategyReport {
    pub strategy: Strategy,
    /// Final equity − capital, gp (stock at the end valued at the low, taxed).
    pub profit: i64,
    pub roi: f64,
    pub profit_per_slot_hour: f64,
    pub round_trips: usize,
    pub buys_filled: usize,
    /// Buys that filled at least in part, of those placed.
    pub fill_rate: f64,
    /// Round trips bought and sold in full.
    pub completed: usize,
    /// From the buy's placement to the last unit sold, completed trips.
    pub mean_hours_to_complete: Option<f64>,
    /// Time-averaged share of the account in offers or stock.
    pub capital_utilisation: f64,
    /// Largest fall from a peak of equity, as a share of the peak.
    pub max_drawdown: f64,
    /// Predicted against realised completion of the trips taken (model
    /// strategies).
    pub calibration: Option<Calibration>,
    pub final_equity: i64,
    pub open_at_end: usize,
    /// Every round trip, for audit: placement, prices, units, proceeds.
    pub trips: Vec<Trip>,
    #[serde(skip)]
    pub equity: Vec<(i64, i64)>,
}

/// One round trip, as the account follows it and the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Trip {
    pub item: ItemId,
    pub placed_at: i64,
    pub horizon_end: i64,
    pub predicted: Option<f32>,
    pub buy_price: i64,
    pub planned_sell: i64,
    pub bought: i64,
    pub sold: i64,
    /// Cash from the sales, after tax; profit = proceeds − bought × buy_price
    /// for a trip sold in full.
    pub proceeds: i64,
    pub done_at: Option<i64>,
}

impl Trip {
    /// Whether the trip counts in the calibration of a period ending at
    /// `last`: a model's decision whose horizon has passed.
    fn judged(&self, last: i64) -> bool {
        self.predicted.is_some() && self.horizon_end <= last
    }
}

/// One player setting and its strategies' results.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub settings: Settings,
    pub strategies: Vec<StrategyReport>,
}

/// What `gept backtest` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model_version: Option<String>,
    pub from: i64,
    pub until: i64,
    pub ticks: usize,
    pub runs: Vec<Run>,
}

/// A small seeded generator (xorshift64*), so that a report depends only on
/// its inputs and seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// What the strategies see at a tick.
pub struct View<'a> {
    pub time: i64,
    pub predictions: &'a HashMap<ItemId, Arc<Prediction>>,
    pub market: &'a HashMap<ItemId, Arc<Market>>,
    pub items: &'a HashMap<ItemId, ItemMeta>,
    pub uncalibrated: &'a [u32],
}

/// Margin-flip candidates: liquid items (≥ 10 traded in the last hour) with
/// a positive margin after tax, buy at the low and sell at the high, as many
/// as a slot, the buy limit and the same share of the hour's volume as ours
/// allow.
fn margin_candidates(view: &View, per_slot: i64, horizon_h: u32) -> Vec<(f64, Plan)> {
    let mut out = Vec::new();
    for (&item, m) in view.market {
        let Some(volume) = m.volume_1h.filter(|&v| v >= 10.0) else {
            continue;
        };
        if m.low <= 0 || m.high <= m.low {
            continue;
        }
        let margin = m.high - m.low - tax::tax(item, m.high, view.time);
        if margin <= 0 {
            continue;
        }
        let limit = view
            .items
            .get(&item)
            .and_then(|i| i.buy_limit)
            .unwrap_or(i64::MAX);
        let quantity = (per_slot / m.low)
            .min(limit)
            .min((volume * recommend::VOLUME_SHARE) as i64);
        if quantity <= 0 {
            continue;
        }
        out.push((
            margin as f64 * quantity as f64,
            Plan {
                item,
                buy: m.low,
                sell: m.high,
                quantity,
                horizon_h,
                predicted: None,
            },
        ));
    }
    out
}

/// A strategy's candidates at a plan, best first.
pub fn candidates(strategy: Strategy, sim: &Sim, view: &View, rng: &mut Rng) -> Vec<Plan> {
    let free = sim.free_slots().max(1);
    match strategy {
        Strategy::Model | Strategy::OldRanking => {
            let req = Request {
                capital: sim.cash,
                risk: sim.settings.risk,
                style: sim.settings.style,
                slots: free,
                exclude: sim.open_items(),
                uncalibrated: view.uncalibrated.to_vec(),
                ranking: if strategy == Strategy::Model {
                    Ranking::ExpectedProfit
                } else {
                    Ranking::UnitValue
                },
            };
            let (recs, _) =
                recommend::recommend(&req, view.time, view.predictions, view.market, view.items);
            recs.into_iter()
                .map(|r| Plan {
                    item: r.item_id,
                    buy: r.buy_price,
                    sell: r.sell_price,
                    quantity: r.quantity,
                    horizon_h: r.expected_hours,
                    predicted: Some(r.fill_probability),
                })
                .collect()
        }
        Strategy::MarginFlip | Strategy::Random => {
            let open = sim.open_items();
            let mut c: Vec<(f64, Plan)> =
                margin_candidates(view, sim.cash / free as i64, sim.settings.peer_horizon_h)
                    .into_iter()
                    .filter(|(_, p)| !open.contains(&p.item))
                    .collect();
            c.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.item.cmp(&b.1.item)));
            if strategy == Strategy::Random {
                c.sort_by_key(|(_, p)| p.item);
                for i in (1..c.len()).rev() {
                    let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                    c.swap(i, j);
                }
            }
            c.into_iter().map(|(_, p)| p).collect()
        }
    }
}

/// The model strategies' cancel rule at a plan: an untouched buy whose
/// deadline probability fell below `relist_ratio` of its probability at
/// placement is cancelled (its slot re-planned at once).
fn cancel_fading(sim: &mut Sim, view: &View) {
    let mut i = 0;
    while i < sim.orders.len() {
        let o = &sim.orders[i];
        let trip = &sim.trips[o.trip];
        let (Some(p0), Some(pred), Some(m)) = (
            trip.predicted,
            view.predictions.get(&trip.item),
            view.market.get(&trip.item),
        ) else {
            i += 1;
            continue;
        };
        if o.leg != Leg::Buy || o.filled > 0 {
            i += 1;
            continue;
        }
        let offer = offers::Offer {
            id: None,
            item_id: trip.item,
            side: offers::Side::Buy,
            price: o.price,
            quantity: o.quantity,
            placed_at: Some(trip.placed_at),
            horizon_hours: Some((trip.horizon_end - trip.placed_at) as f64 / 3600.0),
            target_probability: None,
            threshold: None,
        };
        let fading = offers::check(
            &offer,
            pred,
            m,
            view.items.get(&trip.item),
            view.time,
            view.uncalibrated,
        )
        .is_ok_and(|c| c.deadline.probability < sim.settings.relist_ratio * f64::from(p0));
        if fading {
            let before = sim.orders.len();
            sim.cancel_buy(i, view.time, "cancel_fading");
            if sim.orders.len() == before {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
}

/// Re-plans `sim` at the view's tick when due.
pub fn plan(strategy: Strategy, sim: &mut Sim, view: &View, rng: &mut Rng) {
    if strategy.uses_model()
        && sim
            .last_plan
            .is_none_or(|p| view.time - p >= sim.settings.replan_seconds)
    {
        cancel_fading(sim, view);
    }
    if !sim.plan_due(view.time) {
        return;
    }
    sim.last_plan = Some(view.time);
    sim.freed = false;
    for p in candidates(strategy, sim, view, rng) {
        if sim.free_slots() == 0 {
            break;
        }
        let limit = view.items.get(&p.item).and_then(|i| i.buy_limit);
        sim.place(view.time, &p, limit);
    }
}

/// The newest complete `/1h` bucket's side volumes per item at `t`.
#[derive(Default)]
struct HourVolumes {
    next: usize,
    by_item: HashMap<ItemId, (i64, i64)>,
}

impl HourVolumes {
    fn advance(&mut self, hours: &[BucketInput], t: i64) {
        while self.next < hours.len() && hours[self.next].start + 3600 <= t {
            self.by_item = hours[self.next]
                .rows
                .iter()
                .map(|r| (r.item_id, (r.high_price_volume, r.low_price_volume)))
                .collect();
            self.next += 1;
        }
    }
}

/// Fills in each model strategy's [`Calibration::labelled`]: the labels of
/// the judged trips' targets, from the series of the items traded (the
/// target is the offset whose prices at the placement are the trip's).
fn label_trips(ticks: &[TickInput], runs: &mut [Run]) {
    use gept_core::{HORIZONS_H, OFFSETS_BP};
    use gept_dataflows::labels::{buy_price, label_series, sell_price, CarriedPrices, UNKNOWN};
    let traded: HashSet<ItemId> = runs
        .iter()
        .flat_map(|r| &r.strategies)
        .filter(|s| s.calibration.is_some())
        .flat_map(|s| s.trips.iter().map(|t| t.item))
        .collect();
    let mut carried = CarriedPrices::default();
    let mut series: HashMap<ItemId, Vec<labels::Obs>> = HashMap::new();
    for tick in ticks {
        for r in tick.rows.iter().filter(|r| traded.contains(&r.item_id)) {
            if let Some(o) = carried.apply(tick.time, r) {
                series.entry(r.item_id).or_default().push(o);
            }
        }
    }
    let labelled: HashMap<ItemId, Vec<[u8; N_TARGETS]>> = series
        .iter()
        .map(|(&item, obs)| (item, label_series(obs, |_| i64::MAX)))
        .collect();
    for report in runs.iter_mut().flat_map(|r| r.strategies.iter_mut()) {
        let Some(c) = report.calibration.as_mut() else {
            continue;
        };
        let last = report.equity.last().map_or(0, |e| e.0);
        let (mut n, mut ones) = (0usize, 0usize);
        for trip in report.trips.iter().filter(|t| t.judged(last)) {
            let (Some(obs), Some(labels)) = (series.get(&trip.item), labelled.get(&trip.item))
            else {
                continue;
            };
            let Ok(i) = obs.binary_search_by_key(&trip.placed_at, |o| o.t) else {
                continue;
            };
            let hours = (trip.horizon_end - trip.placed_at) / 3600;
            let h = HORIZONS_H.iter().position(|&x| x as i64 == hours);
            let k = OFFSETS_BP.iter().position(|&bp| {
                buy_price(obs[i].low, bp) == trip.buy_price
                    && sell_price(obs[i].high, bp) == trip.planned_sell
            });
            let (Some(h), Some(k)) = (h, k) else {
                continue;
            };
            match labels[i][h * OFFSETS_BP.len() + k] {
                UNKNOWN => continue,
                label => ones += usize::from(label == 1),
            }
            n += 1;
        }
        c.labelled = (n > 0).then(|| ones as f64 / n as f64);
    }
}

/// Replays `ticks` (those before `from` warm the features up) and trades
/// every setting with every strategy; `progress(done, total)` after each
/// tick of the period.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: Option<&gept_model::Model>,
    ticks: &[TickInput],
    hours: &[BucketInput],
    items: &HashMap<ItemId, ItemMeta>,
    from: i64,
    settings: &[Settings],
    strategies: &[Strategy],
    progress: impl FnMut(usize, usize),
) -> Report {
    run_with(
        model,
        ticks,
        hours,
        items,
        from,
        settings,
        strategies,
        progress,
        |_, _, _| {},
    )
}

/// [`run`], then `inspect(run, strategy, account)` for every account (the
/// tests read the decisions).
#[allow(clippy::too_many_arguments)]
pub fn run_with(
    model: Option<&gept_model::Model>,
    ticks: &[TickInput],
    hours: &[BucketInput],
    items: &HashMap<ItemId, ItemMeta>,
    from: i64,
    settings: &[Settings],
    strategies: &[Strategy],
    mut progress: impl FnMut(usize, usize),
    mut inspect: impl FnMut(usize, Strategy, &Sim),
) -> Report {
    let mut hours: Vec<BucketInput> = hours
        .iter()
        .filter(|b| b.step == gept_core::BucketStep::OneHour)
        .cloned()
        .collect();
    hours.sort_by_key(|b| b.start);
    let total = ticks.iter().filter(|t| t.time >= from).count();
    let uncalibrated: Vec<u32> = model.map_or_else(Vec::new, |m| m.uncalibrated_horizons());
    let version: Option<Arc<str>> = model.map(|m| Arc::from(m.meta.version.as_str()));
    let mut accounts: Vec<(usize, Strategy, Sim, Rng)> = settings
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            strategies
                .iter()
                .filter(|st| model.is_some() || !st.uses_model())
                .map(move |&st| (i, st, Sim::new(s.clone()), Rng::new(s.seed)))
        })
        .collect();
    let mut book = MarketBook::default();
    let mut market: HashMap<ItemId, Arc<Market>> = HashMap::new();
    let mut predictions: HashMap<ItemId, Arc<Prediction>> = HashMap::new();
    let mut volumes = HourVolumes::default();
    let by_time: HashMap<i64, &TickInput> = ticks.iter().map(|t| (t.time, t)).collect();
    let mut done = 0;
    let mut until = from;
    let alloc = timely::communication::Allocator::Thread(
        timely::communication::allocator::thread::Thread::default(),
    );
    let mut worker = timely::worker::Worker::new(
        timely::WorkerConfig::default(),
        alloc,
        Some(std::time::Instant::now()),
    );
    gept_dataflows::features::drive(&mut worker, ticks, &hours, items, |t, rows| {
        let Some(tick) = by_time.get(&t) else { return };
        let latest: HashMap<ItemId, &LatestPrice> =
            tick.rows.iter().map(|r| (r.item_id, r)).collect();
        book.update(&rows, &latest, &mut market);
        if t < from {
            return;
        }
        volumes.advance(&hours, t);
        if let (Some(model), Some(version)) = (model, &version) {
            if !rows.is_empty() {
                let width = rows[0].values.len();
                let mut x = Vec::with_capacity(rows.len() * width);
                for r in &rows {
                    r.push_encoded(&mut x);
                }
                let probs = model.predict(&x);
                for (r, p) in rows.iter().zip(probs.chunks_exact(N_TARGETS)) {
                    predictions.insert(
                        r.item_id,
                        Arc::new(Prediction {
                            item_id: r.item_id,
                            tick_time: t,
                            observed_at: t,
                            model_version: version.clone(),
                            probabilities: p.to_vec(),
                        }),
                    );
                }
            }
        }
        let quotes: HashMap<ItemId, Quote> = rows
            .iter()
            .filter_map(|r| {
                let m = market.get(&r.item_id)?;
                let v = volumes.by_item.get(&r.item_id);
                Some((
                    r.item_id,
                    Quote {
                        high: m.high,
                        low: m.low,
                        high_volume_h: v.map(|v| v.0 as f64),
                        low_volume_h: v.map(|v| v.1 as f64),
                        high_time: m.latest.high_time,
                        low_time: m.latest.low_time,
                    },
                ))
            })
            .collect();
        let view = View {
            time: t,
            predictions: &predictions,
            market: &market,
            items,
            uncalibrated: &uncalibrated,
        };
        for (_, strategy, sim, rng) in accounts.iter_mut() {
            sim.observe(t, &quotes);
            plan(*strategy, sim, &view, rng);
            sim.mark(t);
        }
        until = t;
        done += 1;
        progress(done, total);
    });
    while worker.has_dataflows() {
        worker.step_or_park(None);
    }
    for (i, strategy, sim, _) in &accounts {
        inspect(*i, *strategy, sim);
    }
    let mut runs: Vec<Run> = settings
        .iter()
        .enumerate()
        .map(|(i, s)| Run {
            settings: s.clone(),
            strategies: accounts
                .iter()
                .filter(|a| a.0 == i)
                .map(|(_, st, sim, _)| sim.report(*st))
                .collect(),
        })
        .collect();
    label_trips(ticks, &mut runs);
    Report {
        model_version: version.map(|v| v.to_string()),
        from,
        until,
        ticks: done,
        runs,
    }
}

/// The equity curves of one run as an SVG line chart.
pub fn equity_svg(run: &Run, title: &str) -> String {
    let (w, h, ml, mr, mt, mb) = (760.0, 360.0, 90.0, 20.0, 40.0, 40.0);
    let pts: Vec<(i64, i64)> = run
        .strategies
        .iter()
        .flat_map(|s| s.equity.iter().copied())
        .collect();
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{ml}" y="20" font-size="14">{title}</text>"#
    );
    if pts.is_empty() {
        out.push_str("</svg>");
        return out;
    }
    let (x0, x1) = (
        pts.iter().map(|p| p.0).min().unwrap_or(0) as f64,
        pts.iter().map(|p| p.0).max().unwrap_or(1) as f64,
    );
    let (mut y0, mut y1) = (
        pts.iter().map(|p| p.1).min().unwrap_or(0) as f64,
        pts.iter().map(|p| p.1).max().unwrap_or(1) as f64,
    );
    if y1 - y0 < 1.0 {
        y0 -= 1.0;
        y1 += 1.0;
    }
    let sx = |x: f64| ml + (x - x0) / (x1 - x0).max(1.0) * (w - ml - mr);
    let sy = |y: f64| h - mb - (y - y0) / (y1 - y0) * (h - mt - mb);
    for k in 0..=4 {
        let y = y0 + (y1 - y0) * k as f64 / 4.0;
        out.push_str(&format!(
            r##"<line x1="{ml}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - mr,
            ml - 6.0,
            sy(y) + 4.0,
            crate::recommend::gp(y.round() as i64),
            py = sy(y),
        ));
    }
    out.push_str(&format!(
        r##"<text x="{ml}" y="{}">{:.1} h</text>"##,
        h - 12.0,
        (x1 - x0) / 3600.0
    ));
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#7f7f7f"];
    for (i, s) in run.strategies.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = s
            .equity
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", sx(t as f64), sy(v as f64)))
            .collect();
        out.push_str(&format!(
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/><rect x="{}" y="28" width="10" height="10" fill="{c}"/><text x="{}" y="37">{}</text>"#,
            path.join(" "),
            ml + 10.0 + i as f64 * 140.0,
            ml + 24.0 + i as f64 * 140.0,
            s.strategy.name()
        ));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 % tax-era time and one before.
    const T2: i64 = tax::TAX_2PCT_FROM + 3600;
    const T1: i64 = tax::TAX_2PCT_FROM - 10 * 3600;

    fn sim(capital: i64) -> Sim {
        Sim::new(Settings {
            slots: 2,
            ..Settings::new(capital, Risk::Medium, Style::Active)
        })
    }

    /// A quote whose high and low both traded at `i64::MAX / 2` (after any
    /// placement in these tests).
    fn q(high: i64, low: i64) -> Quote {
        Quote {
            high,
            low,
            high_volume_h: None,
            low_volume_h: None,
            high_time: Some(i64::MAX / 2),
            low_time: Some(i64::MAX / 2),
        }
    }

    fn at(item: ItemId, quote: Quote) -> HashMap<ItemId, Quote> {
        HashMap::from([(item, quote)])
    }

    fn plan(item: ItemId, buy: i64, sell: i64, quantity: i64) -> Plan {
        Plan {
            item,
            buy,
            sell,
            quantity,
            horizon_h: 2,
            predicted: Some(0.5),
        }
    }

    #[test]
    fn a_buy_that_fills_and_sells_pays_the_tax_of_the_sale() {
        let mut s = sim(1_000_000);
        assert!(s.place(T2, &plan(4151, 1_000, 1_100, 100), None));
        assert_eq!((s.cash, s.reserved), (900_000, 100_000));
        // The placement tick itself does not fill (labels: after T).
        s.observe(T2, &at(4151, q(1_050, 990)));
        assert_eq!(s.reserved, 100_000);
        // Low reaches 1,000: bought; the high of 1,100 sells it at once.
        s.observe(T2 + 60, &at(4151, q(1_100, 1_000)));
        assert_eq!(s.reserved, 0);
        // 100 × (1,100 − 22 tax).
        assert_eq!(s.cash, 900_000 + 100 * 1_078);
        assert_eq!(s.free_slots(), 2);
        s.mark(T2 + 60);
        let r = s.report(Strategy::Model);
        assert_eq!(r.profit, 7_800);
        assert_eq!((r.completed, r.buys_filled), (1, 1));
    }

    #[test]
    fn the_model_is_judged_on_the_labels_of_the_trips_taken() {
        // Two items at 1,010 / 1,000; at 2 h and 1.5 %: buy 985, sell 1,026.
        let row = |item, high, high_time, low, low_time| LatestPrice {
            item_id: item,
            timestamp: 0,
            high: Some(high),
            high_time: Some(high_time),
            low: Some(low),
            low_time: Some(low_time),
        };
        let tick = |time, rows| TickInput { time, rows };
        let ticks = [
            tick(
                T2,
                vec![
                    row(1, 1_010, T2 - 9, 1_000, T2 - 9),
                    row(2, 1_010, T2 - 9, 1_000, T2 - 9),
                ],
            ),
            // Both bought (a fresh low of 980); item 2's 1,030 was traded
            // before the buy was seen, item 1's after.
            tick(
                T2 + 600,
                vec![
                    row(1, 1_010, T2 - 9, 980, T2 + 590),
                    row(2, 1_030, T2 + 500, 980, T2 + 590),
                ],
            ),
            tick(
                T2 + 1_200,
                vec![
                    row(1, 1_030, T2 + 1_190, 990, T2 + 590),
                    row(2, 1_030, T2 + 500, 990, T2 + 590),
                ],
            ),
            tick(
                T2 + 3 * 3600,
                vec![
                    row(1, 1_000, T2 + 3 * 3600, 990, T2 + 590),
                    row(2, 1_000, T2 + 3 * 3600, 990, T2 + 590),
                ],
            ),
        ];
        let (buy, sell) = (
            labels::buy_price(1_000, 150),
            labels::sell_price(1_010, 150),
        );
        assert_eq!((buy, sell), (985, 1_026));
        let mut s = sim(1_000_000);
        for item in [1, 2] {
            assert!(s.place(T2, &plan(item, buy, sell, 10), None));
        }
        s.mark(T2 + 3 * 3600);
        let mut runs = [Run {
            settings: s.settings.clone(),
            strategies: vec![s.report(Strategy::Model)],
        }];
        label_trips(&ticks, &mut runs);
        let c = runs[0].strategies[0].calibration.clone().unwrap();
        assert_eq!((c.trips, c.mean_predicted, c.labelled), (2, 0.5, Some(0.5)));
        // A trip whose prices are no target's at its placement is not judged.
        let mut s = sim(1_000_000);
        assert!(s.place(T2, &plan(1, buy - 1, sell, 10), None));
        s.mark(T2 + 3 * 3600);
        let mut runs = [Run {
            settings: s.settings.clone(),
            strategies: vec![s.report(Strategy::Model)],
        }];
        label_trips(&ticks, &mut runs);
        assert_eq!(
            runs[0].strategies[0].calibration.clone().unwrap().labelled,
            None
        );
    }

    #[test]
    fn a_stale_price_fills_nothing() {
        // The low still shows 1,000 from a trade before the offer went in.
        let stale = Quote {
            low_time: Some(T2 - 600),
            high_time: Some(T2 - 600),
            ..q(1_100, 1_000)
        };
        let mut s = sim(1_000_000);
        s.place(T2, &plan(4151, 1_000, 1_100, 100), None);
        s.observe(T2 + 60, &at(4151, stale));
        assert_eq!(s.reserved, 100_000, "no new trade: no fill");
        // A trade at 1,000 after the placement fills it.
        s.observe(
            T2 + 120,
            &at(
                4151,
                Quote {
                    low_time: Some(T2 + 100),
                    ..stale
                },
            ),
        );
        assert_eq!(s.reserved, 0);
        // The high of 1,100 was traded before the buy: no sale until a
        // trade at it after the sale went in.
        let (cash, sold) = (s.cash, T2 + 240);
        s.observe(
            sold - 60,
            &at(
                4151,
                Quote {
                    low_time: Some(T2 + 100),
                    ..stale
                },
            ),
        );
        assert_eq!(s.cash, cash, "no new trade at the high");
        s.observe(
            sold,
            &at(
                4151,
                Quote {
                    high_time: Some(sold - 1),
                    low_time: Some(T2 + 100),
                    ..stale
                },
            ),
        );
        assert_eq!(s.cash, 900_000 + 100 * 1_078, "bought and sold");
    }

    #[test]
    fn a_buy_that_never_fills_is_cancelled_at_its_horizon_and_refunded() {
        let mut s = sim(1_000_000);
        s.place(T2, &plan(4151, 1_000, 1_100, 100), None);
        s.observe(T2 + 3600, &at(4151, q(1_200, 1_010)));
        assert_eq!(s.reserved, 100_000);
        s.observe(T2 + 7200, &at(4151, q(1_200, 1_010)));
        assert_eq!((s.cash, s.reserved, s.free_slots()), (1_000_000, 0, 2));
        assert_eq!(s.decisions.last().unwrap().action, "cancel_expired");
        s.mark(T2 + 7200);
        let r = s.report(Strategy::Model);
        assert_eq!((r.profit, r.fill_rate), (0, 0.0));
        assert_eq!(r.calibration.unwrap().realised, 0.0);
    }

    #[test]
    fn volume_fills_in_part() {
        let mut s = sim(1_000_000);
        s.place(T2, &plan(4151, 1_000, 1_100, 100), None);
        // 400 traded at the low in the hour, a quarter for us, 30 minutes
        // elapsed: 50 units.
        let quote = Quote {
            high_volume_h: Some(400.0),
            low_volume_h: Some(400.0),
            ..q(1_050, 1_000)
        };
        s.observe(T2 + 1800, &at(4151, quote));
        assert_eq!(s.reserved, 50 * 1_000);
        // 15 more minutes: 25 more.
        s.observe(T2 + 2700, &at(4151, quote));
        assert_eq!(s.reserved, 25 * 1_000);
        // At the horizon the rest is cancelled and the 75 bought go on sale.
        s.observe(
            T2 + 7200,
            &at(
                4151,
                Quote {
                    low: 1_200,
                    ..quote
                },
            ),
        );
        assert_eq!(s.reserved, 0);
        assert_eq!(s.cash, 1_000_000 - 75 * 1_000);
        assert_eq!(s.free_slots(), 1, "the sale keeps the slot");
    }

    #[test]
    fn the_buy_limit_binds_over_four_hours() {
        let mut s = sim(10_000_000);
        assert!(s.place(T2, &plan(4151, 1_000, 1_100, 100), Some(70)));
        assert_eq!(s.decisions[0].quantity, 70);
        s.observe(T2 + 60, &at(4151, q(1_100, 1_000)));
        // Sold; the 70 bought still count for 4 h.
        assert!(!s.place(T2 + 120, &plan(4151, 1_000, 1_100, 100), Some(70)));
        assert!(s.place(
            T2 + 60 + LIMIT_WINDOW,
            &plan(4151, 1_000, 1_100, 100),
            Some(70)
        ));
    }

    #[test]
    fn the_tax_changes_on_2025_05_29() {
        // The same flip sold before and after: 1 % then 2 %.
        for (t, cash) in [(T1, 100 * (1_100 - 11)), (T2, 100 * (1_100 - 22))] {
            let mut s = sim(100_000);
            s.place(t, &plan(4151, 1_000, 1_100, 100), None);
            s.observe(t + 60, &at(4151, q(1_100, 1_000)));
            assert_eq!(s.cash, cash);
        }
        // A lobster (exempt from that day) pays nothing after, 1 % before.
        for (t, cash) in [(T1, 100 * (300 - 3)), (T2, 100 * 300)] {
            let mut s = sim(100_000);
            s.place(t, &plan(379, 200, 300, 100), None);
            s.observe(t + 60, &at(379, q(300, 200)));
            assert_eq!(s.cash, 100_000 - 20_000 + cash);
        }
    }

    #[test]
    fn an_unsold_sell_is_relisted_at_the_market() {
        let mut s = sim(1_000_000);
        s.place(T2, &plan(4151, 1_000, 1_100, 10), None);
        s.observe(T2 + 60, &at(4151, q(1_050, 990)));
        // Bought, the high never reaches 1,100; at the horizon the sale is
        // relisted at the then high of 1,040.
        s.observe(T2 + 7200, &at(4151, q(1_040, 1_000)));
        let d = s.decisions.last().unwrap();
        assert_eq!((d.action, d.price, d.quantity), ("relist_sell", 1_040, 10));
        s.observe(T2 + 7300, &at(4151, q(1_045, 1_000)));
        assert_eq!(s.cash, 1_000_000 - 10_000 + 10 * (1_040 - 20));
        s.mark(T2 + 7300);
        assert_eq!(s.report(Strategy::Model).profit, 10 * 1_020 - 10_000);
    }

    #[test]
    fn a_cancel_refunds_and_frees_the_slot() {
        let mut s = sim(1_000_000);
        s.place(T2, &plan(4151, 1_000, 1_100, 10), None);
        s.place(T2, &plan(11802, 5_000, 5_500, 10), None);
        assert_eq!(s.free_slots(), 0);
        s.cancel_buy(0, T2 + 60, "cancel_fading");
        assert_eq!(s.free_slots(), 1);
        assert_eq!((s.cash, s.reserved), (1_000_000 - 50_000, 50_000));
        assert!(s.plan_due(T2 + 61), "a freed slot re-plans at once");
    }

    #[test]
    fn equity_and_drawdown() {
        let mut s = sim(100_000);
        s.place(T2, &plan(4151, 1_000, 1_100, 10), None);
        s.observe(T2 + 60, &at(4151, q(1_050, 1_000)));
        s.mark(T2 + 60);
        // The low falls to 500: the stock is worth 10 × (500 − 10).
        s.observe(T2 + 120, &at(4151, q(1_050, 500)));
        s.mark(T2 + 120);
        let r = s.report(Strategy::Model);
        assert_eq!(r.final_equity, 90_000 + 10 * 490);
        // The first peak is the capital (99,800 after buying is below it).
        let peak = 100_000;
        let want = (peak - r.final_equity) as f64 / peak as f64;
        assert!((r.max_drawdown - want).abs() < 1e-12);
    }
}
