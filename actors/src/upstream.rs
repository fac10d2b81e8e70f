//! The client of the OSRS Wiki prices API (and of the news feed and the
//! player-count page).
//!
//! A descriptive User-Agent is required. Each request has a timeout; failures
//! are retried with exponential backoff and full jitter; `429` honours
//! `Retry-After` up to `backoff_max`; one circuit breaker per upstream host
//! opens after consecutive failures so a dead host is not hammered and a
//! failing optional feed (news, player count) never blocks `/latest`. A
//! client made with [`UpstreamClient::with_cancel`] abandons its waits and
//! requests at once when the service stops. Bodies are parsed by
//! [`gept_core::wire`].

use gept_core::config::UpstreamConfig;
use gept_core::wire::{self, Parsed, ParsedBucket, WireError};
use gept_core::{BucketPrice, BucketStep, ItemId, ItemMeta, LatestPrice, NewsItem};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a fetch failed (after its retries).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no User-Agent configured: set GEPT__UPSTREAM__USER_AGENT to a descriptive agent with contact details (the API blocks default agents)")]
    NoUserAgent,
    #[error("invalid upstream URL {0}")]
    Url(String),
    #[error("HTTP {status} from {url}")]
    Status { status: u16, url: String },
    #[error("rate limited by upstream (429), retry after {0:?}")]
    RateLimited(Duration),
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("request to {url} timed out")]
    Timeout { url: String },
    #[error("bad body from {url}: {source}")]
    Body { url: String, source: WireError },
    #[error("circuit open after repeated failures; next try in {0:?}")]
    CircuitOpen(Duration),
    #[error("the service is stopping")]
    Cancelled,
}

impl FetchError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::NoUserAgent | FetchError::Url(_) => "config",
            FetchError::Status { .. } => "status",
            FetchError::RateLimited(_) => "rate_limited",
            FetchError::Transport { .. } => "transport",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Body { .. } => "body",
            FetchError::CircuitOpen(_) => "circuit_open",
            FetchError::Cancelled => "cancelled",
        }
    }
}

/// A response body and when it was observed.
#[derive(Debug, Clone)]
pub struct Response {
    pub body: bytes::Bytes,
    /// The HTTP `Date` header (Unix seconds), or the local clock without one.
    pub observed_at: i64,
    /// When the response arrived (for latency metrics).
    pub arrived: std::time::Instant,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

/// The upstream client; cheap to clone (shares its connection pool and breakers).
#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    config: UpstreamConfig,
    /// One breaker per `host:port`.
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
    cancel: CancellationToken,
}

/// The breaker key of a URL: its host and port.
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_default()
}

impl UpstreamClient {
    /// Builds a client; refuses an empty User-Agent.
    pub fn new(config: &UpstreamConfig) -> Result<Self, FetchError> {
        if config.user_agent.trim().is_empty() {
            return Err(FetchError::NoUserAgent);
        }
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .gzip(true)
            .build()
            .map_err(|e| FetchError::Transport {
                url: String::new(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            config: config.clone(),
            breakers: Arc::default(),
            cancel: CancellationToken::new(),
        })
    }

    /// The same client, abandoning waits and requests once `cancel` fires.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Whether the breaker of `url`'s host is open now.
    pub fn breaker_open(&self, url: &str) -> bool {
        self.check_breaker(&host_of(url)).is_err()
    }

    /// The URL of an API path (e.g. `latest`).
    pub fn api_url(&self, path: &str) -> String {
        self.api(path)
    }

    fn api(&self, path: &str) -> String {
        format!("{}/{}", self.config.base_url.trim_end_matches('/'), path)
    }

    /// Backoff before retry `attempt` (0-based): full jitter over an
    /// exponentially growing ceiling.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.config.backoff_max);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis.max(1)))
    }

    fn check_breaker(&self, host: &str) -> Result<(), FetchError> {
        let breakers = self.breakers.lock().unwrap();
        match breakers.get(host).and_then(|b| b.open_until) {
            Some(until) if Instant::now() < until => {
                Err(FetchError::CircuitOpen(until - Instant::now()))
            }
            _ => Ok(()),
        }
    }

    fn record(&self, host: &str, ok: bool) {
        let mut breakers = self.breakers.lock().unwrap();
        let b = breakers.entry(host.to_string()).or_default();
        if ok {
            if b.open_until.is_some() {
                metrics::gauge!(gept_core::metrics::UPSTREAM_BREAKER_OPEN, "host" => host.to_string())
                    .set(0.0);
            }
            b.consecutive_failures = 0;
            b.open_until = None;
        } else {
            b.consecutive_failures += 1;
            if b.consecutive_failures >= self.config.breaker_failures {
                b.open_until = Some(Instant::now() + self.config.breaker_cooldown);
                metrics::counter!(gept_core::metrics::UPSTREAM_BREAKER_OPENED, "host" => host.to_string())
                    .increment(1);
                metrics::gauge!(gept_core::metrics::UPSTREAM_BREAKER_OPEN, "host" => host.to_string())
                    .set(1.0);
                tracing::warn!(
                    host,
                    failures = b.consecutive_failures,
                    "upstream circuit opened"
                );
            }
        }
    }

