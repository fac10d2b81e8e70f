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
    /// `/metrics` wants `Authorization: Bearer <token>` when set.
    pub metrics_token: Option<std::sync::Arc<str>>,
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
            let (ready, body) = readiness(&s.api).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_state)
        .map(|auth: Option<String>, s: AppState| {
            if let Some(token) = &s.metrics_token {
                let given = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
                if !given.is_some_and(|g| api::constant_time_eq(g.as_bytes(), token.as_bytes())) {
                    return warp::reply::with_status(
                        warp::reply::json(
                            &serde_json::json!({"error": "metrics need a bearer token"}),
                        ),
                        StatusCode::UNAUTHORIZED,
                    )
                    .into_response();
                }
            }
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
    let origins = std::sync::Arc::new(state.cors_origins.clone());
    let log = warp::log::custom(|info| {
        let route = api::route_label(info.path());
        metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "status" => info.status().as_u16().to_string())
            .increment(1);
        metrics::histogram!(m::HTTP_REQUEST_SECONDS, "route" => route)
            .record(info.elapsed().as_secs_f64());
    });
    let inner = healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(crate::web::routes())
        .unify()
        .or(crate::discord::routes(state.api.clone()))
        .unify()
        .or(api::routes(state.api))
        .unify()
        .recover(api::recover)
        .map(Reply::into_response);
    preflight(origins.clone())
        .or(cors_origin(origins).and(inner).map(
            |allowed: Option<String>, mut r: warp::reply::Response| {
                let h = r.headers_mut();
                h.append(warp::http::header::VARY, "Origin".parse().expect("header"));
                if let Some(origin) = allowed.and_then(|o| o.parse().ok()) {
                    h.insert(warp::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                }
                r
            },
        ))
        .unify()
        .with(log)
}

/// CORS: an origin on `api.cors_origins` may read answers from a browser;
/// the server's own origin (the dashboard) needs no permission, and any
/// other origin is answered as usual but without the header that would let
/// its script read the answer. Every answer varies by `Origin`.
fn allowed_origin(origins: &[String], origin: Option<&str>) -> Option<String> {
    let origin = origin?;
    origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        .then(|| origin.to_string())
}

/// The request's `Origin` when it is allowed to read the answer.
fn cors_origin(
    origins: std::sync::Arc<Vec<String>>,
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(move |h: warp::http::HeaderMap| {
        let origin = h.get("origin").and_then(|v| v.to_str().ok());
        allowed_origin(&origins, origin)
    })
}

/// A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`): 204
/// with the methods and headers allowed for an allowed origin, else 403.
fn preflight(
    origins: std::sync::Arc<Vec<String>>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::options()
        .and(warp::header::<String>("access-control-request-method"))
        .and(warp::header::optional::<String>("origin"))
        .map(move |_: String, origin: Option<String>| {
            let Some(origin) = allowed_origin(&origins, origin.as_deref()) else {
                return warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({"error": "origin not allowed"})),
                    StatusCode::FORBIDDEN,
                )
                .into_response();
            };
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            let mut set = |k: warp::http::header::HeaderName, v: &str| {
                if let Ok(v) = v.parse() {
                    h.insert(k, v);
                }
            };
            use warp::http::header as hh;
            set(hh::ACCESS_CONTROL_ALLOW_ORIGIN, &origin);
            set(hh::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS");
            set(
                hh::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type",
            );
            set(hh::ACCESS_CONTROL_MAX_AGE, "600");
            set(hh::VARY, "Origin");
            r
        })
}

/// `/readyz`: ready only when every check passes; the body names each check
/// and why it failed. Checks: the database answers; the `/latest` collector
/// succeeded within `api.ready_max_feed_age`; the feature engine and the
/// inference thread are running; with a model loaded, the newest tick was
/// predicted (its predictions lag the feed by at most the same age).
pub async fn readiness(api: &api::ApiState) -> (bool, serde_json::Value) {
    let now = chrono::Utc::now().timestamp();
    let max_age = api.ready_max_feed_age.as_secs() as i64;
    let database = api.store.ping(Duration::from_secs(2)).await;
    let latest = api
        .health
        .collectors()
        .into_iter()
        .find(|c| c.collector == "latest");
    // A standby follower's feed is the store it follows.
    let feed_age = if api.role.is_primary() {
        latest.as_ref().and_then(|c| c.last_success)
    } else {
        api.role.followed_at()
    }
    .map(|t| now - t);
    let feed = feed_age.is_some_and(|age| age <= max_age);
    let engine = api.engine_alive.is_alive();
    let inference = api.inference.alive.is_alive();
    let model = api.inference.status.lock().expect("status lock").clone();
    let newest = api.health.newest().get("latest").copied();
    let predicted = match (&model.version, newest) {
        (None, _) | (_, None) => true,
        (Some(_), Some(newest)) => model.last_tick.is_some_and(|t| newest - t <= max_age),
    };
    let check = |ok: bool, why: &str| {
        if ok {
            serde_json::json!({"ok": true})
        } else {
            serde_json::json!({"ok": false, "why": why})
        }
    };
    let ready = database && feed && engine && inference && predicted;
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "database": check(database, "the database does not answer"),
            "latest_feed": {
                "ok": feed,
                "age_seconds": feed_age,
                "why": (!feed).then(|| match feed_age {
                    None => "no /latest poll has succeeded yet".to_string(),
                    Some(age) => format!("the last successful /latest poll was {age} s ago (limit {max_age} s)"),
                }),
            },
            "feature_engine": check(engine, "the feature engine is not running"),
            "inference": check(inference, "the inference thread is not running"),
            "predictions": check(predicted, "the newest tick has not been predicted"),
        }
    });
    (ready, body)
}
