//! Training and evaluation rows: history replayed through the same feature
//! engine that serves (`features::drive` → `Engine::tick`), joined with the
//! fill labels of the same series.

use gept_core::{ItemId, ItemMeta, N_TARGETS};
use gept_dataflows::features::{self, BucketInput, TickInput};
use gept_dataflows::labels::{self, Obs, UNKNOWN};
use std::collections::HashMap;
use timely::communication::allocator::thread::Thread;
use timely::communication::Allocator;

/// Feature rows of (item, tick), row-major; a null feature is NaN.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub names: Vec<String>,
    pub items: Vec<ItemId>,
    pub times: Vec<i64>,
    pub x: Vec<f32>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn width(&self) -> usize {
        self.names.len()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.width()..(i + 1) * self.width()]
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Features {
        let mut x = Vec::with_capacity(idx.len() * self.width());
        for &i in idx {
            x.extend_from_slice(self.row(i));
        }
        Features {
            names: self.names.clone(),
            items: idx.iter().map(|&i| self.items[i]).collect(),
            times: idx.iter().map(|&i| self.times[i]).collect(),
            x,
        }
    }
}

/// Replays `ticks` (time order) and `hours` through the feature engine on one
/// timely worker and keeps the rows of the ticks for which `keep` is true.
pub fn features(
    ticks: &[TickInput],
    hours: &[BucketInput],
    items: &HashMap<ItemId, ItemMeta>,
    keep: impl Fn(i64) -> bool,
) -> Features {
    let mut out = Features {
        names: features::feature_names(),
        ..Features::default()
    };
    // A single-threaded worker, as `timely::execute_directly` builds one, but
    // borrowing the caller's data instead of requiring 'static.
    let alloc = Allocator::Thread(Thread::default());
    let mut worker = timely::worker::Worker::new(
        timely::WorkerConfig::default(),
        alloc,
        Some(std::time::Instant::now()),
    );
    features::drive(&mut worker, ticks, hours, items, |t, rows| {
        if !keep(t) {
            return;
        }
        for r in rows {
            out.items.push(r.item_id);
            out.times.push(r.timestamp);
            r.push_encoded(&mut out.x);
        }
    });
    while worker.has_dataflows() {
        worker.step_or_park(None);
    }
    out
}

/// Labels (row-major, `N_TARGETS` per row, [`UNKNOWN`] where not known) of
/// the rows (`items[i]`, `times[i]`). Outcomes at T may only use observations
/// up to `known_until(T)`. Items are labelled on all available cores.
pub fn labels(
    series: &HashMap<ItemId, Vec<Obs>>,
    items: &[ItemId],
    times: &[i64],
    known_until: impl Fn(i64) -> i64 + Sync,
) -> Vec<u8> {
    let mut rows_of: HashMap<ItemId, Vec<usize>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        rows_of.entry(*item).or_default().push(i);
    }
    let work: Vec<(ItemId, Vec<usize>)> = rows_of.into_iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = work.len().div_ceil(threads).max(1);
    let known_until = &known_until;
    let parts: Vec<Vec<(usize, [u8; N_TARGETS])>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for (item, rows) in part {
                        let Some(obs) = series.get(item) else {
                            out.extend(rows.iter().map(|&r| (r, [UNKNOWN; N_TARGETS])));
                            continue;
                        };
                        let labelled = labels::label_series(obs, known_until);
                        for &r in rows {
                            let l = obs
                                .binary_search_by_key(&times[r], |o| o.t)
                                .map_or([UNKNOWN; N_TARGETS], |j| labelled[j]);
                            out.push((r, l));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("labelling thread panicked"))
            .collect()
    });
    let mut y = vec![UNKNOWN; items.len() * N_TARGETS];
    for (r, l) in parts.into_iter().flatten() {
        y[r * N_TARGETS..(r + 1) * N_TARGETS].copy_from_slice(&l);
    }
    y
}

/// Writes rows as CSV: `item_id,timestamp,<features>,<targets>`; a null
/// feature and an unknown label are empty cells. `keep` picks rows.
pub fn write_csv(
    out: &mut impl std::io::Write,
    rows: &Features,
    labels: &[u8],
    keep: impl Fn(usize) -> bool,
) -> std::io::Result<usize> {
    write!(out, "item_id,timestamp,{}", rows.names.join(","))?;
    for t in gept_core::target_names() {
        write!(out, ",{t}")?;
    }
    writeln!(out)?;
    let mut n = 0;
    for i in (0..rows.len()).filter(|&i| keep(i)) {
        write!(out, "{},{}", rows.items[i], rows.times[i])?;
        for v in rows.row(i) {
            if v.is_finite() {
                write!(out, ",{v}")?;
            } else {
                write!(out, ",")?;
            }
        }
        for l in &labels[i * N_TARGETS..(i + 1) * N_TARGETS] {
            match l {
                0 => write!(out, ",0")?,
                1 => write!(out, ",1")?,
                _ => write!(out, ",")?,
            }
        }
        writeln!(out)?;
        n += 1;
    }
    Ok(n)
}
