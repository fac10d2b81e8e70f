//! Collector actors: one per upstream feed, each supervised.
//!
//! Every collector implements [`Collector`] and is listed once in
//! [`registry`]; adding a feed is one entry there. A [`CollectorActor`] polls
//! its collector on the configured schedule; a failed or panicking poll stops
//! the actor and its actix `Supervisor` restarts it after a backoff that
//! doubles from `supervisor.restart_min` to `supervisor.restart_max`. What a
//! poll fetched is kept in the collector until it is handed to the store
//! writer, so a crash mid-batch loses nothing.

use crate::health::Health;
use crate::supervise::Faults;
use crate::upstream::{FetchError, UpstreamClient};
use crate::writer::{Flush, Rows, StoreWriter, Write};
use actix::prelude::*;
use futures::future::BoxFuture;
use futures::FutureExt;
use gept_core::config::{CollectorConfig, Config};
use gept_core::metrics as m;
use gept_core::wire::{Parsed, ParsedBucket, Rejections};
use gept_core::{BucketPrice, BucketStep, ItemId, LatestPrice};
use gept_store::Store;
use rand::Rng;
use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// What a collector publishes for the feature dataflow, per poll.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// A new `/latest` observation of every item in it.
    Tick(Arc<Tick>),
    /// Rows of a `/5m` or `/1h` bucket.
    Bucket {
        step: BucketStep,
        timestamp: i64,
        rows: Arc<Vec<BucketPrice>>,
    },
    /// Every item of a `/mapping` poll (stored before this is sent).
    Items(Arc<Vec<gept_core::ItemMeta>>),
}

/// One `/latest` poll: observation time and rows.
#[derive(Debug, Clone)]
pub struct Tick {
    /// Observation time (the response's HTTP `Date`), Unix seconds.
    pub observed_at: i64,
    /// When the response arrived, for tick-to-prediction latency.
    pub arrived: Instant,
    pub rows: Vec<LatestPrice>,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("store: {0}")]
    Store(String),
    #[error("store writer is gone")]
    WriterGone,
}

impl From<gept_store::StoreError> for CollectorError {
    fn from(e: gept_store::StoreError) -> Self {
        CollectorError::Store(e.to_string())
    }
}

/// What every collector can use.
pub struct CollectorEnv {
    pub client: UpstreamClient,
    pub writer: Addr<StoreWriter>,
    pub store: Store,
    pub events: broadcast::Sender<FeedEvent>,
    pub health: Health,
    /// Items whose history `/timeseries` should back-fill.
    pub backfill: Arc<Mutex<VecDeque<ItemId>>>,
    /// Whether the timeseries collector runs (else nothing is queued).
    pub backfill_enabled: bool,
    /// Faults injected by crash tests; [`Faults::none`] in `gept serve`.
    pub faults: Faults,
    /// `collectors.latest.gap_after`: a longer wait between two ticks is a
    /// recorded gap (zero: never).
    pub latest_gap_after: std::time::Duration,
}

impl CollectorEnv {
    /// Hands rows to the writer and waits until they are stored.
    async fn write_and_flush(&self, rows: Rows) -> Result<(), CollectorError> {
        self.writer
            .send(Write(rows))
            .await
            .map_err(|_| CollectorError::WriterGone)?;
        self.flush().await
    }

    async fn write(&self, rows: Rows) -> Result<(), CollectorError> {
        self.writer
            .send(Write(rows))
            .await
            .map_err(|_| CollectorError::WriterGone)
    }

    async fn flush(&self) -> Result<(), CollectorError> {
        self.writer
            .send(Flush)
            .await
            .map_err(|_| CollectorError::WriterGone)?
            .map_err(CollectorError::Store)
    }

    /// Crash-test hook: panics in the middle of a batch with the configured probability.
    fn maybe_panic(&self, name: &str) {
        let rate = self.faults.collector_panic_rate;
        if rate > 0.0 && rand::thread_rng().gen_bool(rate.min(1.0)) {
            panic!("injected panic in collector {name} mid-batch");
        }
    }
}

