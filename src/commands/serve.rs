//! `gept serve`: the service ([`crate::service`]) until SIGINT or SIGTERM.
//!
//! Refuses to start without a User-Agent (the upstream client does), starts
//! the service, waits for a signal, stops it within
//! `service.shutdown_timeout` and says whether every buffered row was stored.

use crate::service::{self, Service};
use gept_core::config::Config;

/// Runs the service until a signal.
pub fn run(config: Config) -> anyhow::Result<()> {
    service::system().block_on(serve(config))
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
    let handle = Service::start(&config).await?;
    eprintln!("gept: listening on http://{}", handle.addr);
    shutdown_signal().await;
    let report = handle.shutdown().await;
    actix::System::current().stop();
    if !report.flushed {
        anyhow::bail!("stopped with rows that could not be stored")
    }
    if !report.clean() {
        anyhow::bail!("stopped, every buffered row stored, but not cleanly: {report:?}")
    }
    eprintln!("gept: stopped, every buffered row stored");
    Ok(())
}
