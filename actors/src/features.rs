//! The feature engine of `gept serve`: a timely worker on its own thread,
//! fed by the collectors' broadcast of ticks and hourly buckets, keeping every
//! item's features current on every tick (`gept_dataflows::features`).

use crate::collectors::FeedEvent;
use gept_core::metrics as m;
use gept_core::{BucketStep, ItemId, ItemMeta};
use gept_dataflows::features::{Engine, HourInput, TickInput};
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::broadcast::{self, error::RecvError};

/// Starts the engine on a thread of its own; it ends when the channel closes.
pub fn spawn(
    mut events: broadcast::Receiver<FeedEvent>,
    items: HashMap<ItemId, ItemMeta>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gept-features".into())
        .spawn(move || {
            timely::execute_directly(move |worker| {
                let mut engine = Engine::new(worker);
                loop {
                    match events.blocking_recv() {
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
                            }
                        }
                        Ok(FeedEvent::Bucket {
                            step: BucketStep::OneHour,
                            timestamp,
                            rows,
                        }) => engine.add_hour(HourInput {
                            start: timestamp,
                            rows: rows.to_vec(),
                        }),
                        Ok(FeedEvent::Bucket { .. }) => {}
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
