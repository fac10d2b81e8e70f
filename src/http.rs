//! The HTTP side of `gept serve` (warp): operator endpoints at the root
//! (`/healthz`, `/readyz`, `/metrics`), the versioned API under `/api/v1`
//! (`crate::api`), CORS, JSON errors and per-route request metrics.

use crate::api::{self, ApiState};
use gept_core::metrics as m;
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;
use warp::http::StatusCode;
use warp::{Filter, Reply};

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub api: ApiState,
    pub prometheus: PrometheusHandle,
    pub cors_origins: Vec<String>,
}

/// Every route of the service.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let with_state = warp::any().map({
        let state = state.clone();
        move || state.clone()
    });
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| "ok".into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .then(|s: AppState| async move {
            if s.api.store.ping(Duration::from_secs(2)).await {
                warp::reply::with_status("ready", StatusCode::OK).into_response()
            } else {
                warp::reply::with_status("database unreachable", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response()
            }
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state)
        .map(|s: AppState| {
            s.api
                .health
                .update_age_gauges(chrono::Utc::now().timestamp());
            warp::reply::with_header(
                s.prometheus.render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        });
    let cors = warp::cors()
        .allow_origins(state.cors_origins.iter().map(String::as_str))
        .allow_methods(["GET", "POST", "OPTIONS"])
        .allow_headers(["authorization", "content-type"])
        .max_age(Duration::from_secs(600));
    let log = warp::log::custom(|info| {
        let route = api::route_label(info.path());
        metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "status" => info.status().as_u16().to_string())
            .increment(1);
        metrics::histogram!(m::HTTP_REQUEST_SECONDS, "route" => route)
            .record(info.elapsed().as_secs_f64());
    });
    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(api::routes(state.api))
        .unify()
        .with(cors)
        .recover(api::recover)
        .with(log)
}
