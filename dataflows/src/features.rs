//! Per-tick incremental features in differential dataflow.
//!
//! The graph (see [`build`]) keeps, for every item and window (1 h, 4 h,
//! 24 h), the observations inside the window as a collection. Windows are
//! inserts at `t` and retractions at `t + w`; the retractions are held outside
//! the dataflow, the observations of the last 24 h once in a deque in
//! arrival order with a cursor per window, and fed in at the first tick that
//! reaches them
//! (so differential's batcher never parks future updates).
//! Invertible aggregates (counts, sums, sums of squares, gains and losses) are
//! carried in the difference type [`Agg`] and accumulated by `count_total`;
//! min and max come from a `reduce` over the window's members. Every sum is an
//! exact integer (prices are integers; log returns, spreads and Parkinson
//! terms are fixed point), so insert-then-retract returns exactly to where it
//! was. Window extremes (not invertible) come from monotonic deques and the
//! as-of lags from the same deques, in the input driver that owns the item;
//! the owner keeps each item's [`FeatureState`] and computes its row with
//! [`feature_vector`]; rows travel to worker 0 through a second dataflow.
//!
//! Definitions: `docs/FEATURES.md`.

use differential_dataflow::difference::{IsZero, Monoid, Multiply, Semigroup};
use differential_dataflow::input::InputSession;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::AsCollection;
use gept_core::{BucketPrice, BucketStep, ItemId, ItemMeta, LatestPrice};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

/// Window lengths in seconds and their names.
pub const WINDOWS: [(i64, &str); 3] = [(3_600, "1h"), (14_400, "4h"), (86_400, "24h")];

/// Fixed-point scale of log returns (2^52).
const SCALE_R: f64 = 4_503_599_627_370_496.0;
/// Fixed-point scale of Parkinson terms ln(high/low)^2 (2^100): they can be
/// as small as 1e-12 on items with a one-coin spread.
const SCALE_P: f64 = 1_267_650_600_228_229_401_496_703_205_376.0;
/// Fixed-point scale of spread ratios (2^50).
const SCALE_S: f64 = 1_125_899_906_842_624.0;

/// Invertible window aggregates, carried as the difference type.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Agg {
    // Bounded sums in i64: prices < 2^31 and at most 2^11 observations per
    // window (one a minute for a day) keep them under 2^62.
    pub n: i64,
    pub s_mid2: i64,
    pub s_high: i64,
    pub s_low: i64,
    pub s_spread_q: i64,
    pub nr: i64,
    pub s_gain2: i64,
    pub s_loss2: i64,
    // Fixed-point sums that need the range of i128.
    pub s_park_q: i128,
    pub s_r_q: i128,
    pub s_r2_q: i128,
}

impl IsZero for Agg {
    fn is_zero(&self) -> bool {
        *self == Agg::default()
    }
}

impl Semigroup for Agg {
    fn plus_equals(&mut self, o: &Self) {
        self.n += o.n;
        self.s_mid2 += o.s_mid2;
        self.s_high += o.s_high;
        self.s_low += o.s_low;
        self.s_spread_q += o.s_spread_q;
        self.s_park_q += o.s_park_q;
        self.nr += o.nr;
        self.s_r_q += o.s_r_q;
        self.s_r2_q += o.s_r2_q;
        self.s_gain2 += o.s_gain2;
        self.s_loss2 += o.s_loss2;
    }
}

impl Monoid for Agg {
    fn zero() -> Self {
        Agg::default()
    }
}

impl differential_dataflow::difference::Abelian for Agg {
    fn negate(&mut self) {
        *self = self.multiply(&-1);
    }
}

impl Multiply<isize> for Agg {
    type Output = Agg;
    fn multiply(mut self, rhs: &isize) -> Agg {
        let (k, k128) = (*rhs as i64, *rhs as i128);
        self.n *= k;
        self.s_mid2 *= k;
        self.s_high *= k;
        self.s_low *= k;
        self.s_spread_q *= k;
        self.nr *= k;
        self.s_gain2 *= k;
        self.s_loss2 *= k;
        self.s_park_q *= k128;
        self.s_r_q *= k128;
        self.s_r2_q *= k128;
        self
    }
}

