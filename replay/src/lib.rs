//! `gept-replay`: a local HTTP server that replays recorded API responses in
//! the API's exact format and paths, for tests, benchmarks and offline runs.
//!
//! Clocks: `step` serves the next recorded `/latest` snapshot on each request
//! (with a `Date` header equal to its recorded time) and keeps serving the last
//! one when the recording ends; `realtime` and `speed:N` run a virtual clock
//! from the first snapshot at N times real time. `/5m` and `/1h` answer the
//! newest complete bucket at the virtual time (or `?timestamp=`), and
//! `/timeseries` is derived from the bucket recordings. A missing recording
//! makes its endpoints answer 404. The news feed and the player count have no
//! recordings; they are served as small synthetic documents.
//!
//! Faults for tests: a share of API responses can be 500s, 429s with
//! `Retry-After`, slow, truncated or malformed (`--fault-rate`, `--faults`, or
//! at run time `POST /_mock/faults`). A faulted `/latest` request does not
//! consume a snapshot, so a client that retries loses nothing.

use bytes::Bytes;
use gept_core::recordings::{self, RecordingSet};
use gept_core::{wire, BucketPrice, BucketStep, ItemId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};
use warp::http::{Response, StatusCode};
use warp::Filter;

/// How the replay's virtual time moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clock {
    /// One recorded `/latest` snapshot per request.
    Step,
    /// From the first snapshot at this many times real time (`realtime` is 1).
    Speed(f64),
}

impl FromStr for Clock {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "step" => Ok(Clock::Step),
            "realtime" => Ok(Clock::Speed(1.0)),
            _ => s
                .strip_prefix("speed:")
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|n| *n > 0.0)
                .map(Clock::Speed)
                .ok_or_else(|| format!("clock {s:?} is not step, realtime or speed:N")),
        }
    }
}

/// A kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    #[serde(rename = "500")]
    ServerError,
    #[serde(rename = "429")]
    TooManyRequests,
    #[serde(rename = "slow")]
    Slow,
    #[serde(rename = "truncated")]
    Truncated,
    #[serde(rename = "malformed")]
    Malformed,
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("fault {s:?} is not one of 500, 429, slow, truncated, malformed"))
    }
}

/// The fault injection settings (also the body of `POST /_mock/faults`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Faults {
    /// Share of API responses that are faulted, 0..=1.
    pub rate: f64,
    pub kinds: Vec<FaultKind>,
    /// How long a slow response takes, in milliseconds.
    #[serde(default = "default_slow_ms")]
    pub slow_ms: u64,
}

fn default_slow_ms() -> u64 {
    3_000
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate: 0.0,
            kinds: Vec::new(),
            slow_ms: default_slow_ms(),
        }
    }
}

/// Options of the replay server.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub clock: Clock,
    pub faults: Faults,
    pub seed: u64,
    /// Serve only the first N `/latest` snapshots.
    pub max_snapshots: Option<usize>,
}

/// The recordings, loaded once.
struct Recorded {
    latest: Vec<(i64, Bytes)>,
    buckets: HashMap<BucketStep, BTreeMap<i64, Bytes>>,
    series: HashMap<(ItemId, BucketStep), Vec<BucketPrice>>,
    mapping: Option<Bytes>,
}

struct State {
    rec: Recorded,
    clock: Clock,
    started: Instant,
    /// Snapshots served so far (step clock).
    served: Mutex<usize>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
}

fn load(dir: &Path, max_snapshots: Option<usize>) -> anyhow::Result<Recorded> {
    let set = RecordingSet::new(dir);
    let mut latest = Vec::new();
    if let Some(path) = set.latest() {
        for snap in recordings::latest_snapshots(&path)?.take(max_snapshots.unwrap_or(usize::MAX)) {
            let snap = snap?;
            latest.push((snap.timestamp, Bytes::from(snap.body)));
        }
        latest.sort_by_key(|(t, _)| *t);
    }
    let mut buckets = HashMap::new();
    let mut series: HashMap<(ItemId, BucketStep), Vec<BucketPrice>> = HashMap::new();
    for (step, path) in [
        (BucketStep::FiveMinutes, set.five_minute()),
        (BucketStep::OneHour, set.hourly()),
    ] {
        let Some(path) = path else { continue };
        let mut by_time = BTreeMap::new();
        for b in recordings::bucket_snapshots(&path)? {
            for row in wire::parse_bucket(b.body.as_bytes())?.rows {
                series.entry((row.item_id, step)).or_default().push(row);
            }
            by_time.insert(b.timestamp, Bytes::from(b.body));
        }
        buckets.insert(step, by_time);
    }
    let mapping = set
        .mapping()
        .map(|p| recordings::read_all(&p))
        .transpose()?
        .map(Bytes::from);
    Ok(Recorded {
        latest,
        buckets,
        series,
        mapping,
    })
}

