//! `gept-bench inference`: one batched forward pass (encoding, network,
//! calibration and monotone repair) over every item of a full tick, against
//! the 5 ms limit, in the same run.

use gept::cli::DeviceArg;
use gept_dataflows::inputs::load_ticks;
use gept_model::dataset;
use gept_model::net::Scaling;
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
    let encoder = gept_model::net::Encoder::new(&model.meta.scaling, model.device);
    let encode = median(&|| {
        let _ = std::hint::black_box(encoder.encode_rows(&rows.x));
    });
    // The peer: the same encoding one value at a time (a binary search per
    // value, `Scaling::apply`), as inference did before it moved into torch.
    let scalar = median(&|| {
        std::hint::black_box(per_value_encoding(&rows.x, &model.meta.scaling));
    });
    let logits = median(&|| {
        std::hint::black_box(model.logits(&rows.x));
    });
    println!(
        "median: input encoding {encode:.2} ms (per-value search: {scalar:.2} ms, {:.1}× slower); encoding + network {logits:.2} ms",
        scalar / encode
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

/// The network inputs of raw rows, one [`Scaling::apply`] per value.
fn per_value_encoding(x: &[f32], scaling: &[Scaling]) -> Vec<f32> {
    let used: Vec<(usize, &Scaling)> = scaling
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.unused)
        .collect();
    let mut out = Vec::with_capacity(x.len() / scaling.len().max(1) * 2 * used.len());
    for row in x.chunks_exact(scaling.len().max(1)) {
        for &(c, s) in &used {
            let v = row[c];
            if v.is_finite() {
                out.extend([s.apply(v), 0.0]);
            } else {
                out.extend([0.0, 1.0]);
            }
        }
    }
    out
}
