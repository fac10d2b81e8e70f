//! The HTTP side of `gept serve` (warp): operator endpoints at the root
//! (`/healthz`, `/readyz`, `/metrics`).

use gept_actors::health::Health;
use gept_actors::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;
use warp::http::StatusCode;
use warp::Filter;

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub health: Health,
    pub prometheus: PrometheusHandle,
}

/// Every route of the service.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let with_state = warp::any().map(move || state.clone());
    let healthz = warp::path!("healthz").and(warp::get()).map(|| "ok");
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .then(|s: AppState| async move {
            if s.store.ping(Duration::from_secs(2)).await {
                warp::reply::with_status("ready", StatusCode::OK)
            } else {
                warp::reply::with_status("database unreachable", StatusCode::SERVICE_UNAVAILABLE)
            }
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state)
        .map(|s: AppState| {
            s.health.update_age_gauges(chrono::Utc::now().timestamp());
            warp::reply::with_header(
                s.prometheus.render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
        });
    healthz.or(readyz).or(metrics).recover(|_| async {
        Ok::<_, std::convert::Infallible>(warp::reply::with_status(
            "not found",
            StatusCode::NOT_FOUND,
        ))
    })
}
