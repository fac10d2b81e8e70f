//! The feature engine of `gept serve`: a timely worker on its own thread,
//! fed by the collectors' broadcast of ticks and hourly buckets, keeping every
//! item's features current on every tick (`gept_dataflows::features`).

use crate::collectors::{FeedEvent, Tick};
use gept_core::metrics as m;
use gept_core::{ItemId, ItemMeta};
use gept_dataflows::features::{BucketInput, Engine, FeatureRow, TickInput};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

/// Starts the engine on a thread of its own (`alive` is set while it runs);
/// it ends when `cancel` fires or
/// the channel closes (it waits for events on `runtime`, so it observes the
/// cancellation while idle). `on_rows` receives each completed tick with the
/// rows of every item observed at it (inference takes them from there).
pub fn spawn(
    mut events: broadcast::Receiver<FeedEvent>,
    mut items: HashMap<ItemId, ItemMeta>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    alive: crate::health::Alive,
    mut on_rows: impl FnMut(Arc<Tick>, Vec<FeatureRow>) + Send + Sync + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gept-features".into())
        .spawn(move || {
            // Readiness sees the engine down once this thread ends, however.
            let _alive = alive.enter();
            timely::execute_directly(move |worker| {
                let mut engine = Engine::new(worker);
                loop {
                    let next = runtime.block_on(async {
                        tokio::select! {
                            e = events.recv() => Some(e),
                            _ = cancel.cancelled() => None,
                        }
                    });
                    let Some(next) = next else { break };
                    match next {
                        Ok(FeedEvent::Tick(tick)) => {
                            let started = Instant::now();
                            let input = TickInput {
                                time: tick.observed_at,
                                rows: tick.rows.clone(),
                            };
                            if let Some(rows) = engine.tick(worker, &input, &items) {
                                metrics::counter!(m::FEATURE_ROWS).increment(rows.len() as u64);
                                metrics::histogram!(m::FEATURE_TICK_SECONDS)
                                    .record(started.elapsed().as_secs_f64());
                                on_rows(tick, rows);
                            }
                        }
                        Ok(FeedEvent::Bucket {
                            step,
                            timestamp,
                            rows,
                        }) => engine.add_bucket(BucketInput {
                            step,
                            start: timestamp,
                            rows: rows.to_vec(),
                        }),
                        Ok(FeedEvent::Items(list)) => {
                            items = list.iter().map(|m| (m.item_id, m.clone())).collect();
                        }
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "feature engine fell behind the collectors");
                            metrics::counter!(m::FEATURE_EVENTS_LAGGED).increment(n);
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
            })
        })
}
