//! `gept-bench store`: observations/s of the store loading the whole
//! `/latest` recording (and the rows it writes for them: ticks stored
//! once), against each database's own bulk load of every observation as a
//! row in the same run (`sqlite3 .import` of a CSV; PostgreSQL
//! `COPY ... FROM STDIN`).

use gept_core::recordings::latest_snapshots;
use gept_core::{wire, LatestPrice};
use gept_store::Store;
use sqlx::postgres::PgPoolCopyExt;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

pub async fn run(
    latest: &Path,
    postgres: &str,
    work_dir: &Path,
    snapshots: Option<usize>,
) -> anyhow::Result<()> {
    // Batches as the store writer makes them under a backlog.
    let batch_rows = gept_core::config::Config::load(None)?.database.batch_rows;
    std::fs::create_dir_all(work_dir)?;
    let t = Instant::now();
    let mut rows: Vec<LatestPrice> = Vec::new();
    let mut n_snapshots = 0;
    for snap in latest_snapshots(latest)?.take(snapshots.unwrap_or(usize::MAX)) {
        let snap = snap?;
        rows.extend(wire::parse_latest(snap.body.as_bytes(), snap.timestamp)?.rows);
        n_snapshots += 1;
    }
    let parse_s = t.elapsed().as_secs_f64();
    println!(
        "read and parsed {n_snapshots} snapshots, {} rows in {parse_s:.2} s ({:.0} rows/s)",
        rows.len(),
        rows.len() as f64 / parse_s
    );

    // SQLite through the store.
    let ours_db = work_dir.join("store.db");
    let peer_db = work_dir.join("peer.db");
    for f in [&ours_db, &peer_db] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
        }
    }
    let store = Store::connect(&format!("sqlite://{}?mode=rwc", ours_db.display()), 4).await?;
    store.migrate().await?;
    let t = Instant::now();
    let mut observed = 0;
    for batch in tick_batches(&rows, batch_rows) {
        observed += store.insert_latest(batch).await?;
    }
    let ours_sqlite = rows.len() as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(observed as usize == rows.len(), "row count mismatch");
    let written_sqlite = report_stored(&store, rows.len()).await?;
    store.close().await;

    // SQLite's own bulk load: `.import` of a CSV into the same schema, same pragmas.
    let csv = work_dir.join("latest.csv");
    write_csv(&csv, &rows, |t| t.to_string())?;
    let peer_store = Store::connect(&format!("sqlite://{}?mode=rwc", peer_db.display()), 1).await?;
    peer_store.migrate().await?;
    peer_store.close().await;
    let t = Instant::now();
    let status = std::process::Command::new("sqlite3")
        .arg(&peer_db)
        .arg("-cmd")
        .arg(format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size={};",
            gept_store::sqlite::CACHE_SIZE_PRAGMA
        ))
        .arg(format!(
            ".import --csv --skip 1 {} prices_latest_1m",
            csv.display()
        ))
        .status();
    let peer_sqlite = match status {
        Ok(s) if s.success() => Some(rows.len() as f64 / t.elapsed().as_secs_f64()),
        Ok(s) => {
            println!("sqlite3 .import failed: {s}");
            None
        }
        Err(e) => {
            println!("sqlite3 not available ({e}): no SQLite peer figure");
            None
        }
    };
    report(
        "SQLite",
        ours_sqlite,
        written_sqlite,
        peer_sqlite,
        "sqlite3 .import",
    );

    // PostgreSQL, in a database of its own.
    match bench_postgres(postgres, &rows, work_dir, batch_rows).await {
        Ok((ours, written, peer)) => {
            report("PostgreSQL", ours, written, Some(peer), "COPY FROM STDIN")
        }
        Err(e) => println!("PostgreSQL skipped: {e:#}"),
    }
    Ok(())
}