/// One observation of an item's series, with what it contributes to windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    pub t: i64,
    /// high + low, i.e. twice the mid price (exact).
    pub mid2: i64,
    pub high: i64,
    pub low: i64,
    /// round(ln(mid_t / mid_prev) · 2^52), if there is a previous observation.
    pub r_q: Option<i64>,
    /// round(spread_pct · 2^50).
    pub spread_q: i64,
    /// round(ln(high / low)^2 · 2^100).
    pub park_q: i128,
    /// max(mid2_t − mid2_prev, 0) and max(mid2_prev − mid2_t, 0), if a previous observation exists.
    pub gain2: Option<i64>,
    pub loss2: Option<i64>,
}

impl Member {
    fn agg(&self) -> Agg {
        let r = self.r_q.unwrap_or(0) as i128;
        Agg {
            n: 1,
            s_mid2: self.mid2,
            s_high: self.high,
            s_low: self.low,
            s_spread_q: self.spread_q,
            s_park_q: self.park_q,
            nr: self.r_q.is_some() as i64,
            s_r_q: r,
            s_r2_q: r * r,
            s_gain2: self.gain2.unwrap_or(0),
            s_loss2: self.loss2.unwrap_or(0),
        }
    }
}

/// Everything the features of one item at one tick are computed from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeatureState {
    pub obs: Option<Member>,
    pub aggs: [Option<Agg>; 3],
    pub extremes: [Option<[i64; 4]>; 3],
    pub lags: [Option<i64>; 3],
    pub volume: Option<(i64, i64, i64)>,
    /// (bucket start, high + low volume) of the item's non-zero `/1h`
    /// buckets among the last [`VOLUME_BUCKETS`] in force.
    pub volumes: std::collections::VecDeque<(i64, i64)>,
    /// The item's last known highTime and lowTime (carried over nulls).
    pub trade_times: (Option<i64>, Option<i64>),
    /// (bucket start, high + low volume) of the newest `/5m` bucket in force
    /// that holds the item.
    pub volume_5m: Option<(i64, i64)>,
}

/// `/1h` buckets the volume averages reach back (24 h).
pub const VOLUME_BUCKETS: i64 = 24;

