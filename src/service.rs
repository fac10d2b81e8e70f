//! The one wiring of the running service: store, upstream client, store
//! writer, collectors, feature engine, inference and the HTTP API.
//!
//! `gept serve`, the serving benchmark and the end-to-end tests all start the
//! service through [`Service::start`] (tests that inject faults through
//! [`Service::start_with_faults`]) and stop it through
//! [`ServiceHandle::shutdown`]. The service must be started inside an actix
//! `System` (the collectors are actors): [`system`] builds one over a
//! multi-thread tokio runtime.
//!
//! Shutdown is one [`CancellationToken`]. Every part observes it: the
//! upstream client abandons requests and `Retry-After` waits, the feature
//! engine thread leaves its loop, the registry watcher and the item follower
//! end, the HTTP server stops accepting. [`ServiceHandle::shutdown`] fires it,
//! then stops the collectors (each answers after its poll in flight), flushes
//! the writer, joins the feature thread, stops the inference thread after the
//! ticks already handed to it and awaits their prediction writes, waits for
//! the HTTP server and closes the store, all within
//! `service.shutdown_timeout`.

use crate::api::{limits::RateLimiter, ApiState};
use crate::http::{self, AppState};
use actix::prelude::*;
use gept_actors::collectors::{self, CollectorActor, CollectorEnv, FeedEvent, Shutdown};
use gept_actors::health::Health;
use gept_actors::inference::Inference;
use gept_actors::standby::Role;
use gept_actors::supervise::Faults;
use gept_actors::upstream::UpstreamClient;
use gept_actors::writer::{Flush, StoreWriter};
use gept_core::config::{redact_url, Config};
use gept_core::{ItemId, ItemMeta};
use gept_store::Store;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The collectors running now, by name.
type Running = Arc<std::sync::Mutex<Vec<(&'static str, Addr<CollectorActor>)>>>;

/// Stops every running collector (each answers after its poll in flight).
async fn stop_collectors(running: &Running) {
    let stopping: Vec<_> = std::mem::take(&mut *running.lock().expect("collectors lock"));
    for (_, addr) in &stopping {
        let _ = addr.send(Shutdown).await;
    }
}

/// Capacity of the feed broadcast (collectors → feature engine, item follower).
const FEED_CAPACITY: usize = 1024;

/// An actix `System` over a multi-thread tokio runtime, for [`Service::start`].
pub fn system() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Starts the service; see the module documentation.
pub struct Service;

/// A running service: where it listens, its parts for callers that feed or
/// inspect it, and the way to stop it.
pub struct ServiceHandle {
    /// The HTTP API's address.
    pub addr: SocketAddr,
    pub store: Store,
    pub inference: Inference,
    /// The live accuracy monitor (`accuracy.enabled`).
    pub accuracy: Option<gept_actors::accuracy::Monitor>,
    feed: broadcast::Sender<FeedEvent>,
    cancel: CancellationToken,
    /// The running collectors (none while this node follows).
    collectors: Running,
    /// Primary or follower (always primary without `standby.enabled`).
    pub role: Arc<Role>,
    writer: Addr<StoreWriter>,
    engine: Option<std::thread::JoinHandle<()>>,
    http: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
    shutdown_timeout: Duration,
    /// Whether the lease decides the role.
    standby: bool,
}

/// What a stop achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// Every row handed to the writer was stored.
    pub flushed: bool,
    /// The feature and inference threads ended and prediction writes finished.
    pub threads_joined: bool,
    /// Everything finished within `service.shutdown_timeout`.
    pub in_time: bool,
}

impl StopReport {
    /// Whether nothing was left behind.
    pub fn clean(&self) -> bool {
        self.flushed && self.threads_joined && self.in_time
    }
}

fn inference_device(config: &Config) -> anyhow::Result<tch::Device> {
    Ok(
        match config.inference.device_name().map_err(anyhow::Error::msg)? {
            "cpu" => tch::Device::Cpu,
            "cuda" => {
                anyhow::ensure!(
                    tch::Cuda::is_available(),
                    "inference.device = cuda, but no CUDA device is available"
                );
                tch::Device::Cuda(0)
            }
            _ => tch::Device::cuda_if_available(),
        },
    )
}

