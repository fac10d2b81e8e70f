//! The versioned JSON API under `/api/v1` (warp), documented in
//! `docs/openapi.json` (served at `/api/v1/openapi.json`).
//!
//! Every `/api/v1` request passes the per-client rate limit first (429 with
//! Retry-After). Handlers read predictions and prices from the inference
//! snapshot without locks; history comes from the store. Errors are JSON
//! `{"error": "..."}` and never carry SQL or internals (those go to the log).

pub mod limits;
pub mod snapshot;
pub mod state;
pub mod stream;

use crate::offers;
use crate::recommend::{self, Risk, Style};
use gept_actors::inference::Prediction;
use gept_core::metrics as m;
use gept_core::{BucketStep, ItemId, ItemMeta, HORIZONS_H, N_TARGETS, OFFSETS_BP};
use serde::{Deserialize, Serialize};
pub use state::{ApiState, SharedMessage};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use warp::http::{header, StatusCode};
use warp::{Filter, Rejection, Reply};

/// The OpenAPI description of `/api/v1`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// An API error: a status and a message safe to show to clients.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn reject(status: StatusCode, message: impl Into<String>) -> Rejection {
        warp::reject::custom(ApiError {
            status,
            message: message.into(),
            retry_after: None,
        })
    }

    /// Logs the internal detail and answers a generic 500.
    pub fn internal(detail: impl std::fmt::Display) -> Rejection {
        tracing::error!(error = %detail, "request failed");
        Self::reject(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

fn json<T: Serialize>(v: &T) -> warp::reply::Response {
    warp::reply::json(v).into_response()
}

/// The client's IP address (`limits::client_ip`: `X-Forwarded-For` only
/// from a trusted proxy); `None` without a peer address.
fn client(state: ApiState) -> impl Filter<Extract = (Option<IpAddr>,), Error = Rejection> + Clone {
    warp::ext::optional::<crate::server::Peer>()
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .map(
            move |peer: Option<crate::server::Peer>, xff: Option<String>| {
                peer.map(|p| limits::client_ip(p.0.ip(), xff.as_deref(), &state.trusted_proxies))
            },
        )
}

/// The rate limit, by the client's IP address.
fn rate_limited(state: ApiState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    client(state.clone())
        .and_then(move |ip: Option<IpAddr>| {
            let state = state.clone();
            async move {
                let Some(ip) = ip else { return Ok(()) };
                state.limiter.check(ip, Instant::now()).map_err(|wait| {
                    metrics::counter!(m::RATE_LIMITED).increment(1);
                    warp::reject::custom(ApiError {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        message: "rate limit exceeded".into(),
                        retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                    })
                })
            }
        })
        .untuple_one()
}

/// Refuses a declared body over `max` bytes (413); admin calls read no body.
fn body_limit(max: u64) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |len: Option<u64>| async move {
            match len {
                Some(n) if n > max => Err(ApiError::reject(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over {max} bytes"),
                )),
                _ => Ok(()),
            }
        })
        .untuple_one()
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn admin(state: ApiState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |auth: Option<String>| {
            let token = state.admin_token.clone();
            async move {
                let Some(token) = token else {
                    return Err(ApiError::reject(
                        StatusCode::NOT_FOUND,
                        "admin endpoints are off: no admin token is configured",
                    ));
                };
                let given = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
                let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
                if ok {
                    Ok(())
                } else {
                    Err(ApiError::reject(
                        StatusCode::UNAUTHORIZED,
                        "a valid bearer token is required",
                    ))
                }
            }
        })
        .untuple_one()
}

#[derive(Debug, Serialize)]
struct LatestView {
    high: Option<i64>,
    high_time: Option<i64>,
    low: Option<i64>,
    low_time: Option<i64>,
    observed_at: i64,
}

#[derive(Debug, Serialize)]
struct ItemView<'a> {
    #[serde(flatten)]
    meta: &'a ItemMeta,
    latest: Option<LatestView>,
    /// Units traded in the newest `/1h` bucket.
    volume_1h: Option<f64>,
}

