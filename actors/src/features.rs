//! The feature engine of `gept serve`: a timely worker on its own thread,
//! fed by the collectors' broadcast of ticks and hourly buckets, keeping every
//! item's features current on every tick (`gept_dataflows::features`).
//!
//! The thread supervises the engine: a panic is caught, and after a backoff
//! ([`crate::supervise::Restarts`]) a new engine re-warms its windows from the
//! store and goes on with the event it was handling when it crashed. Re-warm
//! flushes the store writer (every tick the engine had seen was handed to it
//! before the tick was published), then replays the stored `/latest` ticks of
//! the [`WARM_SPAN`] up to the last tick the crashed engine finished, with
//! the `/1h` and `/5m` buckets stored for it, without emitting rows. Every
//! window, lag and volume the features read reaches back at most 24 h, so
//! the rows after a restart equal those of an uninterrupted run (the tests
//! compare them). One difference remains by design: a bucket back-filled
//! after a newer one was in force is used by the re-warmed engine, while the
//! running engine had dropped it as late.

use crate::collectors::{FeedEvent, Tick};
use crate::supervise::{panic_message, OnceAt, Restarts};
use crate::writer::{Flush, StoreWriter};
use actix::Addr;
use gept_core::metrics as m;
use gept_core::{BucketStep, ItemId, ItemMeta};
use gept_dataflows::features::{BucketInput, Engine, FeatureRow, TickInput, WINDOWS};
use gept_store::Store;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

/// How far back a re-warm replays stored ticks: the longest window, plus an
/// hour so that the as-of lags at the window's start find their tick.
pub const WARM_SPAN: i64 = WINDOWS[WINDOWS.len() - 1].0 + 3_600;
/// Stored ticks are read back in chunks of this many seconds (bounded memory).
const WARM_CHUNK: i64 = 3_600;

/// Where a restarted engine re-warms from.
pub struct Warm {
    pub store: Store,
    /// Flushed first, so that every tick handed to it is stored.
    pub writer: Option<Addr<StoreWriter>>,
}

/// What the supervised engine carries from one run to the next.
struct Carry {
    items: HashMap<ItemId, ItemMeta>,
    /// Time of the last tick whose rows were emitted.
    last_done: Option<i64>,
    /// The event being handled when the engine crashed, and how often it was
    /// tried.
    in_flight: Option<(FeedEvent, u32)>,
}

/// Starts the engine on a thread of its own (`alive` is set while an engine
/// runs, cleared while it restarts); it ends when `cancel` fires or the
/// channel closes (it waits for events on `runtime`, so it observes the
/// cancellation while idle). `on_rows` receives each completed tick with the
/// rows of every item observed at it (inference takes them from there).
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    mut events: broadcast::Receiver<FeedEvent>,
    items: HashMap<ItemId, ItemMeta>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    alive: crate::health::Alive,
    warm: Warm,
    faults: crate::supervise::Faults,
    mut on_rows: impl FnMut(Arc<Tick>, Vec<FeatureRow>) + Send + Sync + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gept-features".into())
        .spawn(move || {
            let fault = OnceAt::new(faults.engine_panic_on_tick);
            let mut restarts = Restarts::new("features");
            let mut carry = Carry {
                items,
                last_done: None,
                in_flight: None,
            };
            loop {
                let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    with_worker(|worker| {
                        run(
                            worker,
                            &mut events,
                            &mut carry,
                            &runtime,
                            &cancel,
                            &alive,
                            &warm,
                            restarts.total() > 0,
                            &fault,
                            &mut on_rows,
                        )
                    })
                }));
                let Err(payload) = run else { break };
                let why = panic_message(payload.as_ref());
                let wait = restarts.crashed(Instant::now(), &why)
                    + faults.engine_restart_hold.unwrap_or_default();
                let cancelled = runtime.block_on(async {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => false,
                        _ = cancel.cancelled() => true,
                    }
                });
                if cancelled {
                    break;
                }
            }
        })
}

/// Runs `f` on a single timely worker of this thread, as
/// `timely::execute_directly` does, without its `'static` bound (the
/// supervisor lends the engine its state).
fn with_worker<T>(f: impl FnOnce(&mut timely::worker::Worker) -> T) -> T {
    use timely::communication::allocator::thread::Thread;
    let alloc = timely::communication::Allocator::Thread(Thread::default());
    let mut worker =
        timely::worker::Worker::new(timely::WorkerConfig::default(), alloc, Some(Instant::now()));
    let result = f(&mut worker);
    while worker.has_dataflows() {
        worker.step_or_park(None);
    }
    result
}

