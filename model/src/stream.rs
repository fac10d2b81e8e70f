//! Training rows streamed from a store, in bounded memory: the rows of
//! [`crate::pipeline::split_rows`] without holding the history.
//!
//! The store is read an hour at a time (`/latest` ticks with the `/1h` and
//! `/5m` buckets that come into force in that hour) and replayed through the
//! serving feature engine, as `dataset::features` does with a whole history
//! in memory. Every `stride`-th tick at or after `from` becomes rows; each
//! row's labels are followed tick by tick with the training rule
//! ([`gept_dataflows::labels::OpenLabels`]) and fixed once the item has been
//! seen past the longest horizon. Memory is the kept rows (62 features and
//! 108 labels each, ~360 bytes), the labels still open (at most the longest
//! horizon of kept ticks per item), the feature engine's windows, and one
//! hour of `/latest` rows: never the history. Ticks from 25 h before `from`
//! warm the feature windows up (the longest window and the 24 h lags) and
//! give no rows.
//!
//! With `from` at or before the store's first tick the rows are exactly
//! those of `split_rows` over `History::from_store` (tested).

use crate::dataset::Features;
use crate::pipeline::{Split, SplitRows};
use gept_core::{BucketStep, ItemId, HORIZONS_H, N_TARGETS};
use gept_dataflows::features::{self, BucketInput, Engine};
use gept_dataflows::labels::{CarriedPrices, OpenLabels, UNKNOWN};
use gept_store::Store;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;
use timely::communication::allocator::thread::Thread;
use timely::communication::Allocator;

/// Ticks read per store query.
const CHUNK: i64 = 3_600;
/// History before `from` replayed to warm the feature windows up.
pub const WARM_UP: i64 = 25 * 3_600;
/// The longest horizon, in seconds.
const LONGEST: i64 = HORIZONS_H[HORIZONS_H.len() - 1] as i64 * 3_600;

/// A kept row whose labels are still open: its split (0 training, 1
/// validation) and index there.
struct Open {
    split: usize,
    row: usize,
    labels: OpenLabels,
}