fn item_view<'a>(meta: &'a ItemMeta, state: &ApiState) -> ItemView<'a> {
    let snap = state.inference.snapshot.load();
    ItemView {
        meta,
        latest: snap.market.get(&meta.item_id).map(|mk| LatestView {
            high: mk.latest.high,
            high_time: mk.latest.high_time,
            low: mk.latest.low,
            low_time: mk.latest.low_time,
            observed_at: mk.latest.timestamp,
        }),
        volume_1h: snap.market.get(&meta.item_id).and_then(|mk| mk.volume_1h),
    }
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    step: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct PredictionsQuery {
    ids: Option<String>,
    horizon: Option<String>,
    offset: Option<String>,
    min_probability: Option<f32>,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RecommendationsQuery {
    capital: Option<i64>,
    risk: Option<String>,
    style: Option<String>,
    slots: Option<usize>,
    exclude: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ForceQuery {
    force: Option<bool>,
}

fn bad(msg: impl Into<String>) -> Rejection {
    ApiError::reject(StatusCode::BAD_REQUEST, msg)
}

fn parse_ids(s: &str) -> Result<Vec<ItemId>, Rejection> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| bad(format!("item id {x:?} is not a number")))
        })
        .collect()
}

/// Target indices selected by `horizon` (e.g. `4` or `4h`, comma separated)
/// and `offset` (percent, e.g. `1.25`).
fn select_targets(horizon: Option<&str>, offset: Option<&str>) -> Result<Vec<usize>, Rejection> {
    let horizons: Option<Vec<u32>> = horizon
        .map(|h| {
            h.split(',')
                .map(|x| {
                    let x = x.trim().trim_end_matches('h');
                    x.parse::<u32>()
                        .ok()
                        .filter(|h| HORIZONS_H.contains(h))
                        .ok_or_else(|| {
                            bad(format!(
                                "unknown horizon {x:?}; horizons are {HORIZONS_H:?} hours"
                            ))
                        })
                })
                .collect()
        })
        .transpose()?;
    let offsets: Option<Vec<u32>> = offset
        .map(|o| {
            o.split(',')
                .map(|x| {
                    let x = x.trim().trim_end_matches('%');
                    x.parse::<f64>()
                        .ok()
                        .map(|p| (p * 100.0).round() as u32)
                        .filter(|bp| OFFSETS_BP.contains(bp))
                        .ok_or_else(|| {
                            bad(format!(
                                "unknown offset {x:?}; offsets are 1.25, 1.5, … 2.5 percent"
                            ))
                        })
                })
                .collect()
        })
        .transpose()?;
    Ok((0..N_TARGETS)
        .filter(|t| {
            let (h, k) = (
                HORIZONS_H[t / OFFSETS_BP.len()],
                OFFSETS_BP[t % OFFSETS_BP.len()],
            );
            horizons.as_ref().is_none_or(|v| v.contains(&h))
                && offsets.as_ref().is_none_or(|v| v.contains(&k))
        })
        .collect())
}

/// Whether an `Accept-Encoding` value takes gzip (and does not refuse it
/// with `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// Whether an `If-None-Match` list names `etag` (or is `*`); compared
/// weakly, as RFC 9110 asks for `If-None-Match`.
fn etag_matches(tags: &str, etag: &str) -> bool {
    fn opaque(t: &str) -> &str {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t)
    }
    tags.split(',')
        .any(|t| t.trim() == "*" || opaque(t) == opaque(etag))
}

/// `304 Not Modified` with its `ETag` when `If-None-Match` names `etag`.
fn not_modified(if_none_match: Option<&str>, etag: &str) -> Option<warp::reply::Response> {
    if !if_none_match.is_some_and(|tags| etag_matches(tags, etag)) {
        return None;
    }
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    r.headers_mut()
        .insert(header::ETAG, etag.parse().expect("an ETag"));
    Some(r)
}

/// A JSON answer from encoded bytes (shared, not copied), gzip-encoded or
/// not, with an `ETag` when given; it varies by `Accept-Encoding`.
fn bytes_reply(body: bytes::Bytes, gzip: bool, etag: Option<&str>) -> warp::reply::Response {
    let mut r = warp::reply::Response::new(body.into());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("a header"),
    );
    h.insert(header::VARY, "Accept-Encoding".parse().expect("a header"));
    h.insert(header::CACHE_CONTROL, "no-cache".parse().expect("a header"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, "gzip".parse().expect("a header"));
    }
    if let Some(tag) = etag.and_then(|t| t.parse().ok()) {
        h.insert(header::ETAG, tag);
    }
    r
}