/// Names of the features, in vector order.
pub fn feature_names() -> Vec<String> {
    let mut names: Vec<String> = ["mid", "high", "low", "spread_pct"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (_, w) in WINDOWS {
        for f in [
            "mid_ma",
            "high_ma",
            "low_ma",
            "spread_ma",
            "return",
            "volatility",
            "parkinson",
            "range_pos",
            "dist_high",
            "dist_low",
            "rsi",
            "n_obs",
        ] {
            names.push(format!("{f}_{w}"));
        }
    }
    for f in [
        "momentum_divergence",
        "hour_sin",
        "hour_cos",
        "dow_sin",
        "dow_cos",
        "is_weekend",
        "peak_hour",
        "volume_1h",
        "volume_imbalance_1h",
        "volume_ma_4h",
        "volume_ma_24h",
        "volume_ratio_1h_24h",
        "high_age",
        "low_age",
        "volume_5m",
        "volume_5m_share",
        "buy_limit",
        "buy_limit_value",
        "highalch",
        "alch_margin_pct",
        "item_value",
        "members",
    ] {
        names.push(f.to_string());
    }
    names
}

/// The feature vector of `state` at tick `t`; `buckets` are the starts of
/// the newest `/1h` buckets complete at `t` (ascending, at most
/// [`VOLUME_BUCKETS`]; empty: no bucket yet); `five` the start of the newest
/// `/5m` bucket complete at `t`; `meta` is the item's `/mapping` entry, if
/// known.
pub fn feature_vector(
    t: i64,
    state: &FeatureState,
    buckets: &std::collections::VecDeque<i64>,
    five: Option<i64>,
    meta: Option<&ItemMeta>,
) -> Vec<Option<f64>> {
    let latest_bucket = buckets.back().copied();
    let obs = state.obs.expect("a state with features has an observation");
    let mid = obs.mid2 as f64 / 2.0;
    let mut v = vec![
        Some(mid),
        Some(obs.high as f64),
        Some(obs.low as f64),
        Some((obs.high - obs.low) as f64 / mid),
    ];
    let mut returns = [None; 3];
    #[allow(clippy::needless_range_loop)] // w indexes four parallel arrays
    for w in 0..3 {
        let agg = state.aggs[w];
        let ext = state.extremes[w];
        let n = agg.map(|a| a.n).unwrap_or(0);
        let mean = |s: i64| (n > 0).then(|| s as f64 / n as f64);
        let a = agg.unwrap_or_default();
        let ret = state.lags[w].map(|lag2| obs.mid2 as f64 / lag2 as f64 - 1.0);
        returns[w] = ret;
        let volatility = (a.nr >= 2).then(|| {
            let nr = a.nr as i128;
            let num = nr
                .checked_mul(a.s_r2_q)
                .and_then(|x| x.checked_sub(a.s_r_q * a.s_r_q))
                .map(|x| x as f64)
                .unwrap_or_else(|| nr as f64 * a.s_r2_q as f64 - (a.s_r_q as f64).powi(2));
            (num.max(0.0)).sqrt() / (a.nr as f64 * SCALE_R)
        });
        let parkinson = (n > 0).then(|| {
            (a.s_park_q as f64 / SCALE_P / (4.0 * std::f64::consts::LN_2 * n as f64)).sqrt()
        });
        let range_pos = ext.map(|[lo, hi, _, _]| {
            if hi == lo {
                0.5
            } else {
                (obs.mid2 - lo) as f64 / (hi - lo) as f64
            }
        });
        let dist_high = ext.map(|[_, _, max_high, _]| mid / max_high as f64 - 1.0);
        let dist_low = ext.map(|[_, _, _, min_low]| mid / min_low as f64 - 1.0);
        let rsi = (a.nr > 0).then(|| {
            let total = a.s_gain2 + a.s_loss2;
            if total == 0 {
                50.0
            } else {
                100.0 * a.s_gain2 as f64 / total as f64
            }
        });
        v.extend([
            mean(a.s_mid2).map(|m| m / 2.0),
            mean(a.s_high),
            mean(a.s_low),
            mean(a.s_spread_q).map(|s| s / SCALE_S),
            ret,
            volatility,
            parkinson,
            range_pos,
            dist_high,
            dist_low,
            rsi,
            Some(n as f64),
        ]);
    }
    let momentum = match (returns[0], returns[1]) {
        (Some(r1), Some(r4)) => Some(r1 - r4 / 4.0),
        _ => None,
    };
    let secs_of_day = t.rem_euclid(86_400) as f64;
    let hour = secs_of_day / 3600.0;
    let angle = std::f64::consts::TAU * hour / 24.0;
    // 1970-01-01 was a Thursday: day 0 = Monday after shifting by 3.
    let dow = (t.div_euclid(86_400) + 3).rem_euclid(7);
    let dow_angle = std::f64::consts::TAU * (dow as f64 + hour / 24.0) / 7.0;
    let volume = match (latest_bucket, state.volume) {
        (None, _) => None,
        (Some(b), Some((start, hv, lv))) if start == b => Some((hv, lv)),
        (Some(_), _) => Some((0, 0)),
    };
    v.extend([
        momentum,
        Some(angle.sin()),
        Some(angle.cos()),
        Some(dow_angle.sin()),
        Some(dow_angle.cos()),
        Some((dow >= 5) as i64 as f64),
        Some((16.0..22.0).contains(&hour) as i64 as f64),
        volume.map(|(h, l)| (h + l) as f64),
        volume.map(|(h, l)| {
            if h + l == 0 {
                0.0
            } else {
                (h - l) as f64 / (h + l) as f64
            }
        }),
    ]);
    // Mean hourly volume over the complete buckets of the last k hours.
    let volume_ma = |k: i64| {
        let newest = latest_bucket?;
        let from = newest - k * 3600;
        let n = buckets.iter().filter(|&&b| b > from).count() as i64;
        let sum: i64 = state
            .volumes
            .iter()
            .filter(|(b, _)| *b > from)
            .map(|(_, v)| v)
            .sum();
        Some(sum as f64 / n as f64)
    };
    let ma_24h = volume_ma(VOLUME_BUCKETS);
    let age = |time: Option<i64>| time.map(|x| (t - x) as f64);
    v.extend([
        volume_ma(4),
        ma_24h,
        match (volume, ma_24h) {
            (Some((h, l)), Some(m)) if m > 0.0 => Some((h + l) as f64 / m),
            _ => None,
        },
        age(state.trade_times.0),
        age(state.trade_times.1),
    ]);
    // The /5m feed is fresh when its newest complete bucket is the one that
    // ended within the last five minutes.
    let volume_5m = five
        .filter(|&f| f + 600 > t)
        .map(|f| match state.volume_5m {
            Some((start, v)) if start == f => v,
            _ => 0,
        });
    v.extend([
        volume_5m.map(|x| x as f64),
        match (volume_5m, ma_24h) {
            (Some(x), Some(m)) if m > 0.0 => Some(x as f64 * 12.0 / m),
            _ => None,
        },
    ]);
    let limit = meta.and_then(|m| m.buy_limit);
    let highalch = meta.and_then(|m| m.highalch);
    v.extend([
        limit.map(|l| l as f64),
        limit.map(|l| l as f64 * mid),
        highalch.map(|h| h as f64),
        highalch.map(|h| (h as f64 - mid) / mid),
        meta.and_then(|m| m.value).map(|x| x as f64),
        meta.map(|m| m.members as i64 as f64),
    ]);
    v
}

/// One row of output: an item's features at a tick where it was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    pub item_id: ItemId,
    pub timestamp: i64,
    pub values: Vec<Option<f64>>,
}