    async fn get_once(&self, url: &str) -> Result<Response, FetchError> {
        let resp = self.http.get(url).send().await.map_err(|e| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: url.to_string(),
                }
            } else {
                FetchError::Transport {
                    url: url.to_string(),
                    message: e.to_string(),
                }
            }
        })?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(self.config.backoff_base)
                .min(self.config.backoff_max);
            return Err(FetchError::RateLimited(wait));
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
                url: url.to_string(),
            });
        }
        let observed_at = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        let body = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: url.to_string(),
                }
            } else {
                FetchError::Transport {
                    url: url.to_string(),
                    message: e.to_string(),
                }
            }
        })?;
        Ok(Response {
            body,
            observed_at,
            arrived: std::time::Instant::now(),
        })
    }

    /// GETs `url` and parses it with `parse`, retrying transport errors, bad
    /// statuses and unparsable bodies.
    async fn fetch<T>(
        &self,
        url: &str,
        parse: impl Fn(&Response) -> Result<T, WireError>,
    ) -> Result<(T, Response), FetchError> {
        let host = host_of(url);
        let mut attempt = 0;
        loop {
            self.check_breaker(&host)?;
            let once = tokio::select! {
                r = self.get_once(url) => r,
                _ = self.cancel.cancelled() => return Err(FetchError::Cancelled),
            };
            let result = once.and_then(|r| match parse(&r) {
                Ok(v) => Ok((v, r)),
                Err(source) => Err(FetchError::Body {
                    url: url.to_string(),
                    source,
                }),
            });
            match result {
                Ok(ok) => {
                    self.record(&host, true);
                    return Ok(ok);
                }
                Err(e) => {
                    // A 4xx other than 429 is an answer from a live host about
                    // this request, not a sign the host is down.
                    let host_failed = !matches!(
                        e,
                        FetchError::Status { status, .. } if (400..500).contains(&status)
                    );
                    self.record(&host, !host_failed);
                    metrics::counter!(gept_core::metrics::UPSTREAM_ERRORS, "kind" => e.kind())
                        .increment(1);
                    let retryable =
                        !matches!(e, FetchError::Status { status, .. } if status == 404);
                    if !retryable || attempt >= self.config.max_retries {
                        return Err(e);
                    }
                    let wait = match &e {
                        FetchError::RateLimited(after) => (*after).max(self.backoff(attempt)),
                        _ => self.backoff(attempt),
                    };
                    tracing::debug!(%url, error = %e, ?wait, attempt, "retrying upstream request");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.cancel.cancelled() => return Err(FetchError::Cancelled),
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// GETs an API path (e.g. `latest`) with retries, without parsing it:
    /// for benchmarks that time HTTP and parsing apart.
    pub async fn get_api(&self, path: &str) -> Result<Response, FetchError> {
        Ok(self.fetch(&self.api(path), |_| Ok(())).await?.1)
    }

    /// `/latest`, stamped with the response's `Date`.
    pub async fn latest(&self) -> Result<(Parsed<LatestPrice>, Response), FetchError> {
        self.fetch(&self.api("latest"), |r| {
            wire::parse_latest(&r.body, r.observed_at)
        })
        .await
    }

    /// `/5m` or `/1h`; `timestamp` asks for an older bucket.
    pub async fn bucket(
        &self,
        step: BucketStep,
        timestamp: Option<i64>,
    ) -> Result<(ParsedBucket, Response), FetchError> {
        let mut url = self.api(step.as_str());
        if let Some(t) = timestamp {
            url.push_str(&format!("?timestamp={t}"));
        }
        self.fetch(&url, |r| wire::parse_bucket(&r.body)).await
    }

    /// `/timeseries?id=&timestep=` (5m or 1h).
    pub async fn timeseries(
        &self,
        item: ItemId,
        step: BucketStep,
    ) -> Result<Parsed<BucketPrice>, FetchError> {
        let url = self.api(&format!("timeseries?id={item}&timestep={}", step.as_str()));
        Ok(self
            .fetch(&url, |r| wire::parse_timeseries(&r.body, item))
            .await?
            .0)
    }

    /// `/mapping`.
    pub async fn mapping(&self) -> Result<Parsed<ItemMeta>, FetchError> {
        Ok(self
            .fetch(&self.api("mapping"), |r| wire::parse_mapping(&r.body))
            .await?
            .0)
    }

    /// The OSRS news RSS feed.
    pub async fn news(&self) -> Result<Vec<NewsItem>, FetchError> {
        let url = self.config.news_url.clone();
        Ok(self
            .fetch(&url, |r| {
                wire::parse_news(&String::from_utf8_lossy(&r.body))
            })
            .await?
            .0)
    }

    /// The player count on the OSRS home page, stamped with the response's `Date`.
    pub async fn player_count(&self) -> Result<gept_core::PlayerCount, FetchError> {
        let url = self.config.player_count_url.clone();
        let (players, r) = self
            .fetch(&url, |r| {
                wire::parse_player_count(&String::from_utf8_lossy(&r.body))
            })
            .await?;
        Ok(gept_core::PlayerCount {
            timestamp: r.observed_at,
            players,
        })
    }
}
