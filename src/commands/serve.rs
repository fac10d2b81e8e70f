//! `gept serve`: collectors, store writer and the HTTP API in one process.
//!
//! Start-up: refuse without a User-Agent, connect and migrate the store, bind
//! the HTTP listener (`/healthz` and `/metrics` answer from the start), start
//! the store writer, the feature engine (fed by the collectors' broadcast)
//! and every enabled collector under its supervisor. On
//! SIGINT or SIGTERM: stop polling, wait for polls in flight, flush every
//! buffered row, close the store, exit.

use crate::api::{limits::RateLimiter, ApiState};
use crate::http::{self, AppState};
use actix::prelude::*;
use gept_actors::collectors::{self, CollectorEnv, FeedEvent, Shutdown};
use gept_actors::health::Health;
use gept_actors::inference::Inference;
use gept_actors::upstream::UpstreamClient;
use gept_actors::writer::{Flush, StoreWriter};
use gept_actors::Store;
use gept_core::config::{redact_url, Config};
use std::sync::Arc;

/// Runs the service until a signal; on an actix `System` over a multi-thread tokio runtime.
pub fn run(config: Config) -> anyhow::Result<()> {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    system.block_on(serve(config))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// Keeps the API's item metadata current with each `/mapping` poll.
fn follow_items(
    mut events: tokio::sync::broadcast::Receiver<FeedEvent>,
    items: Arc<
        arc_swap::ArcSwap<std::collections::HashMap<gept_core::ItemId, gept_core::ItemMeta>>,
    >,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(FeedEvent::Items(list)) => items.store(Arc::new(
                    list.iter().map(|m| (m.item_id, m.clone())).collect(),
                )),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let client = UpstreamClient::new(&config.upstream)?;
    let prometheus = crate::telemetry::install_metrics()?;
    let url = config.database_url()?;
    let store = Store::connect(&url, config.database.max_connections).await?;
    store.migrate().await?;
    tracing::info!(database = %redact_url(&url), "store ready");

    let health = Health::default();
    let device = match config.inference.device_name().map_err(anyhow::Error::msg)? {
        "cpu" => tch::Device::Cpu,
        "cuda" => {
            anyhow::ensure!(
                tch::Cuda::is_available(),
                "inference.device = cuda, but no CUDA device is available"
            );
            tch::Device::Cuda(0)
        }
        _ => tch::Device::cuda_if_available(),
    };
    let inference = Inference::spawn(
        store.clone(),
        device,
        tokio::runtime::Handle::current(),
        config.inference.stream_buffer,
    )?;
    let _registry_watch = inference.watch_registry(config.inference.registry_poll);
    let items_map: std::collections::HashMap<_, _> = store
        .load_items()
        .await?
        .into_iter()
        .map(|m| (m.item_id, m))
        .collect();
    let items = Arc::new(arc_swap::ArcSwap::from_pointee(items_map.clone()));
    let trusted = config
        .api
        .trusted_clients
        .iter()
        .map(|c| {
            c.parse()
                .map_err(|_| anyhow::anyhow!("api.trusted_clients: {c:?} is not an IP address"))
        })
        .collect::<anyhow::Result<Vec<std::net::IpAddr>>>()?;
    let api_items = items.clone();
    let api = ApiState {
        store: store.clone(),
        health: health.clone(),
        inference: inference.clone(),
        items,
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
        retention: (config.retention.latest, config.retention.predictions),
        started_at: chrono::Utc::now().timestamp(),
        all_items_message: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind(&config.api.listen).await?;
    let addr = listener.local_addr()?;
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let routes = http::routes(AppState {
        api,
        prometheus,
        cors_origins: config.api.cors_origins.clone(),
    });
    let http_task = tokio::spawn(async move {
        warp::serve(routes)
            .incoming(listener)
            .graceful(async move {
                let _ = http_stopped.await;
            })
            .run()
            .await;
    });
    eprintln!("gept: listening on http://{addr}");

    let writer = StoreWriter::new(
        store.clone(),
        config.database.batch_rows,
        config.database.flush_interval,
    )
    .start();
    let (events, _) = tokio::sync::broadcast::channel(1024);
    let _items_follow = follow_items(events.subscribe(), api_items);
    let sink = inference.clone();
    let _features =
        gept_actors::features::spawn(events.subscribe(), items_map, move |tick, rows| {
            sink.submit(tick, rows)
        })?;
    let env = Arc::new(CollectorEnv {
        client,
        writer: writer.clone(),
        store: store.clone(),
        events,
        health,
        backfill: Arc::default(),
        backfill_enabled: config.collectors.timeseries.enabled,
        panic_rate: config.chaos.collector_panic_rate,
    });
    let running = collectors::start_all(&config, env);
    tracing::info!(collectors = ?running.iter().map(|(n, _)| *n).collect::<Vec<_>>(), "collectors started");

    shutdown_signal().await;
    tracing::info!("shutting down: stopping collectors");
    for (_, addr) in &running {
        let _ = addr.send(Shutdown).await;
    }
    tracing::info!("flushing the store writer");
    let mut flushed = false;
    for attempt in 0..5u32 {
        match writer.send(Flush).await {
            Ok(Ok(())) => {
                flushed = true;
                break;
            }
            Ok(Err(e)) => tracing::warn!(attempt, error = %e, "final flush failed; retrying"),
            Err(e) => {
                tracing::error!(error = %e, "store writer is gone");
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200 * 2u64.pow(attempt))).await;
    }
    let _ = http_stop.send(());
    let _ = http_task.await;
    store.close().await;
    System::current().stop();
    if flushed {
        eprintln!("gept: stopped, every buffered row stored");
        Ok(())
    } else {
        anyhow::bail!("stopped with rows that could not be stored")
    }
}
