//! `gept-bench train-store`: training from the store as the service's
//! trainer runs it (`gept train --from-db`, the store streamed an hour at a
//! time), on a SQLite store holding the development recording `copies`
//! times end to end (each copy's times shifted by the recording's span: 3.4
//! days per copy, 4 copies ≈ 14 days). Reports rows, wall time and the
//! child's peak memory against the aims (≤ 10 minutes, ≤ 4 GB on 2 cores).

use gept_core::recordings::{FIVE_MINUTE_FILE, HOURLY_FILE, LATEST_FILE, MAPPING_FILE};
use gept_core::BucketStep;
use gept_dataflows::inputs::{load_buckets, load_items, load_ticks};
use gept_store::Store;
use std::path::Path;
use std::time::Instant;

/// The aims of the continuous-learning issue.
const AIM_SECONDS: f64 = 600.0;
const AIM_BYTES: f64 = 4.0 * 1024.0 * 1024.0 * 1024.0;

pub struct Options<'a> {
    pub data_dir: &'a Path,
    pub copies: usize,
    pub work_dir: &'a Path,
    pub stride: usize,
    pub epochs: usize,
    pub max_minutes: f64,
}

pub async fn run(o: Options<'_>) -> anyhow::Result<()> {
    std::fs::create_dir_all(o.work_dir)?;
    let db = o.work_dir.join(format!("train-store-{}.db", o.copies));
    let url = format!("sqlite://{}?mode=rwc", db.display());
    if !db.exists() {
        let started = Instant::now();
        let tmp = o
            .work_dir
            .join(format!("train-store-{}.db.partial", o.copies));
        let _ = std::fs::remove_file(&tmp);
        let store = Store::connect(&format!("sqlite://{}?mode=rwc", tmp.display()), 2).await?;
        store.migrate().await?;
        let ticks = load_ticks(&o.data_dir.join(LATEST_FILE), None)?;
        let span = ticks.last().unwrap().time - ticks[0].time + 300;
        let buckets: Vec<_> = [
            (HOURLY_FILE, BucketStep::OneHour),
            (FIVE_MINUTE_FILE, BucketStep::FiveMinutes),
        ]
        .into_iter()
        .map(|(f, step)| load_buckets(Some(&o.data_dir.join(f)), step).map(|b| (step, b)))
        .collect::<anyhow::Result<_>>()?;
        for copy in 0..o.copies as i64 {
            let shift = copy * span;
            for t in &ticks {
                let rows: Vec<_> = t
                    .rows
                    .iter()
                    .map(|r| {
                        let mut r = *r;
                        r.timestamp += shift;
                        r.high_time = r.high_time.map(|x| x + shift);
                        r.low_time = r.low_time.map(|x| x + shift);
                        r
                    })
                    .collect();
                store.insert_latest(&rows).await?;
            }
            for (step, list) in &buckets {
                for b in list {
                    let rows: Vec<_> = b
                        .rows
                        .iter()
                        .map(|r| {
                            let mut r = *r;
                            r.timestamp += shift;
                            r
                        })
                        .collect();
                    store.insert_buckets(*step, &rows).await?;
                }
            }
        }
        let items = load_items(Some(&o.data_dir.join(MAPPING_FILE)))?;
        store
            .upsert_items(&items.into_values().collect::<Vec<_>>(), 0)
            .await?;
        store.close().await;
        std::fs::rename(&tmp, &db)?;
        println!(
            "store: {} copies of {} ticks written to {} in {:.0} s",
            o.copies,
            ticks.len(),
            db.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let store = Store::connect(&url, 1).await?;
    let (Some(first), Some(last)) = (
        store.oldest_time(gept_store::Expiring::Latest).await?,
        store.newest_time("prices_latest_1m").await?,
    ) else {
        anyhow::bail!("{} holds no ticks", db.display());
    };
    let observations = store.count("prices_latest_1m").await?;
    let ticks = store.count("latest_ticks").await?;
    store.close().await;
    println!(
        "history: {:.1} days, {ticks} /latest ticks in {observations} stored rows",
        (last - first) as f64 / 86_400.0
    );

    let exe = std::env::current_exe()?
        .parent()
        .map(|d| d.join("gept"))
        .filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("the gept binary is not beside gept-bench; build it"))?;
    let out = o.work_dir.join(format!("train-store-{}-model", o.copies));
    let started = Instant::now();
    let status = std::process::Command::new(&exe)
        .args(["train", "--from-db", "--device", "cpu"])
        .args(["--stride", &o.stride.to_string()])
        .args(["--epochs", &o.epochs.to_string()])
        .args(["--max-minutes", &o.max_minutes.to_string()])
        .arg("--out")
        .arg(&out)
        .env("GEPT__DATABASE__URL", &url)
        .status()?;
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "gept train exited with {status}");
    // SAFETY: getrusage writes into the struct we own.
    let peak = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss as f64 * 1024.0
    };
    let meta = gept_model::file::read_meta(&out)?;
    let rows = meta.training["training_rows"].as_u64().unwrap_or(0)
        + meta.training["validation_rows"].as_u64().unwrap_or(0);
    println!(
        "training from the store: {rows} rows (every {}th tick), {} epochs, validation mean AUC {:.4}",
        o.stride,
        meta.training["epochs"].as_array().map_or(0, Vec::len),
        meta.metrics["mean_auc"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "wall time {wall:.0} s against the {AIM_SECONDS:.0} s aim: {:.2}x",
        wall / AIM_SECONDS
    );
    println!(
        "peak memory {:.2} GB against the 4 GB aim: {:.2}x",
        peak / 1024f64.powi(3),
        peak / AIM_BYTES
    );
    Ok(())
}
