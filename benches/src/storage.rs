//! `gept-bench storage`: how big the store gets over weeks and whether it
//! stops growing. The development recording is replayed in a loop onto a
//! simulated clock at one tick a minute: each `/latest` snapshot becomes a
//! tick, the store receives what the service writes for it (the tick, the
//! prediction of every item `--model` predicts there, computed beforehand
//! through the feature engine as the service computes it, the inference
//! status row), a `/5m` bucket every 5 minutes and a `/1h` bucket
//! every hour (the recorded buckets, in a loop), and the retention pass runs
//! every simulated hour with the defaults of `config/default.toml`. At the
//! end of each simulated day it prints the database's size and each table's,
//! and at the end the bytes a day each table adds over the last week, the
//! size at 90 days (measured to `--days`, the rest from the measured bytes a
//! day), and the growth a day after that, against the aims (≤ 8 GB at 90
//! days, ≤ 5 MB a day after).
//!
//! Time on the loop: the recording's snapshots are about 5 minutes apart
//! and are played a minute apart, so its times are compressed five-fold on
//! the simulated clock (a trade's time maps to the same simulated time in
//! every tick that shows it: an unchanged item stays unchanged). Each tick
//! therefore carries the changes of five real minutes: a pessimistic load
//! for the ticks stored once (a real 1-minute poll changes fewer items).
//!
//! `--every N` keeps the items whose id is a multiple of N (a share of the
//! universe, for a shorter run); the tables with a row per item (ticks,
//! buckets, predictions) are then shown scaled to the whole universe (× the
//! inverse of the observations kept), the others (a row per tick or less) as
//! measured, and the database as measured plus the scaled tables' extra.

use gept_actors::retention::{run_pass, Policy};
use gept_core::config::Config;
use gept_core::recordings::{FIVE_MINUTE_FILE, HOURLY_FILE, LATEST_FILE, MAPPING_FILE};
use gept_core::{BucketStep, ItemId, LatestPrice, N_TARGETS};
use gept_dataflows::inputs::{load_buckets, load_items, load_ticks};
use gept_store::{InferenceStatus, PredictionRow, Store, TABLES};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

const DAY: i64 = 86_400;
/// The simulated clock starts here: 2025-06-01 00:00 UTC.
const START: i64 = 1_748_736_000;
const AIM_90_DAYS: f64 = 8.0e9;
const AIM_GROWTH: f64 = 5.0e6;
/// Tables with a row per item (scaled with `--every`).
const PER_ITEM: [&str; 4] = [
    "prices_latest_1m",
    "price_data_5min",
    "prices_1h",
    "predictions",
];
type Sizes = std::collections::BTreeMap<&'static str, i64>;

/// `table`'s bytes scaled to the whole universe.
fn scaled(table: &str, bytes: i64, scale: f64) -> f64 {
    if PER_ITEM.contains(&table) {
        bytes as f64 * scale
    } else {
        bytes as f64
    }
}

/// The database's bytes scaled: as measured, plus the per-item tables'
/// share the kept items stand for.
fn scaled_database(database: i64, tables: &Sizes, scale: f64) -> f64 {
    database as f64
        + PER_ITEM
            .iter()
            .map(|t| *tables.get(t).unwrap_or(&0) as f64 * (scale - 1.0))
            .sum::<f64>()
}

pub struct Options<'a> {
    pub data_dir: &'a Path,
    pub url: &'a str,
    pub days: i64,
    pub every: u32,
    pub model: &'a Path,
    pub work_dir: &'a Path,
}

/// One recorded tick's predictions of the kept items.
type TickProbabilities = Vec<(ItemId, Vec<f32>)>;

