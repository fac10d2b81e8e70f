//! `GET /api/v1/stream`: predictions per tick over a websocket.
//!
//! Protocol (JSON text frames; gzip'd binary frames for a client that asks):
//! - server → `{"type":"hello","targets":[108 names],"tick_time":T|null,"model_version":V|null}`
//! - client → `{"type":"subscribe","items":[ids]|null,"horizons":[h]|null,"offsets":[o]|null,"compression":"gzip"|null}`
//!   (null or absent: all, uncompressed); server →
//!   `{"type":"subscribed","items":…,"targets":[names],"compression":…}`
//! - with `"compression":"gzip"`, the `predictions` and `lagged` messages
//!   come as binary frames holding the gzip of exactly the text the client
//!   would get otherwise (a little under half the bytes for every item); every
//!   other message stays a text frame. The all-items message is compressed
//!   once per tick and shared, like its text;
//! - per tick, the subscribed items observed at it:
//!   `{"type":"predictions","tick_time":T,"model_version":V,"predictions":[{"item_id","observed_at","p":[…]}]}`
//!   where `p` follows the subscription's `targets` order, as integers:
//!   probability × `p_scale` (10,000);
//! - a client that fell behind (its queue of `ws_client_queue` messages was
//!   full, or it missed ticks) gets `{"type":"lagged","missed":n,"snapshot":{…}}`
//!   with the latest prediction of every subscribed item, then ticks again.
//! - client → `{"type":"offers","offers":[offer…]}` registers the client's
//!   open offers (replacing earlier ones; at most `MAX_WATCHED`), each as
//!   `POST /api/v1/offers/check` takes it plus an `id` and a `threshold`;
//!   server → `{"type":"offers","offers":[check…]}` with each offer judged
//!   now. On every later tick that predicts an offer's item, an offer whose
//!   deadline probability falls below its threshold gets
//!   `{"type":"offer_alert","id","item_id","probability","threshold","relist_price",…}`
//!   once per fall (`offers::alert`);
//! - bad client messages get `{"type":"error","error":…}` (a binary frame,
//!   unreadable JSON, an unknown type, an unknown horizon or offset);
//! - a message over `ws_max_message_bytes` closes the connection with code
//!   1009 (message too big); the service stopping closes it with 1001.
//!
//! Each client has a bounded queue drained by its own writer task, so a slow
//! client never slows the others or the tick.

use crate::api::state::ApiState;
use futures::{SinkExt, StreamExt};
use gept_actors::inference::{Prediction, TickPredictions};
use gept_core::metrics as m;
use gept_core::{target_names, ItemId, HORIZONS_H, N_TARGETS, OFFSETS_BP};
use serde::Deserialize;
use std::fmt::Write;
use std::sync::Arc;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use warp::ws::{Message, WebSocket};

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Subscribe {
        items: Option<Vec<ItemId>>,
        horizons: Option<Vec<u32>>,
        offsets: Option<Vec<f64>>,
        #[serde(default)]
        compression: Option<String>,
    },
    Offers {
        offers: Vec<crate::offers::Offer>,
    },
}

/// The most open offers one client may register (a player has 8 GE slots).
pub const MAX_WATCHED: usize = 32;

/// Registers `offers` for watching and answers each judged now.
fn register_offers(
    state: &ApiState,
    offers: Vec<crate::offers::Offer>,
    watched: &mut Vec<crate::offers::Watched>,
) -> Message {
    if offers.len() > MAX_WATCHED {
        return error_message(&format!("at most {MAX_WATCHED} offers may be watched"));
    }
    if let Some((i, e)) = offers
        .iter()
        .enumerate()
        .find_map(|(i, o)| o.validate().err().map(|e| (i, e)))
    {
        return error_message(&format!("offer {i}: {e}"));
    }
    *watched = offers
        .into_iter()
        .map(|offer| crate::offers::Watched {
            offer,
            alerted: false,
        })
        .collect();
    let snap = state.inference.snapshot.load();
    let uncalibrated = state.uncalibrated();
    let checks: Vec<serde_json::Value> = watched
        .iter_mut()
        .map(|w| {
            match crate::api::check_offer(state, &snap, &w.as_checked(), &uncalibrated) {
                Ok(c) => {
                    // An offer already below its threshold is said so at once.
                    let alert = crate::offers::alert(w, &c);
                    serde_json::json!({"check": c, "alert": alert})
                }
                Err(_) => serde_json::json!({
                    "id": w.offer.id, "item_id": w.offer.item_id,
                    "error": "no prediction for this item yet; watched from the next tick that predicts it",
                }),
            }
        })
        .collect();
    Message::text(serde_json::json!({"type": "offers", "offers": checks}).to_string())
}

