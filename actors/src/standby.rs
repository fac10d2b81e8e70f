//! Standby takeover: two or more `gept serve` on one PostgreSQL.
//!
//! The node holding the lease (`Store::take_lease`, a row in
//! `service_lease` whose expiry is set on the database's clock) is the
//! primary: it runs the collectors and writes. The others follow: [`follow`]
//! reads the ticks and buckets the primary stores and publishes them on the
//! node's own feed, so its feature engine and inference run exactly as the
//! primary's (its API serves the same predictions; it does not write them).
//! Every `standby.renew` the primary renews the lease and each follower
//! tries to take it; a lease not renewed for `standby.lease` (the primary was
//! killed or stalled) goes to the first follower that asks, which starts its
//! collectors: the `/5m` and `/1h` collectors back-fill what was missed, and
//! at most the `/latest` snapshot in flight at the primary's death is lost.
//! A primary that cannot renew for `standby.lease` (its database went away,
//! or it stalled) stops its collectors before anyone else may take over, and
//! every write is idempotent, so an overlap never stores a row twice.
//!
//! The API scales out the same way: any number of followers serve reads from
//! their own engines, behind a load balancer; only the lease holder writes.

use crate::collectors::FeedEvent;
use gept_core::metrics as m;
use gept_core::BucketStep;
use gept_store::Store;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The lease's name.
pub const LEASE: &str = "primary";

/// This node's role, shared by the lease loop, the follower, the API and the
/// alerts.
#[derive(Debug)]
pub struct Role {
    /// This node's name in the lease.
    pub node: String,
    primary: AtomicBool,
    /// Unix time the follower last found new data in the store (0: never).
    followed_at: AtomicI64,
}

impl Role {
    /// A node that starts as follower (`standby` on) or primary (off).
    pub fn new(node: String, primary: bool) -> Arc<Role> {
        metrics::gauge!(m::LEASE_HELD).set(if primary { 1.0 } else { 0.0 });
        Arc::new(Role {
            node,
            primary: AtomicBool::new(primary),
            followed_at: AtomicI64::new(0),
        })
    }

    pub fn is_primary(&self) -> bool {
        self.primary.load(Ordering::SeqCst)
    }

    /// `primary` or `follower`.
    pub fn name(&self) -> &'static str {
        if self.is_primary() {
            "primary"
        } else {
            "follower"
        }
    }

    fn set_primary(&self, primary: bool) {
        self.primary.store(primary, Ordering::SeqCst);
        metrics::gauge!(m::LEASE_HELD).set(if primary { 1.0 } else { 0.0 });
    }

    /// Unix time a follower last found new data (`None` before the first).
    pub fn followed_at(&self) -> Option<i64> {
        Some(self.followed_at.load(Ordering::SeqCst)).filter(|&t| t > 0)
    }
}

/// The default node name: host name and process id.
pub fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "gept".into());
    format!("{host}-{}", std::process::id())
}

/// Keeps or takes the lease every `renew` until `cancel` fires, calling
/// `promote` when this node becomes primary and `demote` when it stops being
/// one (it could not renew for `lease`, or found another holder). Runs on
/// the actix arbiter (collectors start from `promote`).
pub async fn lead<P, D>(
    store: Store,
    role: Arc<Role>,
    lease: Duration,
    renew: Duration,
    cancel: CancellationToken,
    mut promote: P,
    mut demote: D,
) where
    P: FnMut(),
    D: FnMut() -> futures::future::BoxFuture<'static, ()>,
{
    let mut renewed_at: Option<tokio::time::Instant> = None;
    loop {
        match store.take_lease(LEASE, &role.node, lease).await {
            Ok(true) => {
                renewed_at = Some(tokio::time::Instant::now());
                if !role.is_primary() {
                    tracing::warn!(node = %role.node, "took the lease: this node is now the primary");
                    metrics::counter!(m::LEASE_TAKEOVERS).increment(1);
                    role.set_primary(true);
                    promote();
                }
            }
            Ok(false) => {
                if role.is_primary() {
                    tracing::error!(node = %role.node, "another node holds the lease: following");
                    role.set_primary(false);
                    demote().await;
                }
                renewed_at = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the lease could not be renewed");
                let expired = renewed_at.is_none_or(|t| t.elapsed() + renew >= lease);
                if role.is_primary() && expired {
                    tracing::error!(node = %role.node, "the lease may have expired: stopping the collectors");
                    role.set_primary(false);
                    demote().await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(renew) => {}
            _ = cancel.cancelled() => break,
        }
    }
}

/// While this node follows: publishes each tick and bucket newly stored by
/// the primary on `feed`, as its collectors publish them. At the start it
/// replays the stored ticks of the last `warm_span` so the engine's windows
/// are full. A tick is published once a newer one is stored or its row count
/// held still for one poll (never a tick half written).
pub fn follow(
    store: Store,
    feed: broadcast::Sender<FeedEvent>,
    role: Arc<Role>,
    every: Duration,
    warm_span: i64,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next_tick: Option<i64> = None;
        let mut next_bucket = [None::<i64>; 2];
        // The newest stored tick and its row count at the last poll.
        let mut newest_seen: Option<(i64, usize)> = None;
        loop {
            if !role.is_primary() {
                if let Err(e) = follow_once(
                    &store,
                    &feed,
                    &role,
                    warm_span,
                    &mut next_tick,
                    &mut next_bucket,
                    &mut newest_seen,
                )
                .await
                {
                    tracing::warn!(error = %e, "following the store failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => break,
            }
        }
    })
}

async fn follow_once(
    store: &Store,
    feed: &broadcast::Sender<FeedEvent>,
    role: &Role,
    warm_span: i64,
    next_tick: &mut Option<i64>,
    next_bucket: &mut [Option<i64>; 2],
    newest_seen: &mut Option<(i64, usize)>,
) -> Result<(), gept_store::StoreError> {
    let Some(newest) = store.newest_time("prices_latest_1m").await? else {
        return Ok(());
    };
    let from = next_tick.unwrap_or(newest - warm_span);
    // Buckets first: a tick uses the buckets complete by its time.
    for (i, step) in [BucketStep::OneHour, BucketStep::FiveMinutes]
        .into_iter()
        .enumerate()
    {
        let since = next_bucket[i].unwrap_or(from - warm_span);
        let rows = store.load_buckets(step, since, i64::MAX / 2).await?;
        for (start, rows) in gept_core::runs_by_time(rows, |r| r.timestamp) {
            let _ = feed.send(FeedEvent::Bucket {
                step,
                timestamp: start,
                rows: Arc::new(rows),
            });
            next_bucket[i] = Some(start + 1);
        }
    }
    let rows = store.load_latest(from, newest + 1).await?;
    let mut ticks = gept_core::runs_by_time(rows, |r| r.timestamp);
    // The newest tick only once its row count held still for a poll.
    if let Some((t, rows)) = ticks.last() {
        let now = (*t, rows.len());
        if *t == newest && *newest_seen != Some(now) {
            *newest_seen = Some(now);
            ticks.pop();
        }
    }
    let any = !ticks.is_empty();
    for (t, rows) in ticks {
        // The engine reads the feed at its own pace: never more than half
        // the feed's capacity ahead of it.
        while feed.len() > 512 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = feed.send(FeedEvent::Tick(Arc::new(crate::collectors::Tick {
            observed_at: t,
            arrived: std::time::Instant::now(),
            rows,
        })));
        *next_tick = Some(t + 1);
    }
    if any {
        role.followed_at
            .store(chrono::Utc::now().timestamp(), Ordering::SeqCst);
    }
    Ok(())
}
