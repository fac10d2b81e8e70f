//! Logging and metrics set-up for the binary.

use gept_core::metrics::{Kind, ALL};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber (`RUST_LOG`, default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
