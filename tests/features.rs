//! The feature dataflow against an independent, plainly written batch
//! computation on the real recording (a day and a bit), on perturbed input
//! (missing items, nulls), and across worker threads and processes.

mod common;

use gept::commands::features::{load_hours, load_ticks};
use gept_core::recordings;
use gept_dataflows::features::{drive, feature_names, FeatureRow, HourInput, TickInput};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Snapshots used: just over 24 hours at the recording's 5-minute cadence.
const SNAPSHOTS: usize = 300;

fn run_dataflow(ticks: &[TickInput], hours: &[HourInput], workers: usize) -> Vec<FeatureRow> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let (t, h, o) = (
        Arc::new(ticks.to_vec()),
        Arc::new(hours.to_vec()),
        out.clone(),
    );
    timely::execute(timely::Config::process(workers), move |worker| {
        let o = o.clone();
        drive(worker, &t, &h, move |_, rows| {
            o.lock().unwrap().extend(rows)
        });
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let mut rows = std::mem::take(&mut *out.lock().unwrap());
    rows.sort_by_key(|r| (r.timestamp, r.item_id));
    rows
}

/// The batch reference: every feature computed from scratch for every
/// (item, tick), straight from the definitions in docs/FEATURES.md.
fn reference(ticks: &[TickInput], hours: &[HourInput]) -> Vec<FeatureRow> {
    struct Obs {
        t: i64,
        high: f64,
        low: f64,
        mid: f64,
    }
    let mut series: HashMap<u32, Vec<Obs>> = HashMap::new();
    let mut carried: HashMap<u32, (Option<i64>, Option<i64>)> = HashMap::new();
    let mut rows = Vec::new();
    let windows = [3_600i64, 14_400, 86_400];
    for tick in ticks {
        let t = tick.time;
        let latest_hour = hours
            .iter()
            .filter(|h| h.start + 3600 <= t)
            .max_by_key(|h| h.start);
        for r in &tick.rows {
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

fn assert_close(ours: &[FeatureRow], reference: &[FeatureRow]) {
    let names = feature_names();
    assert_eq!(ours.len(), reference.len(), "row counts differ");
    let mut worst = (0.0f64, String::new());
    for (a, b) in ours.iter().zip(reference) {
        assert_eq!((a.item_id, a.timestamp), (b.item_id, b.timestamp));
        assert_eq!(a.values.len(), names.len());
        for (k, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
            match (x, y) {
                (None, None) => {}
                (Some(x), Some(y)) => {
                    let err = (x - y).abs();
                    let tol = 1e-9 * x.abs().max(y.abs()) + 1e-12;
                    assert!(
                        err <= tol,
                        "{} of item {} at {}: dataflow {x}, batch {y}",
                        names[k],
                        a.item_id,
                        a.timestamp
                    );
                    let rel = err / x.abs().max(y.abs()).max(1e-300);
                    if rel > worst.0 {
                        worst = (rel, names[k].clone());
                    }
                }
                _ => panic!(
                    "{} of item {} at {}: dataflow {x:?}, batch {y:?}",
                    names[k], a.item_id, a.timestamp
                ),
            }
        }
    }
    eprintln!("largest relative difference: {:.3e} ({})", worst.0, worst.1);
}

fn recording() -> (Vec<TickInput>, Vec<HourInput>) {
    let dir = common::recordings();
    let ticks = load_ticks(&dir.join(recordings::LATEST_FILE), Some(SNAPSHOTS)).unwrap();
    let hours = load_hours(Some(&dir.join(recordings::HOURLY_FILE))).unwrap();
    (ticks, hours)
}

#[test]
fn features_equal_the_batch_computation_on_the_recording() {
    let (ticks, hours) = recording();
    if common::shared_recordings().is_some() {
        assert!(
            ticks.last().unwrap().time - ticks[0].time >= 86_400,
            "less than a day of ticks"
        );
    }
    let ours = run_dataflow(&ticks, &hours, 1);
    assert!(ours.len() > ticks.len() * 30);
    assert_close(&ours, &reference(&ticks, &hours));
}

#[test]
fn incremental_equals_recompute_with_missing_items_and_nulls() {
    let (mut ticks, hours) = recording();
    ticks.truncate(120);
    // Deterministic perturbation: drop items from ticks, null sides.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for tick in &mut ticks {
        tick.rows.retain(|_| next() % 10 != 0);
        for r in &mut tick.rows {
            match next() % 20 {
                0 => r.high = None,
                1 => r.low = None,
                _ => {}
            }
        }
        tick.rows.retain(|r| r.high.is_some() || r.low.is_some());
    }
    // A tick that arrives with no items at all.
    ticks[50].rows.clear();
    let ours = run_dataflow(&ticks, &hours, 1);
    assert_close(&ours, &reference(&ticks, &hours));
}

#[test]
fn two_workers_give_exactly_the_single_worker_output() {
    let (mut ticks, hours) = recording();
    ticks.truncate(100);
    let one = run_dataflow(&ticks, &hours, 1);
    let two = run_dataflow(&ticks, &hours, 2);
    assert!(one == two, "two workers differ from one");
}

#[test]
fn two_processes_over_loopback_give_exactly_the_single_process_output() {
    let dir = common::recordings();
    let tmp = tempfile::tempdir().unwrap();
    let latest = dir.join(recordings::LATEST_FILE);
    let run = |out: &std::path::Path, timely: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gept"));
        cmd.args([
            "features",
            "--latest",
            latest.to_str().unwrap(),
            "--max-snapshots",
            "40",
            "--out",
        ])
        .arg(out)
        .arg("--")
        .args(timely);
        cmd.spawn().unwrap()
    };
    let single = tmp.path().join("single.csv");
    assert!(run(&single, &["-w", "1"]).wait().unwrap().success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts = tmp.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{port}\n127.0.0.1:{}\n", port + 1),
    )
    .unwrap();
    let cluster = tmp.path().join("cluster.csv");
    let other = tmp.path().join("unused.csv");
    let h = hosts.to_str().unwrap();
    let mut p0 = run(&cluster, &["-w", "1", "-n", "2", "-p", "0", "-h", h]);
    let mut p1 = run(&other, &["-w", "1", "-n", "2", "-p", "1", "-h", h]);
    assert!(p0.wait().unwrap().success() && p1.wait().unwrap().success());
    let a = std::fs::read_to_string(&single).unwrap();
    let b = std::fs::read_to_string(&cluster).unwrap();
    assert!(a.lines().count() > 40);
    assert!(
        a == b,
        "the two-process CSV differs from the single-process CSV"
    );
}
