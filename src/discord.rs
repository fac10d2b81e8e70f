//! The Discord bot, without a gateway connection: Discord posts each slash
//! command to `POST /discord/interactions` (the application's Interactions
//! Endpoint URL) and we answer in the response.
//!
//! Every request is verified before anything is read from it: the
//! `X-Signature-Ed25519` header must be the application's Ed25519 signature
//! of `X-Signature-Timestamp` followed by the raw body; the timestamp must lie
//! within `discord.max_clock_skew` of now, and a signature seen before within
//! that window is refused (a replay). Any failure is 401 with no detail on
//! which check failed. PING (type 1) is answered with PONG; the commands
//! `/flip capital risk style [slots]`, `/item name` and `/status` come from
//! the same code as `/api/v1/recommendations`, `/api/v1/offers/check` and
//! `/api/v1/status`. `gept discord register-commands` posts [`commands`] to
//! the Discord API.

use crate::api::{self, ApiError, ApiState};
use crate::offers::{Offer, Side};
use crate::recommend::{gp, Risk, Style};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use gept_core::{ItemMeta, OFFSETS_BP};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// Signatures remembered against replays (one window's worth, capped).
const MAX_SEEN: usize = 100_000;

/// Verifies Discord's request signatures and refuses replays.
pub struct Verifier {
    key: VerifyingKey,
    max_skew: i64,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    set: HashSet<[u8; 64]>,
    order: VecDeque<(i64, [u8; 64])>,
}

/// Why a request was refused (logged at debug; the client sees only 401).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    MissingHeader,
    BadSignature,
    OldTimestamp,
    Replayed,
}

impl Verifier {
    /// From the application's public key in hex (64 characters).
    pub fn new(public_key_hex: &str, max_skew: Duration) -> Result<Verifier, String> {
        let bytes = decode_hex(public_key_hex.trim())
            .filter(|b| b.len() == 32)
            .ok_or("discord public key: expected 64 hex characters (32 bytes)")?;
        let key = VerifyingKey::from_bytes(&bytes.try_into().expect("32 bytes"))
            .map_err(|e| format!("discord public key: {e}"))?;
        Ok(Verifier {
            key,
            max_skew: max_skew.as_secs() as i64,
            seen: Mutex::new(Seen::default()),
        })
    }