/// The model's predictions at every recorded tick (the kept items), through
/// the feature engine as the service computes them; and the stored bytes per
/// item of whole ticks (every item), measured on a sample of ticks in a
/// scratch SQLite store.
async fn real_predictions(
    o: &Options<'_>,
    ticks: &[gept_dataflows::features::TickInput],
    keep: impl Fn(ItemId) -> bool,
) -> anyhow::Result<(Vec<TickProbabilities>, String)> {
    let model = gept_model::Model::load(o.model, tch::Device::Cpu)?;
    let mut buckets = load_buckets(Some(&o.data_dir.join(HOURLY_FILE)), BucketStep::OneHour)?;
    buckets.extend(load_buckets(
        Some(&o.data_dir.join(FIVE_MINUTE_FILE)),
        BucketStep::FiveMinutes,
    )?);
    buckets.sort_by_key(|b| b.start);
    let items = load_items(Some(&o.data_dir.join(MAPPING_FILE)))?;
    let mut out = vec![Vec::new(); ticks.len()];
    let index: std::collections::HashMap<i64, usize> =
        ticks.iter().enumerate().map(|(i, t)| (t.time, i)).collect();
    // Whole ticks sampled for the per-item figure: every 50th from the
    // second day (features warm).
    let mut whole: Vec<PredictionRow> = Vec::new();
    let warm = ticks[0].time + DAY;
    let mut worker = timely::worker::Worker::new(
        timely::WorkerConfig::default(),
        timely::communication::Allocator::Thread(Default::default()),
        Some(Instant::now()),
    );
    gept_dataflows::features::drive(&mut worker, ticks, &buckets, &items, |t, rows| {
        if rows.is_empty() {
            return;
        }
        let mut x = Vec::with_capacity(rows.len() * rows[0].values.len());
        for r in &rows {
            r.push_encoded(&mut x);
        }
        let probs = model.predict(&x);
        let i = index[&t];
        let sampled = t >= warm && i.is_multiple_of(50);
        for (r, p) in rows.iter().zip(probs.chunks_exact(N_TARGETS)) {
            if keep(r.item_id) {
                out[i].push((r.item_id, p.to_vec()));
            }
            if sampled {
                whole.push(PredictionRow {
                    item_id: r.item_id,
                    tick_time: t,
                    observed_at: t,
                    model_version: model.meta.version.clone(),
                    probabilities: p.to_vec(),
                });
            }
        }
    });
    std::fs::create_dir_all(o.work_dir)?;
    let scratch = o.work_dir.join("storage-predictions.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
    }
    let store = Store::connect(&format!("sqlite://{}?mode=rwc", scratch.display()), 1).await?;
    store.migrate().await?;
    let empty = store.table_bytes("predictions").await?;
    store.insert_predictions(&whole).await?;
    let bytes = store.table_bytes("predictions").await? - empty;
    let n_ticks = whole
        .iter()
        .map(|r| r.tick_time)
        .collect::<BTreeSet<_>>()
        .len();
    store.close().await;
    let _ = std::fs::remove_file(&scratch);
    anyhow::ensure!(!whole.is_empty(), "no whole tick was predicted");
    Ok((
        out,
        format!(
            "predictions of whole ticks (model {}, {} ticks × ~{} items, SQLite): {:.1} bytes per item and tick",
            model.meta.version,
            n_ticks,
            whole.len() / n_ticks.max(1),
            bytes as f64 / whole.len() as f64
        ),
    ))
}