/// The data age of the snapshot in seconds; past `api.stale_after` a 503
/// saying so: no trade is advised on old prices.
fn fresh(
    state: &ApiState,
    snap: &gept_actors::inference::Snapshot,
) -> Result<Option<i64>, Rejection> {
    let now = chrono::Utc::now().timestamp();
    let age = snap.received_at.map(|r| (now - r).max(0));
    let bound = state.stale_after.as_secs() as i64;
    match age.filter(|&a| a > bound) {
        Some(age) => Err(ApiError::reject(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stale: the newest prices arrived {age} s ago (tick {}), more than the {bound} s bound; \
                 no trades are advised on old prices until the feed is back (see /api/v1/status)",
                snap.tick_time.unwrap_or_default()
            ),
        )),
        None => Ok(age),
    }
}

/// The recommendations answer (`GET /api/v1/recommendations`, the Discord
/// `/flip` command and the dashboard's Flips page all come here).
#[derive(Debug, Serialize)]
pub struct RecommendationsAnswer {
    pub tick_time: i64,
    pub received_at: Option<i64>,
    pub data_age_seconds: Option<i64>,
    pub model_version: Option<String>,
    pub capital: i64,
    pub risk: Risk,
    pub style: Style,
    pub slots: usize,
    pub recommendations: Vec<recommend::Recommendation>,
    pub screening: recommend::Screening,
    pub uncalibrated_horizons: Vec<u32>,
    /// Why the list is empty, in words; null when it is not.
    pub message: Option<String>,
}

/// Ranked recommendations on the current snapshot, or why there are none
/// (no model, a stale feed, a bad request).
pub fn recommend_now(
    state: &ApiState,
    capital: i64,
    risk: Risk,
    style: Style,
    slots: usize,
    exclude: HashSet<ItemId>,
) -> Result<RecommendationsAnswer, Rejection> {
    if capital <= 0 {
        return Err(bad("capital must be positive"));
    }
    if !(1..=8).contains(&slots) {
        return Err(bad("slots must be 1 to 8"));
    }
    let snap = state.inference.snapshot.load();
    let Some(tick_time) = snap.tick_time.filter(|_| !snap.predictions.is_empty()) else {
        return Err(no_model(state));
    };
    let uncalibrated = state.uncalibrated();
    let req = recommend::Request {
        capital,
        risk,
        style,
        slots,
        exclude,
        uncalibrated: uncalibrated.clone(),
        ranking: recommend::Ranking::ExpectedProfit,
    };
    let age = fresh(state, &snap)?;
    let (recs, screening) = recommend::recommend(
        &req,
        tick_time,
        &snap.predictions,
        &snap.market,
        &state.items.load(),
    );
    Ok(RecommendationsAnswer {
        tick_time,
        received_at: snap.received_at,
        data_age_seconds: age,
        model_version: snap.model_version.as_deref().map(str::to_string),
        capital,
        risk,
        style,
        slots,
        message: screening.why_empty(),
        recommendations: recs,
        screening,
        uncalibrated_horizons: uncalibrated,
    })
}

/// Judges an offer on the current snapshot (`offers::check`).
pub fn check_offer(
    state: &ApiState,
    snap: &gept_actors::inference::Snapshot,
    offer: &offers::Offer,
    uncalibrated: &[u32],
) -> Result<offers::Check, Rejection> {
    offer.validate().map_err(bad)?;
    let Some(tick_time) = snap.tick_time.filter(|_| !snap.predictions.is_empty()) else {
        return Err(no_model(state));
    };
    let items = state.items.load();
    let (Some(pred), Some(market)) = (
        snap.predictions.get(&offer.item_id),
        snap.market.get(&offer.item_id),
    ) else {
        return Err(ApiError::reject(
            StatusCode::NOT_FOUND,
            format!(
                "no prediction for item {} at tick {tick_time}",
                offer.item_id
            ),
        ));
    };
    offers::check(
        offer,
        pred,
        market,
        items.get(&offer.item_id),
        tick_time,
        uncalibrated,
    )
    .map_err(|e| ApiError::reject(StatusCode::UNPROCESSABLE_ENTITY, e))
}

