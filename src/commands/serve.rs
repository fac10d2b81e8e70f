//! `gept serve`: collectors, store writer and the HTTP API in one process.
//!
//! Start-up: refuse without a User-Agent, connect and migrate the store, bind
//! the HTTP listener (`/healthz` and `/metrics` answer from the start), start
//! the store writer, the feature engine (fed by the collectors' broadcast)
//! and every enabled collector under its supervisor. On
//! SIGINT or SIGTERM: stop polling, wait for polls in flight, flush every
//! buffered row, close the store, exit.

use crate::http::{self, AppState};
use actix::prelude::*;
use gept_actors::collectors::{self, CollectorEnv, Shutdown};
use gept_actors::health::Health;
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let client = UpstreamClient::new(&config.upstream)?;
    let prometheus = crate::telemetry::install_metrics()?;
    let url = config.database_url()?;
    let store = Store::connect(&url, config.database.max_connections).await?;
    store.migrate().await?;
    tracing::info!(database = %redact_url(&url), "store ready");

    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(&config.api.listen).await?;
    let addr = listener.local_addr()?;
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let routes = http::routes(AppState {
        store: store.clone(),
        health: health.clone(),
        prometheus,
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
    let items = store
        .load_items()
        .await?
        .into_iter()
        .map(|m| (m.item_id, m))
        .collect();
    let _features = gept_actors::features::spawn(events.subscribe(), items)?;
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