impl State {
    /// Virtual now, Unix seconds.
    fn now(&self) -> i64 {
        let first = self.rec.latest.first().map(|(t, _)| *t).unwrap_or(0);
        match self.clock {
            Clock::Step => {
                let served = *self.served.lock().unwrap();
                self.rec
                    .latest
                    .get(served.saturating_sub(1))
                    .map(|(t, _)| *t)
                    .unwrap_or(first)
            }
            Clock::Speed(n) => first + (self.started.elapsed().as_secs_f64() * n) as i64,
        }
    }

    fn status(&self) -> serde_json::Value {
        let total = self.rec.latest.len();
        let served = match self.clock {
            Clock::Step => *self.served.lock().unwrap(),
            Clock::Speed(_) => {
                let now = self.now();
                self.rec.latest.partition_point(|(t, _)| *t <= now)
            }
        };
        serde_json::json!({ "finished": served >= total, "served": served, "total": total, "now": self.now() })
    }

    fn pick_fault(&self) -> Option<FaultKind> {
        let f = self.faults.lock().unwrap().clone();
        if f.rate <= 0.0 || f.kinds.is_empty() {
            return None;
        }
        let mut rng = self.rng.lock().unwrap();
        rng.gen_bool(f.rate.min(1.0))
            .then(|| f.kinds[rng.gen_range(0..f.kinds.len())])
    }
}

fn http_date(ts: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64))
}

fn reply(
    status: StatusCode,
    body: Bytes,
    content_type: &str,
    date: Option<i64>,
) -> Response<Bytes> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", content_type);
    if let Some(d) = date {
        b = b.header("date", http_date(d));
    }
    b.body(body).expect("valid response")
}

fn not_found(what: &str) -> Response<Bytes> {
    reply(
        StatusCode::NOT_FOUND,
        Bytes::from(format!("{{\"error\":\"no recording for {what}\"}}")),
        "application/json",
        None,
    )
}

/// Applies an injected fault to a response that would have been `ok`.
async fn faulted(kind: FaultKind, ok: Response<Bytes>, slow: Duration) -> Response<Bytes> {
    match kind {
        FaultKind::ServerError => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"internal error"),
            "text/plain",
            None,
        ),
        FaultKind::TooManyRequests => {
            let mut r = reply(
                StatusCode::TOO_MANY_REQUESTS,
                Bytes::from_static(b"slow down"),
                "text/plain",
                None,
            );
            r.headers_mut()
                .insert("retry-after", warp::http::HeaderValue::from_static("1"));
            r
        }
        FaultKind::Slow => {
            tokio::time::sleep(slow).await;
            ok
        }
        FaultKind::Truncated => {
            let (parts, body) = ok.into_parts();
            Response::from_parts(parts, body.slice(..body.len() / 2))
        }
        FaultKind::Malformed => {
            let (parts, _) = ok.into_parts();
            Response::from_parts(
                parts,
                Bytes::from_static(b"{\"data\": {\"2\": {\"high\": 1,,}}"),
            )
        }
    }
}

fn latest(state: &State, fault: bool) -> Response<Bytes> {
    if state.rec.latest.is_empty() {
        return not_found("/latest");
    }
    let idx = match state.clock {
        Clock::Step => {
            let mut served = state.served.lock().unwrap();
            let idx = (*served).min(state.rec.latest.len() - 1);
            if !fault {
                *served = (*served + 1).min(state.rec.latest.len());
            }
            idx
        }
        Clock::Speed(_) => {
            let now = state.now();
            state
                .rec
                .latest
                .partition_point(|(t, _)| *t <= now)
                .saturating_sub(1)
        }
    };
    let (ts, body) = &state.rec.latest[idx];
    reply(StatusCode::OK, body.clone(), "application/json", Some(*ts))
}