fn no_model(state: &ApiState) -> Rejection {
    let status = state.inference.status.lock().expect("status lock").clone();
    ApiError::reject(
        StatusCode::SERVICE_UNAVAILABLE,
        // The cause of a failed load (a file path, a checksum) is for
        // operators: it is in the service's log, not in a public answer.
        if status.last_error.is_some() {
            "no model is active: the ACTIVE model failed to load (the service log says why)"
        } else {
            "no model is active: register one with `gept model register DIR --activate`"
        },
    )
}

/// The routes under `/api/v1`.
pub fn routes(
    state: ApiState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let s = warp::any().map({
        let state = state.clone();
        move || state.clone()
    });
    let v1 = warp::path("api").and(warp::path("v1"));

    let openapi = warp::path!("openapi.json").and(warp::get()).map(|| {
        warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response()
    });

    let items = warp::path!("items")
        .and(warp::get())
        .and(s.clone())
        .map(|state: ApiState| {
            let metas = state.items.load();
            let mut list: Vec<&ItemMeta> = metas.values().collect();
            list.sort_by_key(|m| m.item_id);
            let views: Vec<ItemView> = list.into_iter().map(|m| item_view(m, &state)).collect();
            json(&serde_json::json!({"count": views.len(), "items": views}))
        });

    let item = warp::path!("items" / ItemId)
        .and(warp::get())
        .and(s.clone())
        .and_then(|id: ItemId, state: ApiState| async move {
            let metas = state.items.load();
            let meta = metas
                .get(&id)
                .ok_or_else(|| ApiError::reject(StatusCode::NOT_FOUND, format!("no item {id}")))?;
            Ok::<_, Rejection>(json(&item_view(meta, &state)))
        });

    let history = warp::path!("items" / ItemId / "history")
        .and(warp::get())
        .and(warp::query::<HistoryQuery>())
        .and(s.clone())
        .and_then(|id: ItemId, q: HistoryQuery, state: ApiState| async move {
            let step = q.step.as_deref().unwrap_or("5m");
            let snap_time = state.inference.snapshot.load().tick_time;
            let to =
                q.to.unwrap_or_else(|| snap_time.map_or(chrono::Utc::now().timestamp(), |t| t + 1));
            let span = match step {
                "1m" => 86_400,
                "5m" => 7 * 86_400,
                "1h" => 90 * 86_400,
                other => return Err(bad(format!("step {other:?} is not 1m, 5m or 1h"))),
            };
            let from = q.from.unwrap_or(to - span);
            if from > to {
                return Err(bad("from is after to"));
            }
            let limit = q.limit.unwrap_or(5_000);
            if !(1..=20_000).contains(&limit) {
                return Err(bad(format!("limit {limit} is outside 1 to 20000")));
            }
            let points = match step {
                "1m" => serde_json::to_value(
                    state
                        .store
                        .item_latest(id, from, to, limit)
                        .await
                        .map_err(ApiError::internal)?,
                ),
                "5m" => serde_json::to_value(
                    state
                        .store
                        .item_buckets(BucketStep::FiveMinutes, id, from, to, limit)
                        .await
                        .map_err(ApiError::internal)?,
                ),
                _ => serde_json::to_value(
                    state
                        .store
                        .item_buckets(BucketStep::OneHour, id, from, to, limit)
                        .await
                        .map_err(ApiError::internal)?,
                ),
            }
            .map_err(ApiError::internal)?;
            Ok(json(&serde_json::json!({
                "item_id": id, "step": step, "from": from, "to": to, "points": points,
            })))
        });

    let predictions = warp::path!("predictions")
        .and(warp::get())
        .and(warp::query::<PredictionsQuery>())
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(warp::header::optional::<String>("if-none-match"))
        .and(s.clone())
        .and_then(
            |q: PredictionsQuery,
             encoding: Option<String>,
             if_none_match: Option<String>,
             state: ApiState| async move {
                let form = snapshot::Form::parse(q.format.as_deref()).map_err(bad)?;
                let targets = select_targets(q.horizon.as_deref(), q.offset.as_deref())?;
                let ids: Option<HashSet<ItemId>> = q
                    .ids
                    .as_deref()
                    .map(parse_ids)
                    .transpose()?
                    .map(|v| v.into_iter().collect());
                let min = q.min_probability.unwrap_or(0.0);
                if !(0.0..=1.0).contains(&min) {
                    return Err(bad(format!("min_probability {min} is not between 0 and 1")));
                }
                let snap = state.inference.snapshot.load_full();
                if snap.model_version.is_none() && snap.predictions.is_empty() {
                    return Err(no_model(&state));
                }
                let gzip_ok = encoding.as_deref().is_some_and(accepts_gzip);
                if ids.is_none() && targets.len() == N_TARGETS && min <= 0.0 {
                    // The whole universe: encoded once per tick, shared.
                    // Encoding (tens of ms on the whole universe) runs off
                    // the async workers, once per tick; later requests take
                    // the cached bytes directly.
                    let encoded = match state.snapshots.cached(&snap, form) {
                        Some(e) => e,
                        None => {
                            let cache = state.snapshots.clone();
                            let snap2 = snap.clone();
                            tokio::task::spawn_blocking(move || cache.get(&snap2, form))
                                .await
                                .map_err(ApiError::internal)?
                        }
                    };
                    if let Some(r) = not_modified(if_none_match.as_deref(), &encoded.etag) {
                        return Ok(r);
                    }
                    let body = if gzip_ok {
                        encoded.gzip.clone()
                    } else {
                        encoded.json.clone()
                    };
                    return Ok(bytes_reply(body, gzip_ok, Some(&encoded.etag)));
                }
                let mut list: Vec<&Arc<Prediction>> = snap
                    .predictions
                    .values()
                    .filter(|p| ids.as_ref().is_none_or(|s| s.contains(&p.item_id)))
                    .filter(|p| min <= 0.0 || targets.iter().any(|&t| p.probabilities[t] >= min))
                    .collect();
                list.sort_by_key(|p| p.item_id);
                let json = snapshot::encode(&snap, &list, Some(&targets), form);
                let (body, gz) = if gzip_ok && json.len() > 1024 {
                    (snapshot::gzip(&json), true)
                } else {
                    (json, false)
                };
                Ok::<_, Rejection>(bytes_reply(body.into(), gz, None))
            },
        );

    let prediction = warp::path!("predictions" / ItemId)
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .and(s.clone())
        .and_then(
            |id: ItemId, if_none_match: Option<String>, state: ApiState| async move {
                let snap = state.inference.snapshot.load_full();
                match state.item_bodies.get(&snap, id) {
                    Some((object, etag)) => {
                        if let Some(r) = not_modified(if_none_match.as_deref(), &etag) {
                            return Ok(r);
                        }
                        // The encoded prediction, with when its tick arrived
                        // and how old that is.
                        let now = chrono::Utc::now().timestamp();
                        let mut body = Vec::with_capacity(object.len() + 64);
                        body.extend_from_slice(&object);
                        let (received, age) = match snap.received_at {
                            Some(r) => (r.to_string(), (now - r).max(0).to_string()),
                            None => ("null".into(), "null".into()),
                        };
                        body.extend_from_slice(
                            format!(",\"received_at\":{received},\"data_age_seconds\":{age}}}")
                                .as_bytes(),
                        );
                        Ok(bytes_reply(body.into(), false, Some(&etag)))
                    }
                    None if snap.model_version.is_none() && snap.predictions.is_empty() => {
                        Err(no_model(&state))
                    }
                    None => Err(ApiError::reject(
                        StatusCode::NOT_FOUND,
                        format!("no prediction for item {id}"),
                    )),
                }
            },
        );

    let recommendations = warp::path!("recommendations")
        .and(warp::get())
        .and(warp::query::<RecommendationsQuery>())
        .and(s.clone())
        .and_then(|q: RecommendationsQuery, state: ApiState| async move {
            let capital = q.capital.ok_or_else(|| bad("capital (gp) is required"))?;
            let risk: Risk = q.risk.as_deref().unwrap_or("medium").parse().map_err(bad)?;
            let style: Style = q
                .style
                .as_deref()
                .unwrap_or("hybrid")
                .parse()
                .map_err(bad)?;
            let exclude: HashSet<ItemId> = q
                .exclude
                .as_deref()
                .map(parse_ids)
                .transpose()?
                .unwrap_or_default()
                .into_iter()
                .collect();
            let a = recommend_now(&state, capital, risk, style, q.slots.unwrap_or(8), exclude)?;
            Ok::<_, Rejection>(json(&a))
        });

    // The offer advisor (src/offers.rs, docs/API.md).
    let offer_check = warp::path!("offers" / "check")
        .and(warp::post())
        .and(warp::body::content_length_limit(state.max_body_bytes))
        .and(warp::body::bytes())
        .and(s.clone())
        .and_then(|body: bytes::Bytes, state: ApiState| async move {
            let offer: offers::Offer = serde_json::from_slice(&body).map_err(|e| {
                bad(format!(
                    "unreadable offer ({e}); expected {{\"item_id\":id,\"side\":\"buy\"|\"sell\",\"price\":gp,\"quantity\":n,\
                     \"placed_at\":unix?,\"horizon_hours\":h?,\"target_probability\":p?}}"
                ))
            })?;
            let snap = state.inference.snapshot.load();
            let age = fresh(&state, &snap)?;
            let check = check_offer(&state, &snap, &offer, &state.uncalibrated())?;
            let mut v = serde_json::to_value(&check).map_err(ApiError::internal)?;
            v["model_version"] = serde_json::json!(snap.model_version.as_deref());
            v["received_at"] = serde_json::json!(snap.received_at);
            v["data_age_seconds"] = serde_json::json!(age);
            Ok::<_, Rejection>(json(&v))
        });

    // The ACTIVE model's newest backtest (`gept backtest --store`; the
    // trainer makes one after each training).
    let backtest = warp::path!("backtest")
        .and(warp::get())
        .and(s.clone())
        .and_then(|state: ApiState| async move {
            let version = state.inference.status.lock().expect("status lock").version.clone();
            let Some(version) = version else {
                return Err(no_model(&state));
            };
            match state.store.backtest(&version).await.map_err(ApiError::internal)? {
                Some((created_at, report)) => {
                    let report: serde_json::Value =
                        serde_json::from_str(&report).map_err(ApiError::internal)?;
                    Ok::<_, Rejection>(json(&serde_json::json!({
                        "model_version": version, "created_at": created_at, "report": report,
                    })))
                }
                // Not yet: said in the answer (the dashboard shows it).
                None => Ok(json(&serde_json::json!({
                    "model_version": version, "created_at": null, "report": null,
                    "message": format!(
                        "no backtest of the ACTIVE model {version} yet: the trainer makes one after each training, \
                         or run `gept backtest --from-db --model DIR --store`"
                    ),
                }))),
            }
        });

    // The live accuracy monitor's figures (docs/API.md).
    let accuracy =
        warp::path!("accuracy")
            .and(warp::get())
            .and(s.clone())
            .map(|state: ApiState| match &state.accuracy {
                Some(monitor) => json(&**monitor.report.load()),
                None => json(&serde_json::json!({
                    "enabled": false,
                    "message": "the live accuracy monitor is off (accuracy.enabled)",
                })),
            });

    let status = warp::path!("status").and(warp::get()).and(s.clone()).map(|state: ApiState| {
        let now = chrono::Utc::now().timestamp();
        let snap = state.inference.snapshot.load();
        let model = state.inference.status.lock().expect("status lock").clone();
        let freshness: serde_json::Map<String, serde_json::Value> = state
            .health
            .newest()
            .into_iter()
            .map(|(feed, t)| (feed, serde_json::json!({"newest": t, "age_seconds": now - t})))
            .collect();
        json(&serde_json::json!({
            "service": "gept",
            "version": env!("CARGO_PKG_VERSION"),
            "role": state.role.name(),
            "started_at": state.started_at,
            "stale_after_seconds": state.stale_after.as_secs(),
            "now": now,
            "last_tick": snap.tick_time,
            // When the newest tick arrived here: what "live" is judged on
            // (the upstream's own times can lag or, replayed, be old).
            "received_at": snap.received_at,
            "data_age_seconds": snap.received_at.map(|r| (now - r).max(0)),
            "stale": snap.received_at.is_none_or(|r| now - r > state.stale_after.as_secs() as i64),
            "items_tracked": snap.market.len(),
            "items_predicted": snap.predictions.len(),
            "model": {
                "active": model.version.is_some(),
                "version": model.version,
                "loaded_at": model.loaded_at,
                "device": model.device,
                "load_failed": model.last_error.is_some(),
                "last_tick": model.last_tick,
                "last_latency_ms": model.last_latency_ms,
                "ticks": model.ticks,
                "uncalibrated_horizons": model.uncalibrated_horizons,
                "live_calibrated_horizons": model.live_calibrated_horizons,
                "message": if model.version.is_none() { Some("no model is active; prices are collected and served") } else { None },
            },
            "collectors": state.health.collectors(),
            "freshness": freshness,
            "trainer": state.trainer.as_ref().map(|t| t.status.lock().expect("trainer status").clone()),
            "accuracy": state.accuracy.as_ref().map(|a| {
                let r = a.report.load();
                let newest = r.models.first();
                serde_json::json!({
                    "through": r.through,
                    "updated_at": r.updated_at,
                    "version": newest.map(|m| &m.version),
                    "drift": newest.is_some_and(|m| m.drift),
                    "groups": newest.map(|m| m.groups.iter().map(|g| serde_json::json!({
                        "group": g.group, "labels": g.live.labels, "brier": g.live.brier,
                        "auc": g.live.auc, "ece": g.live.ece, "drift": g.drift,
                    })).collect::<Vec<_>>()),
                })
            }),
        }))
    });

    let ws = warp::path!("stream")
        .and(warp::ws())
        .and(client(state.clone()))
        .and(s.clone())
        .and_then(
            |ws: warp::ws::Ws, ip: Option<IpAddr>, state: ApiState| async move {
                let ip = ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                let slot = state
                    .ws_slots
                    .acquire(ip)
                    .map_err(|why| ApiError::reject(StatusCode::TOO_MANY_REQUESTS, why))?;
                // The transport accepts up to four times the limit so that an
                // oversized message is read and refused with close code 1009
                // (message too big) by the client task, not dropped unexplained.
                let transport_max = state.ws_max_message_bytes.saturating_mul(4);
                Ok::<_, Rejection>(
                    ws.max_message_size(transport_max)
                        .max_frame_size(transport_max)
                        .on_upgrade(move |socket| stream::client(socket, state, slot))
                        .into_response(),
                )
            },
        );

    let admin_reload = warp::path!("admin" / "models" / "reload")
        .and(warp::post())
        .and(admin(state.clone()))
        .and(body_limit(state.max_body_bytes))
        .and(s.clone())
        .and_then(|state: ApiState| async move {
            let version = state
                .inference
                .reload()
                .await
                .map_err(|e| ApiError::reject(StatusCode::CONFLICT, e))?;
            Ok::<_, Rejection>(json(&serde_json::json!({"model_version": version})))
        });

    let admin_activate = warp::path!("admin" / "models" / String / "activate")
        .and(warp::post())
        .and(admin(state.clone()))
        .and(body_limit(state.max_body_bytes))
        .and(warp::query::<ForceQuery>())
        .and(s.clone())
        .and_then(|version: String, q: ForceQuery, state: ApiState| async move {
            let known = state.store.models().await.map_err(ApiError::internal)?;
            if !known.iter().any(|m| m.version == version) {
                return Err(ApiError::reject(
                    StatusCode::NOT_FOUND,
                    format!("no model {version} in the registry"),
                ));
            }
            let verdict = gept_model::registry::activate_gated(
                &state.store,
                &version,
                q.force.unwrap_or(false),
                chrono::Utc::now().timestamp(),
                true,
            )
                .await
                .map_err(|e| ApiError::reject(StatusCode::CONFLICT, e.to_string()))?;
            if !verdict.passed && !q.force.unwrap_or(false) {
                return Err(ApiError::reject(
                    StatusCode::CONFLICT,
                    format!("model {version} fails the activation gates: {}", verdict.reasons.join("; ")),
                ));
            }
            let loaded = state.inference.reload().await.map_err(|e| ApiError::reject(StatusCode::CONFLICT, e))?;
            Ok::<_, Rejection>(json(&serde_json::json!({"activated": version, "model_version": loaded, "gates": verdict.reasons})))
        });

    // An item id that is not a number: 400 naming it, not 404 (the typed
    // routes above take every numeric id first).
    let not_an_id = warp::path("items")
        .or(warp::path("predictions"))
        .unify()
        .and(warp::path::param::<String>())
        .and(warp::path::tail())
        .and(warp::get())
        .and_then(|id: String, _: warp::path::Tail| async move {
            if id.parse::<ItemId>().is_ok() {
                return Err::<warp::reply::Response, _>(warp::reject::not_found());
            }
            Err(bad(format!("item id {id:?} is not a number")))
        });

    let admin_retention = warp::path!("admin" / "retention")
        .and(warp::post())
        .and(admin(state.clone()))
        .and(body_limit(state.max_body_bytes))
        .and(s.clone())
        .and_then(|state: ApiState| async move {
            let report = gept_actors::retention::run_now(&state.store, &state.retention)
                .await
                .map_err(ApiError::internal)?;
            Ok::<_, Rejection>(json(&report))
        });

    v1.and(rate_limited(state)).and(
        openapi
            .or(items)
            .unify()
            .or(item)
            .unify()
            .or(history)
            .unify()
            .or(predictions)
            .unify()
            .or(prediction)
            .unify()
            .or(recommendations)
            .unify()
            .or(offer_check)
            .unify()
            .or(status)
            .unify()
            .or(accuracy)
            .unify()
            .or(backtest)
            .unify()
            .or(ws)
            .unify()
            .or(admin_reload)
            .unify()
            .or(admin_activate)
            .unify()
            .or(admin_retention)
            .unify()
            .or(not_an_id)
            .unify(),
    )
}