/// Keeps the API's item metadata current with each `/mapping` poll.
fn follow_items(
    mut events: broadcast::Receiver<FeedEvent>,
    items: Arc<arc_swap::ArcSwap<HashMap<ItemId, ItemMeta>>>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = cancel.cancelled() => break,
            };
            match event {
                Ok(FeedEvent::Items(list)) => items.store(Arc::new(
                    list.iter().map(|m| (m.item_id, m.clone())).collect(),
                )),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

impl Service {
    /// Starts every part the configuration enables, as `gept serve` runs it.
    pub async fn start(config: &Config) -> anyhow::Result<ServiceHandle> {
        Self::start_with_faults(config, Faults::none()).await
    }

    /// [`Service::start`] with faults injected into the collectors (crash tests).
    pub async fn start_with_faults(
        config: &Config,
        faults: Faults,
    ) -> anyhow::Result<ServiceHandle> {
        let cancel = CancellationToken::new();
        let client = UpstreamClient::new(&config.upstream)?.with_cancel(cancel.clone());
        let prometheus = crate::telemetry::install_metrics()?;
        let url = config.database_url()?;
        let store = Store::connect(&url, config.database.max_connections).await?;
        store.migrate().await?;
        tracing::info!(database = %redact_url(&url), "store ready");

        let health = Health::default();
        let role = Role::new(
            if config.standby.enabled && !config.standby.node.is_empty() {
                config.standby.node.clone()
            } else {
                gept_actors::standby::default_node()
            },
            !config.standby.enabled,
        );
        let inference = Inference::spawn(
            store.clone(),
            inference_device(config)?,
            tokio::runtime::Handle::current(),
            config.inference.stream_buffer,
            faults.inference_panic_on_tick,
            config.model_cache(),
        )?;
        // A follower predicts for its own API; the primary writes.
        inference
            .writes
            .store(role.is_primary(), std::sync::atomic::Ordering::SeqCst);
        // The live accuracy monitor follows every tick the inference handles.
        let accuracy = if config.accuracy.enabled {
            let monitor = gept_actors::accuracy::Monitor::spawn(
                &config.accuracy,
                store.clone(),
                tokio::runtime::Handle::current(),
            )?;
            let _ = inference.accuracy.set(monitor.feed.clone());
            Some(monitor)
        } else {
            None
        };
        let mut background =
            vec![inference.watch_registry(config.inference.registry_poll, cancel.clone())];
        let items_map: HashMap<_, _> = store
            .load_items()
            .await?
            .into_iter()
            .map(|m| (m.item_id, m))
            .collect();
        let items = Arc::new(arc_swap::ArcSwap::from_pointee(items_map.clone()));
        let engine_alive = gept_actors::health::Alive::default();
        let engine_alive_watch = engine_alive.clone();
        let trusted = config
            .api
            .trusted_clients
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|_| anyhow::anyhow!("api.trusted_clients: {c:?} is not an IP address"))
            })
            .collect::<anyhow::Result<Vec<std::net::IpAddr>>>()?;
        let trusted_proxies = config
            .api
            .trusted_proxies
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|_| anyhow::anyhow!("api.trusted_proxies: {c:?} is not an IP address"))
            })
            .collect::<anyhow::Result<Vec<std::net::IpAddr>>>()?;
        let trainer = gept_actors::trainer::Trainer::default();
        let api = ApiState::new(crate::api::state::Shared {
            store: store.clone(),
            health: health.clone(),
            inference: inference.clone(),
            items: items.clone(),
            limiter: Arc::new(RateLimiter::new(
                config.api.rate_limit_per_second,
                config.api.rate_limit_burst,
                trusted,
                config.api.trusted_rate_limit_per_second,
            )),
            admin_token: config.admin_token()?.map(Arc::from),
            max_body_bytes: config.api.max_body_bytes,
            ws_max_message_bytes: config.api.ws_max_message_bytes,
            ws_queue: config.api.ws_client_queue,
            ws_ping_interval: config.api.ws_ping_interval,
            retention: Arc::new(gept_actors::retention::Policy::from_config(
                &config.retention,
            )),
            started_at: chrono::Utc::now().timestamp(),
            all_items_message: Arc::default(),
            all_items_gzip: Arc::default(),
            snapshots: Arc::default(),
            item_bodies: Arc::default(),
            trusted_proxies: Arc::new(trusted_proxies.clone()),
            ws_slots: Arc::new(crate::api::limits::WsSlots::new(
                config.api.ws_max_clients,
                config.api.ws_max_clients_per_ip,
            )),
            engine_alive: engine_alive.clone(),
            role: role.clone(),
            ready_max_feed_age: config.api.ready_max_feed_age,
            cancel: cancel.clone(),
            accuracy: accuracy.clone(),
            stale_after: config.api.stale_after,
            trainer: config.trainer.enabled.then(|| trainer.clone()),
            discord: config
                .discord_public_key()?
                .map(|k| crate::discord::Verifier::new(&k, config.discord.max_clock_skew))
                .transpose()
                .map_err(anyhow::Error::msg)?
                .map(Arc::new),
        });
        let listener = tokio::net::TcpListener::bind(&config.api.listen).await?;
        let addr = listener.local_addr()?;
        let routes = http::routes(AppState {
            api,
            prometheus,
            cors_origins: config.api.cors_origins.clone(),
            metrics_token: config.metrics_token()?.map(Arc::from),
        });
        let server_limits = crate::server::Limits::from_config(&config.api, trusted_proxies);
        let http = tokio::spawn(crate::server::serve(
            listener,
            routes,
            server_limits,
            cancel.clone(),
        ));
        tracing::info!(%addr, "listening");

        let journal = gept_actors::journal::Journal::open(&config.journal_dir()).map_err(|e| {
            anyhow::anyhow!(
                "database.journal_dir {}: {e}",
                config.journal_dir().display()
            )
        })?;
        if !journal.is_empty() {
            tracing::warn!(
                bytes = journal.bytes(),
                "the writer journal holds rows from an earlier run; storing them first"
            );
        }
        let writer = StoreWriter::new(
            store.clone(),
            config.database.batch_rows,
            config.database.flush_interval,
        )
        .with_journal(journal, config.database.buffer_max_rows)
        .start();
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        background.push(follow_items(feed.subscribe(), items, cancel.clone()));
        let sink = inference.clone();
        let engine = gept_actors::features::spawn(
            feed.subscribe(),
            items_map,
            tokio::runtime::Handle::current(),
            cancel.clone(),
            engine_alive,
            gept_actors::features::Warm {
                store: store.clone(),
                writer: Some(writer.clone()),
            },
            faults,
            move |tick, rows| sink.submit(tick, rows),
        )?;
        let env = Arc::new(CollectorEnv {
            client,
            writer: writer.clone(),
            store: store.clone(),
            events: feed.clone(),
            health: health.clone(),
            backfill: Arc::default(),
            backfill_enabled: config.collectors.timeseries.enabled,
            faults,
            latest_gap_after: config.collectors.latest.gap_after,
        });
        if config.trainer.enabled {
            let task = trainer.start(
                gept_actors::trainer::TrainerEnv {
                    config: config.trainer.clone(),
                    database_url: config.database_url()?,
                    work_dir: config.model_cache().join(".training"),
                    model_cache: config.model_cache(),
                    store: store.clone(),
                    inference: inference.clone(),
                    accuracy: accuracy.clone(),
                    role: role.clone(),
                    shuffle_labels: faults.trainer_shuffle_labels,
                },
                cancel.clone(),
            );
            background.push(task);
        }
        if let Some(monitor) = accuracy.clone().filter(|_| config.accuracy.recalibrate) {
            background.push(gept_actors::recalibrate::spawn(
                gept_actors::recalibrate::RecalibratorEnv {
                    monitor,
                    store: store.clone(),
                    inference: inference.clone(),
                    role: role.clone(),
                    model_cache: config.model_cache(),
                },
                cancel.clone(),
            ));
        }
        if config.retention.enabled {
            background.push(gept_actors::retention::spawn(
                store.clone(),
                &config.retention,
                cancel.clone(),
            ));
        }
        if config.backup.enabled {
            background.push(gept_actors::backup::spawn(
                store.clone(),
                config.backup_dir(),
                config.backup.interval,
                config.backup.keep,
                cancel.clone(),
            ));
        }
        if config.alerts.enabled {
            let mut volumes = Vec::new();
            if let Some(db) = config.sqlite_path() {
                volumes.push(("database", db));
            }
            if config.backup.enabled {
                volumes.push(("backups", config.backup_dir()));
            }
            background.push(gept_actors::alerts::spawn(
                gept_actors::alerts::Watched {
                    health: health.clone(),
                    engine: engine_alive_watch,
                    inference: inference.alive.clone(),
                    role: role.clone(),
                    model: inference.status.clone(),
                    upstream: Some((
                        env.client.clone(),
                        format!("{}/latest", config.upstream.base_url.trim_end_matches('/')),
                    )),
                    volumes,
                    max_feed_age: config.api.ready_max_feed_age,
                    started_at: chrono::Utc::now().timestamp(),
                },
                gept_actors::alerts::Policy::from_config(&config.alerts),
                config.alerts_webhook()?,
                cancel.clone(),
            ));
        }
        let running: Running = Arc::default();
        if config.standby.enabled {
            // The lease decides when this node collects; meanwhile it follows
            // the store. Collectors are actors: the lease loop runs on the
            // actix arbiter.
            background.push(gept_actors::standby::follow(
                store.clone(),
                feed.clone(),
                role.clone(),
                config.standby.follow_interval,
                gept_actors::features::WARM_SPAN,
                cancel.clone(),
            ));
            let (config_p, env_p, running_p) = (config.clone(), env.clone(), running.clone());
            let (writes_p, writes_d) = (inference.writes.clone(), inference.writes.clone());
            let running_d = running.clone();
            background.push(actix::spawn(gept_actors::standby::lead(
                store.clone(),
                role.clone(),
                config.standby.lease,
                config.standby.renew,
                cancel.clone(),
                move || {
                    writes_p.store(true, std::sync::atomic::Ordering::SeqCst);
                    let started = collectors::start_all(&config_p, env_p.clone());
                    tracing::info!(collectors = ?started.iter().map(|(n, _)| *n).collect::<Vec<_>>(), "collectors started");
                    *running_p.lock().expect("collectors lock") = started;
                },
                move || {
                    writes_d.store(false, std::sync::atomic::Ordering::SeqCst);
                    let running = running_d.clone();
                    Box::pin(async move { stop_collectors(&running).await })
                },
            )));
        } else {
            let started = collectors::start_all(config, env);
            tracing::info!(collectors = ?started.iter().map(|(n, _)| *n).collect::<Vec<_>>(), "collectors started");
            *running.lock().expect("collectors lock") = started;
        }
        Ok(ServiceHandle {
            addr,
            store,
            inference,
            accuracy,
            feed,
            cancel,
            collectors: running,
            role,
            writer,
            engine: Some(engine),
            http,
            background,
            shutdown_timeout: config.service.shutdown_timeout,
            standby: config.standby.enabled,
        })
    }
}