/// `ours`: observations a second through the store; `written`: the share
/// of them it wrote as rows (ticks stored once); the peer loads every
/// observation as a row. Both ratios: what a user gets (observations
/// ingested) and the cost per row written.
fn report(backend: &str, ours: f64, written: f64, peer: Option<f64>, peer_name: &str) {
    let rows = ours * written;
    match peer {
        Some(peer) => println!(
            "{backend}: store {ours:.0} observations/s ({rows:.0} rows written/s), {peer_name} {peer:.0} rows/s \
             (every observation a row); ratio {:.2} in observations, {:.2} in rows written",
            ours / peer,
            rows / peer
        ),
        None => println!("{backend}: store {ours:.0} observations/s ({rows:.0} rows written/s)"),
    }
}

fn write_csv(
    path: &Path,
    rows: &[LatestPrice],
    time: impl Fn(i64) -> String,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "item_id,timestamp,high,high_time,low,low_time")?;
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let opt_t = |v: Option<i64>| v.map(&time).unwrap_or_default();
    for r in rows {
        writeln!(
            out,
            "{},{},{},{},{},{}",
            r.item_id,
            time(r.timestamp),
            opt(r.high),
            opt_t(r.high_time),
            opt(r.low),
            opt_t(r.low_time)
        )?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) async fn fresh_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let admin = sqlx::PgPool::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    Ok(format!("{base}/{name}"))
}

async fn bench_postgres(
    admin_url: &str,
    rows: &[LatestPrice],
    work_dir: &Path,
    batch_rows: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let ours_url = fresh_database(admin_url, "gept_bench_store").await?;
    let store = Store::connect(&ours_url, 4).await?;
    store.migrate().await?;
    let t = Instant::now();
    let mut observed = 0;
    for batch in tick_batches(rows, batch_rows) {
        observed += store.insert_latest(batch).await?;
    }
    let ours = rows.len() as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(observed as usize == rows.len(), "row count mismatch");
    let written = report_stored(&store, rows.len()).await?;
    store.close().await;

    let peer_url = fresh_database(admin_url, "gept_bench_copy").await?;
    let peer = Store::connect(&peer_url, 1).await?;
    peer.migrate().await?;
    let Store::Postgres(pg) = &peer else {
        unreachable!()
    };
    pg.ensure_partitions("prices_latest_1m", rows.iter().map(|r| r.timestamp))
        .await?;
    let csv = work_dir.join("latest_pg.csv");
    write_csv(&csv, rows, |t| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M:%S+00")
            .to_string()
    })?;
    let data = std::fs::read(&csv)?;
    let pool = sqlx::PgPool::connect(&peer_url).await?;
    let t = Instant::now();
    let mut copy = pool
        .copy_in_raw(
            "COPY prices_latest_1m (item_id, timestamp, high, high_time, low, low_time) FROM STDIN WITH (FORMAT csv, HEADER true)",
        )
        .await?;
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let copied = copy.finish().await?;
    let peer_rate = rows.len() as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(copied as usize == rows.len(), "COPY stored {copied} rows");
    pool.close().await;
    peer.close().await;
    Ok((ours, written, peer_rate))
}

/// `rows` (sorted by time) in batches of whole ticks of about `batch_rows`
/// rows (at least one tick each): the store takes a tick whole, once.
pub(crate) fn tick_batches(rows: &[LatestPrice], batch_rows: usize) -> Vec<&[LatestPrice]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let mut end = (start + batch_rows.max(1)).min(rows.len());
        while end < rows.len() && rows[end].timestamp == rows[end - 1].timestamp {
            end += 1;
        }
        out.push(&rows[start..end]);
        start = end;
    }
    out
}

/// Prints the rows the store wrote for `observations` (ticks stored once:
/// only changes between keyframes); returns their share.
async fn report_stored(store: &Store, observations: usize) -> anyhow::Result<f64> {
    let stored = store.count("prices_latest_1m").await?;
    let share = stored as f64 / observations.max(1) as f64;
    println!(
        "  stored {stored} rows for {observations} observations ({:.1} %)",
        100.0 * share
    );
    Ok(share)
}
