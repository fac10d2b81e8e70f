//! `gept-bench features`: per-tick latency, replay throughput and peak memory
//! of the feature dataflow on a recording, against the batch peer (every
//! feature of every item recomputed from the last 24 h at a tick) in the same run.

use gept_dataflows::batch;
use gept_dataflows::features::{self, TickInput};
use gept_dataflows::inputs::load_bucket_files;
use gept_dataflows::inputs::{load_items, load_ticks};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(
    latest: &Path,
    hourly: Option<&Path>,
    five_minute: Option<&Path>,
    mapping: Option<&Path>,
    snapshots: Option<usize>,
    workers: usize,
) -> anyhow::Result<()> {
    let ticks = Arc::new(load_ticks(latest, snapshots)?);
    let hourly: Vec<std::path::PathBuf> = hourly.map(Path::to_path_buf).into_iter().collect();
    let hours = Arc::new(load_bucket_files(&hourly, five_minute)?);
    let items = Arc::new(load_items(mapping)?);
    let rss_input = peak_rss_mib();
    let observations: usize = ticks.iter().map(|t| t.rows.len()).sum();
    println!(
        "input: {} ticks, {observations} observations, {} /1h and /5m buckets; {workers} worker(s)",
        ticks.len(),
        hours.len()
    );

    let times = Arc::new(Mutex::new(Vec::<(i64, Duration, usize)>::new()));
    let (t2, h2, i2, times2) = (ticks.clone(), hours.clone(), items.clone(), times.clone());
    let started = Instant::now();
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut last = Instant::now();
        let times = times2.clone();
        features::drive(worker, &t2, &h2, &i2, move |t, rows| {
            let now = Instant::now();
            times.lock().unwrap().push((t, now - last, rows.len()));
            last = now;
        });
    })
    .map_err(|e| anyhow::anyhow!("timely: {e}"))?
    .join()
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| anyhow::anyhow!("worker failed: {e}"))?;
    let total = started.elapsed();
    let times = times.lock().unwrap().clone();
    let first = ticks.first().map(|t| t.time).unwrap_or(0);
    let mut steady: Vec<Duration> = times
        .iter()
        .filter(|(t, _, _)| *t >= first + 86_400)
        .map(|(_, d, _)| *d)
        .collect();
    anyhow::ensure!(
        !steady.is_empty(),
        "need more than 24 h of ticks for a steady state"
    );
    steady.sort();
    let rows: usize = times.iter().map(|(_, _, n)| n).sum();
    let p50 = percentile(&steady, 0.5);
    let p99 = percentile(&steady, 0.99);
    println!(
        "dataflow: {} steady-state ticks (24 h windows full), per tick p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        steady.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        steady.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "dataflow: replay of {observations} observations ({rows} feature rows) in {:.2} s: {:.0} observations/s",
        total.as_secs_f64(),
        observations as f64 / total.as_secs_f64()
    );
    if let (Some(before), Some(after)) = (rss_input, peak_rss_mib()) {
        println!(
            "memory: peak RSS {after:.0} MiB, of which {before:.0} MiB is the loaded recording"
        );
    }

    // The peer: all features of all items from the last 24 h (+1 h for the
    // as-of lookups), at ten steady-state ticks spread over the recording.
    let steady_idx: Vec<usize> = (0..ticks.len())
        .filter(|&i| ticks[i].time >= first + 86_400)
        .collect();
    let mut peer = Vec::new();
    for k in 0..10 {
        let i = steady_idx[k * (steady_idx.len() - 1) / 9];
        let t = ticks[i].time;
        let window: Vec<TickInput> = ticks[..=i]
            .iter()
            .filter(|x| x.time > t - 86_400 - 3_600)
            .cloned()
            .collect();
        let start = Instant::now();
        let rows = batch::reference(&window, &hours, &items, true);
        peer.push(start.elapsed());
        anyhow::ensure!(!rows.is_empty(), "the peer computed nothing");
    }
    peer.sort();
    let peer_p50 = percentile(&peer, 0.5);
    println!(
        "peer (batch recompute over the last 24 h): per tick p50 {:.1} ms; the incremental tick is {:.0}x cheaper (p50/p50)",
        peer_p50.as_secs_f64() * 1e3,
        peer_p50.as_secs_f64() / p50.as_secs_f64()
    );
    Ok(())
}
