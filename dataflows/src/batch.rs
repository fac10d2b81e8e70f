//! The batch peer of the feature dataflow: every feature computed from
//! scratch, straight from the definitions in docs/FEATURES.md, in plain f64.
//! It shares no code with the dataflow. Tests compare the dataflow against it;
//! `gept bench features` times it as what a batch system does every tick.

use crate::features::{BucketInput, FeatureRow, TickInput};
use gept_core::{BucketStep, ItemMeta};
use std::collections::HashMap;

/// Features of every (item, tick) of `ticks`, or only of the last tick.
pub fn reference(
    ticks: &[TickInput],
    buckets: &[BucketInput],
    items: &HashMap<u32, ItemMeta>,
    only_last: bool,
) -> Vec<FeatureRow> {
    struct Obs {
        t: i64,
        high: f64,
        low: f64,
        mid: f64,
    }
    let mut series: HashMap<u32, Vec<Obs>> = HashMap::new();
    let mut carried: HashMap<u32, (Option<i64>, Option<i64>)> = HashMap::new();
    let mut trade_times: HashMap<u32, (Option<i64>, Option<i64>)> = HashMap::new();
    let mut rows = Vec::new();
    let windows = [3_600i64, 14_400, 86_400];
    let last_tick = ticks.last().map(|t| t.time).unwrap_or(i64::MIN);
    for tick in ticks {
        let t = tick.time;
        // Ticks whose rows are not wanted only extend the series.
        let wanted = !only_last || t == last_tick;
        let hours = buckets
            .iter()
            .filter(|b| wanted && b.step == BucketStep::OneHour);
        let latest_hour = hours
            .clone()
            .filter(|h| h.start + 3600 <= t)
            .max_by_key(|h| h.start);
        // The newest complete /5m bucket, if it ended within five minutes.
        let five = buckets
            .iter()
            .filter(|b| wanted && b.step == BucketStep::FiveMinutes && b.start + 300 <= t)
            .max_by_key(|b| b.start)
            .filter(|b| b.start + 600 > t)
            .map(|b| {
                b.rows
                    .iter()
                    .map(|x| (x.item_id, x.high_price_volume + x.low_price_volume))
                    .collect::<HashMap<u32, i64>>()
            });
        // The complete /1h buckets of the last 24 hours, and each item's
        // volumes in them.
        let newest = latest_hour.map(|h| h.start);
        let complete: Vec<&BucketInput> = hours
            .filter(|h| h.start + 3600 <= t && newest.is_some_and(|b| h.start > b - 86_400))
            .collect();
        let mut volumes: HashMap<u32, Vec<(i64, i64)>> = HashMap::new();
        for h in &complete {
            for b in &h.rows {
                volumes
                    .entry(b.item_id)
                    .or_default()
                    .push((h.start, b.high_price_volume + b.low_price_volume));
            }
        }
        for r in &tick.rows {
            let times = trade_times.entry(r.item_id).or_default();
            if r.high_time.is_some() {
                times.0 = r.high_time;
            }
            if r.low_time.is_some() {
                times.1 = r.low_time;
            }
            let times = *times;
            let c = carried.entry(r.item_id).or_default();
            if r.high.is_some() {
                c.0 = r.high;
            }
            if r.low.is_some() {
                c.1 = r.low;
            }
            let (Some(high), Some(low)) = *c else {
                continue;
            };
            let s = series.entry(r.item_id).or_default();
            s.push(Obs {
                t,
                high: high as f64,
                low: low as f64,
                mid: (high + low) as f64 / 2.0,
            });
            if only_last && t != last_tick {
                continue;
            }
            let now = s.last().unwrap();
            let mut v: Vec<Option<f64>> = vec![
                Some(now.mid),
                Some(now.high),
                Some(now.low),
                Some((now.high - now.low) / now.mid),
            ];
            let mut rets = vec![];
            for w in windows {
                let idx: Vec<usize> = (0..s.len())
                    .filter(|&j| s[j].t > t - w && s[j].t <= t)
                    .collect();
                let n = idx.len() as f64;
                let mean = |f: &dyn Fn(&Obs) -> f64| idx.iter().map(|&j| f(&s[j])).sum::<f64>() / n;
                let ret = s
                    .iter()
                    .rev()
                    .find(|o| o.t <= t - w)
                    .map(|o| now.mid / o.mid - 1.0);
                rets.push(ret);
                let lr: Vec<f64> = idx
                    .iter()
                    .filter(|&&j| j > 0)
                    .map(|&j| (s[j].mid / s[j - 1].mid).ln())
                    .collect();
                let vol = (lr.len() >= 2).then(|| {
                    let m = lr.iter().sum::<f64>() / lr.len() as f64;
                    (lr.iter().map(|x| (x - m).powi(2)).sum::<f64>() / lr.len() as f64).sqrt()
                });
                let park = (mean(&|o| (o.high / o.low).ln().powi(2))
                    / (4.0 * std::f64::consts::LN_2))
                    .sqrt();
                let lo = idx.iter().map(|&j| s[j].mid).fold(f64::INFINITY, f64::min);
                let hi = idx
                    .iter()
                    .map(|&j| s[j].mid)
                    .fold(f64::NEG_INFINITY, f64::max);
                let max_high = idx
                    .iter()
                    .map(|&j| s[j].high)
                    .fold(f64::NEG_INFINITY, f64::max);
                let min_low = idx.iter().map(|&j| s[j].low).fold(f64::INFINITY, f64::min);
                let pairs: Vec<f64> = idx
                    .iter()
                    .filter(|&&j| j > 0)
                    .map(|&j| s[j].mid - s[j - 1].mid)
                    .collect();
                let gain: f64 = pairs.iter().filter(|d| **d > 0.0).sum();
                let loss: f64 = -pairs.iter().filter(|d| **d < 0.0).sum::<f64>();
                let rsi = (!pairs.is_empty()).then(|| {
                    if gain + loss == 0.0 {
                        50.0
                    } else {
                        100.0 * gain / (gain + loss)
                    }
                });
                v.extend([
                    Some(mean(&|o| o.mid)),
                    Some(mean(&|o| o.high)),
                    Some(mean(&|o| o.low)),
                    Some(mean(&|o| (o.high - o.low) / o.mid)),
                    ret,
                    vol,
                    Some(park),
                    Some(if hi == lo {
                        0.5
                    } else {
                        (now.mid - lo) / (hi - lo)
                    }),
                    Some(now.mid / max_high - 1.0),
                    Some(now.mid / min_low - 1.0),
                    rsi,
                    Some(n),
                ]);
            }
            let hour = (t % 86_400) as f64 / 3600.0;
            let day = ((t / 86_400) + 3) % 7;
            let vol = latest_hour.map(|h| {
                h.rows
                    .iter()
                    .find(|b| b.item_id == r.item_id)
                    .map(|b| (b.high_price_volume, b.low_price_volume))
                    .unwrap_or((0, 0))
            });
            v.extend([
                rets[0].zip(rets[1]).map(|(a, b)| a - b / 4.0),
                Some((std::f64::consts::TAU * hour / 24.0).sin()),
                Some((std::f64::consts::TAU * hour / 24.0).cos()),
                Some((std::f64::consts::TAU * (day as f64 + hour / 24.0) / 7.0).sin()),
                Some((std::f64::consts::TAU * (day as f64 + hour / 24.0) / 7.0).cos()),
                Some(if day >= 5 { 1.0 } else { 0.0 }),
                Some(if (16.0..22.0).contains(&hour) {
                    1.0
                } else {
                    0.0
                }),
                vol.map(|(h, l)| (h + l) as f64),
                vol.map(|(h, l)| {
                    if h + l == 0 {
                        0.0
                    } else {
                        (h - l) as f64 / (h + l) as f64
                    }
                }),
            ]);
            let volume_ma = |k: i64| {
                let from = newest? - k * 3600;
                let buckets = complete.iter().filter(|h| h.start > from).count();
                let total: i64 = volumes
                    .get(&r.item_id)
                    .into_iter()
                    .flatten()
                    .filter(|(start, _)| *start > from)
                    .map(|(_, v)| v)
                    .sum();
                Some(total as f64 / buckets as f64)
            };
            let ma_24h = volume_ma(24);
            v.extend([
                volume_ma(4),
                ma_24h,
                match (vol, ma_24h) {
                    (Some((h, l)), Some(m)) if m > 0.0 => Some((h + l) as f64 / m),
                    _ => None,
                },
                times.0.map(|x| (t - x) as f64),
                times.1.map(|x| (t - x) as f64),
            ]);
            let volume_5m = five
                .as_ref()
                .map(|b| b.get(&r.item_id).copied().unwrap_or(0));
            v.extend([
                volume_5m.map(|x| x as f64),
                match (volume_5m, ma_24h) {
                    (Some(x), Some(m)) if m > 0.0 => Some(x as f64 * 12.0 / m),
                    _ => None,
                },
            ]);
            let meta = items.get(&r.item_id);
            let limit = meta.and_then(|m| m.buy_limit).map(|l| l as f64);
            let highalch = meta.and_then(|m| m.highalch).map(|h| h as f64);
            v.extend([
                limit,
                limit.map(|l| l * now.mid),
                highalch,
                highalch.map(|h| (h - now.mid) / now.mid),
                meta.and_then(|m| m.value).map(|x| x as f64),
                meta.map(|m| if m.members { 1.0 } else { 0.0 }),
            ]);
            rows.push(FeatureRow {
                item_id: r.item_id,
                timestamp: t,
                values: v,
            });
        }
    }
    rows.sort_by_key(|r| (r.timestamp, r.item_id));
    rows
}
