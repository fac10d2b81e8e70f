//! Inference per tick, on a thread of its own (tch is blocking work; it never
//! runs on an async worker).
//!
//! The feature engine hands over each completed tick's feature rows (every
//! item observed at that tick). One batched forward pass predicts all of
//! them; the probabilities are published three ways: into the [`Snapshot`]
//! (an `ArcSwap`, read by HTTP handlers without locks), onto a broadcast for
//! websocket clients, and into the store with an `inference_status` row.
//!
//! Messages are handled in order on this thread, so a model reload (from the
//! registry watcher or an admin call) happens between two ticks: no tick is
//! lost or predicted twice. Without a model the service still tracks prices
//! in the snapshot and records `no_model` for each tick.

use crate::collectors::Tick;
use crate::supervise::{panic_message, OnceAt, Restarts};
use arc_swap::ArcSwap;
use gept_core::metrics as m;
use gept_core::{target_names, ItemId, LatestPrice, N_TARGETS};
use gept_dataflows::features::{feature_names, FeatureRow};
use gept_model::Model;
use gept_store::Store;
use gept_store::{InferenceStatus, ModelEntry, PredictionRow};
use serde::ser::{SerializeMap, Serializer};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

static TARGETS: LazyLock<Vec<String>> = LazyLock::new(target_names);
static COLUMNS: LazyLock<Columns> = LazyLock::new(Columns::new);

/// One item's 108 calibrated probabilities at one tick.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Prediction {
    pub item_id: ItemId,
    /// The tick: the upstream observation time of the `/latest` poll.
    pub tick_time: i64,
    /// The item's own newest upstream trade time (`highTime`/`lowTime`).
    pub observed_at: i64,
    pub model_version: Arc<str>,
    /// Target name → probability, in canonical order.
    #[serde(serialize_with = "by_target_name")]
    pub probabilities: Vec<f32>,
}

fn by_target_name<S: Serializer>(p: &[f32], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(p.len()))?;
    for (name, v) in TARGETS.iter().zip(p) {
        map.serialize_entry(name, v)?;
    }
    map.end()
}

/// Keeps the market view current tick by tick: each observed item's
/// [`Market`] from its feature row and `/latest` row, with the running mean
/// of the distinct hourly volumes seen (spike detection). The inference
/// thread and the backtest (`gept backtest`) both use it.
#[derive(Debug, Default)]
pub struct MarketBook {
    /// Per item: the last hourly volume seen, their sum and count.
    volumes: HashMap<ItemId, (f64, f64, u32)>,
}

impl MarketBook {
    /// Updates `market` with the items observed at a tick (`rows`, whose
    /// `/latest` rows are in `latest`).
    pub fn update(
        &mut self,
        rows: &[FeatureRow],
        latest: &HashMap<ItemId, &LatestPrice>,
        market: &mut HashMap<ItemId, Arc<Market>>,
    ) {
        for r in rows {
            let Some(obs) = latest.get(&r.item_id) else {
                continue;
            };
            let mean = match r.values[COLUMNS.volume_1h] {
                Some(v) => {
                    let e = self.volumes.entry(r.item_id).or_insert((f64::NAN, 0.0, 0));
                    if e.0 != v {
                        *e = (v, e.1 + v, e.2 + 1);
                    }
                    Some(e.1 / e.2 as f64)
                }
                None => None,
            };
            market.insert(r.item_id, Arc::new(Market::of(r, obs, mean)));
        }
    }
}

/// The market as the latest tick left it, per item: prices and the features
/// recommendations need.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Market {
    pub latest: LatestPrice,
    /// Carried-forward prices of the series (non-null).
    pub high: i64,
    pub low: i64,
    pub spread_pct: Option<f64>,
    pub spread_ma_24h: Option<f64>,
    pub volume_1h: Option<f64>,
    /// Mean of the item's hourly volumes seen since start (spike detection).
    pub volume_mean: Option<f64>,
}

