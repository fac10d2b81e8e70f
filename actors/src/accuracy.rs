//! The live accuracy monitor: the model's predictions scored against what
//! then happened, as the service runs.
//!
//! The inference thread hands every tick (its observations) and the tick's
//! predictions to this thread, in order. One tick of predictions per
//! `accuracy.sample` of tick time (the first with predictions in each
//! period) is kept, as stored (`u16` per probability), and each of its rows
//! is labelled tick by tick with the training labels' rule
//! ([`gept_dataflows::labels::OpenLabels`]: carried prices, offers at the
//! model's offsets, a fill needs the buy and then the sell within the
//! horizon). A target's label is known once its horizon has passed; it
//! counts in the figures while it became known within `accuracy.window`.
//! Every `accuracy.interval` the figures are recomputed with the code of
//! `gept eval` (`gept_model::eval::evaluate`) per model version: per target,
//! per horizon group, per offset, with reliability bins, and compared with
//! the model's validation figures (drift). They are published for
//! `GET /api/v1/accuracy`, `/api/v1/status` and `/metrics`.
//!
//! After a restart the monitor first rebuilds its rows from the store (the
//! stored ticks of the last 72 h by default and the stored predictions of
//! the sampled ticks, applied as they were live), so the figures continue
//! instead of starting over; live ticks it read from the store are skipped.
//!
//! Memory is bounded by the sample: rows live for the longest horizon plus
//! the window (72 h by default), one tick per sample period, about 450
//! bytes a row. If the thread falls behind by more than its queue, rows
//! that missed an observation are dropped (their labels could be wrong) and
//! the gap is counted.

use crate::collectors::Tick;
use crate::inference::{Prediction, TickPredictions};
use arc_swap::ArcSwap;
use gept_core::config::AccuracyConfig;
use gept_core::metrics as m;
use gept_core::{ItemId, HORIZONS_H, N_TARGETS, OFFSETS_BP};
use gept_dataflows::labels::{CarriedPrices, OpenLabels, UNKNOWN};
use gept_model::calibration::HORIZON_GROUPS;
use gept_model::eval::{self, set_figures, SetFigures, TargetMetrics};
use gept_model::metrics::{reliability, Bin};
use gept_store::Store;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

static TARGETS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(gept_core::target_names);

/// Ticks queued for the monitor before it counts a gap.
const QUEUE: usize = 256;

/// Filled and unfilled labels a group's live fit needs of each.
const MIN_CLASS: usize = 100;

/// The longest horizon, in seconds.
const LONGEST: i64 = HORIZONS_H[HORIZONS_H.len() - 1] as i64 * 3600;

/// The name of a horizon group in metrics and answers, e.g. `1-4h`.
pub fn group_name(horizons: &[u32]) -> String {
    format!("{}-{}h", horizons[0], horizons[horizons.len() - 1])
}

/// A horizon group's live figures beside the model's validation figures.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub horizons_h: Vec<u32>,
    #[serde(flatten)]
    pub live: SetFigures,
    /// The model's validation figures, over the group's targets that
    /// validation had labels for.
    pub validation: Option<SetFigures>,
    /// The live figures over those same targets (what drift compares).
    pub live_validated: SetFigures,
    /// Live Brier or ECE worse than validation by more than the margin,
    /// over the targets both have.
    pub drift: bool,
    pub reliability: Vec<Bin>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OffsetReport {
    pub offset_bp: u32,
    #[serde(flatten)]
    pub live: SetFigures,
}

/// The live figures of one model version.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub version: String,
    /// Scored rows (item × sampled tick) with at least one known label.
    pub rows: usize,
    pub items: usize,
    pub first_tick: Option<i64>,
    pub last_tick: Option<i64>,
    pub drift: bool,
    pub groups: Vec<GroupReport>,
    pub offsets: Vec<OffsetReport>,
    pub targets: Vec<TargetMetrics>,
}

