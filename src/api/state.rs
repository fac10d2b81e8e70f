//! What the API handlers share: the service's parts and the API's settings.
//! The routes (`api::routes`) and the websocket clients (`api::stream`) both
//! read it; it depends on neither.

use crate::api::limits::RateLimiter;
use gept_actors::health::Health;
use gept_actors::inference::Inference;
use gept_core::{ItemId, ItemMeta};
use gept_store::Store;
use std::collections::HashMap;
use std::sync::Arc;

/// The newest all-items stream message with its tick. An async lock: the
/// first client of a tick encodes (and compresses) it while the others wait
/// without holding a worker thread.
pub type SharedMessage = Arc<
    tokio::sync::Mutex<
        Option<(
            Arc<gept_actors::inference::TickPredictions>,
            warp::ws::Message,
        )>,
    >,
>;

/// What the API handlers share: one reference-counted handle. Route
/// filters clone it for every request, so a clone is one atomic increment,
/// not one per part (cloning the parts themselves was 40 % of a one-item
/// request's time under load).
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

impl ApiState {
    pub fn new(shared: Shared) -> Self {
        ApiState(Arc::new(shared))
    }
}

impl std::ops::Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts behind an [`ApiState`].
pub struct Shared {
    pub store: Store,
    pub health: Health,
    pub inference: Inference,
    /// Item metadata, refreshed from the store.
    pub items: Arc<arc_swap::ArcSwap<HashMap<ItemId, ItemMeta>>>,
    pub limiter: Arc<RateLimiter>,
    /// Admin endpoints are off without a token.
    pub admin_token: Option<Arc<str>>,
    pub max_body_bytes: u64,
    pub ws_max_message_bytes: usize,
    pub ws_queue: usize,
    /// Websocket clients are pinged this often.
    pub ws_ping_interval: std::time::Duration,
    /// The retention policy the admin route applies now.
    pub retention: Arc<gept_actors::retention::Policy>,
    pub started_at: i64,
    /// The predictions snapshot encoded once per tick, shared by requests.
    pub snapshots: Arc<crate::api::snapshot::SnapshotCache>,
    /// `GET /api/v1/predictions/{id}`'s bodies, encoded once per tick.
    pub item_bodies: Arc<crate::api::snapshot::ItemCache>,
    /// The newest all-items stream message, shared by clients.
    pub all_items_message: SharedMessage,
    /// Its gzip, for clients that subscribed with `"compression":"gzip"`.
    pub all_items_gzip: SharedMessage,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<Vec<std::net::IpAddr>>,
    /// Caps on websocket connections, in all and per client.
    pub ws_slots: Arc<crate::api::limits::WsSlots>,
    /// Primary or follower (standby takeover).
    pub role: std::sync::Arc<gept_actors::standby::Role>,
    /// Set while the feature engine thread runs (readiness).
    pub engine_alive: gept_actors::health::Alive,
    /// `/readyz` wants a `/latest` tick at most this old.
    pub ready_max_feed_age: std::time::Duration,
    /// Recommendations are refused when the newest tick arrived longer ago.
    pub stale_after: std::time::Duration,
    /// The trainer (`trainer.enabled`), for its status.
    pub trainer: Option<gept_actors::trainer::Trainer>,
    /// The live accuracy monitor (`accuracy.enabled`).
    pub accuracy: Option<gept_actors::accuracy::Monitor>,
    /// Verifies Discord interactions; `None`: the bot is not configured.
    pub discord: Option<Arc<crate::discord::Verifier>>,
    /// The service's stop signal: websocket clients are closed (1001) on it.
    pub cancel: tokio_util::sync::CancellationToken,
}

impl Shared {
    /// The serving model's uncalibrated horizons (never recommended on).
    pub fn uncalibrated(&self) -> Vec<u32> {
        self.inference
            .status
            .lock()
            .expect("status lock")
            .uncalibrated_horizons
            .clone()
    }
}
