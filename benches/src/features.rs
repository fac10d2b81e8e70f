//! `gept-bench features`: per-tick latency, replay throughput and peak memory
//! of the feature dataflow on a recording, against the batch peer (every
//! feature of every item recomputed from the last 24 h at a tick) in the same run.

use gept_dataflows::batch;
use gept_dataflows::features::{self, TickInput};
use gept_dataflows::inputs::load_bucket_files;
use gept_dataflows::inputs::{load_items, stream_ticks};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
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

/// Ticks read ahead of the dataflow, per worker.
const READ_AHEAD: usize = 4;

pub fn run(
    latest: &Path,
    hourly: Option<&Path>,
    five_minute: Option<&Path>,
    mapping: Option<&Path>,
    snapshots: Option<usize>,
    workers: usize,
) -> anyhow::Result<()> {
    let hourly: Vec<std::path::PathBuf> = hourly.map(Path::to_path_buf).into_iter().collect();
    let hours = Arc::new(load_bucket_files(&hourly, five_minute)?);
    let items = Arc::new(load_items(mapping)?);
    let rss_input = peak_rss_mib();
    println!(
        "input: the /latest recording streamed (parsed on a reader thread, {READ_AHEAD} ticks ahead of each worker), {} /1h and /5m buckets; {workers} worker(s)",
        hours.len()
    );

    // The ten steady-state ticks the peer is timed at, from a first pass
    // over the times.
    let times_only: Vec<i64> = stream_ticks(latest, snapshots)?
        .map(|t| t.map(|t| t.time))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(
        times_only.windows(2).all(|w| w[0] < w[1]),
        "the recording's snapshots are not in time order; the streamed replay needs them so"
    );
    let first = times_only.first().copied().unwrap_or(0);
    let steady_idx: Vec<usize> = (0..times_only.len())
        .filter(|&i| times_only[i] >= first + 86_400)
        .collect();
    anyhow::ensure!(
        !steady_idx.is_empty(),
        "need more than 24 h of ticks for a steady state"
    );
    let peer_at: Vec<i64> = (0..10)
        .map(|k| times_only[steady_idx[k * (steady_idx.len() - 1) / 9]])
        .collect();
    drop(times_only);

    // The reader parses the recording as the dataflow replays it and hands
    // every worker each tick.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| mpsc::sync_channel::<Arc<TickInput>>(READ_AHEAD))
        .unzip();
    let receivers = Arc::new(Mutex::new(
        receivers.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let path = latest.to_path_buf();
    let reader = std::thread::spawn(move || -> anyhow::Result<usize> {
        let mut observations = 0;
        for tick in stream_ticks(&path, snapshots)? {
            let tick = Arc::new(tick?);
            observations += tick.rows.len();
            for tx in &senders {
                tx.send(tick.clone())
                    .map_err(|_| anyhow::anyhow!("a worker stopped"))?;
            }
        }
        Ok(observations)
    });

    let times = Arc::new(Mutex::new(Vec::<(i64, Duration, usize)>::new()));
    let (h2, i2, times2) = (hours.clone(), items.clone(), times.clone());
    let started = Instant::now();
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut last = Instant::now();
        let times = times2.clone();
        let rx = receivers.lock().unwrap()[worker.index()]
            .take()
            .expect("one receiver per worker");
        features::drive(worker, rx, &h2, &i2, move |t, rows| {
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
    let observations = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    let times = times.lock().unwrap().clone();
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
            "memory: peak RSS {after:.0} MiB over the replay (aim 1,024), of which {before:.0} MiB before it (buckets, mapping); the recording was held {} ticks ahead of each worker",
            READ_AHEAD
        );
    }

    // The peer (after the replay's peak RSS is read): all features of all
    // items from the last 24 h (+1 h for the as-of lookups), at the ten
    // steady-state ticks, on a second streamed pass keeping the last 25 h.
    let mut peer = Vec::new();
    let mut recent: std::collections::VecDeque<TickInput> = Default::default();
    for tick in stream_ticks(latest, snapshots)? {
        let tick = tick?;
        let t = tick.time;
        recent.push_back(tick);
        while recent.front().is_some_and(|x| x.time <= t - 86_400 - 3_600) {
            recent.pop_front();
        }
        if peer_at.contains(&t) {
            let window: Vec<TickInput> = recent.iter().cloned().collect();
            let start = Instant::now();
            let rows = batch::reference(&window, &hours, &items, true);
            peer.push(start.elapsed());
            anyhow::ensure!(!rows.is_empty(), "the peer computed nothing");
        }
    }
    anyhow::ensure!(
        peer.len() == peer_at.len(),
        "the peer's ticks were not all read"
    );
    peer.sort();
    let peer_p50 = percentile(&peer, 0.5);
    println!(
        "peer (batch recompute over the last 24 h): per tick p50 {:.1} ms; the incremental tick is {:.0}x cheaper (p50/p50)",
        peer_p50.as_secs_f64() * 1e3,
        peer_p50.as_secs_f64() / p50.as_secs_f64()
    );
    Ok(())
}