impl Market {
    /// The market view of an item from its feature row at a tick and its
    /// `/latest` row; `volume_mean` is the mean of the hourly volumes seen.
    pub fn of(row: &FeatureRow, latest: &LatestPrice, volume_mean: Option<f64>) -> Market {
        let c = &*COLUMNS;
        let value = |i: usize| row.values[i];
        Market {
            latest: *latest,
            high: value(c.high).unwrap_or_default() as i64,
            low: value(c.low).unwrap_or_default() as i64,
            spread_pct: value(c.spread_pct),
            spread_ma_24h: value(c.spread_ma_24h),
            volume_1h: value(c.volume_1h),
            volume_mean,
        }
    }
}

/// What the HTTP handlers read: replaced whole at every tick.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub tick_time: Option<i64>,
    /// When the tick arrived here (wall clock, Unix seconds): the data age
    /// answers count from it, and the stale-feed bound.
    pub received_at: Option<i64>,
    pub model_version: Option<Arc<str>>,
    pub predictions: HashMap<ItemId, Arc<Prediction>>,
    pub market: HashMap<ItemId, Arc<Market>>,
}

/// A tick's new predictions, as broadcast to websocket clients.
#[derive(Debug)]
pub struct TickPredictions {
    pub tick_time: i64,
    pub model_version: Arc<str>,
    /// Sorted by item id (subscribers of a few items look theirs up).
    pub predictions: Vec<Arc<Prediction>>,
    /// When the tick's upstream response arrived.
    pub arrived: Instant,
}

/// The model in use, for `/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModelStatus {
    pub version: Option<String>,
    pub path: Option<String>,
    pub loaded_at: Option<i64>,
    pub device: String,
    pub last_error: Option<String>,
    pub last_tick: Option<i64>,
    pub last_latency_ms: Option<f64>,
    pub ticks: u64,
    /// Horizons whose calibration group had no validation label: served,
    /// marked, and left out of recommendations.
    pub uncalibrated_horizons: Vec<u32>,
    /// Horizons whose group was calibrated on matured live rows instead.
    pub live_calibrated_horizons: Vec<u32>,
}

enum Msg {
    Tick(Arc<Tick>, Vec<FeatureRow>),
    Reload(oneshot::Sender<Result<Option<String>, String>>),
    /// Ends the thread after the ticks queued before it, once their
    /// prediction writes have finished.
    Stop,
}

/// Handle to the inference thread; cheap to clone.
#[derive(Clone)]
pub struct Inference {
    tx: mpsc::Sender<Msg>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub stream: broadcast::Sender<Arc<TickPredictions>>,
    pub status: Arc<Mutex<ModelStatus>>,
    /// The thread, until [`Inference::stop`] takes it.
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Set while the thread runs.
    pub alive: crate::health::Alive,
    /// Whether predictions and inference status are stored (a standby
    /// follower predicts for its own API only; the primary writes).
    pub writes: Arc<std::sync::atomic::AtomicBool>,
    /// The live accuracy monitor's feed, once the service has started it.
    pub accuracy: Arc<std::sync::OnceLock<crate::accuracy::Feed>>,
}

