//! `gept-bench ingest`: snapshots per second end to end, replay server →
//! upstream client → parser → store, on the step clock, with the share of
//! time in HTTP, parsing and storage; against the raw store load rate of the
//! same rows in the same run.

use gept_actors::upstream::UpstreamClient;
use gept_core::config::Config;
use gept_core::wire;
use gept_replay::{self as mock_api, Clock, Faults, MockOptions};
use gept_store::Store;
use std::path::Path;
use std::time::{Duration, Instant};

pub async fn run(data_dir: &Path, snapshots: Option<usize>, work_dir: &Path) -> anyhow::Result<()> {
    let options = MockOptions {
        clock: Clock::Step,
        faults: Faults::default(),
        seed: 1,
        max_snapshots: snapshots,
    };
    let mock = mock_api::start(data_dir, "127.0.0.1:0".parse()?, options).await?;
    let total = mock.total_snapshots;
    anyhow::ensure!(total > 0, "no /latest recording in {}", data_dir.display());

    let mut config = Config::load(None)?;
    config.upstream.base_url = mock.base_url();
    config.upstream.user_agent = "gept-bench (bench@gept.invalid)".into();
    let client = UpstreamClient::new(&config.upstream)?;
    std::fs::create_dir_all(work_dir)?;
    let db = work_dir.join("ingest.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let store = Store::connect(&format!("sqlite://{}?mode=rwc", db.display()), 4).await?;
    store.migrate().await?;

    let (mut http, mut parse, mut storage) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut rows_total = 0usize;
    let mut stored_total = 0usize;
    let mut all_rows = Vec::new();
    let started = Instant::now();
    for _ in 0..total {
        let t = Instant::now();
        let resp = client.get_api("latest").await?;
        http += t.elapsed();
        let t = Instant::now();
        let parsed = wire::parse_latest(&resp.body, resp.observed_at)?;
        parse += t.elapsed();
        let t = Instant::now();
        // One snapshot per write, as the writer stores it at the live 60 s cadence.
        stored_total += store.insert_latest(&parsed.rows).await? as usize;
        storage += t.elapsed();
        rows_total += parsed.rows.len();
        all_rows.extend(parsed.rows);
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(stored_total == rows_total, "row count mismatch");
    store.close().await;
    mock.stop().await;

    let per = |d: Duration| d.as_secs_f64() * 1e3 / total as f64;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / elapsed.as_secs_f64();
    println!(
        "end to end: {total} snapshots, {rows_total} rows in {:.2} s: {:.1} snapshots/s, {:.0} rows/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        rows_total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "per snapshot: HTTP {:.2} ms ({:.0}%), parse {:.2} ms ({:.0}%), store {:.2} ms ({:.0}%); \
         a full snapshot takes {:.1} ms of the 60 s poll interval ({:.4}%)",
        per(http),
        share(http),
        per(parse),
        share(parse),
        per(storage),
        share(storage),
        per(elapsed),
        per(elapsed) / 600.0
    );

    // The raw store load rate of the same rows, same machine, same run.
    let raw_db = work_dir.join("ingest_raw.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", raw_db.display()));
    }
    let raw = Store::connect(&format!("sqlite://{}?mode=rwc", raw_db.display()), 4).await?;
    raw.migrate().await?;
    let t = Instant::now();
    for batch in crate::store::tick_batches(&all_rows, config.database.batch_rows) {
        raw.insert_latest(batch).await?;
    }
    let raw_rate = all_rows.len() as f64 / t.elapsed().as_secs_f64();
    raw.close().await;
    let e2e_rate = rows_total as f64 / elapsed.as_secs_f64();
    println!(
        "raw store load of the same rows (batches of {}): {raw_rate:.0} rows/s; end to end runs at {:.2} of it",
        config.database.batch_rows,
        e2e_rate / raw_rate
    );
    Ok(())
}