/// One engine's life: re-warm if it replaces a crashed one, then the events.
#[allow(clippy::too_many_arguments)]
fn run(
    worker: &mut timely::worker::Worker,
    events: &mut broadcast::Receiver<FeedEvent>,
    carry: &mut Carry,
    runtime: &tokio::runtime::Handle,
    cancel: &CancellationToken,
    alive: &crate::health::Alive,
    warm: &Warm,
    restarted: bool,
    fault: &OnceAt,
    on_rows: &mut impl FnMut(Arc<Tick>, Vec<FeatureRow>),
) {
    let mut engine = Engine::new(worker);
    if restarted {
        if let Some(until) = carry.last_done {
            let started = Instant::now();
            match rewarm(&mut engine, worker, warm, runtime, until, &carry.items) {
                Ok(ticks) => tracing::info!(
                    ticks,
                    until,
                    took = ?started.elapsed(),
                    "feature engine re-warmed from the store"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "re-warming the feature engine failed; its windows start empty"
                ),
            }
        }
    }
    let _alive = alive.enter();
    if restarted {
        metrics::gauge!(m::COMPONENT_UP, "component" => "features").set(1.0);
    }
    // The event the crashed engine was handling, once more (twice in all);
    // an event that crashes two engines is dropped.
    if let Some((event, tries)) = carry.in_flight.take() {
        if tries < 2 {
            carry.in_flight = Some((event.clone(), tries + 1));
            handle(worker, &mut engine, event, carry, fault, on_rows);
            carry.in_flight = None;
        } else {
            tracing::error!(
                ?tries,
                "dropping an event that crashed the feature engine twice"
            );
        }
    }
    loop {
        let next = runtime.block_on(async {
            tokio::select! {
                e = events.recv() => Some(e),
                _ = cancel.cancelled() => None,
            }
        });
        let Some(next) = next else { break };
        match next {
            Ok(event) => {
                carry.in_flight = Some((event.clone(), 1));
                handle(worker, &mut engine, event, carry, fault, on_rows);
                carry.in_flight = None;
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "feature engine fell behind the collectors");
                metrics::counter!(m::FEATURE_EVENTS_LAGGED).increment(n);
            }
            Err(RecvError::Closed) => break,
        }
    }
}

fn handle(
    worker: &mut timely::worker::Worker,
    engine: &mut Engine,
    event: FeedEvent,
    carry: &mut Carry,
    fault: &OnceAt,
    on_rows: &mut impl FnMut(Arc<Tick>, Vec<FeatureRow>),
) {
    match event {
        FeedEvent::Tick(tick) => {
            let started = Instant::now();
            fault.hit("the feature engine");
            let input = TickInput {
                time: tick.observed_at,
                rows: tick.rows.clone(),
            };
            if let Some(rows) = engine.tick(worker, &input, &carry.items) {
                metrics::counter!(m::FEATURE_ROWS).increment(rows.len() as u64);
                metrics::histogram!(m::FEATURE_TICK_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                carry.last_done = Some(tick.observed_at);
                on_rows(tick, rows);
            }
        }
        FeedEvent::Bucket {
            step,
            timestamp,
            rows,
        } => engine.add_bucket(BucketInput {
            step,
            start: timestamp,
            rows: rows.to_vec(),
        }),
        FeedEvent::Items(list) => {
            carry.items = list.iter().map(|m| (m.item_id, m.clone())).collect();
        }
    }
}

/// Replays the stored history of the [`WARM_SPAN`] up to `until` (inclusive)
/// into a fresh `engine`, discarding its rows; answers the ticks replayed.
fn rewarm(
    engine: &mut Engine,
    worker: &mut timely::worker::Worker,
    warm: &Warm,
    runtime: &tokio::runtime::Handle,
    until: i64,
    items: &HashMap<ItemId, ItemMeta>,
) -> Result<usize, String> {
    if let Some(writer) = &warm.writer {
        let flushed = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), writer.send(Flush)).await
        });
        if !matches!(flushed, Ok(Ok(Ok(())))) {
            tracing::warn!("the store writer did not flush; the re-warm may miss the newest ticks");
        }
    }
    let from = until - WARM_SPAN;
    // Buckets: the /1h volumes reach 24 buckets back from the window's
    // start; /5m only its newest counts.
    let buckets_from = from - WARM_SPAN;
    for step in [BucketStep::OneHour, BucketStep::FiveMinutes] {
        let rows = runtime
            .block_on(warm.store.load_buckets(step, buckets_from, until + 1))
            .map_err(|e| e.to_string())?;
        for (start, rows) in gept_core::runs_by_time(rows, |r| r.timestamp) {
            engine.add_bucket(BucketInput { step, start, rows });
        }
    }
    let mut ticks = 0;
    let mut chunk_from = from;
    while chunk_from <= until {
        let chunk_to = (chunk_from + WARM_CHUNK).min(until + 1);
        let rows = runtime
            .block_on(warm.store.load_latest(chunk_from, chunk_to))
            .map_err(|e| e.to_string())?;
        let snaps = gept_core::runs_by_time(rows, |r| r.timestamp);
        for tick in gept_dataflows::features::ticks_from(snaps) {
            engine.tick(worker, &tick, items);
            ticks += 1;
        }
        chunk_from = chunk_to;
    }
    Ok(ticks)
}