impl FeatureRow {
    /// Appends the row as the model reads it: each feature as f32, a null
    /// as NaN.
    pub fn push_encoded(&self, out: &mut Vec<f32>) {
        out.extend(self.values.iter().map(|v| v.map_or(f32::NAN, |v| v as f32)));
    }
}

/// One `/latest` tick of input.
#[derive(Debug, Clone)]
pub struct TickInput {
    pub time: i64,
    pub rows: Vec<LatestPrice>,
}

/// One `/1h` or `/5m` bucket of input.
#[derive(Debug, Clone)]
pub struct BucketInput {
    pub step: BucketStep,
    pub start: i64,
    pub rows: Vec<BucketPrice>,
}

/// Sliding-window extremes of one item and window: monotonic deques of
/// (time, value), amortised O(1) per observation. Min and max are not
/// invertible, so they are kept here rather than in a dataflow `reduce`
/// that would rescan the whole window on every tick.
#[derive(Default, Clone)]
struct Extremes {
    min_mid2: std::collections::VecDeque<(i64, i64)>,
    max_mid2: std::collections::VecDeque<(i64, i64)>,
    max_high: std::collections::VecDeque<(i64, i64)>,
    min_low: std::collections::VecDeque<(i64, i64)>,
}

fn push_mono(
    q: &mut std::collections::VecDeque<(i64, i64)>,
    t: i64,
    v: i64,
    keep: impl Fn(i64, i64) -> bool,
) {
    while q.back().is_some_and(|&(_, b)| !keep(b, v)) {
        q.pop_back();
    }
    q.push_back((t, v));
}

impl Extremes {
    /// Adds observation `m` and drops what left the window `(t − len, t]`.
    fn observe(&mut self, m: &Member, len: i64) -> [i64; 4] {
        push_mono(&mut self.min_mid2, m.t, m.mid2, |b, v| b < v);
        push_mono(&mut self.max_mid2, m.t, m.mid2, |b, v| b > v);
        push_mono(&mut self.max_high, m.t, m.high, |b, v| b > v);
        push_mono(&mut self.min_low, m.t, m.low, |b, v| b < v);
        for q in [
            &mut self.min_mid2,
            &mut self.max_mid2,
            &mut self.max_high,
            &mut self.min_low,
        ] {
            while q.front().is_some_and(|&(t, _)| t <= m.t - len) {
                q.pop_front();
            }
        }
        [
            self.min_mid2[0].1,
            self.max_mid2[0].1,
            self.max_high[0].1,
            self.min_low[0].1,
        ]
    }
}

/// Per-item series state kept by the input driver (carry-forward of nulls).
#[derive(Default, Clone)]
struct Series {
    high: Option<i64>,
    low: Option<i64>,
    high_time: Option<i64>,
    low_time: Option<i64>,
    prev: Option<Member>,
    extremes: [Extremes; 3],
}