fn bucket(state: &State, step: BucketStep, query: &HashMap<String, String>) -> Response<Bytes> {
    let Some(buckets) = state.rec.buckets.get(&step) else {
        return not_found(step.as_str());
    };
    let s = step.seconds();
    let ts = match query.get("timestamp").map(|t| t.parse::<i64>()) {
        Some(Ok(t)) => t,
        Some(Err(_)) => {
            return reply(
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"{\"error\":\"bad timestamp\"}"),
                "application/json",
                None,
            )
        }
        None => state.now().div_euclid(s) * s - s,
    };
    let body = buckets
        .get(&ts)
        .cloned()
        .unwrap_or_else(|| Bytes::from(format!("{{\"data\":{{}},\"timestamp\":{ts}}}")));
    reply(StatusCode::OK, body, "application/json", Some(state.now()))
}

fn timeseries(state: &State, query: &HashMap<String, String>) -> Response<Bytes> {
    let bad = |m: &str| {
        reply(
            StatusCode::BAD_REQUEST,
            Bytes::from(format!("{{\"error\":\"{m}\"}}")),
            "application/json",
            None,
        )
    };
    let Some(id) = query.get("id").and_then(|i| i.parse::<ItemId>().ok()) else {
        return bad("id is required");
    };
    let (step, group) = match query.get("timestep").map(String::as_str) {
        Some("5m") => (BucketStep::FiveMinutes, 1),
        Some("1h") => (BucketStep::OneHour, 1),
        Some("6h") => (BucketStep::OneHour, 6),
        Some("24h") => (BucketStep::OneHour, 24),
        _ => return bad("timestep must be 5m, 1h, 6h or 24h"),
    };
    if !state.rec.buckets.contains_key(&step) {
        return not_found("/timeseries");
    }
    let now = state.now();
    let width = step.seconds() * group;
    let rows = state
        .rec
        .series
        .get(&(id, step))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let points: Vec<serde_json::Value> = if group == 1 {
        // Native steps: the recorded rows as they are.
        rows.iter()
            .filter(|r| r.timestamp + width <= now)
            .map(|r| {
                serde_json::json!({
                    "timestamp": r.timestamp,
                    "avgHighPrice": r.avg_high_price,
                    "avgLowPrice": r.avg_low_price,
                    "highPriceVolume": r.high_price_volume,
                    "lowPriceVolume": r.low_price_volume,
                })
            })
            .collect()
    } else {
        // 6h and 24h: hourly rows grouped, prices volume-weighted.
        #[derive(Default)]
        struct Side {
            weighted: i128,
            weight: i64,
            volume: i64,
        }
        let add = |side: &mut Side, price: Option<i64>, volume: i64| {
            if let Some(p) = price {
                side.weighted += p as i128 * volume.max(1) as i128;
                side.weight += volume.max(1);
            }
            side.volume += volume;
        };
        let mut grouped: BTreeMap<i64, (Side, Side)> = BTreeMap::new();
        for r in rows
            .iter()
            .filter(|r| r.timestamp.div_euclid(width) * width + width <= now)
        {
            let g = grouped
                .entry(r.timestamp.div_euclid(width) * width)
                .or_default();
            add(&mut g.0, r.avg_high_price, r.high_price_volume);
            add(&mut g.1, r.avg_low_price, r.low_price_volume);
        }
        let avg = |s: &Side| (s.weight > 0).then(|| (s.weighted / s.weight as i128) as i64);
        grouped
            .iter()
            .map(|(t, (h, l))| {
                serde_json::json!({
                    "timestamp": t,
                    "avgHighPrice": avg(h),
                    "avgLowPrice": avg(l),
                    "highPriceVolume": h.volume,
                    "lowPriceVolume": l.volume,
                })
            })
            .collect()
    };
    let skip = points.len().saturating_sub(365);
    let body = serde_json::json!({ "data": &points[skip..], "itemId": id });
    reply(
        StatusCode::OK,
        Bytes::from(body.to_string()),
        "application/json",
        Some(now),
    )
}