/// Alerts for the watched offers whose items this tick predicted.
fn offer_alerts(
    state: &ApiState,
    tick: &TickPredictions,
    watched: &mut [crate::offers::Watched],
) -> Vec<Message> {
    if watched.is_empty() {
        return Vec::new();
    }
    let snap = state.inference.snapshot.load();
    if snap.tick_time != Some(tick.tick_time) {
        // The snapshot moved on: the next tick's message judges the offers.
        return Vec::new();
    }
    let uncalibrated = state.uncalibrated();
    let mut out = Vec::new();
    for w in watched.iter_mut() {
        if !tick
            .predictions
            .iter()
            .any(|p| p.item_id == w.offer.item_id)
        {
            continue;
        }
        if let Ok(c) = crate::api::check_offer(state, &snap, &w.as_checked(), &uncalibrated) {
            if let Some(a) = crate::offers::alert(w, &c) {
                out.push(Message::text(a.to_string()));
            }
        }
    }
    out
}

/// What a client wants: items (None: all; else sorted, no repeats) and
/// target indices.
struct Subscription {
    items: Option<Vec<ItemId>>,
    targets: Vec<usize>,
    /// Predictions and lagged messages as gzip'd binary frames.
    gzip: bool,
}

impl Subscription {
    fn all() -> Self {
        Subscription {
            items: None,
            targets: (0..N_TARGETS).collect(),
            gzip: false,
        }
    }

    fn is_all(&self) -> bool {
        self.items.is_none() && self.targets.len() == N_TARGETS
    }