fn count_rejections(feed: &str, r: &Rejections) {
    for (reason, n) in [
        ("empty", r.skipped_empty),
        ("bad_price", r.bad_price),
        ("bad_volume", r.bad_volume),
        ("malformed", r.malformed),
    ] {
        if n > 0 {
            metrics::counter!(m::RECORDS_REJECTED, "feed" => feed.to_string(), "reason" => reason)
                .increment(n);
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One upstream feed's polling logic.
pub trait Collector: Send + 'static {
    /// The collector's name (`latest`, `5m`, `1h`, `mapping`, ...).
    fn name(&self) -> &'static str;
    /// One poll: fetch, validate, hand rows to the writer. Returns rows written.
    fn poll<'a>(&'a mut self, env: &'a CollectorEnv) -> BoxFuture<'a, Result<u64, CollectorError>>;
}

/// `/latest`: one observation of every item per poll, stamped with the
/// response's `Date`, published as a [`Tick`].
#[derive(Default)]
pub struct LatestCollector {
    pending: Option<(Parsed<LatestPrice>, i64, Instant)>,
    last_observed: Option<i64>,
}

impl Collector for LatestCollector {
    fn name(&self) -> &'static str {
        "latest"
    }

    fn poll<'a>(&'a mut self, env: &'a CollectorEnv) -> BoxFuture<'a, Result<u64, CollectorError>> {
        async move {
            if self.pending.is_none() {
                let (parsed, resp) = env.client.latest().await?;
                metrics::counter!(m::OBSERVATIONS_INGESTED, "feed" => "latest")
                    .increment(parsed.rows.len() as u64);
                count_rejections("latest", &parsed.rejections);
                self.pending = Some((parsed, resp.observed_at, resp.arrived));
            }
            env.maybe_panic(self.name());
            let (parsed, observed_at, arrived) = self.pending.clone().expect("pending set above");
            let n = parsed.rows.len() as u64;
            // The tick before this one: this run's, else the store's newest
            // (a restart after a crash).
            // (Gap bookkeeping never fails the poll: the rows come first.)
            let before = match self.last_observed {
                Some(t) => Some(t),
                // Rows this run handed the writer are stored first.
                None => match env.flush().await {
                    Ok(()) => env.store.newest_time("prices_latest_1m").await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "reading the newest stored tick failed; no gap check for this tick");
                        None
                    }),
                    Err(_) => None,
                },
            };
            env.write(Rows::Latest(parsed.rows.clone())).await?;
            if let Some(before) = before.filter(|b| observed_at > *b) {
                if let Err(e) = record_latest_gap(env, before, observed_at).await {
                    tracing::warn!(error = %e, from = before, to = observed_at, "recording a /latest gap failed");
                }
            }
            self.pending = None;
            env.health.saw_data("latest", observed_at);
            if self.last_observed.is_none_or(|last| observed_at > last) {
                self.last_observed = Some(observed_at);
                let tick = Tick {
                    observed_at,
                    arrived,
                    rows: parsed.rows,
                };
                let _ = env.events.send(FeedEvent::Tick(Arc::new(tick)));
            }
            // The tick is stored (acknowledged) before the next is fetched,
            // so a crash loses at most the snapshot in flight. A failed flush
            // is not a failed poll: the writer keeps the rows (memory bound,
            // then its journal) and the feed goes on.
            if let Err(e) = env.flush().await {
                tracing::debug!(error = %e, "the tick is held by the writer until the database answers");
            }
            Ok(n)
        }
        .boxed()
    }
}

/// Records the span between two ticks as a `/latest` gap when it is longer
/// than `collectors.latest.gap_after`: the row is keyed by the tick before
/// the span, and closed at once (the upstream cannot give a past `/latest`;
/// the `/5m` and `/1h` collectors back-fill their buckets over the span).
async fn record_latest_gap(env: &CollectorEnv, before: i64, at: i64) -> Result<(), CollectorError> {
    let limit = env.latest_gap_after.as_secs() as i64;
    if limit == 0 || at - before <= limit {
        return Ok(());
    }
    tracing::warn!(
        from = before,
        to = at,
        missed_seconds = at - before,
        "missed /latest snapshots: recorded in data_gaps (/5m and /1h are back-filled)"
    );
    let now = now();
    env.store.record_gap("latest", before, now).await?;
    metrics::counter!(m::GAPS_DETECTED, "feed" => "latest").increment(1);
    env.store.fill_gap("latest", before, now).await?;
    metrics::counter!(m::GAPS_FILLED, "feed" => "latest").increment(1);
    Ok(())
}