/// The owned items' observations of the last 24 h (the longest window) in
/// arrival order, and per window how many at the front have left it
/// already. A member leaves window `w` (retracted from the dataflow) at the
/// first tick at or after `member.t + w`'s length, and becomes that
/// window's as-of lag for its item; it is dropped once it left the longest.
/// One copy of each observation, read front to back by three cursors (where
/// a schedule of future updates held one per window and per kind, 3.7 times
/// the memory).
#[derive(Default)]
struct Windows {
    members: std::collections::VecDeque<(ItemId, Member)>,
    left: [usize; 3],
}

fn quantize(x: f64, scale: f64) -> i64 {
    (x * scale).round() as i64
}

/// Builds the observation of `item` at `t` from its carried-forward series.
fn observe(series: &mut Series, row: &LatestPrice) -> Option<Member> {
    if row.high.is_some() {
        series.high = row.high;
    }
    if row.low.is_some() {
        series.low = row.low;
    }
    if row.high_time.is_some() {
        series.high_time = row.high_time;
    }
    if row.low_time.is_some() {
        series.low_time = row.low_time;
    }
    let (high, low) = (series.high?, series.low?);
    let mid2 = high + low;
    let prev = series.prev;
    let member = Member {
        t: row.timestamp,
        mid2,
        high,
        low,
        r_q: prev.map(|p| quantize((mid2 as f64 / p.mid2 as f64).ln(), SCALE_R)),
        spread_q: quantize(2.0 * (high - low) as f64 / mid2 as f64, SCALE_S),
        park_q: ((high as f64 / low as f64).ln().powi(2) * SCALE_P).round() as i128,
        gain2: prev.map(|p| (mid2 - p.mid2).max(0)),
        loss2: prev.map(|p| (p.mid2 - mid2).max(0)),
    };
    series.prev = Some(member);
    Some(member)
}

type Time = u64;

/// A change of one window sum: ((item, window), aggregate), tick, diff.
type SumUpdate = (((ItemId, u8), Agg), Time, isize);
/// Window-sum changes arriving at an item's owner.
type AggSink = Rc<RefCell<Vec<SumUpdate>>>;
/// Finished rows arriving at worker 0.
type RowSink = Rc<RefCell<Vec<FeatureRow>>>;

/// One worker's two dataflows: the window sums, and the rows' way to worker 0.
struct Graph {
    members: InputSession<Time, ((ItemId, u8), Member), isize>,
    sums_probe: ProbeHandle<Time>,
    sums: AggSink,
    rows_in: timely::dataflow::operators::core::input::Handle<
        Time,
        timely::container::CapacityContainerBuilder<Vec<FeatureRow>>,
    >,
    rows_probe: ProbeHandle<Time>,
    rows: RowSink,
}

/// Builds the graphs in `worker`.
///
/// Window sums: each member of an (item, window) contributes its [`Agg`] as a
/// difference; `count_total` keeps the total, and its changes go back to the
/// worker that owns the item (`item % workers`, timely's exchange routing).
/// Rows: each worker computes its items' rows and sends them to worker 0.
fn build(worker: &mut timely::worker::Worker) -> Graph {
    use timely::dataflow::operators::core::{Exchange as _, Input as _, Inspect as _, Probe as _};
    let sums: AggSink = Rc::new(RefCell::new(Vec::new()));
    let sums_in = sums.clone();
    let mut members = InputSession::new();
    let sums_probe = worker.dataflow::<Time, _, _>(|scope| {
        let (probe, _) = members
            .to_collection(scope)
            .explode(|(key, m): ((ItemId, u8), Member)| Some((key, m.agg())))
            .count_total()
            .inner
            .exchange(|(((item, _), _), _, _)| *item as u64)
            .as_collection()
            .inspect(move |update: &(((ItemId, u8), Agg), Time, isize)| {
                sums_in.borrow_mut().push(*update)
            })
            .probe();
        probe
    });
    let rows: RowSink = Rc::new(RefCell::new(Vec::new()));
    let rows_sink = rows.clone();
    let (rows_in, rows_probe) = worker.dataflow::<Time, _, _>(|scope| {
        let (input, stream) = scope.new_input::<Vec<FeatureRow>>();
        let (probe, _) = stream
            .exchange(|_| 0)
            .inspect(move |row: &FeatureRow| rows_sink.borrow_mut().push(row.clone()))
            .probe();
        (input, probe)
    });
    Graph {
        members,
        sums_probe,
        sums,
        rows_in,
        rows_probe,
        rows,
    }
}