    fn new(
        items: Option<Vec<ItemId>>,
        horizons: Option<Vec<u32>>,
        offsets: Option<Vec<f64>>,
        compression: Option<&str>,
    ) -> Result<Self, String> {
        let gzip = match compression {
            None | Some("none") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(format!(
                    "unknown compression {other:?}; \"gzip\", \"none\" or null"
                ))
            }
        };
        if let Some(h) = &horizons {
            if let Some(bad) = h.iter().find(|h| !HORIZONS_H.contains(h)) {
                return Err(format!(
                    "unknown horizon {bad}; horizons are {HORIZONS_H:?} (hours)"
                ));
            }
        }
        let offsets_bp: Option<Vec<u32>> = match offsets {
            None => None,
            Some(o) => Some(
                o.iter()
                    .map(|pct| {
                        let bp = (pct * 100.0).round() as u32;
                        OFFSETS_BP.contains(&bp).then_some(bp).ok_or_else(|| {
                            format!("unknown offset {pct}; offsets are 1.25 … 2.5 (percent)")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let targets = (0..N_TARGETS)
            .filter(|t| {
                let (h, k) = (
                    HORIZONS_H[t / OFFSETS_BP.len()],
                    OFFSETS_BP[t % OFFSETS_BP.len()],
                );
                horizons.as_ref().is_none_or(|hs| hs.contains(&h))
                    && offsets_bp.as_ref().is_none_or(|os| os.contains(&k))
            })
            .collect();
        Ok(Subscription {
            items: items.map(|mut v| {
                v.sort_unstable();
                v.dedup();
                v
            }),
            targets,
            gzip,
        })
    }

    /// The subscribed predictions among `predictions` (sorted by item, as
    /// a tick's are), in item order. A client of a few items looks each up
    /// (a binary search) instead of testing each of the tick's thousands:
    /// with a thousand such clients a tick cost millions of hash lookups.
    fn select<'a>(
        &'a self,
        predictions: &'a [Arc<Prediction>],
    ) -> impl Iterator<Item = &'a Arc<Prediction>> + 'a {
        let (all, some) = match &self.items {
            None => (Some(predictions.iter()), None),
            Some(ids) => (None, Some(ids.iter())),
        };
        all.into_iter()
            .flatten()
            .chain(some.into_iter().flatten().filter_map(move |id| {
                predictions
                    .binary_search_by_key(id, |p| p.item_id)
                    .ok()
                    .map(|i| &predictions[i])
            }))
    }
}

/// Appends a non-negative integer (formatting floats dominated the cost of a
/// full-universe message).
fn push_uint(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[i..]).expect("ASCII digits"));
}

/// `{"item_id":…,"observed_at":…,"p":[…]}` of the subscription's targets.
fn write_prediction(out: &mut String, p: &Prediction, targets: &[usize]) {
    let _ = write!(
        out,
        r#"{{"item_id":{},"observed_at":{},"p":["#,
        p.item_id, p.observed_at
    );
    for (i, &t) in targets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_uint(out, gept_core::p_units(p.probabilities[t]) as u32);
    }
    out.push_str("]}");
}

/// The message of `predictions` (sorted by item) for `sub`.
fn tick_message(
    tick_time: i64,
    version: &str,
    predictions: &[Arc<Prediction>],
    sub: &Subscription,
) -> String {
    let mut out = format!(
        r#"{{"type":"predictions","tick_time":{tick_time},"model_version":{},"predictions":["#,
        serde_json::to_string(version).expect("a string")
    );
    let mut first = true;
    for p in sub.select(predictions) {
        if !first {
            out.push(',');
        }
        first = false;
        write_prediction(&mut out, p, &sub.targets);
    }
    out.push_str("]}");
    out
}

/// A predictions-bearing message in the subscription's form: the text, or
/// its gzip in a binary frame.
fn framed(text: String, sub: &Subscription) -> Message {
    if sub.gzip {
        Message::binary(crate::api::snapshot::gzip(text.as_bytes()))
    } else {
        Message::text(text)
    }
}

/// The stream message of a tick for a subscription; the all-items message is
/// serialised (and compressed, for gzip clients) once per tick and shared (a
/// cheap clone) by every client that wants it.
async fn message_for(state: &ApiState, tick: &Arc<TickPredictions>, sub: &Subscription) -> Message {
    let text = || tick_message(tick.tick_time, &tick.model_version, &tick.predictions, sub);
    if !sub.is_all() {
        return framed(text(), sub);
    }
    async fn shared(
        cache: &crate::api::state::SharedMessage,
        tick: &Arc<TickPredictions>,
        make: impl FnOnce() -> Message,
    ) -> Message {
        let mut cache = cache.lock().await;
        match &*cache {
            Some((cached, msg)) if Arc::ptr_eq(cached, tick) => msg.clone(),
            _ => {
                let msg = make();
                *cache = Some((tick.clone(), msg.clone()));
                msg
            }
        }
    }
    let plain = shared(&state.all_items_message, tick, || Message::text(text())).await;
    if !sub.gzip {
        return plain;
    }
    shared(&state.all_items_gzip, tick, || {
        Message::binary(crate::api::snapshot::gzip(plain.as_bytes()))
    })
    .await
}

fn lagged_message(state: &ApiState, missed: u64, sub: &Subscription) -> Message {
    let snap = state.inference.snapshot.load();
    let mut preds: Vec<Arc<Prediction>> = snap.predictions.values().cloned().collect();
    preds.sort_by_key(|p| p.item_id);
    let inner = tick_message(
        snap.tick_time.unwrap_or_default(),
        snap.model_version.as_deref().unwrap_or(""),
        &preds,
        sub,
    );
    framed(
        format!(r#"{{"type":"lagged","missed":{missed},"snapshot":{inner}}}"#),
        sub,
    )
}

fn subscribed_message(sub: &Subscription) -> Message {
    let names = target_names();
    let targets: Vec<&String> = sub.targets.iter().map(|&t| &names[t]).collect();
    Message::text(
        serde_json::json!({
            "type": "subscribed",
            "items": sub.items,
            "targets": targets,
            "p_scale": gept_core::P_SCALE,
            "compression": sub.gzip.then_some("gzip"),
        })
        .to_string(),
    )
}

/// The error text of an unreadable client message: what is expected, never
/// the parser's internals.
const EXPECTED: &str = r#"expected {"type":"subscribe","items":[ids]|null,"horizons":[hours]|null,"offsets":[percent]|null,"compression":"gzip"|null} or {"type":"offers","offers":[{"id","item_id","side","price","quantity","placed_at","horizon_hours","threshold"}]}"#;

fn error_message(text: &str) -> Message {
    Message::text(serde_json::json!({"type": "error", "error": text}).to_string())
}

/// Serves one websocket client until it leaves or the service stops; its
/// place among the websocket caps (`_slot`) is freed when it ends.
pub async fn client(ws: WebSocket, state: ApiState, _slot: crate::api::limits::WsSlot) {
    metrics::gauge!(m::WS_CLIENTS).increment(1.0);
    let (mut sink, mut incoming) = ws.split();
    let (queue, mut queued) = mpsc::channel::<Message>(state.ws_queue.max(1));
    let writer = tokio::spawn(async move {
        while let Some(msg) = queued.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut ticks = state.inference.stream.subscribe();
    let mut sub = Subscription::all();
    let mut watched: Vec<crate::offers::Watched> = Vec::new();
    {
        let snap = state.inference.snapshot.load();
        let hello = serde_json::json!({
            "type": "hello",
            "targets": target_names(),
            "p_scale": gept_core::P_SCALE,
            "tick_time": snap.tick_time,
            "model_version": snap.model_version.as_deref(),
        });
        let _ = queue.try_send(Message::text(hello.to_string()));
    }
    let mut missed: u64 = 0;
    let limit = state.ws_max_message_bytes;
    // Pings keep a quiet connection from the server's idle timeout while the
    // client answers; a client whose writes time out ends here too.
    let mut ping = tokio::time::interval(state.ws_ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = state.cancel.cancelled() => {
                let _ = queue.try_send(Message::close_with(1001u16, "the service is stopping"));
                break;
            }
            _ = ping.tick() => {
                if queue.is_closed() {
                    break;
                }
                let _ = queue.try_send(Message::ping(Vec::new()));
            }
            msg = incoming.next() => {
                let Some(Ok(msg)) = msg else { break };
                if msg.is_close() {
                    break;
                }
                if msg.is_ping() || msg.is_pong() {
                    continue;
                }
                if msg.as_bytes().len() > limit {
                    let _ = queue.try_send(Message::close_with(
                        1009u16,
                        format!("message over {limit} bytes"),
                    ));
                    break;
                }
                let Ok(text) = msg.to_str() else {
                    if queue.try_send(error_message("binary frames are not supported; send JSON text")).is_err() {
                        missed += 1;
                    }
                    continue;
                };
                let reply = match serde_json::from_str::<ClientMessage>(text) {
                    Ok(ClientMessage::Subscribe { items, horizons, offsets, compression }) => {
                        match Subscription::new(items, horizons, offsets, compression.as_deref()) {
                            Ok(s) => {
                                sub = s;
                                subscribed_message(&sub)
                            }
                            Err(e) => error_message(&e),
                        }
                    }
                    Ok(ClientMessage::Offers { offers }) => register_offers(&state, offers, &mut watched),
                    Err(_) => error_message(&format!("unreadable message; {EXPECTED}")),
                };
                if queue.try_send(reply).is_err() {
                    missed += 1;
                }
            }
            tick = ticks.recv() => {
                match tick {
                    Ok(tick) => {
                        for alert in offer_alerts(&state, &tick, &mut watched) {
                            if queue.try_send(alert).is_err() {
                                missed += 1;
                            }
                        }
                        if missed > 0 {
                            if queue.try_send(lagged_message(&state, missed, &sub)).is_ok() {
                                missed = 0;
                            } else {
                                missed += 1;
                                metrics::counter!(m::WS_DROPPED).increment(1);
                            }
                        } else if !sub.is_all() && sub.select(&tick.predictions).next().is_none() {
                            // Nothing this client subscribed to changed.
                        } else if queue.try_send(message_for(&state, &tick, &sub).await).is_err() {
                            missed += 1;
                            metrics::counter!(m::WS_DROPPED).increment(1);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        missed += n;
                        metrics::counter!(m::WS_DROPPED).increment(n);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }
    }
    drop(queue);
    let _ = writer.await;
    metrics::gauge!(m::WS_CLIENTS).decrement(1.0);
}