/// `/5m` or `/1h`: the newest bucket each poll; missed buckets are recorded in
/// `data_gaps` and back-filled with `?timestamp=`.
pub struct BucketCollector {
    step: BucketStep,
    last: Option<i64>,
    initialised: bool,
    pending: Option<ParsedBucket>,
    /// Whether `data_gaps` may hold open gaps of this feed.
    gaps_open: bool,
    /// Most gaps back-filled per poll.
    backfill_per_poll: usize,
}

impl BucketCollector {
    pub fn new(step: BucketStep) -> Self {
        Self {
            step,
            last: None,
            initialised: false,
            pending: None,
            gaps_open: true,
            backfill_per_poll: 24,
        }
    }

    async fn store_bucket(
        &self,
        env: &CollectorEnv,
        bucket: &ParsedBucket,
    ) -> Result<(), CollectorError> {
        let feed = self.step.as_str();
        metrics::counter!(m::OBSERVATIONS_INGESTED, "feed" => feed)
            .increment(bucket.rows.len() as u64);
        count_rejections(feed, &bucket.rejections);
        env.write(Rows::Buckets(self.step, bucket.rows.clone()))
            .await?;
        let _ = env.events.send(FeedEvent::Bucket {
            step: self.step,
            timestamp: bucket.timestamp,
            rows: Arc::new(bucket.rows.clone()),
        });
        Ok(())
    }
}

impl Collector for BucketCollector {
    fn name(&self) -> &'static str {
        self.step.as_str()
    }

    fn poll<'a>(&'a mut self, env: &'a CollectorEnv) -> BoxFuture<'a, Result<u64, CollectorError>> {
        async move {
            let feed = self.step.as_str();
            let step = self.step.seconds();
            if !self.initialised {
                self.last = env.store.newest_time(self.step.table()).await?;
                self.initialised = true;
            }
            if self.pending.is_none() {
                self.pending = Some(env.client.bucket(self.step, None).await?.0);
            }
            env.maybe_panic(self.name());
            let bucket = self.pending.clone().expect("pending set above");
            let mut written = 0;
            if self.last.is_none_or(|last| bucket.timestamp > last) {
                if let Some(last) = self.last {
                    let mut missed = last + step;
                    while missed < bucket.timestamp {
                        env.store.record_gap(feed, missed, now()).await?;
                        self.gaps_open = true;
                        metrics::counter!(m::GAPS_DETECTED, "feed" => feed).increment(1);
                        missed += step;
                    }
                }
                self.store_bucket(env, &bucket).await?;
                written += bucket.rows.len() as u64;
                self.last = Some(bucket.timestamp);
                env.health.saw_data(feed, bucket.timestamp + step);
            }
            self.pending = None;

            for missed in env
                .store
                .open_gaps(feed)
                .await?
                .into_iter()
                .take(self.backfill_per_poll)
            {
                let (old, _) = env.client.bucket(self.step, Some(missed)).await?;
                if old.timestamp != missed {
                    tracing::warn!(
                        feed,
                        missed,
                        got = old.timestamp,
                        "back-fill answered another bucket"
                    );
                    continue;
                }
                self.store_bucket(env, &old).await?;
                env.flush().await?;
                env.store.fill_gap(feed, missed, now()).await?;
                metrics::counter!(m::GAPS_FILLED, "feed" => feed).increment(1);
                written += old.rows.len() as u64;
            }
            Ok(written)
        }
        .boxed()
    }
}

/// `/mapping`: item metadata and buy limits; queues new items for history back-fill.
#[derive(Default)]
pub struct MappingCollector {
    known: Option<HashSet<ItemId>>,
}

impl Collector for MappingCollector {
    fn name(&self) -> &'static str {
        "mapping"
    }

    fn poll<'a>(&'a mut self, env: &'a CollectorEnv) -> BoxFuture<'a, Result<u64, CollectorError>> {
        async move {
            if self.known.is_none() {
                self.known = Some(
                    env.store
                        .load_items()
                        .await?
                        .iter()
                        .map(|i| i.item_id)
                        .collect(),
                );
            }
            let parsed = env.client.mapping().await?;
            count_rejections("mapping", &parsed.rejections);
            let n = parsed.rows.len() as u64;
            env.write_and_flush(Rows::Items(parsed.rows.clone(), now()))
                .await?;
            let _ = env
                .events
                .send(FeedEvent::Items(Arc::new(parsed.rows.clone())));
            let known = self.known.as_mut().expect("set above");
            let new: Vec<ItemId> = parsed
                .rows
                .iter()
                .map(|i| i.item_id)
                .filter(|id| known.insert(*id))
                .collect();
            if env.backfill_enabled && !new.is_empty() {
                env.backfill.lock().unwrap().extend(new);
            }
            Ok(n)
        }
        .boxed()
    }
}