pub async fn run(o: Options<'_>) -> anyhow::Result<()> {
    let keep = |id: u32| id.is_multiple_of(o.every.max(1));
    let ticks = load_ticks(&o.data_dir.join(LATEST_FILE), None)?;
    let universe: usize = ticks.iter().map(|t| t.rows.len()).sum();
    let predicted = Instant::now();
    let (predictions_by_tick, whole_ticks) = real_predictions(&o, &ticks, keep).await?;
    println!(
        "{whole_ticks}; the recording predicted in {:.0} s",
        predicted.elapsed().as_secs_f64()
    );
    let ticks: Vec<(i64, Vec<LatestPrice>)> = ticks
        .into_iter()
        .map(|t| {
            let rows = t.rows.into_iter().filter(|r| keep(r.item_id)).collect();
            (t.time, rows)
        })
        .collect();
    let kept: usize = ticks.iter().map(|t| t.1.len()).sum();
    let scale = universe as f64 / kept.max(1) as f64;
    let bucket_loop = |step| -> anyhow::Result<Vec<Vec<gept_core::BucketPrice>>> {
        let file = match step {
            BucketStep::OneHour => HOURLY_FILE,
            BucketStep::FiveMinutes => FIVE_MINUTE_FILE,
        };
        Ok(load_buckets(Some(&o.data_dir.join(file)), step)?
            .into_iter()
            .map(|b| b.rows.into_iter().filter(|r| keep(r.item_id)).collect())
            .collect())
    };
    let hours = bucket_loop(BucketStep::OneHour)?;
    let fives = bucket_loop(BucketStep::FiveMinutes)?;
    anyhow::ensure!(
        !ticks.is_empty() && !hours.is_empty() && !fives.is_empty(),
        "the recordings in {} are empty",
        o.data_dir.display()
    );

    let store = Store::connect(o.url, 4).await?;
    store.migrate().await?;
    anyhow::ensure!(
        store.newest_time("prices_latest_1m").await?.is_none(),
        "{} is not empty: the benchmark needs a fresh database",
        gept_core::config::redact_url(o.url)
    );
    let config = Config::load_with_env(None, Vec::<(String, String)>::new())?;
    let policy = Policy::from_config(&config.retention);
    println!(
        "storage: {} days at one tick a minute, {} of {} observations kept (every {}th item), retention as default.toml",
        o.days,
        kept,
        universe,
        o.every
    );
    println!(
        "{:>4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "day", "database", "ticks", "5m", "1h", "preds", "other", "s/day"
    );

    let started = Instant::now();
    let mut day_started = Instant::now();
    let mut sizes: Vec<(i64, i64, Sizes)> = Vec::new();
    // The recording in a loop: each pass maps recorded time x to
    // base + (x - first) / 5 on the simulated clock.
    let first = ticks[0].0;
    let span = ticks.last().unwrap().0 - first;
    let mut base = START;
    let (mut next_five, mut next_hour) = (START + 300, START + 3600);
    let (mut five_i, mut hour_i) = (0usize, 0usize);
    let end = START + o.days * DAY;
    let mut day_end = START + DAY;
    'replay: loop {
        let map = |x: i64| base + (x - first).div_euclid(5);
        for ((time, rows), predicted) in ticks.iter().zip(&predictions_by_tick) {
            let now = map(*time);
            if now >= end {
                break 'replay;
            }
            // The hour's buckets and the retention pass come due first.
            while next_five <= now {
                let rows = starting_at(&fives[five_i % fives.len()], next_five - 300);
                store.insert_buckets(BucketStep::FiveMinutes, &rows).await?;
                five_i += 1;
                next_five += 300;
            }
            while next_hour <= now {
                let rows = starting_at(&hours[hour_i % hours.len()], next_hour - 3600);
                store.insert_buckets(BucketStep::OneHour, &rows).await?;
                hour_i += 1;
                run_pass(&store, &policy, next_hour).await?;
                next_hour += 3600;
            }
            if now >= day_end {
                sizes.push(measure(&store, day_end, &mut day_started, scale).await?);
                day_end += DAY;
            }
            let tick: Vec<LatestPrice> = rows
                .iter()
                .map(|r| LatestPrice {
                    timestamp: now,
                    high_time: r.high_time.map(map),
                    low_time: r.low_time.map(map),
                    ..*r
                })
                .collect();
            store.insert_latest(&tick).await?;
            let predictions: Vec<PredictionRow> = predicted
                .iter()
                .map(|(item_id, p)| PredictionRow {
                    item_id: *item_id,
                    tick_time: now,
                    observed_at: now,
                    model_version: "20250601-000000-0123456789ab".into(),
                    probabilities: p.clone(),
                })
                .collect();
            store.insert_predictions(&predictions).await?;
            store
                .put_inference_status(
                    &InferenceStatus {
                        tick_time: now,
                        items: predictions.len() as i64,
                        latency_ms: 6.0,
                        model_version: Some("20250601-000000-0123456789ab".into()),
                        outcome: "ok".into(),
                        message: None,
                    },
                    now,
                )
                .await?;
        }
        base = map(first + span) + 60;
    }
    // The pass due at the end runs before the last measure, as each day's.
    run_pass(&store, &policy, end).await?;
    sizes.push(measure(&store, end, &mut day_started, scale).await?);
    read_costs(&store, end).await?;
    store.close().await;

    // Bytes a day over the last week measured, per table and in all.
    anyhow::ensure!(
        sizes.len() >= 2,
        "growth needs two days measured: run --days 2 or more"
    );
    let last = sizes.last().unwrap();
    let week_ago = &sizes[sizes.len().saturating_sub(8)];
    let days = ((last.0 - week_ago.0) / DAY).max(1) as f64;
    println!("\nbytes a day over the last {days} simulated days (whole universe, ×{scale:.2}):");
    let mut growth_all: f64 = 0.0;
    let mut growth_five: f64 = 0.0;
    for table in TABLES {
        let (a, b) = (
            *week_ago.2.get(table).unwrap_or(&0),
            *last.2.get(table).unwrap_or(&0),
        );
        let per_day = (scaled(table, b, scale) - scaled(table, a, scale)) / days;
        growth_all += per_day;
        if table == BucketStep::FiveMinutes.table() {
            growth_five = per_day;
        }
        if a != 0 || b != 0 {
            println!(
                "  {table:<18} {:>12.1} MB now   {:>+10.2} MB/day",
                scaled(table, b, scale) / 1e6,
                per_day / 1e6
            );
        }
    }
    // At 90 days: the tables that plateaued stay; what still grows grows
    // for the days left at its measured rate.
    let measured_days = (last.0 - START) as f64 / DAY as f64;
    let now_bytes = scaled_database(last.1, &last.2, scale);
    let at_90 = now_bytes + growth_all.max(0.0) * (90.0 - measured_days).max(0.0);
    println!(
        "\ndatabase at {measured_days:.0} days: {:.2} GB; at 90 days: {:.2} GB (aim ≤ {:.0} GB: {:.2} of it)",
        now_bytes / 1e9,
        at_90 / 1e9,
        AIM_90_DAYS / 1e9,
        at_90 / AIM_90_DAYS
    );
    println!(
        "growth a day now: {:.1} MB (aim ≤ {:.0} MB after 90 days, when the /5m rows plateau too)",
        growth_all / 1e6,
        AIM_GROWTH / 1e6
    );
    // The /5m rows stop growing at their retention (90 days by default).
    if policy
        .keep
        .get(&gept_store::Expiring::FiveMinute)
        .copied()
        .flatten()
        .is_some_and(|keep| keep.as_secs() as i64 <= 90 * DAY)
    {
        println!(
            "growth a day after 90 days (the /5m rows at their retention): {:.1} MB (aim ≤ {:.0} MB: {:.2} of it)",
            (growth_all - growth_five) / 1e6,
            AIM_GROWTH / 1e6,
            (growth_all - growth_five) / AIM_GROWTH
        );
    }
    println!("wall time: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The cost of reading a closed day against the open one, after the run:
/// on PostgreSQL a closed day is packed (one row per item and day), the
/// last day is still rows. Each read is the median of five; the packed
/// read's ratio to the open one is printed.
async fn read_costs(store: &Store, end: i64) -> anyhow::Result<()> {
    async fn median<F, Fut, T>(mut read: F) -> anyhow::Result<(f64, usize)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, gept_store::StoreError>>,
    {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            n = read().await?.len();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        Ok((times[2], n))
    }
    // The open day: the last; the closed one: the day before, same hours.
    let open = end - 3 * 3600;
    let closed = open - DAY;
    let item = store
        .load_latest(open, open + 60)
        .await?
        .iter()
        .max_by_key(|r| r.high_time)
        .map(|r| r.item_id)
        .ok_or_else(|| anyhow::anyhow!("no tick in the last day"))?;
    println!("
reads (ms, median of 5; the store's own rows, 1 in the kept items): closed day (packed on PostgreSQL) vs open day");
    let mut ms = Vec::new();
    for (what, at) in [("closed", closed), ("open", open)] {
        let (hour, rows) = median(|| store.load_latest(at, at + 3600)).await?;
        let (five, fives) =
            median(|| store.load_buckets(BucketStep::FiveMinutes, at, at + 3600)).await?;
        let (one, ones) =
            median(|| store.item_latest(item, at - 21 * 3600, at + 3600, 100_000)).await?;
        let (chart, bars) = median(|| {
            store.item_buckets(
                BucketStep::FiveMinutes,
                item,
                at - 21 * 3600,
                at + 3600,
                1_000,
            )
        })
        .await?;
        println!(
            "  {what:<6} an hour of ticks {hour:>7.1} ({rows} rows), an hour of /5m {five:>6.1} ({fives}), \
             item {item}'s 22 h of ticks {one:>6.1} ({ones}), of /5m {chart:>6.1} ({bars})"
        );
        ms.push([hour, five, one, chart]);
    }
    let r: Vec<String> = (0..4)
        .map(|k| format!("{:.2}", ms[0][k] / ms[1][k]))
        .collect();
    println!("  closed / open: {}", r.join(", "));
    Ok(())
}

/// A recorded bucket's rows as the bucket starting at `start`.
fn starting_at(rows: &[gept_core::BucketPrice], start: i64) -> Vec<gept_core::BucketPrice> {
    rows.iter()
        .map(|r| gept_core::BucketPrice {
            timestamp: start,
            ..*r
        })
        .collect()
}

/// The database's size and each table's at simulated time `at`; prints the
/// day's line (scaled to the whole universe).
async fn measure(
    store: &Store,
    at: i64,
    day_started: &mut Instant,
    scale: f64,
) -> anyhow::Result<(i64, i64, Sizes)> {
    let mut tables = std::collections::BTreeMap::new();
    for t in TABLES {
        tables.insert(t, store.table_bytes(t).await?);
    }
    let database = store.database_bytes().await?;
    let mb = |t: &str| format!("{:.1}", scaled(t, tables[t], scale) / 1e6);
    let other: i64 = tables
        .iter()
        .filter(|(k, _)| !PER_ITEM.contains(k))
        .map(|(_, v)| *v)
        .sum();
    println!(
        "{:>4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8.1}",
        (at - START) / DAY,
        format!("{:.1}", scaled_database(database, &tables, scale) / 1e6),
        mb("prices_latest_1m"),
        mb("price_data_5min"),
        mb("prices_1h"),
        mb("predictions"),
        format!("{:.1}", other as f64 / 1e6),
        day_started.elapsed().as_secs_f64()
    );
    *day_started = Instant::now();
    Ok((at, database, tables))
}