/// Turns rejections into JSON errors with the right status; nothing internal leaks.
pub async fn recover(err: Rejection) -> Result<warp::reply::Response, std::convert::Infallible> {
    let (status, message, retry_after) = if let Some(e) = err.find::<ApiError>() {
        (e.status, e.message.clone(), e.retry_after)
    } else if err.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_string(), None)
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".into(),
            None,
        )
    } else if err.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid query string".into(), None)
    } else if err
        .find::<warp::filters::ws::MissingConnectionUpgrade>()
        .is_some()
    {
        (
            StatusCode::UPGRADE_REQUIRED,
            "this route is a websocket: send Connection: upgrade and Upgrade: websocket".into(),
            None,
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".into(),
            None,
        )
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "content-length required".into(),
            None,
        )
    } else if let Some(e) = err.find::<warp::filters::cors::CorsForbidden>() {
        (StatusCode::FORBIDDEN, e.to_string(), None)
    } else if err.find::<warp::reject::MissingHeader>().is_some()
        || err.find::<warp::reject::InvalidHeader>().is_some()
    {
        (
            StatusCode::BAD_REQUEST,
            "missing or invalid header".into(),
            None,
        )
    } else {
        tracing::warn!(rejection = ?err, "unhandled rejection");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".into(),
            None,
        )
    };
    let mut resp = warp::reply::with_status(
        warp::reply::json(&serde_json::json!({"error": message})),
        status,
    )
    .into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut().insert("retry-after", secs.into());
    }
    Ok(resp)
}