/// `/timeseries`: back-fills the 5m and 1h history of new items, a few per poll.
pub struct TimeseriesCollector {
    per_poll: usize,
}

impl Collector for TimeseriesCollector {
    fn name(&self) -> &'static str {
        "timeseries"
    }

    fn poll<'a>(&'a mut self, env: &'a CollectorEnv) -> BoxFuture<'a, Result<u64, CollectorError>> {
        async move {
            let mut written = 0;
            for _ in 0..self.per_poll {
                let Some(item) = env.backfill.lock().unwrap().pop_front() else {
                    break;
                };
                let mut rows = Vec::new();
                for step in [BucketStep::FiveMinutes, BucketStep::OneHour] {
                    match env.client.timeseries(item, step).await {
                        Ok(p) => rows.push((step, p.rows)),
                        Err(e) => {
                            env.backfill.lock().unwrap().push_front(item);
                            return Err(e.into());
                        }
                    }
                }
                for (step, r) in rows {
                    written += r.len() as u64;
                    env.write(Rows::Buckets(step, r)).await?;
                }
            }
            Ok(written)
        }
        .boxed()
    }
}

/// The OSRS news RSS feed.
pub struct NewsCollector;

impl Collector for NewsCollector {
    fn name(&self) -> &'static str {
        "news"
    }

    fn poll<'a>(&'a mut self, env: &'a CollectorEnv) -> BoxFuture<'a, Result<u64, CollectorError>> {
        async move {
            let news = env.client.news().await?;
            let n = news.len() as u64;
            env.write(Rows::News(news, now())).await?;
            Ok(n)
        }
        .boxed()
    }
}

/// The player count on the OSRS home page.
pub struct PlayerCountCollector;

impl Collector for PlayerCountCollector {
    fn name(&self) -> &'static str {
        "player_count"
    }

    fn poll<'a>(&'a mut self, env: &'a CollectorEnv) -> BoxFuture<'a, Result<u64, CollectorError>> {
        async move {
            let count = env.client.player_count().await?;
            env.health.saw_data("player_count", count.timestamp);
            env.write(Rows::PlayerCounts(vec![count])).await?;
            Ok(1)
        }
        .boxed()
    }
}

/// One registry entry: a collector, its schedule, how to make it.
pub struct Registration {
    pub name: &'static str,
    pub schedule: CollectorConfig,
    pub make: fn() -> Box<dyn Collector>,
}

/// Every collector GePT runs. Adding a feed is one entry here.
pub fn registry(config: &Config) -> Vec<Registration> {
    let c = &config.collectors;
    vec![
        Registration {
            name: "latest",
            schedule: c.latest.clone(),
            make: || Box::new(LatestCollector::default()),
        },
        Registration {
            name: "5m",
            schedule: c.five_minute.clone(),
            make: || Box::new(BucketCollector::new(BucketStep::FiveMinutes)),
        },
        Registration {
            name: "1h",
            schedule: c.one_hour.clone(),
            make: || Box::new(BucketCollector::new(BucketStep::OneHour)),
        },
        Registration {
            name: "mapping",
            schedule: c.mapping.clone(),
            make: || Box::new(MappingCollector::default()),
        },
        Registration {
            name: "timeseries",
            schedule: c.timeseries.clone(),
            make: || Box::new(TimeseriesCollector { per_poll: 4 }),
        },
        Registration {
            name: "news",
            schedule: c.news.clone(),
            make: || Box::new(NewsCollector),
        },
        Registration {
            name: "player_count",
            schedule: c.player_count.clone(),
            make: || Box::new(PlayerCountCollector),
        },
    ]
}

