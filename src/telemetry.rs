//! Logging and metrics set-up for the binary.

use gept_core::metrics::{Kind, ALL};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Lines a minute allowed for the HTTP server's per-connection errors.
const CONNECTION_ERRORS_PER_MINUTE: u64 = 10;

/// A per-minute budget of log lines: the minute and the lines spent in it,
/// packed in one atomic.
pub struct LineBudget {
    state: AtomicU64,
    per_minute: u64,
}

impl LineBudget {
    const fn new(per_minute: u64) -> Self {
        LineBudget {
            state: AtomicU64::new(0),
            per_minute,
        }
    }

    /// Whether a line may be written at Unix second `now`.
    fn allow(&self, now: u64) -> bool {
        let minute = now / 60;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (m, used) = (current >> 20, current & 0xF_FFFF);
            let next = if m == minute {
                if used >= self.per_minute {
                    return false;
                }
                current + 1
            } else {
                (minute << 20) | 1
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Whether a line may be written now.
    pub fn allow_now(&self) -> bool {
        self.allow(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }
}

/// The budget of the HTTP server's per-connection error lines (a client that
/// resets, stops reading or sends garbage): a flood of them must not flood
/// the log; the metric counts every one.
pub static CONNECTION_ERRORS: LineBudget = LineBudget::new(CONNECTION_ERRORS_PER_MINUTE);

/// Installs the global tracing subscriber (`RUST_LOG`, default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .try_init();
}

static RECORDER: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// Installs the Prometheus recorder (once per process: a later call, e.g. a
/// second service in one test process, gets the same handle) and describes
/// every metric of [`gept_core::metrics::ALL`].
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().expect("recorder lock");
    if let Some(h) = RECORDER.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()?;
    for (name, kind, help) in ALL {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help),
        }
    }
    let _ = RECORDER.set(handle.clone());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::LineBudget;

    #[test]
    fn a_line_budget_refills_each_minute() {
        let budget = LineBudget::new(3);
        let t = 1_800_000_000;
        assert_eq!((0..5).filter(|_| budget.allow(t)).count(), 3);
        assert!(!budget.allow(t + 59 - t % 60), "same minute");
        assert!(budget.allow(t + 60), "the next minute has a new budget");
    }
}