/// A bounded route label for metrics: ids become `{id}`.
pub fn route_label(path: &str) -> String {
    let known = [
        "healthz",
        "readyz",
        "metrics",
        "api",
        "v1",
        "items",
        "history",
        "predictions",
        "recommendations",
        "status",
        "stream",
        "openapi.json",
        "admin",
        "models",
        "reload",
        "activate",
        "retention",
        "accuracy",
        "backtest",
        "offers",
        "check",
        "discord",
        "interactions",
        "assets",
        "app.js",
        "chart.js",
        "style.css",
    ];
    let mut out = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if known.contains(&seg) {
            out.push_str(seg);
        } else if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str("{id}");
        } else if path.starts_with("/api/v1/admin/models/") {
            out.push_str("{version}");
        } else {
            return "other".into();
        }
    }
    if out.is_empty() {
        "/".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn if_none_match_compares_etags_weakly_and_accepts_a_list_or_star() {
        use super::etag_matches;
        assert!(etag_matches(r#""a-1""#, r#""a-1""#));
        assert!(etag_matches(r#"W/"a-1""#, r#""a-1""#));
        assert!(etag_matches(r#""x", W/"a-1""#, r#"W/"a-1""#));
        assert!(etag_matches("*", r#""a-1""#));
        assert!(!etag_matches(r#""a-2""#, r#""a-1""#));
        assert!(!etag_matches(r#""a-1"#, r#""a-1""#));
    }
}