/// What `GET /api/v1/accuracy` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub enabled: bool,
    pub sample_seconds: u64,
    pub window_seconds: u64,
    /// The last tick applied (labels are known up to it).
    pub through: Option<i64>,
    /// Unix time the figures were computed.
    pub updated_at: Option<i64>,
    /// Rows followed, their horizons not all passed yet or in the window.
    pub open_rows: usize,
    /// Times the monitor fell behind and dropped its rows.
    pub gaps: u64,
    /// Newest model first.
    pub models: Vec<ModelReport>,
    /// For the newest model's groups that validation had no label for:
    /// their Platt scaling fitted on matured live rows (the recalibrator
    /// registers it once `ready`).
    pub recalibration: Option<Recalibration>,
}

/// Live recalibration of the uncalibrated groups of one model.
#[derive(Debug, Clone, Serialize)]
pub struct Recalibration {
    pub version: String,
    /// The version whose weights it shares; rows of every model of that
    /// line that left a group uncalibrated are pooled for the group.
    pub base_version: String,
    pub groups: Vec<GroupFit>,
}

/// One uncalibrated group's fit: p' = σ(a·logit(p) + b) on its matured
/// labels, checked on the newest third of its rows (by tick) with a fit on
/// the older two thirds.
#[derive(Debug, Clone, Serialize)]
pub struct GroupFit {
    pub group: String,
    pub horizons_h: Vec<u32>,
    pub labels: usize,
    pub positives: usize,
    pub a: f64,
    pub b: f64,
    pub holdout_labels: usize,
    pub holdout_brier_before: Option<f64>,
    pub holdout_brier_after: Option<f64>,
    pub holdout_ece_before: Option<f64>,
    pub holdout_ece_after: Option<f64>,
    /// Enough labels of both classes, and the held-out Brier no worse.
    pub ready: bool,
    /// Why it is not ready.
    pub waiting_for: Option<String>,
}

/// What the monitor needs of a model's description.
struct Line {
    base: String,
    /// Indices into `HORIZON_GROUPS` fitted on no label.
    uncalibrated: Vec<usize>,
}

/// One followed row: an item's prediction at a sampled tick.
struct Row {
    item: ItemId,
    version: Arc<str>,
    /// As stored: `u16` little-endian per target.
    probabilities: Box<[u8]>,
    open: OpenLabels,
}

enum Msg {
    Tick(Arc<Tick>, Option<Arc<TickPredictions>>),
    /// Publish the figures now (tests, and before a stop).
    Publish(mpsc::SyncSender<()>),
}

/// The sending side, held by the inference thread; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::SyncSender<Msg>,
    behind: Arc<AtomicBool>,
}

impl Feed {
    /// Hands a tick and its predictions to the monitor; never blocks. When
    /// the queue is full the monitor is told it missed one.
    pub fn tick(&self, tick: Arc<Tick>, predictions: Option<Arc<TickPredictions>>) {
        if let Err(mpsc::TrySendError::Full(_)) = self.tx.try_send(Msg::Tick(tick, predictions)) {
            self.behind.store(true, Ordering::SeqCst);
        }
    }
}

/// Handle to the monitor: its feed and its published report.
#[derive(Clone)]
pub struct Monitor {
    pub feed: Feed,
    pub report: Arc<ArcSwap<Report>>,
    /// Notified after each publish (the recalibrator waits on it).
    pub published: Arc<tokio::sync::Notify>,
}