/// Applies window-sum changes: retractions first, then insertions, so a sum
/// replaced within a tick ends as the new one and an emptied window as none.
fn apply_sums(states: &mut FxHashMap<ItemId, FeatureState>, updates: &[SumUpdate]) {
    for pass in [false, true] {
        for &(((item, w), agg), _, diff) in updates {
            if (diff > 0) != pass {
                continue;
            }
            let slot = &mut states.entry(item).or_default().aggs[w as usize];
            if pass {
                *slot = Some(agg);
            } else if *slot == Some(agg) {
                *slot = None;
            }
        }
    }
}

/// One worker's incremental feature engine: the graph and the per-item
/// state of the items this worker owns. Feed it `/1h` buckets as they arrive
/// and `/latest` ticks in time order; every worker of a timely computation
/// must be fed the same sequence.
pub struct Engine {
    g: Graph,
    index: usize,
    peers: usize,
    // Item ids are small integers chosen by the game, not by a client: a
    // plain multiplicative hash (no SipHash) is safe and several times
    // cheaper on the per-item lookups of every tick.
    series: FxHashMap<ItemId, Series>,
    states: FxHashMap<ItemId, FeatureState>,
    /// The members in the windows, for their exits.
    windows: Windows,
    /// `/1h` and `/5m` buckets received and not yet in force, by start.
    pending: BTreeMap<(BucketStep, i64), BucketInput>,
    /// Start of the newest `/5m` bucket in force.
    five: Option<i64>,
    /// Starts of the newest `/1h` buckets in force (at most [`VOLUME_BUCKETS`]).
    buckets: std::collections::VecDeque<i64>,
}

impl Engine {
    /// Builds the graph in `worker`.
    pub fn new(worker: &mut timely::worker::Worker) -> Self {
        Engine {
            g: build(worker),
            index: worker.index(),
            peers: worker.peers(),
            series: FxHashMap::default(),
            states: FxHashMap::default(),
            windows: Windows::default(),
            pending: BTreeMap::new(),
            buckets: std::collections::VecDeque::new(),
            five: None,
        }
    }

    /// Whether this worker owns `item` (timely's exchange routing by id).
    fn owner(index: usize, peers: usize) -> impl Fn(ItemId) -> bool {
        move |item| item as usize % peers == index
    }

    /// A `/1h` or `/5m` bucket; it is in force from the first tick at or
    /// after its end. A bucket older than the newest in force of its step
    /// comes too late and is dropped.
    pub fn add_bucket(&mut self, bucket: BucketInput) {
        let newest = match bucket.step {
            BucketStep::OneHour => self.buckets.back().copied(),
            BucketStep::FiveMinutes => self.five,
        };
        if newest.is_none_or(|b| bucket.start > b) {
            self.pending.insert((bucket.step, bucket.start), bucket);
        }
    }