impl ServiceHandle {
    /// Publishes an event on the collectors' feed, exactly as a collector
    /// does after storing what it fetched (the serving benchmark feeds
    /// recorded ticks and buckets this way with the collectors disabled).
    pub fn feed(&self, event: FeedEvent) {
        let _ = self.feed.send(event);
    }

    /// Stops every part, in order, within `service.shutdown_timeout`.
    pub async fn shutdown(mut self) -> StopReport {
        let timeout = self.shutdown_timeout;
        let mut report = StopReport {
            flushed: false,
            threads_joined: false,
            in_time: false,
        };
        let stop = async {
            self.cancel.cancel();
            tracing::info!("shutting down: stopping collectors");
            stop_collectors(&self.collectors).await;
            tracing::info!("flushing the store writer");
            for attempt in 0..5u32 {
                match self.writer.send(Flush).await {
                    Ok(Ok(())) => {
                        report.flushed = true;
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(attempt, error = %e, "final flush failed; retrying")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "store writer is gone");
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
            }
            tracing::info!("joining the feature engine and inference threads");
            let engine = self.engine.take();
            let inference = self.inference.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let engine_ok = engine.is_none_or(|t| t.join().is_ok());
                // The engine has stopped submitting: stop inference after
                // the ticks already queued and their prediction writes.
                let inference_ok = inference.stop().is_none_or(|t| t.join().is_ok());
                engine_ok && inference_ok
            })
            .await;
            report.threads_joined = joined.unwrap_or(false);
            for task in self.background.drain(..) {
                let _ = task.await;
            }
            let _ = (&mut self.http).await;
            if self.standby && self.role.is_primary() {
                // Hand over at once rather than after the lease expires.
                if let Err(e) = self
                    .store
                    .release_lease(gept_actors::standby::LEASE, &self.role.node)
                    .await
                {
                    tracing::warn!(error = %e, "releasing the lease failed; it expires by itself");
                }
            }
            self.store.close().await;
        };
        report.in_time = tokio::time::timeout(timeout, stop).await.is_ok();
        if !report.in_time {
            tracing::error!(?timeout, "shutdown did not finish in time");
        }
        report
    }
}