impl Monitor {
    /// Starts the monitor's thread; `runtime` reads the registry (the
    /// models' validation figures).
    pub fn spawn(
        config: &AccuracyConfig,
        store: Store,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Monitor> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let report = Arc::new(ArcSwap::from_pointee(Report {
            enabled: true,
            sample_seconds: config.sample.as_secs(),
            window_seconds: config.window.as_secs(),
            through: None,
            updated_at: None,
            open_rows: 0,
            gaps: 0,
            models: Vec::new(),
            recalibration: None,
        }));
        let monitor = Monitor {
            feed: Feed {
                tx,
                behind: Arc::default(),
            },
            report: report.clone(),
            published: Arc::default(),
        };
        let mut state = State {
            config: config.clone(),
            carried: CarriedPrices::default(),
            last_seen: HashMap::new(),
            rows: HashMap::new(),
            sampled_period: None,
            through: None,
            gaps: 0,
            validation: HashMap::new(),
            lines: HashMap::new(),
            store,
            runtime,
            report,
            published: monitor.published.clone(),
        };
        let behind = monitor.feed.behind.clone();
        std::thread::Builder::new()
            .name("gept-accuracy".into())
            .spawn(move || {
                let mut changed = state.restore();
                if changed {
                    state.publish();
                    changed = false;
                }
                let mut next = Instant::now() + state.config.interval;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(Msg::Tick(tick, predictions)) => {
                            if behind.swap(false, Ordering::SeqCst) {
                                state.gap();
                            }
                            // A tick the restore read from the store already.
                            if state.through.is_some_and(|t| tick.observed_at <= t) {
                                continue;
                            }
                            state.apply(&tick, predictions.as_deref());
                            changed = true;
                        }
                        Ok(Msg::Publish(done)) => {
                            state.publish();
                            changed = false;
                            let _ = done.send(());
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if Instant::now() >= next {
                        if changed {
                            state.publish();
                            changed = false;
                        }
                        next = Instant::now() + state.config.interval;
                    }
                }
            })?;
        Ok(monitor)
    }