fn news(state: &State) -> Response<Bytes> {
    let now = state.now();
    let mut items = String::new();
    for k in 0..3 {
        let t = now - now.rem_euclid(86_400) - k * 86_400 + 11 * 3600;
        items.push_str(&format!(
            "<item><title>Synthetic update {k}</title><link>https://example.invalid/news/{t}</link>\
             <guid>synthetic-{t}</guid><pubDate>{}</pubDate><category>Game Updates</category></item>",
            http_date(t)
        ));
    }
    let body = format!("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Synthetic OSRS news</title>{items}</channel></rss>");
    reply(
        StatusCode::OK,
        Bytes::from(body),
        "application/rss+xml",
        Some(now),
    )
}

fn player_count(state: &State) -> Response<Bytes> {
    let now = state.now();
    // Synthetic: a daily wave around 100,000 players.
    let players = 100_000
        + ((now.rem_euclid(86_400) as f64 / 86_400.0 * std::f64::consts::TAU).sin() * 20_000.0)
            as i64;
    let body = format!("<html><body><p class='player-count'>There are currently {players} people playing!</p></body></html>");
    reply(StatusCode::OK, Bytes::from(body), "text/html", Some(now))
}

/// A running replay server.
pub struct MockServer {
    pub addr: SocketAddr,
    /// Recorded `/latest` snapshots it serves.
    pub total_snapshots: usize,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }

    /// Base URL of the API paths (`http://addr/api/v1/osrs`).
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1/osrs", self.addr)
    }
}

/// Loads the recordings in `dir` and serves them on `listen`.
pub async fn start(
    dir: &Path,
    listen: SocketAddr,
    options: MockOptions,
) -> anyhow::Result<MockServer> {
    let dir = dir.to_owned();
    let max = options.max_snapshots;
    let rec = tokio::task::spawn_blocking(move || load(&dir, max)).await??;
    let total_snapshots = rec.latest.len();
    let state = Arc::new(State {
        rec,
        clock: options.clock,
        started: Instant::now(),
        served: Mutex::new(0),
        faults: Mutex::new(options.faults),
        rng: Mutex::new(StdRng::seed_from_u64(options.seed)),
    });
    let with_state = {
        let s = state.clone();
        warp::any().map(move || s.clone())
    };
    let query = warp::query::<HashMap<String, String>>();

    let api = warp::path!("api" / "v1" / "osrs" / String)
        .and(warp::get())
        .and(query)
        .and(with_state.clone())
        .then(
            |endpoint: String, q: HashMap<String, String>, s: Arc<State>| async move {
                let fault = s.pick_fault();
                let ok = match endpoint.as_str() {
                    "latest" => latest(&s, fault.is_some()),
                    "5m" => bucket(&s, BucketStep::FiveMinutes, &q),
                    "1h" => bucket(&s, BucketStep::OneHour, &q),
                    "timeseries" => timeseries(&s, &q),
                    "mapping" => match &s.rec.mapping {
                        Some(m) => {
                            reply(StatusCode::OK, m.clone(), "application/json", Some(s.now()))
                        }
                        None => not_found("/mapping"),
                    },
                    _ => not_found(&endpoint),
                };
                match fault {
                    Some(kind) if ok.status() == StatusCode::OK => {
                        let slow = Duration::from_millis(s.faults.lock().unwrap().slow_ms);
                        faulted(kind, ok, slow).await
                    }
                    _ => ok,
                }
            },
        );
    let news_route = warp::path!("m=news" / "latest_news.rss")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<State>| news(&s));
    let home = warp::path::end()
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<State>| player_count(&s));
    let status = warp::path!("_mock" / "status")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<State>| warp::reply::json(&s.status()));
    let set_faults = warp::path!("_mock" / "faults")
        .and(warp::post())
        .and(warp::body::json::<Faults>())
        .and(with_state.clone())
        .map(|f: Faults, s: Arc<State>| {
            *s.faults.lock().unwrap() = f.clone();
            warp::reply::json(&f)
        });
    let routes = api.or(news_route).or(home).or(status).or(set_faults);

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        warp::serve(routes)
            .incoming(listener)
            .graceful(async move {
                let _ = rx.await;
            })
            .run()
            .await;
    });
    Ok(MockServer {
        addr,
        total_snapshots,
        shutdown: Some(tx),
        task,
    })
}