    /// Checks one request at `now` (Unix seconds).
    pub fn verify(
        &self,
        signature_hex: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), Refused> {
        let (Some(sig), Some(ts)) = (signature_hex, timestamp) else {
            return Err(Refused::MissingHeader);
        };
        let sig: [u8; 64] = decode_hex(sig)
            .and_then(|b| b.try_into().ok())
            .ok_or(Refused::BadSignature)?;
        let mut message = Vec::with_capacity(ts.len() + body.len());
        message.extend_from_slice(ts.as_bytes());
        message.extend_from_slice(body);
        self.key
            .verify(&message, &Signature::from_bytes(&sig))
            .map_err(|_| Refused::BadSignature)?;
        // Signed, so the timestamp is Discord's own: now judge its age.
        let t: i64 = ts.trim().parse().map_err(|_| Refused::BadSignature)?;
        if (now - t).abs() > self.max_skew {
            return Err(Refused::OldTimestamp);
        }
        let mut seen = self.seen.lock().expect("seen lock");
        while let Some(&(t0, s)) = seen.order.front() {
            if now - t0 > self.max_skew || seen.order.len() >= MAX_SEEN {
                seen.order.pop_front();
                seen.set.remove(&s);
            } else {
                break;
            }
        }
        if !seen.set.insert(sig) {
            return Err(Refused::Replayed);
        }
        seen.order.push_back((t, sig));
        Ok(())
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The slash commands, as Discord's bulk-overwrite endpoint takes them.
pub fn commands() -> serde_json::Value {
    let choices = |names: &[&str]| {
        names
            .iter()
            .map(|n| serde_json::json!({"name": n, "value": n}))
            .collect::<Vec<_>>()
    };
    serde_json::json!([
        {
            "name": "flip", "type": 1,
            "description": "Ranked Grand Exchange flips for your capital",
            "options": [
                {"name": "capital", "type": 4, "required": true, "min_value": 1,
                 "description": "Capital in gp"},
                {"name": "risk", "type": 3, "required": false,
                 "description": "low, medium (default) or high", "choices": choices(&["low", "medium", "high"])},
                {"name": "style", "type": 3, "required": false,
                 "description": "active (1-4 h), hybrid (default, 4-12 h) or passive (12-48 h)",
                 "choices": choices(&["active", "hybrid", "passive"])},
                {"name": "slots", "type": 4, "required": false, "min_value": 1, "max_value": 8,
                 "description": "GE slots to fill (default 8)"},
            ],
        },
        {
            "name": "item", "type": 1,
            "description": "An item's price and its best offers with their fill probability",
            "options": [
                {"name": "name", "type": 3, "required": true, "description": "Item name"},
            ],
        },
        {"name": "status", "type": 1, "description": "Whether GePT's data and model are live"},
    ])
}

/// `POST /discord/interactions`.
pub fn routes(
    state: ApiState,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let max = state.max_body_bytes;
    warp::path!("discord" / "interactions")
        .and(warp::post())
        .and(warp::header::optional::<String>("x-signature-ed25519"))
        .and(warp::header::optional::<String>("x-signature-timestamp"))
        .and(warp::body::content_length_limit(max))
        .and(warp::body::bytes())
        .and(warp::any().map(move || state.clone()))
        .and_then(
            |sig: Option<String>, ts: Option<String>, body: bytes::Bytes, state: ApiState| async move {
                let Some(verifier) = state.discord.clone() else {
                    return Err(ApiError::reject(
                        StatusCode::NOT_FOUND,
                        "the Discord bot is not configured (GEPT__DISCORD__PUBLIC_KEY)",
                    ));
                };
                let now = chrono::Utc::now().timestamp();
                if let Err(why) = verifier.verify(sig.as_deref(), ts.as_deref(), &body, now) {
                    tracing::debug!(?why, "discord interaction refused");
                    return Err(ApiError::reject(
                        StatusCode::UNAUTHORIZED,
                        "invalid request signature",
                    ));
                }
                let interaction: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| ApiError::reject(StatusCode::BAD_REQUEST, "unreadable interaction"))?;
                let reply = answer(&state, &interaction);
                Ok::<_, Rejection>(warp::reply::json(&reply).into_response())
            },
        )
}

/// The interaction response for a verified interaction.
pub fn answer(state: &ApiState, interaction: &serde_json::Value) -> serde_json::Value {
    match interaction["type"].as_u64() {
        Some(1) => serde_json::json!({"type": 1}),
        Some(2) => {
            let data = &interaction["data"];
            let option = |name: &str| {
                data["options"]
                    .as_array()
                    .and_then(|o| o.iter().find(|o| o["name"] == name))
                    .map(|o| o["value"].clone())
            };
            let message = match data["name"].as_str() {
                Some("flip") => flip(state, &option),
                Some("item") => item(state, option("name").as_ref().and_then(|v| v.as_str())),
                Some("status") => status(state),
                other => text(&format!("unknown command {other:?}")),
            };
            serde_json::json!({"type": 4, "data": message})
        }
        other => serde_json::json!({
            "type": 4,
            "data": text(&format!("unsupported interaction type {other:?}")),
        }),
    }
}

fn text(content: &str) -> serde_json::Value {
    serde_json::json!({"content": content, "allowed_mentions": {"parse": []}})
}

/// The error text of a rejection from the API's own checks.
fn rejection_text(r: &Rejection) -> String {
    r.find::<ApiError>()
        .map(|e| e.message.clone())
        .unwrap_or_else(|| "internal error".into())
}

fn flip(state: &ApiState, option: &dyn Fn(&str) -> Option<serde_json::Value>) -> serde_json::Value {
    let Some(capital) = option("capital").and_then(|v| v.as_i64()) else {
        return text("capital (gp) is required");
    };
    let parse = |name: &str, default: &str| {
        option(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| default.to_string())
    };
    let risk: Risk = match parse("risk", "medium").parse() {
        Ok(r) => r,
        Err(e) => return text(&e),
    };
    let style: Style = match parse("style", "hybrid").parse() {
        Ok(s) => s,
        Err(e) => return text(&e),
    };
    let slots = option("slots").and_then(|v| v.as_u64()).unwrap_or(8) as usize;
    let a = match api::recommend_now(state, capital, risk, style, slots, HashSet::new()) {
        Ok(a) => a,
        Err(r) => return text(&rejection_text(&r)),
    };
    let header = format!(
        "Flips for {} gp, {risk:?} risk, {style:?} style, {slots} slots (tick {}, data {} s old, model {})",
        gp(capital),
        a.tick_time,
        a.data_age_seconds.unwrap_or_default(),
        a.model_version.as_deref().unwrap_or("none"),
    );
    if a.recommendations.is_empty() {
        return text(&format!(
            "{header}\n{}",
            a.message.as_deref().unwrap_or("no recommendation")
        ));
    }
    let fields: Vec<serde_json::Value> = a
        .recommendations
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": format!("{} ({})", r.name, r.item_id),
                "value": format!(
                    "buy {} · sell {} · ×{} · {:.0}% within {} h · +{} gp expected",
                    gp(r.buy_price), gp(r.sell_price), r.quantity,
                    r.fill_probability * 100.0, r.expected_hours,
                    gp(r.expected_profit.round() as i64)
                ),
            })
        })
        .collect();
    serde_json::json!({
        "content": header,
        "embeds": [{"title": "GePT flips", "fields": fields}],
        "allowed_mentions": {"parse": []},
    })
}