/// Stop polling; answers once any poll in flight has finished.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Polls one collector on its schedule, under an actix `Supervisor`.
pub struct CollectorActor {
    name: &'static str,
    collector: Arc<tokio::sync::Mutex<Box<dyn Collector>>>,
    env: Arc<CollectorEnv>,
    interval: Duration,
    restart_min: Duration,
    restart_max: Duration,
    /// Restarts since the last successful poll (drives the backoff).
    failures_in_row: u32,
    stopping: bool,
    /// When the status row was last written after a success.
    persisted_at: Option<Instant>,
}

/// Successful polls write `collector_status` at most this often; failures,
/// restarts and shutdown write it at once.
const PERSIST_EVERY: Duration = Duration::from_secs(2);

impl CollectorActor {
    pub fn new(reg: &Registration, env: Arc<CollectorEnv>, config: &Config) -> Self {
        env.health.register(reg.name);
        Self {
            name: reg.name,
            collector: Arc::new(tokio::sync::Mutex::new((reg.make)())),
            env,
            interval: reg.schedule.interval,
            restart_min: config.supervisor.restart_min,
            restart_max: config.supervisor.restart_max,
            failures_in_row: 0,
            stopping: false,
            persisted_at: None,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        ctx.run_later(delay, |act, ctx| act.poll(ctx));
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let started = Instant::now();
        let collector = self.collector.clone();
        let env = self.env.clone();
        let fut = async move {
            let mut c = collector.lock().await;
            AssertUnwindSafe(c.poll(&env)).catch_unwind().await
        };
        ctx.spawn(fut.into_actor(self).map(move |outcome, act, ctx| {
            let error = match outcome {
                Ok(Ok(rows)) => {
                    act.failures_in_row = 0;
                    let status = act.env.health.success(act.name, rows, now());
                    if act.persisted_at.is_none_or(|t| t.elapsed() >= PERSIST_EVERY) {
                        act.persisted_at = Some(Instant::now());
                        act.persist(status);
                    }
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(format!(
                    "panicked: {}",
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            };
            match error {
                None => {
                    let next = act.interval.saturating_sub(started.elapsed());
                    act.schedule(ctx, next);
                }
                Some(e) => {
                    tracing::warn!(collector = act.name, error = %e, "poll failed; restarting collector");
                    let status = act.env.health.failure(act.name, &e, now());
                    act.persist(status);
                    act.failures_in_row += 1;
                    ctx.stop();
                }
            }
        }));
    }

    fn persist(&self, status: gept_core::CollectorStatus) {
        let store = self.env.store.clone();
        actix::spawn(async move {
            if let Err(e) = store.put_collector_status(&status, now()).await {
                tracing::warn!(error = %e, "cannot write collector_status");
            }
        });
    }

    fn backoff(&self) -> Duration {
        if self.failures_in_row == 0 {
            return Duration::ZERO;
        }
        self.restart_min
            .saturating_mul(2u32.saturating_pow(self.failures_in_row - 1))
            .min(self.restart_max)
    }
}

impl Actor for CollectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let delay = self.backoff();
        self.schedule(ctx, delay);
    }
}

impl Supervised for CollectorActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if !self.stopping {
            let status = self.env.health.restarted(self.name);
            self.persist(status);
            tracing::info!(collector = self.name, backoff = ?self.backoff(), "collector restarted");
        }
    }
}

impl Handler<Shutdown> for CollectorActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let collector = self.collector.clone();
        let (name, env) = (self.name, self.env.clone());
        Box::pin(async move {
            // A poll in flight holds the lock: taking it waits for that poll.
            drop(collector.lock().await);
            if let Some(status) = env
                .health
                .collectors()
                .into_iter()
                .find(|s| s.collector == name)
            {
                if let Err(e) = env.store.put_collector_status(&status, now()).await {
                    tracing::warn!(error = %e, "cannot write collector_status");
                }
            }
        })
    }
}

/// Starts every enabled collector under a supervisor.
pub fn start_all(
    config: &Config,
    env: Arc<CollectorEnv>,
) -> Vec<(&'static str, Addr<CollectorActor>)> {
    registry(config)
        .into_iter()
        .filter(|r| r.schedule.enabled)
        .map(|r| {
            let actor = CollectorActor::new(&r, env.clone(), config);
            (r.name, Supervisor::start(move |_| actor))
        })
        .collect()
}
