//! Shared domain of GePT: item ids, price observations, wire formats of the
//! upstream API with their validation, targets, the GE tax, configuration and
//! readers of recorded API responses.
//!
//! Every other crate depends on this one; it depends on none of them.

pub mod config;
pub mod duration;
pub mod metrics;
pub mod recordings;
pub mod tax;
pub mod types;
pub mod wire;

pub use types::*;

/// Rows ordered by time, as runs of equal time: `(time, rows)` in order
/// (the stored `/latest` rows of one tick, or one bucket's rows).
pub fn runs_by_time<T>(
    rows: impl IntoIterator<Item = T>,
    time: impl Fn(&T) -> i64,
) -> Vec<(i64, Vec<T>)> {
    let mut runs: Vec<(i64, Vec<T>)> = Vec::new();
    for row in rows {
        let t = time(&row);
        match runs.last_mut() {
            Some((at, run)) if *at == t => run.push(row),
            _ => runs.push((t, vec![row])),
        }
    }
    runs
}