impl Inference {
    /// Starts the inference thread; `runtime` runs its store writes and
    /// registry reads. It loads the registry's ACTIVE model before the first
    /// tick.
    pub fn spawn(
        store: Store,
        device: tch::Device,
        runtime: tokio::runtime::Handle,
        stream_capacity: usize,
        panic_on_tick: Option<u64>,
        model_cache: std::path::PathBuf,
    ) -> std::io::Result<Inference> {
        let (tx, rx) = mpsc::channel();
        let (stream, _) = broadcast::channel(stream_capacity.max(1));
        let inference = Inference {
            tx,
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            stream,
            status: Arc::new(Mutex::new(ModelStatus {
                device: format!("{device:?}"),
                ..Default::default()
            })),
            thread: Arc::default(),
            alive: crate::health::Alive::default(),
            writes: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            accuracy: Arc::default(),
        };
        let mut worker = Worker {
            shared: inference.clone(),
            store,
            device,
            runtime,
            model: None,
            volumes: MarketBook::default(),
            writes: tokio_util::task::TaskTracker::new(),
            fault: OnceAt::new(panic_on_tick),
            model_cache,
            hints: Vec::new(),
        };
        let alive = inference.alive.clone();
        let thread = std::thread::Builder::new()
            .name("gept-inference".into())
            .spawn(move || {
                let mut restarts = Restarts::new("inference");
                let mut guard = Some(alive.enter());
                if let Err(e) = worker.reload() {
                    tracing::error!(error = %e, "loading the ACTIVE model failed; serving prices without predictions");
                }
                for msg in rx {
                    match msg {
                        Msg::Tick(tick, rows) => {
                            // Supervised: a panic restarts the worker (its
                            // model loaded again) after a backoff, and the
                            // tick is tried once more; a tick that crashes
                            // two workers is dropped.
                            let mut published = None;
                            for attempt in 1..=2 {
                                let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    worker.tick(&tick, &rows)
                                }));
                                let payload = match run {
                                    Ok(p) => {
                                        published = p;
                                        break;
                                    }
                                    Err(payload) => payload,
                                };
                                drop(guard.take());
                                let wait = restarts.crashed(Instant::now(), &panic_message(payload.as_ref()));
                                std::thread::sleep(wait);
                                worker.model = None;
                                if let Err(e) = worker.reload() {
                                    tracing::error!(error = %e, "reloading the ACTIVE model after a crash failed");
                                }
                                guard = Some(alive.enter());
                                restarts.running();
                                if attempt == 2 {
                                    tracing::error!(tick = tick.observed_at, "dropping a tick that crashed inference twice");
                                }
                            }
                            // The accuracy monitor sees every tick's
                            // observations, predicted or not.
                            if let Some(feed) = worker.shared.accuracy.get() {
                                feed.tick(tick, published);
                            }
                        }
                        Msg::Reload(reply) => {
                            let _ = reply.send(worker.reload());
                        }
                        Msg::Stop => break,
                    }
                }
                drop(guard);
                worker.writes.close();
                let writes = worker.writes.clone();
                worker.runtime.block_on(writes.wait());
            })?;
        *inference.thread.lock().expect("thread lock") = Some(thread);
        Ok(inference)
    }

    /// Stops the thread after the ticks already submitted and their
    /// prediction writes; returns it to join (`None` if already stopped).
    pub fn stop(&self) -> Option<std::thread::JoinHandle<()>> {
        let _ = self.tx.send(Msg::Stop);
        self.thread.lock().expect("thread lock").take()
    }

    /// Hands a completed tick's feature rows to inference.
    pub fn submit(&self, tick: Arc<Tick>, rows: Vec<FeatureRow>) {
        let _ = self.tx.send(Msg::Tick(tick, rows));
    }

    /// Loads the registry's ACTIVE model if it is not the one in use, between
    /// two ticks; answers the version in use afterwards.
    pub async fn reload(&self) -> Result<Option<String>, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Reload(reply))
            .map_err(|_| "the inference thread has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the inference thread has stopped".to_string())?
    }

    /// Asks for a reload every `every` (the registry may change from another
    /// process, e.g. `gept model register --activate`) until `cancel` fires.
    pub fn watch_registry(
        &self,
        every: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(every);
            timer.tick().await;
            loop {
                tokio::select! {
                    _ = timer.tick() => {}
                    _ = cancel.cancelled() => break,
                }
                if let Err(e) = this.reload().await {
                    tracing::warn!(error = %e, "registry check failed");
                }
            }
        })
    }
}

/// Feature columns the snapshot's market view reads.
struct Columns {
    high: usize,
    low: usize,
    spread_pct: usize,
    spread_ma_24h: usize,
    volume_1h: usize,
}

impl Columns {
    fn new() -> Self {
        let names = feature_names();
        let at = |n: &str| names.iter().position(|x| x == n).expect("known feature");
        Columns {
            high: at("high"),
            low: at("low"),
            spread_pct: at("spread_pct"),
            spread_ma_24h: at("spread_ma_24h"),
            volume_1h: at("volume_1h"),
        }
    }
}