    /// Recomputes and publishes the figures after every tick handed over
    /// so far; waits at most `timeout`.
    pub fn publish_now(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.feed.tx.send(Msg::Publish(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

/// One version's rows to score: probabilities, labels, items, and the
/// first and last tick.
type Scored = (Vec<f32>, Vec<u8>, Vec<u32>, i64, i64);

struct State {
    config: AccuracyConfig,
    /// Per item: the carried high and low (a null side keeps the last).
    carried: CarriedPrices,
    /// Per item: its series' last observation time.
    last_seen: HashMap<ItemId, i64>,
    /// Per item: followed rows, oldest first.
    rows: HashMap<ItemId, VecDeque<Row>>,
    /// The sample period of the last sampled tick.
    sampled_period: Option<i64>,
    through: Option<i64>,
    gaps: u64,
    /// Per model version: its validation metrics per target (None: unknown).
    validation: HashMap<String, Option<Vec<TargetMetrics>>>,
    /// Per model version: its line and uncalibrated groups (None: unknown).
    lines: HashMap<String, Option<Arc<Line>>>,
    store: Store,
    runtime: tokio::runtime::Handle,
    report: Arc<ArcSwap<Report>>,
    published: Arc<tokio::sync::Notify>,
}

impl State {
    fn gap(&mut self) {
        self.gaps += 1;
        let dropped: usize = self.rows.values().map(VecDeque::len).sum();
        self.rows.clear();
        metrics::counter!(m::ACCURACY_GAPS).increment(1);
        tracing::warn!(
            dropped,
            "the accuracy monitor fell behind the ticks; its rows missed an observation and were dropped"
        );
    }

    /// Rebuilds the followed rows after a restart from what the store
    /// holds: the stored ticks of the last longest horizon plus window
    /// (before the newest stored tick), an hour at a time, each applied as
    /// it was live, with the stored predictions of the first tick of each
    /// sample period that has them. The figures then continue where the
    /// last process left them (rows whose base tick falls before the span
    /// read are out of the window anyway). Returns whether any tick was
    /// applied; a store error stops the restore with a warning (the monitor
    /// then starts from the live ticks, as with no history).
    fn restore(&mut self) -> bool {
        let started = Instant::now();
        let store = self.store.clone();
        let newest = match self
            .runtime
            .block_on(async { store.newest_time("prices_latest_1m").await })
        {
            Ok(Some(t)) => t,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "the accuracy monitor could not read the stored ticks; it starts empty");
                return false;
            }
        };
        let sample = self.config.sample.as_secs().max(1) as i64;
        let mut at = newest - LONGEST - self.config.window.as_secs() as i64;
        let (mut ticks, mut sampled) = (0usize, 0usize);
        while at <= newest {
            let to = (at + 3600).min(newest + 1);
            let rows = match self
                .runtime
                .block_on(async { store.load_latest(at, to).await })
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "the accuracy monitor's restore stopped");
                    break;
                }
            };
            for chunk in rows.chunk_by(|a, b| a.timestamp == b.timestamp) {
                let t = chunk[0].timestamp;
                let mut predictions = None;
                if self.sampled_period != Some(t.div_euclid(sample)) {
                    match self
                        .runtime
                        .block_on(async { store.predictions_at(t).await })
                    {
                        Ok(stored) if !stored.is_empty() => {
                            let version: Arc<str> = Arc::from(stored[0].model_version.as_str());
                            predictions = Some(TickPredictions {
                                tick_time: t,
                                model_version: version.clone(),
                                predictions: stored
                                    .into_iter()
                                    .map(|r| {
                                        Arc::new(Prediction {
                                            item_id: r.item_id,
                                            tick_time: r.tick_time,
                                            observed_at: r.observed_at,
                                            model_version: version.clone(),
                                            probabilities: r.probabilities,
                                        })
                                    })
                                    .collect(),
                                arrived: Instant::now(),
                            });
                            sampled += 1;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(tick = t, error = %e, "reading a tick's stored predictions failed")
                        }
                    }
                }
                let tick = Tick {
                    observed_at: t,
                    arrived: Instant::now(),
                    rows: chunk.to_vec(),
                };
                self.apply(&tick, predictions.as_ref());
                ticks += 1;
            }
            at = to;
        }
        if ticks > 0 {
            tracing::info!(
                ticks,
                sampled,
                rows = self.rows.values().map(VecDeque::len).sum::<usize>(),
                took_ms = started.elapsed().as_millis() as u64,
                "the accuracy monitor restored its rows from the store"
            );
        }
        ticks > 0
    }

    fn apply(&mut self, tick: &Tick, predictions: Option<&TickPredictions>) {
        let t = tick.observed_at;
        self.through = Some(t);
        for r in &tick.rows {
            let Some(o) = self.carried.apply(t, r) else {
                continue;
            };
            self.last_seen.insert(r.item_id, t);
            if let Some(rows) = self.rows.get_mut(&r.item_id) {
                for row in rows.iter_mut().filter(|row| t <= row.open.t + LONGEST) {
                    row.open.observe(o);
                }
            }
        }
        let sample = self.config.sample.as_secs().max(1) as i64;
        let period = t.div_euclid(sample);
        if let Some(p) = predictions.filter(|p| !p.predictions.is_empty()) {
            if self.sampled_period != Some(period) {
                self.sampled_period = Some(period);
                for pred in &p.predictions {
                    // A row needs the item's observation at this tick.
                    if self.last_seen.get(&pred.item_id) != Some(&t) {
                        continue;
                    }
                    let Some(o) = self.carried.get(pred.item_id, t) else {
                        continue;
                    };
                    self.rows.entry(pred.item_id).or_default().push_back(Row {
                        item: pred.item_id,
                        version: p.model_version.clone(),
                        probabilities: gept_store::encode_probabilities(&pred.probabilities)
                            .into_boxed_slice(),
                        open: OpenLabels::new(o),
                    });
                }
            }
        }
        // Rows whose every label left the window.
        let keep_after = t - LONGEST - self.config.window.as_secs() as i64;
        self.rows.retain(|_, rows| {
            while rows.front().is_some_and(|r| r.open.t < keep_after) {
                rows.pop_front();
            }
            !rows.is_empty()
        });
    }

    /// The model's validation figures per target, read once per version.
    fn validation(&mut self, version: &str) -> Option<Vec<TargetMetrics>> {
        if let Some(v) = self.validation.get(version) {
            return v.clone();
        }
        let store = self.store.clone();
        let models = self.runtime.block_on(async move { store.models().await });
        let found = match models {
            Ok(models) => models
                .into_iter()
                .find(|e| e.version == version)
                .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.metrics).ok())
                .and_then(|v| serde_json::from_value(v["targets"].clone()).ok()),
            // Asked again at the next publish.
            Err(_) => return None,
        };
        self.validation.insert(version.to_string(), found.clone());
        found
    }

    /// A model version's line and uncalibrated groups, read once per
    /// version from its description in the registry.
    fn line(&mut self, version: &str) -> Option<Arc<Line>> {
        if let Some(l) = self.lines.get(version) {
            return l.clone();
        }
        let store = self.store.clone();
        let v = version.to_string();
        let meta = self.runtime.block_on(async move {
            if let Some(a) = store.model_artifact(&v).await? {
                return Ok(serde_json::from_slice::<gept_model::ModelMeta>(&a.meta).ok());
            }
            let entry = store.models().await?.into_iter().find(|e| e.version == v);
            Ok::<_, gept_store::StoreError>(
                entry.and_then(|e| gept_model::file::read_meta(std::path::Path::new(&e.path)).ok()),
            )
        });
        let found = match meta {
            Ok(meta) => meta.map(|m| {
                Arc::new(Line {
                    base: m.base_version().to_string(),
                    uncalibrated: HORIZON_GROUPS
                        .iter()
                        .enumerate()
                        .filter(|(_, hs)| {
                            m.calibration
                                .groups
                                .iter()
                                .any(|g| g.horizons == **hs && g.n == 0)
                        })
                        .map(|(i, _)| i)
                        .collect(),
                })
            }),
            // Asked again at the next publish.
            Err(_) => return None,
        };
        self.lines.insert(version.to_string(), found.clone());
        found
    }

    /// The live fits of `version`'s uncalibrated groups, on the matured
    /// labels of the rows of every model of its line that left the group
    /// uncalibrated (their probabilities there are σ of the same logits).
    fn recalibration(&mut self, version: &str) -> Option<Recalibration> {
        let line = self.line(version)?;
        if line.uncalibrated.is_empty() {
            return None;
        }
        let versions: Vec<Arc<str>> = {
            let mut v: Vec<Arc<str>> = self
                .rows
                .values()
                .flat_map(|rows| rows.iter().map(|r| r.version.clone()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        // Per version: the groups its rows count for.
        let mut counts: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for v in versions {
            if let Some(l) = self.line(&v).filter(|l| l.base == line.base) {
                counts.insert(v, l.uncalibrated.clone());
            }
        }
        let groups = line
            .uncalibrated
            .iter()
            .map(|&g| {
                // (tick, p, y) of every matured label of the group.
                let mut pairs: Vec<(i64, f32, bool)> = Vec::new();
                for rows in self.rows.values() {
                    for row in rows {
                        if !counts.get(&row.version).is_some_and(|gs| gs.contains(&g)) {
                            continue;
                        }
                        let last = self.last_seen.get(&row.item).copied().unwrap_or(row.open.t);
                        let labels = row.open.labels(last);
                        let probs = gept_store::decode_probabilities(&row.probabilities)
                            .expect("encoded here, 108 u16");
                        for t in 0..N_TARGETS {
                            let h = HORIZONS_H[t / OFFSETS_BP.len()];
                            if labels[t] <= 1 && HORIZON_GROUPS[g].contains(&h) {
                                pairs.push((row.open.t, probs[t], labels[t] == 1));
                            }
                        }
                    }
                }
                self.group_fit(g, pairs)
            })
            .collect();
        Some(Recalibration {
            version: version.to_string(),
            base_version: line.base.clone(),
            groups,
        })
    }

    fn group_fit(&self, g: usize, mut pairs: Vec<(i64, f32, bool)>) -> GroupFit {
        use gept_model::calibration::{fit_on_probabilities, logit};
        use gept_model::metrics::{brier, ece};
        pairs.sort_by_key(|&(t, _, _)| t);
        let p: Vec<f32> = pairs.iter().map(|x| x.1).collect();
        let y: Vec<bool> = pairs.iter().map(|x| x.2).collect();
        let positives = y.iter().filter(|&&v| v).count();
        let (a, b) = fit_on_probabilities(&p, &y);
        // Held out: the rows of the newest third of the span of ticks.
        let (first, last) = (
            pairs.first().map_or(0, |x| x.0),
            pairs.last().map_or(0, |x| x.0),
        );
        let cut = first + (last - first) * 2 / 3;
        let split = pairs.partition_point(|x| x.0 < cut.max(first + 1));
        let (fa, fb) = fit_on_probabilities(&p[..split], &y[..split]);
        let (hp, hy) = (&p[split..], &y[split..]);
        let after: Vec<f32> = hp
            .iter()
            .map(|&p| (1.0 / (1.0 + (-(fa * f64::from(logit(p)) + fb)).exp())) as f32)
            .collect();
        let (before_brier, after_brier) = (brier(hp, hy), brier(&after, hy));
        let negatives = y.len() - positives;
        let min = self.config.recalibrate_min_labels;
        let waiting_for = if y.len() < min {
            Some(format!("{} matured labels of {min}", y.len()))
        } else if positives.min(negatives) < MIN_CLASS {
            Some(format!(
                "{positives} filled and {negatives} unfilled labels; {MIN_CLASS} of each"
            ))
        } else if split == 0 || hy.is_empty() || split == pairs.len() {
            Some("matured rows of more than one tick".into())
        } else if !matches!((before_brier, after_brier), (Some(b), Some(a)) if a <= b) {
            Some("a fit that does not worsen the held-out Brier".into())
        } else {
            None
        };
        GroupFit {
            group: group_name(HORIZON_GROUPS[g]),
            horizons_h: HORIZON_GROUPS[g].to_vec(),
            labels: y.len(),
            positives,
            a,
            b,
            holdout_labels: hy.len(),
            holdout_brier_before: before_brier,
            holdout_brier_after: after_brier,
            holdout_ece_before: ece(hp, hy),
            holdout_ece_after: ece(&after, hy),
            ready: waiting_for.is_none(),
            waiting_for,
        }
    }

    fn publish(&mut self) {
        let started = Instant::now();
        let Some(now) = self.through else {
            return;
        };
        let window_start = now - self.config.window.as_secs() as i64;
        // Per version: probabilities, labels and items of the rows with a
        // known label inside the window.
        let mut per_version: HashMap<Arc<str>, Scored> = HashMap::new();
        let mut open_rows = 0;
        for rows in self.rows.values() {
            for row in rows {
                open_rows += 1;
                let last = self.last_seen.get(&row.item).copied().unwrap_or(row.open.t);
                let mut labels = row.open.labels(last);
                for (h, &hours) in HORIZONS_H.iter().enumerate() {
                    if row.open.t + hours as i64 * 3600 <= window_start {
                        labels[h * OFFSETS_BP.len()..(h + 1) * OFFSETS_BP.len()].fill(UNKNOWN);
                    }
                }
                if labels.iter().all(|&l| l == UNKNOWN) {
                    continue;
                }
                let e = per_version
                    .entry(row.version.clone())
                    .or_insert_with(|| (Vec::new(), Vec::new(), Vec::new(), i64::MAX, i64::MIN));
                let probs = gept_store::decode_probabilities(&row.probabilities)
                    .expect("encoded here, 108 u16");
                e.0.extend(probs);
                e.1.extend_from_slice(&labels);
                e.2.push(row.item);
                e.3 = e.3.min(row.open.t);
                e.4 = e.4.max(row.open.t);
            }
        }
        let mut models: Vec<ModelReport> = per_version
            .into_iter()
            .map(|(version, (probs, labels, items, first, last))| {
                let report =
                    eval::evaluate(&probs, &labels, &items, HORIZONS_H[HORIZONS_H.len() - 1]);
                let validation = self.validation(&version);
                self.model_report(&version, report, &probs, &labels, validation, first, last)
            })
            .collect();
        models.sort_by_key(|m| std::cmp::Reverse(m.last_tick));
        let recalibration = match models.first() {
            Some(newest) => {
                let version = newest.version.clone();
                self.recalibration(&version)
            }
            None => None,
        };
        // Metrics follow the newest model.
        if let Some(newest) = models.first() {
            for g in &newest.groups {
                let l = g.group.clone();
                let set = |name: &'static str, v: Option<f64>| {
                    metrics::gauge!(name, "group" => l.clone()).set(v.unwrap_or(f64::NAN));
                };
                set(m::ACCURACY_BRIER, g.live.brier);
                set(m::ACCURACY_ECE, g.live.ece);
                set(m::ACCURACY_AUC, g.live.auc);
                set(m::ACCURACY_WITHIN_ITEM_AUC, g.live.within_item_auc);
                set(m::ACCURACY_LABELS, Some(g.live.labels as f64));
                set(m::ACCURACY_DRIFT, Some(f64::from(u8::from(g.drift))));
            }
        }
        metrics::gauge!(m::ACCURACY_OPEN_ROWS).set(open_rows as f64);
        metrics::histogram!(m::ACCURACY_PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
        let old = self.report.load();
        let drifted = models.first().is_some_and(|r| r.drift);
        let was = old.models.first().is_some_and(|r| r.drift);
        if drifted && !was {
            tracing::warn!(
                version = %models[0].version,
                groups = ?models[0].groups.iter().filter(|g| g.drift).map(|g| g.group.as_str()).collect::<Vec<_>>(),
                "live accuracy drifted below the model's validation figures"
            );
        }
        self.report.store(Arc::new(Report {
            enabled: true,
            sample_seconds: self.config.sample.as_secs(),
            window_seconds: self.config.window.as_secs(),
            through: Some(now),
            updated_at: Some(chrono::Utc::now().timestamp()),
            open_rows,
            gaps: self.gaps,
            models,
            recalibration,
        }));
        self.published.notify_one();
    }

    #[allow(clippy::too_many_arguments)]
    fn model_report(
        &self,
        version: &str,
        report: eval::Report,
        probs: &[f32],
        labels: &[u8],
        validation: Option<Vec<TargetMetrics>>,
        first: i64,
        last: i64,
    ) -> ModelReport {
        let horizon_of = |t: usize| HORIZONS_H[t / OFFSETS_BP.len()];
        let published = self.report.load();
        let previous = published.models.iter().find(|m| m.version == version);
        let groups: Vec<GroupReport> = HORIZON_GROUPS
            .iter()
            .map(|hs| {
                let in_group = |t: &usize| hs.contains(&horizon_of(*t));
                let live = set_figures(
                    report
                        .targets
                        .iter()
                        .enumerate()
                        .filter(|(t, _)| in_group(t))
                        .map(|(_, m)| m),
                );
                // Drift compares like with like: the group's targets that
                // validation had labels for, live and in validation.
                let validated: Vec<usize> = validation
                    .as_ref()
                    .map(|v| {
                        v.iter()
                            .filter(|m| m.n > 0)
                            .filter_map(|m| TARGETS.iter().position(|n| *n == m.name))
                            .filter(|t| in_group(t))
                            .collect()
                    })
                    .unwrap_or_default();
                let validation = validation.as_ref().map(|v| {
                    set_figures(v.iter().filter(|m| {
                        TARGETS
                            .iter()
                            .position(|n| *n == m.name)
                            .is_some_and(|t| validated.contains(&t))
                    }))
                });
                let live_validated = set_figures(
                    report
                        .targets
                        .iter()
                        .enumerate()
                        .filter(|(t, _)| validated.contains(t))
                        .map(|(_, m)| m),
                );
                let name = group_name(hs);
                let was = previous
                    .and_then(|m| m.groups.iter().find(|g| g.group == name))
                    .is_some_and(|g| g.drift);
                let drift = live_validated.labels >= self.config.min_labels
                    && validation.as_ref().is_some_and(|v| {
                        drifted(
                            was,
                            (
                                live_validated.brier,
                                v.brier,
                                self.config.drift_brier_margin,
                            ),
                            (live_validated.ece, v.ece, self.config.drift_ece_margin),
                        )
                    });
                let (mut s, mut y) = (Vec::new(), Vec::new());
                for (row, l) in labels.chunks_exact(N_TARGETS).enumerate() {
                    for t in (0..N_TARGETS).filter(|t| in_group(t)) {
                        if l[t] <= 1 {
                            s.push(probs[row * N_TARGETS + t]);
                            y.push(l[t] == 1);
                        }
                    }
                }
                GroupReport {
                    group: name,
                    horizons_h: hs.to_vec(),
                    live,
                    validation,
                    live_validated,
                    drift,
                    reliability: reliability(&s, &y, 10),
                }
            })
            .collect();
        let offsets = OFFSETS_BP
            .iter()
            .enumerate()
            .map(|(k, &bp)| OffsetReport {
                offset_bp: bp,
                live: set_figures(
                    report
                        .targets
                        .iter()
                        .enumerate()
                        .filter(|(t, _)| t % OFFSETS_BP.len() == k)
                        .map(|(_, m)| m),
                ),
            })
            .collect();
        ModelReport {
            version: version.to_string(),
            rows: report.rows,
            items: report.items,
            first_tick: Some(first),
            last_tick: Some(last),
            drift: groups.iter().any(|g| g.drift),
            groups,
            offsets,
            targets: report.targets,
        }
    }
}

/// Whether a group drifted: its live Brier or ECE (`(live, validation,
/// margin)` each) worse than validation by more than the margin. With
/// hysteresis: a group that drifted at the last publish stays so until both
/// are back within half their margins, so a figure hovering at the margin
/// does not raise and clear the warning at every publish.
fn drifted(
    was: bool,
    brier: (Option<f64>, Option<f64>, f64),
    ece: (Option<f64>, Option<f64>, f64),
) -> bool {
    let factor = if was { 0.5 } else { 1.0 };
    let worse = |(live, val, margin): (Option<f64>, Option<f64>, f64)| matches!((live, val), (Some(l), Some(v)) if l > v + margin * factor);
    worse(brier) || worse(ece)
}

#[cfg(test)]
mod drift_tests {
    use super::drifted;

    #[test]
    fn drift_is_raised_past_the_margin_and_cleared_within_half_of_it() {
        let ece = (Some(0.05), Some(0.05), 0.03);
        // Validation Brier 0.10, margin 0.02.
        let b = |live: f64| (Some(live), Some(0.10), 0.02);
        assert!(!drifted(false, b(0.115), ece), "within the margin");
        assert!(drifted(false, b(0.125), ece), "past the margin");
        assert!(drifted(true, b(0.115), ece), "hovering: stays raised");
        assert!(
            !drifted(true, b(0.105), ece),
            "within half the margin: cleared"
        );
        // Either figure raises it; no figure, no drift.
        assert!(drifted(false, b(0.10), (Some(0.09), Some(0.05), 0.03)));
        assert!(!drifted(
            true,
            (None, Some(0.10), 0.02),
            (Some(0.05), None, 0.03)
        ));
    }
}
