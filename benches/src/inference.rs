//! `gept-bench inference`: one batched forward pass (encoding, network,
//! calibration and monotone repair) over every item of a full tick, against
//! the 5 ms limit, in the same run.

use gept::cli::DeviceArg;
use gept_dataflows::inputs::load_ticks;
use gept_model::dataset;
use gept_model::Model;
use std::path::Path;
use std::time::{Duration, Instant};

/// The aim for one full-universe forward pass on 2 CPU cores.
const LIMIT: Duration = Duration::from_millis(5);

pub fn run(
    model: &Path,
    latest: &Path,
    snapshots: usize,
    repeats: usize,
    device: DeviceArg,
) -> anyhow::Result<()> {
    let model = Model::load(model, device.device()?)?;
    let ticks = load_ticks(latest, Some(snapshots))?;
    let last = ticks.last().map(|t| t.time).unwrap_or_default();
    let rows = dataset::features(&ticks, &[], &Default::default(), |t| t == last);
    println!(
        "model {}: {} items × {} targets, {} threads, device {:?}",
        model.meta.version,
        rows.len(),
        gept_core::N_TARGETS,
        tch::get_num_threads(),
        model.device
    );
    for _ in 0..10 {
        std::hint::black_box(model.predict(&rows.x));
    }
    let mut times: Vec<Duration> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(model.predict(&rows.x));
            t.elapsed()
        })
        .collect();
    times.sort();
    // Where the time goes: input encoding, and encoding + network (no calibration).
    let median = |f: &dyn Fn()| {
        let mut t: Vec<Duration> = (0..repeats.clamp(1, 100))
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed()
            })
            .collect();
        t.sort();
        t[t.len() / 2].as_secs_f64() * 1e3
    };
    let encode = median(&|| {
        std::hint::black_box(gept_model::net::encode(&rows.x, &model.meta.scaling));
    });
    let logits = median(&|| {
        std::hint::black_box(model.logits(&rows.x));
    });
    println!("median: input encoding {encode:.2} ms; encoding + network {logits:.2} ms");
    // The inference thread's case: consecutive ticks, each predicted once,
    // with the quantile search guided by where each item's features fell
    // at the tick before (`Model::predict_hinted`) against the plain search,
    // alternating passes over the same ticks.
    let last_ticks = 20.min(ticks.len());
    let from = ticks[ticks.len() - last_ticks].time;
    let seq = dataset::features(&ticks, &[], &Default::default(), |t| t >= from);
    let width = seq.width();
    let mut rest = &seq.x[..];
    let per_tick: Vec<&[f32]> = seq
        .times
        .chunk_by(|a, b| a == b)
        .map(|tick| {
            let (x, after) = rest.split_at(tick.len() * width);
            rest = after;
            x
        })
        .collect();
    let rounds = (repeats / per_tick.len().max(1)).max(1);
    let (mut plain, mut hinted) = (Vec::new(), Vec::new());
    let mut hints = Vec::new();
    for _ in 0..rounds {
        for x in &per_tick {
            let t = Instant::now();
            std::hint::black_box(model.predict(x));
            plain.push(t.elapsed());
        }
        for x in &per_tick {
            let t = Instant::now();
            std::hint::black_box(model.predict_hinted(x, &mut hints));
            hinted.push(t.elapsed());
        }
    }
    plain.sort();
    hinted.sort();
    let mid = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1e3;
    println!(
        "consecutive ticks ({} ticks × {rounds} rounds): plain search p50 {:.2} ms, guided by the last tick p50 {:.2} ms ({:.2}×); limit {:.1} ms: {:.2}×",
        per_tick.len(),
        mid(&plain),
        mid(&hinted),
        mid(&hinted) / mid(&plain),
        LIMIT.as_secs_f64() * 1e3,
        mid(&hinted) / (LIMIT.as_secs_f64() * 1e3)
    );
    let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let (p50, p99) = (p(0.5), p(0.99));
    println!(
        "forward pass, full tick: p50 {:.2} ms, p99 {:.2} ms; limit {:.1} ms: p50 at {:.2}× the limit, p99 at {:.2}×",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        LIMIT.as_secs_f64() * 1e3,
        p50.as_secs_f64() / LIMIT.as_secs_f64(),
        p99.as_secs_f64() / LIMIT.as_secs_f64()
    );
    Ok(())
}