    /// Processes the tick at `tick.time` (after every earlier one). Returns,
    /// on worker 0, the rows of every item observed at that tick, by item.
    pub fn tick(
        &mut self,
        worker: &mut timely::worker::Worker,
        tick: &TickInput,
        items: &HashMap<ItemId, ItemMeta>,
    ) -> Option<Vec<FeatureRow>> {
        let t = tick.time;
        let owns = Self::owner(self.index, self.peers);
        self.g.members.advance_to(t as Time);
        self.g.rows_in.advance_to(t as Time);
        // /1h buckets complete at t come into force, oldest first; the newest
        // is the one `volume_1h` reads. Of /5m buckets only the newest counts.
        let due: Vec<(BucketStep, i64)> = self
            .pending
            .keys()
            .filter(|(step, start)| start + step.seconds() <= t)
            .copied()
            .collect();
        for key in due {
            let bucket = self.pending.remove(&key).expect("listed above");
            let start = bucket.start;
            if bucket.step == BucketStep::FiveMinutes {
                self.five = Some(start);
                for r in bucket.rows.iter().filter(|r| owns(r.item_id)) {
                    self.states.entry(r.item_id).or_default().volume_5m =
                        Some((start, r.high_price_volume + r.low_price_volume));
                }
                continue;
            }
            self.buckets.push_back(start);
            let from = start - VOLUME_BUCKETS * 3600;
            while self.buckets.front().is_some_and(|&b| b <= from) {
                self.buckets.pop_front();
            }
            for r in &bucket.rows {
                if owns(r.item_id) {
                    let state = self.states.entry(r.item_id).or_default();
                    state.volume = Some((start, r.high_price_volume, r.low_price_volume));
                    let v = r.high_price_volume + r.low_price_volume;
                    if v != 0 {
                        state.volumes.push_back((start, v));
                    }
                    while state.volumes.front().is_some_and(|&(b, _)| b <= from) {
                        state.volumes.pop_front();
                    }
                }
            }
        }
        // Window exits and as-of lags that fall due by t.
        let win = &mut self.windows;
        for (w, (len, _)) in WINDOWS.iter().enumerate() {
            while let Some(&(item, m)) =
                win.members.get(win.left[w]).filter(|(_, m)| m.t + len <= t)
            {
                self.g.members.remove(((item, w as u8), m));
                self.states.entry(item).or_default().lags[w] = Some(m.mid2);
                win.left[w] += 1;
            }
        }
        // The longest window is the last to let a member go.
        let gone = win.left[WINDOWS.len() - 1];
        win.members.drain(..gone);
        win.left.iter_mut().for_each(|l| *l -= gone);
        // New observations.
        let mut observed = Vec::new();
        for row in tick.rows.iter().filter(|r| owns(r.item_id)) {
            let s = self.series.entry(row.item_id).or_default();
            let Some(member) = observe(
                s,
                &LatestPrice {
                    timestamp: t,
                    ..*row
                },
            ) else {
                continue;
            };
            let state = self.states.entry(row.item_id).or_default();
            state.obs = Some(member);
            state.trade_times = (s.high_time, s.low_time);
            for (w, (len, _)) in WINDOWS.iter().enumerate() {
                state.extremes[w] = Some(s.extremes[w].observe(&member, *len));
                self.g.members.insert(((row.item_id, w as u8), member));
            }
            self.windows.members.push_back((row.item_id, member));
            observed.push(row.item_id);
        }
        self.g.members.advance_to(t as Time + 1);
        self.g.members.flush();
        let probe = self.g.sums_probe.clone();
        worker.step_while(|| probe.less_than(&(t as Time + 1)));
        apply_sums(
            &mut self.states,
            &std::mem::take(&mut *self.g.sums.borrow_mut()),
        );
        // This worker's rows, to worker 0.
        observed.sort_unstable();
        observed.dedup();
        for item_id in observed {
            let values = feature_vector(
                t,
                &self.states[&item_id],
                &self.buckets,
                self.five,
                items.get(&item_id),
            );
            self.g.rows_in.send(FeatureRow {
                item_id,
                timestamp: t,
                values,
            });
        }
        self.g.rows_in.advance_to(t as Time + 1);
        let probe = self.g.rows_probe.clone();
        worker.step_while(|| probe.less_than(&(t as Time + 1)));
        (self.index == 0).then(|| {
            let mut rows = std::mem::take(&mut *self.g.rows.borrow_mut());
            rows.sort_unstable_by_key(|r| r.item_id);
            rows
        })
    }
}

/// Drives one worker's engine through a recording; on worker 0, calls `emit`
/// with each completed tick's rows, sorted by item.
pub fn drive<T: std::borrow::Borrow<TickInput>>(
    worker: &mut timely::worker::Worker,
    ticks: impl IntoIterator<Item = T>,
    buckets: &[BucketInput],
    items: &HashMap<ItemId, ItemMeta>,
    mut emit: impl FnMut(i64, Vec<FeatureRow>),
) {
    let mut engine = Engine::new(worker);
    for bucket in buckets {
        engine.add_bucket(bucket.clone());
    }
    for tick in ticks {
        let tick = tick.borrow();
        if let Some(rows) = engine.tick(worker, tick, items) {
            emit(tick.time, rows);
        }
    }
}

/// Ticks from a recording, in time order (each row stamped with its tick).
pub fn ticks_from(mut snapshots: Vec<(i64, Vec<LatestPrice>)>) -> Vec<TickInput> {
    snapshots.sort_by_key(|(t, _)| *t);
    snapshots.dedup_by_key(|(t, _)| *t);
    snapshots
        .into_iter()
        .map(|(time, rows)| TickInput { time, rows })
        .collect()
}