/// The training and validation rows of the store's ticks in
/// `[from, until]`, split at `split.validation_fraction` of that span (from
/// its first to its last tick), every `split.stride`-th tick.
pub async fn split_rows_from_store(
    store: &Store,
    from: i64,
    until: i64,
    split: &Split,
    progress: bool,
) -> anyhow::Result<SplitRows> {
    let started = Instant::now();
    let newest = store
        .newest_time("prices_latest_1m")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the store holds no /latest ticks"))?;
    let oldest = store
        .oldest_time(gept_store::Expiring::Latest)
        .await?
        .unwrap_or(newest);
    // Nothing to read before the oldest tick (nor to warm up from).
    let from = from.max(oldest);
    let last_bound = until.min(newest);
    let items: HashMap<ItemId, gept_core::ItemMeta> = store
        .load_items()
        .await?
        .into_iter()
        .map(|m| (m.item_id, m))
        .collect();

    let alloc = Allocator::Thread(Thread::default());
    let mut worker =
        timely::worker::Worker::new(timely::WorkerConfig::default(), alloc, Some(Instant::now()));
    let mut engine = Engine::new(&mut worker);
    // Rows go straight into their split (the cut is known from the first
    // tick): no second copy of the dataset is ever made.
    let empty = Features {
        names: features::feature_names(),
        ..Features::default()
    };
    let mut rows = [empty.clone(), empty];
    let mut y: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut open: HashMap<ItemId, VecDeque<Open>> = HashMap::new();
    let mut carried = CarriedPrices::default();
    let mut last_seen: HashMap<ItemId, i64> = HashMap::new();
    let (mut first, mut last, mut kept_ticks, mut seen_ticks) = (None::<i64>, None::<i64>, 0, 0);
    // The cut needs the first tick: found in the first chunk that has one.
    let mut cut: Option<i64> = None;
    let stride = split.stride.max(1);

    let mut c = (from - WARM_UP).max(oldest);
    let mut first_chunk = true;
    while c <= last_bound {
        let e = (c + CHUNK).min(last_bound + 1);
        for step in [BucketStep::OneHour, BucketStep::FiveMinutes] {
            // Buckets that come into force in [c, e); the first chunk also
            // takes those before it (the 24 /1h buckets the volume features
            // look back over, the newest /5m).
            let len = step.seconds();
            let lo = if first_chunk { c - WARM_UP } else { c - len };
            let bucket_rows = store.load_buckets(step, lo, e - len).await?;
            for (start, rows) in gept_core::runs_by_time(bucket_rows, |r| r.timestamp) {
                engine.add_bucket(BucketInput { step, start, rows });
            }
        }
        first_chunk = false;
        let latest = store.load_latest(c, e).await?;
        for tick in features::ticks_from(gept_core::runs_by_time(latest, |r| r.timestamp)) {
            let t = tick.time;
            // The series: carried prices, and each open row's offers.
            for r in &tick.rows {
                let Some(o) = carried.apply(t, r) else {
                    continue;
                };
                last_seen.insert(r.item_id, t);
                if let Some(q) = open.get_mut(&r.item_id) {
                    for row in q.iter_mut() {
                        row.labels.observe(o);
                    }
                    // Seen past the longest horizon: the labels are final.
                    while q.front().is_some_and(|f| f.labels.t + LONGEST <= t) {
                        let f = q.pop_front().expect("front exists");
                        let kc =
                            known_until(f.labels.t, cut.expect("set with the first row"), i64::MAX);
                        y[f.split][f.row * N_TARGETS..(f.row + 1) * N_TARGETS]
                            .copy_from_slice(&f.labels.labels(t.min(kc)));
                    }
                }
            }
            let out = engine.tick(&mut worker, &tick, &items);
            if t < from {
                continue;
            }
            if first.is_none() {
                first = Some(t);
                cut =
                    Some(last_bound - ((last_bound - t) as f64 * split.validation_fraction) as i64);
            }
            last = Some(t);
            let keep = seen_ticks % stride == 0;
            seen_ticks += 1;
            if !keep {
                continue;
            }
            kept_ticks += 1;
            let split = usize::from(t >= cut.expect("set above"));
            for r in out.unwrap_or_default() {
                let part = &mut rows[split];
                let row = part.items.len();
                part.items.push(r.item_id);
                part.times.push(t);
                r.push_encoded(&mut part.x);
                y[split].extend_from_slice(&[UNKNOWN; N_TARGETS]);
                // A row is labelled when its item is observed at the tick.
                if last_seen.get(&r.item_id) == Some(&t) {
                    let Some(o) = carried.get(r.item_id, t) else {
                        continue;
                    };
                    open.entry(r.item_id).or_default().push_back(Open {
                        split,
                        row,
                        labels: OpenLabels::new(o),
                    });
                }
            }
        }
        if progress && c.rem_euclid(24 * 3_600) < CHUNK {
            eprintln!(
                "dataset: through {}, {} rows of {kept_ticks} ticks, {:.0} s",
                chrono::DateTime::from_timestamp(e, 0).unwrap_or_default(),
                rows[0].len() + rows[1].len(),
                started.elapsed().as_secs_f64()
            );
        }
        c = e;
    }
    let (Some(first), Some(last), Some(cut)) = (first, last, cut) else {
        anyhow::bail!("no /latest tick in the store between {from} and {until}");
    };
    anyhow::ensure!(last > first, "training needs at least two ticks");
    // Labels still open: the item's last observation bounds what is known.
    for (item, q) in open {
        let seen = last_seen[&item];
        for f in q {
            let kc = known_until(f.labels.t, cut, seen);
            y[f.split][f.row * N_TARGETS..(f.row + 1) * N_TARGETS]
                .copy_from_slice(&f.labels.labels(seen.min(kc)));
        }
    }
    let [train, val] = rows;
    let [y_train, y_val] = y;
    if progress {
        eprintln!(
            "dataset: {} training rows, {} validation rows from {kept_ticks} of {seen_ticks} ticks in {:.1} s; validation from {}",
            train.len(),
            val.len(),
            started.elapsed().as_secs_f64(),
            chrono::DateTime::from_timestamp(cut, 0).unwrap_or_default()
        );
    }
    Ok(SplitRows {
        first_tick: first,
        cut,
        last_tick: last,
        train,
        y_train,
        val,
        y_val,
    })
}

/// What the labeller may see for a row at `t`: up to the cut for training
/// rows (no look-ahead into validation), everything (`end`) after.
fn known_until(t: i64, cut: i64, end: i64) -> i64 {
    if t < cut {
        cut.min(end)
    } else {
        end
    }
}