struct Worker {
    shared: Inference,
    store: Store,
    device: tch::Device,
    runtime: tokio::runtime::Handle,
    model: Option<(Model, ModelEntry)>,
    /// Per item: the last hourly volume seen, and the sum and count of the
    /// distinct ones (their mean flags volume spikes).
    volumes: MarketBook,
    /// Prediction writes in flight, awaited before the thread ends.
    writes: tokio_util::task::TaskTracker,
    /// A crash test's injected panic.
    fault: OnceAt,
    /// Where the registry's model files are written before loading.
    model_cache: std::path::PathBuf,
    /// Where each item's features fell among the model's quantiles at the
    /// last tick (`Model::predict_hinted`: rows come in item order).
    hints: Vec<u16>,
}

impl Worker {
    fn reload(&mut self) -> Result<Option<String>, String> {
        let store = self.store.clone();
        let active = self
            .runtime
            .block_on(async move { store.active_model().await })
            .map_err(|e| format!("reading the registry: {e}"))?;
        let current = self.model.as_ref().map(|(_, e)| e.version.clone());
        let Some(entry) = active else {
            return Ok(current);
        };
        if current.as_deref() == Some(entry.version.as_str()) {
            return Ok(current);
        }
        let store = self.store.clone();
        let (e, cache) = (entry.clone(), self.model_cache.clone());
        let loaded = self
            .runtime
            .block_on(async move { gept_model::registry::materialise(&store, &e, &cache).await })
            .and_then(|dir| {
                let model = Model::load(&dir, self.device).map_err(|e| e.to_string())?;
                if model.meta.weights_sha256 == entry.sha256 {
                    Ok((model, dir))
                } else {
                    Err(format!(
                        "{}: weights sha256 {} differ from the registry's {}",
                        dir.display(),
                        model.meta.weights_sha256,
                        entry.sha256
                    ))
                }
            });
        let mut status = self.shared.status.lock().expect("status lock");
        match loaded {
            Ok((model, dir)) => {
                tracing::info!(version = %entry.version, path = %dir.display(), "model loaded");
                metrics::gauge!(m::MODEL_INFO, "version" => entry.version.clone()).set(1.0);
                if let Some(old) = &current {
                    metrics::gauge!(m::MODEL_INFO, "version" => old.clone()).set(0.0);
                }
                status.version = Some(entry.version.clone());
                status.path = Some(dir.display().to_string());
                status.loaded_at = Some(chrono::Utc::now().timestamp());
                status.last_error = None;
                status.uncalibrated_horizons = model.uncalibrated_horizons();
                status.live_calibrated_horizons = model.live_calibrated_horizons();
                self.model = Some((model, entry));
                Ok(status.version.clone())
            }
            Err(e) => {
                tracing::error!(version = %entry.version, error = %e, "cannot load the ACTIVE model; keeping the current one");
                status.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Predicts a tick and publishes it; answers what was published.
    fn tick(&mut self, tick: &Tick, rows: &[FeatureRow]) -> Option<Arc<TickPredictions>> {
        let started = Instant::now();
        self.fault.hit("inference");
        let t = tick.observed_at;
        let received_at = (std::time::SystemTime::now() - tick.arrived.elapsed())
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let width = rows.first().map_or(0, |r| r.values.len());
        let mut x = Vec::with_capacity(rows.len() * width);
        for r in rows {
            r.push_encoded(&mut x);
        }
        let latest: HashMap<ItemId, &LatestPrice> =
            tick.rows.iter().map(|r| (r.item_id, r)).collect();
        let old = self.shared.snapshot.load_full();
        let mut market = old.market.clone();
        self.volumes.update(rows, &latest, &mut market);
        let Some((model, entry)) = &self.model else {
            self.shared.snapshot.store(Arc::new(Snapshot {
                tick_time: Some(t),
                received_at: Some(received_at),
                model_version: None,
                predictions: old.predictions.clone(),
                market,
            }));
            self.record(
                InferenceStatus {
                    tick_time: t,
                    items: rows.len() as i64,
                    latency_ms: started.elapsed().as_secs_f64() * 1e3,
                    model_version: None,
                    outcome: "no_model".into(),
                    message: Some("no ACTIVE model in the registry".into()),
                },
                Vec::new(),
            );
            return None;
        };
        let probs = if rows.is_empty() {
            Vec::new()
        } else {
            model.predict_hinted(&x, &mut self.hints)
        };
        let version: Arc<str> = Arc::from(entry.version.as_str());
        let mut predictions: Vec<Arc<Prediction>> = rows
            .iter()
            .zip(probs.chunks_exact(N_TARGETS))
            .map(|(r, p)| {
                let observed_at = latest
                    .get(&r.item_id)
                    .and_then(|o| o.high_time.max(o.low_time))
                    .unwrap_or(t);
                Arc::new(Prediction {
                    item_id: r.item_id,
                    tick_time: t,
                    observed_at,
                    model_version: version.clone(),
                    probabilities: p.to_vec(),
                })
            })
            .collect();
        // The engine emits rows by item; kept so whatever the source.
        if !predictions.is_sorted_by_key(|p| p.item_id) {
            predictions.sort_by_key(|p| p.item_id);
        }
        let mut by_item = old.predictions.clone();
        for p in &predictions {
            by_item.insert(p.item_id, p.clone());
        }
        self.shared.snapshot.store(Arc::new(Snapshot {
            tick_time: Some(t),
            received_at: Some(received_at),
            model_version: Some(version.clone()),
            predictions: by_item,
            market,
        }));
        let published = TickPredictions {
            tick_time: t,
            model_version: version.clone(),
            predictions: predictions.clone(),
            arrived: tick.arrived,
        };
        let published = Arc::new(published);
        let _ = self.shared.stream.send(published.clone());
        let latency = tick.arrived.elapsed().as_secs_f64();
        metrics::histogram!(m::TICK_TO_PREDICTION_SECONDS).record(latency);
        metrics::histogram!(m::INFERENCE_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::gauge!(m::PREDICTIONS_PER_TICK).set(predictions.len() as f64);
        metrics::counter!(m::PREDICTIONS).increment(predictions.len() as u64);
        let stored = predictions
            .iter()
            .map(|p| PredictionRow {
                item_id: p.item_id,
                tick_time: p.tick_time,
                observed_at: p.observed_at,
                model_version: entry.version.clone(),
                probabilities: p.probabilities.clone(),
            })
            .collect();
        self.record(
            InferenceStatus {
                tick_time: t,
                items: predictions.len() as i64,
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
                model_version: Some(entry.version.clone()),
                outcome: "ok".into(),
                message: None,
            },
            stored,
        );
        Some(published)
    }

    /// Updates `/status` and writes the tick's rows and status row, retrying
    /// a failed write a few times without holding up the next tick.
    fn record(&self, status: InferenceStatus, rows: Vec<PredictionRow>) {
        {
            let mut s = self.shared.status.lock().expect("status lock");
            s.last_tick = Some(status.tick_time);
            s.last_latency_ms = Some(status.latency_ms);
            s.ticks += 1;
        }
        if !self.shared.writes.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let store = self.store.clone();
        self.runtime.spawn(self.writes.track_future(async move {
            for attempt in 0..5u32 {
                let result = async {
                    if !rows.is_empty() {
                        store.insert_predictions(&rows).await?;
                    }
                    store
                        .put_inference_status(&status, chrono::Utc::now().timestamp())
                        .await
                }
                .await;
                match result {
                    Ok(()) => return,
                    Err(e) => {
                        metrics::counter!(m::STORE_ERRORS, "table" => "predictions").increment(1);
                        tracing::warn!(attempt, tick = status.tick_time, error = %e, "storing predictions failed");
                        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                    }
                }
            }
            tracing::error!(tick = status.tick_time, "predictions of this tick were not stored");
        }));
    }
}