/// The item a player named: exact name (any case) first, else the shortest
/// name containing it.
pub fn find_item<'a>(
    items: &'a std::collections::HashMap<gept_core::ItemId, ItemMeta>,
    name: &str,
) -> Option<&'a ItemMeta> {
    let want = name.trim().to_lowercase();
    if want.is_empty() {
        return None;
    }
    items
        .values()
        .find(|m| m.name.to_lowercase() == want)
        .or_else(|| {
            items
                .values()
                .filter(|m| m.name.to_lowercase().contains(&want))
                .min_by_key(|m| (m.name.len(), m.item_id))
        })
}

fn item(state: &ApiState, name: Option<&str>) -> serde_json::Value {
    let Some(name) = name else {
        return text("name is required");
    };
    let items = state.items.load();
    let Some(meta) = find_item(&items, name) else {
        return text(&format!("no item named like {name:?}"));
    };
    let snap = state.inference.snapshot.load();
    let Some(market) = snap.market.get(&meta.item_id) else {
        return text(&format!("{}: no price yet", meta.name));
    };
    let mut lines = vec![format!(
        "**{}** ({}): buy near {} gp, sell near {} gp; buy limit {}",
        meta.name,
        meta.item_id,
        gp(market.low),
        gp(market.high),
        meta.buy_limit
            .map_or("unknown".to_string(), |l| l.to_string()),
    )];
    if let Some(v) = market.volume_1h {
        lines.push(format!("{v:.0} traded in the last hour"));
    }
    let uncalibrated = state.uncalibrated();
    // The offer at each offset, judged for 4 h and 12 h: the round trip's
    // probability and expected profit of one unit.
    for hours in [4.0, 12.0] {
        for &bp in &[OFFSETS_BP[0], OFFSETS_BP[OFFSETS_BP.len() - 1]] {
            let offer = Offer {
                id: None,
                item_id: meta.item_id,
                side: Side::Buy,
                price: gept_dataflows::labels::buy_price(market.low, bp),
                quantity: 1,
                placed_at: None,
                horizon_hours: Some(hours),
                target_probability: None,
                threshold: None,
            };
            match api::check_offer(state, &snap, &offer, &uncalibrated) {
                Ok(c) => lines.push(format!(
                    "buy {} → sell {}: {:.0}% within {hours:.0} h, {} gp a unit after {} gp tax",
                    gp(c.round_trip.buy_price),
                    gp(c.round_trip.sell_price),
                    c.deadline.probability * 100.0,
                    gp(c.round_trip.profit_per_item),
                    gp(c.round_trip.tax_per_item),
                )),
                Err(r) => {
                    lines.push(rejection_text(&r));
                    return text(&lines.join("\n"));
                }
            }
        }
    }
    text(&lines.join("\n"))
}

fn status(state: &ApiState) -> serde_json::Value {
    let snap = state.inference.snapshot.load();
    let model = state.inference.status.lock().expect("status lock").clone();
    let now = chrono::Utc::now().timestamp();
    let age = snap.received_at.map(|r| now - r);
    let live = age.is_some_and(|a| a <= state.stale_after.as_secs() as i64);
    text(&format!(
        "Data: {} (last tick {}, {} s old). Model: {}. Items predicted: {}.",
        if live { "live" } else { "STALE" },
        snap.tick_time.map_or("none".into(), |t| t.to_string()),
        age.map_or("?".into(), |a| a.to_string()),
        model.version.as_deref().unwrap_or("none active"),
        snap.predictions.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn signatures_timestamps_and_replays() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let v = Verifier::new(
            &hex(key.verifying_key().as_bytes()),
            Duration::from_secs(300),
        )
        .unwrap();
        let body = br#"{"type":1}"#;
        let sign = |ts: &str, body: &[u8]| {
            let mut m = ts.as_bytes().to_vec();
            m.extend_from_slice(body);
            hex(&key.sign(&m).to_bytes())
        };
        let now = 1_800_000_000;
        let ts = now.to_string();
        let sig = sign(&ts, body);
        assert_eq!(v.verify(Some(&sig), Some(&ts), body, now), Ok(()));
        assert_eq!(
            v.verify(Some(&sig), Some(&ts), body, now + 1),
            Err(Refused::Replayed)
        );
        assert_eq!(
            v.verify(None, Some(&ts), body, now),
            Err(Refused::MissingHeader)
        );
        let tampered = br#"{"type":2}"#;
        let ts2 = (now + 1).to_string();
        let sig2 = sign(&ts2, body);
        assert_eq!(
            v.verify(Some(&sig2), Some(&ts2), tampered, now),
            Err(Refused::BadSignature)
        );
        let old = (now - 301).to_string();
        assert_eq!(
            v.verify(Some(&sign(&old, body)), Some(&old), body, now),
            Err(Refused::OldTimestamp)
        );
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let mut m = ts2.as_bytes().to_vec();
        m.extend_from_slice(body);
        let wrong = hex(&other.sign(&m).to_bytes());
        assert_eq!(
            v.verify(Some(&wrong), Some(&ts2), body, now),
            Err(Refused::BadSignature)
        );
        assert!(Verifier::new("abcd", Duration::from_secs(1)).is_err());
    }
}
