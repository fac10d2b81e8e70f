//! The faces players use, on real recorded ticks with a trained model:
//!
//! - the offer advisor (`POST /api/v1/offers/check`): at a model offset's
//!   price it answers the model's own output, it is monotone in price, and a
//!   websocket client's watched offer is alerted when a later tick lowers its
//!   probability below the threshold, with the relist price the check route
//!   gives at that tick;
//! - the Discord interactions endpoint: signed requests with a test key pair
//!   (valid → the answer; tampered body, wrong key, old timestamp, replay,
//!   missing headers → 401), `/flip` equal to `/api/v1/recommendations` for
//!   the same inputs, `gept discord register-commands` against a local
//!   stand-in for the Discord API;
//! - the dashboard in a real browser (Debian's Chromium driven headless over
//!   WebDriver by chromedriver) against `gept serve` fed by the replay
//!   server: the Flips page lists recommendations, the Item page's surface
//!   changes when a later tick arrives, a screenshot of every page, no
//!   console errors.

use crate::common;

use crate::common::{serve_env, Serve};
use ed25519_dalek::{Signer, SigningKey};
use futures::{SinkExt, StreamExt};
use gept::service::Service;
use gept_core::recordings::{HOURLY_FILE, LATEST_FILE, MAPPING_FILE};
use gept_core::{HORIZONS_H, OFFSETS_BP};
use gept_dataflows::inputs::{load_hours, load_items, load_ticks};
use gept_dataflows::labels::{buy_price, sell_price};
use gept_model::net::TrainOptions;
use gept_replay::{self as mock_api, Clock, MockOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use warp::Filter;

fn small_model(dir: &Path) -> gept_model::ModelMeta {
    let opts = TrainOptions {
        hidden: vec![16],
        max_epochs: 1,
        seed: 3,
        ..TrainOptions::default()
    };
    common::train_model(&common::recordings(), 100, opts, dir)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Waits until the service has published predictions for tick `t`.
async fn wait_tick(service: &gept::service::ServiceHandle, t: i64) {
    let inference = service.inference.clone();
    common::wait_for("the tick's predictions", 120, move || {
        let inference = inference.clone();
        async move {
            let s = inference.snapshot.load();
            s.tick_time == Some(t) && !s.predictions.is_empty()
        }
    })
    .await;
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = http.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[test]
fn the_offer_advisor_and_the_discord_bot_on_real_ticks() {
    gept::service::system().block_on(advisor_and_bot());
}

async fn advisor_and_bot() {
    let rec = common::recordings();
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    let meta = small_model(&model_dir);
    let url = common::sqlite_with_active_model(tmp.path(), "gept.db", &meta, &model_dir).await;
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let public = hex(key.verifying_key().as_bytes());
    let config = common::in_process_config(
        &url,
        &[
            ("GEPT__DISCORD__PUBLIC_KEY", &public),
            ("GEPT__API__TRUSTED_CLIENTS", "127.0.0.1"),
        ],
    );
    let service = Service::start(&config).await.unwrap();
    let base = format!("http://{}", service.addr);
    let http = reqwest::Client::new();

    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(60)).unwrap();
    let hours = load_hours(Some(&rec.join(HOURLY_FILE))).unwrap();
    // The item facts, as the /mapping collector publishes them.
    let items: Vec<gept_core::ItemMeta> = load_items(Some(&rec.join(MAPPING_FILE)))
        .unwrap()
        .into_values()
        .collect();
    service.store.upsert_items(&items, 0).await.unwrap();
    service.feed(gept_actors::collectors::FeedEvent::Items(
        std::sync::Arc::new(items),
    ));
    let (warm, later) = ticks.split_at(40);
    common::feed_recorded(&service, warm, &hours).await;
    let t0 = warm.last().unwrap().time;
    wait_tick(&service, t0).await;

    // --- At a model offset's price the answer is the model's output.
    let snap = service.inference.snapshot.load_full();
    let mut ids: Vec<_> = snap
        .predictions
        .keys()
        .copied()
        .filter(|id| {
            snap.market
                .get(id)
                .is_some_and(|m| m.low > 1_000 && m.high > 1_000)
        })
        .collect();
    ids.sort();
    assert!(ids.len() >= 10, "only {} priced items predicted", ids.len());
    let check_url = format!("{base}/api/v1/offers/check");
    let mut exact_rows = 0;
    for &id in &ids {
        let (p, m) = (&snap.predictions[&id], &snap.market[&id]);
        let raw = |h: usize, k: usize| f64::from(p.probabilities[h * OFFSETS_BP.len() + k]);
        // The 1 h row is checked at every offset where the model's own row is
        // already monotone (the advisor leaves it unchanged), else at 1.25 %.
        let row_monotone = (1..OFFSETS_BP.len()).all(|k| raw(0, k) <= raw(0, k - 1));
        let ks: Vec<usize> = if row_monotone {
            exact_rows += 1;
            (0..OFFSETS_BP.len()).collect()
        } else {
            vec![0]
        };
        for k in ks {
            for (side, price) in [
                ("buy", buy_price(m.low, OFFSETS_BP[k])),
                ("sell", sell_price(m.high, OFFSETS_BP[k])),
            ] {
                let (status, a) = post_json(
                    &http,
                    &check_url,
                    &serde_json::json!({"item_id": id, "side": side, "price": price, "quantity": 3}),
                )
                .await;
                assert_eq!(status, 200, "{a}");
                assert_eq!(a["tick_time"], t0);
                assert_eq!(a["model_version"], meta.version.as_str());
                assert!(a["clamped"].is_null(), "{a}");
                // The model's output is an f32: read back as one, exactly
                // (JSON's decimal text may move an f64 by an ulp).
                assert_eq!(
                    a["horizons"][0]["probability"].as_f64().unwrap() as f32,
                    raw(0, k) as f32,
                    "item {id} {side} at {}",
                    OFFSETS_BP[k]
                );
                assert_eq!(a["horizons"][0]["hours"], HORIZONS_H[0]);
                // The round trip at the same offset, taxed.
                let rt = &a["round_trip"];
                assert_eq!(rt["buy_price"], buy_price(m.low, OFFSETS_BP[k]));
                assert_eq!(rt["sell_price"], sell_price(m.high, OFFSETS_BP[k]));
                let tax = gept_core::tax::tax(id, sell_price(m.high, OFFSETS_BP[k]), t0);
                assert_eq!(rt["tax_per_item"], tax);
                assert!(rt["expected_profit"].is_i64(), "whole gp: {rt}");
            }
        }
    }
    assert!(exact_rows > 0, "no item's 1 h row was monotone");

    // --- Monotone in price, both sides, at every horizon.
    let id = ids[ids.len() / 2];
    let m = snap.market[&id].clone();
    for side in ["buy", "sell"] {
        let mut last: Option<Vec<f64>> = None;
        for step in 0..40 {
            // From the market outwards, 0.1 % a step.
            let price = match side {
                "buy" => m.low - m.low * step / 1000,
                _ => m.high + m.high * step / 1000,
            };
            let (status, a) = post_json(
                &http,
                &check_url,
                &serde_json::json!({"item_id": id, "side": side, "price": price, "quantity": 1}),
            )
            .await;
            assert_eq!(status, 200, "{a}");
            let ps: Vec<f64> = a["horizons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["probability"].as_f64().unwrap())
                .collect();
            assert_eq!(ps.len(), HORIZONS_H.len());
            assert!(
                ps.windows(2).all(|w| w[1] >= w[0]),
                "longer waits fill no less: {ps:?}"
            );
            if let Some(prev) = &last {
                for (a, b) in prev.iter().zip(&ps) {
                    assert!(b <= a, "{side} at {price}: {b} after {a}");
                }
            }
            last = Some(ps);
        }
    }
    // Bad offers are refused with the field named.
    let (status, a) = post_json(
        &http,
        &check_url,
        &serde_json::json!({"item_id": id, "side": "buy", "price": -5, "quantity": 1}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(a["error"].as_str().unwrap().contains("price"), "{a}");

    // --- Discord: signed requests only.
    let interactions = format!("{base}/discord/interactions");
    let sign = |key: &SigningKey, ts: &str, body: &str| {
        let mut msg = ts.as_bytes().to_vec();
        msg.extend_from_slice(body.as_bytes());
        hex(&key.sign(&msg).to_bytes())
    };
    let send = |sig: Option<String>, ts: String, body: String| {
        let http = http.clone();
        let url = interactions.clone();
        async move {
            let mut req = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-signature-timestamp", ts)
                .body(body);
            if let Some(sig) = sig {
                req = req.header("x-signature-ed25519", sig);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let now = || chrono::Utc::now().timestamp().to_string();
    let ping = r#"{"type":1}"#.to_string();
    let ts = now();
    let (status, pong) = send(Some(sign(&key, &ts, &ping)), ts.clone(), ping.clone()).await;
    assert_eq!(
        (status, pong.clone()),
        (200, serde_json::json!({"type": 1})),
        "{pong}"
    );
    // The same signed request again: a replay.
    assert_eq!(
        send(Some(sign(&key, &ts, &ping)), ts, ping.clone()).await.0,
        401
    );
    let ts = now();
    let signed = sign(&key, &ts, &ping);
    assert_eq!(
        send(Some(signed), ts.clone(), r#"{"type":2}"#.into())
            .await
            .0,
        401,
        "a tampered body"
    );
    let wrong = SigningKey::from_bytes(&[7u8; 32]);
    assert_eq!(
        send(Some(sign(&wrong, &ts, &ping)), ts.clone(), ping.clone())
            .await
            .0,
        401
    );
    assert_eq!(send(None, ts, ping.clone()).await.0, 401);
    let old = (chrono::Utc::now().timestamp() - 3600).to_string();
    assert_eq!(
        send(Some(sign(&key, &old, &ping)), old, ping.clone())
            .await
            .0,
        401
    );

    // /flip answers what /api/v1/recommendations answers.
    for (risk, style) in [("high", "active"), ("medium", "hybrid")] {
        let body = serde_json::json!({
            "type": 2, "id": "1", "token": "t",
            "data": {"name": "flip", "options": [
                {"name": "capital", "type": 4, "value": 50_000_000},
                {"name": "risk", "type": 3, "value": risk},
                {"name": "style", "type": 3, "value": style},
            ]},
        })
        .to_string();
        let ts = now();
        let (status, a) = send(Some(sign(&key, &ts, &body)), ts, body).await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["type"], 4);
        let recs: serde_json::Value = http
            .get(format!(
                "{base}/api/v1/recommendations?capital=50000000&risk={risk}&style={style}&slots=8"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = recs["recommendations"].as_array().unwrap();
        let content = a["data"]["content"].as_str().unwrap();
        assert!(content.contains(&format!("tick {t0}")), "{content}");
        if list.is_empty() {
            assert!(
                content.contains(recs["message"].as_str().unwrap()),
                "{content} / {recs}"
            );
            continue;
        }
        let fields = a["data"]["embeds"][0]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), list.len());
        for (f, r) in fields.iter().zip(list) {
            assert_eq!(
                f["name"],
                format!("{} ({})", r["name"].as_str().unwrap(), r["item_id"])
            );
            let value = f["value"].as_str().unwrap();
            let buy = gept::recommend::gp(r["buy_price"].as_i64().unwrap());
            let sell = gept::recommend::gp(r["sell_price"].as_i64().unwrap());
            let profit = gept::recommend::gp(r["expected_profit"].as_i64().unwrap());
            assert!(
                value.starts_with(&format!("buy {buy} · sell {sell} · ×{} ·", r["quantity"])),
                "{value}"
            );
            assert!(
                value.ends_with(&format!("+{profit} gp expected")),
                "{value}"
            );
        }
    }
    // /item by name and /status.
    let item_view: serde_json::Value = http
        .get(format!("{base}/api/v1/items/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = item_view["name"].as_str().map(str::to_string);
    let name = name.expect("the item has a name");
    for (command, options, want) in [
        (
            "item",
            serde_json::json!([{"name": "name", "type": 3, "value": name.to_uppercase()}]),
            format!("**{name}** ({id})"),
        ),
        (
            "status",
            serde_json::json!([]),
            format!("Data: live (last tick {t0}"),
        ),
    ] {
        let body = serde_json::json!({"type": 2, "data": {"name": command, "options": options}})
            .to_string();
        let ts = now();
        let (status, a) = send(Some(sign(&key, &ts, &body)), ts, body).await;
        assert_eq!(status, 200);
        let content = a["data"]["content"].as_str().unwrap();
        assert!(content.contains(&want), "{command}: {content}");
        if command == "item" {
            assert!(content.contains("% within 4 h"), "{content}");
        }
    }

    // --- Watched offers over the websocket: alerted when a later tick
    // lowers the probability below the threshold. Every priced item gets a
    // buy at 1.5 % with its current 4 h probability as the threshold: any
    // later fall (a new prediction, or less time left) alerts.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/stream", service.addr))
            .await
            .unwrap();
    ws.send(Message::text(
        serde_json::json!({"type": "subscribe", "items": [], "horizons": [1], "offsets": [1.25]})
            .to_string(),
    ))
    .await
    .unwrap();
    let mut offers = Vec::new();
    let mut thresholds = std::collections::HashMap::new();
    for &id in ids.iter().take(gept::api::stream::MAX_WATCHED) {
        let price = buy_price(snap.market[&id].low, 150);
        let offer = serde_json::json!({"id": format!("o{id}"), "item_id": id, "side": "buy",
            "price": price, "quantity": 5, "placed_at": t0, "horizon_hours": 4});
        let (_, a) = post_json(&http, &check_url, &offer).await;
        // Just under the current probability (decimal JSON text may move
        // an f64 by an ulp): any later fall crosses it.
        let p = a["deadline"]["probability"].as_f64().unwrap() - 1e-12;
        if p > 0.0 && p < 1.0 {
            let mut watched = offer.clone();
            watched["threshold"] = serde_json::json!(p);
            thresholds.insert(format!("o{id}"), (p, watched.clone()));
            offers.push(watched);
        }
    }
    assert!(offers.len() >= 5, "{} offers to watch", offers.len());
    ws.send(Message::text(
        serde_json::json!({"type": "offers", "offers": offers}).to_string(),
    ))
    .await
    .unwrap();
    // Registered: judged now, none below its threshold.
    let registered = next_of(&mut ws, "offers").await;
    let judged = registered["offers"].as_array().unwrap();
    assert_eq!(judged.len(), offers.len());
    assert!(
        judged
            .iter()
            .all(|o| o["alert"].is_null() && o["check"]["deadline"]["probability"].is_f64()),
        "{registered}"
    );

    let mut alert = None;
    for tick in later {
        common::feed_tick(&service, tick).await;
        wait_tick(&service, tick.time).await;
        if let Some(a) = next_of_within(&mut ws, "offer_alert", Duration::from_secs(2)).await {
            alert = Some((a, tick.time));
            break;
        }
    }
    let (a, at) = alert.expect("a later tick lowers some watched offer below its threshold");
    let (threshold, offer) = thresholds[a["id"].as_str().unwrap()].clone();
    assert_eq!(a["tick_time"], at);
    assert!((a["threshold"].as_f64().unwrap() - threshold).abs() < 1e-15);
    let p = a["probability"].as_f64().unwrap();
    assert!(p < threshold, "{a}");
    // The same offer checked at that tick: the same probability, and the
    // relist price is the one that reaches the threshold again.
    let mut again = offer.clone();
    again["target_probability"] = serde_json::json!(threshold);
    again.as_object_mut().unwrap().remove("threshold");
    let (_, c) = post_json(&http, &check_url, &again).await;
    assert_eq!(c["tick_time"], at);
    assert_eq!(c["deadline"]["probability"].as_f64().unwrap(), p);
    assert_eq!(a["relist_price"], c["target"]["price"]);
    if a["relist_reachable"] == true {
        assert!(a["relist_probability"].as_f64().unwrap() >= threshold);
        assert!(
            a["relist_price"].as_i64().unwrap() >= offer["price"].as_i64().unwrap(),
            "{a}"
        );
    }

    // --- `gept discord register-commands` puts the commands to the API.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let stand_in = warp::path!("api" / "applications" / String / "commands")
        .and(warp::put())
        .and(warp::header::<String>("authorization"))
        .and(warp::body::json())
        .map(move |app: String, auth: String, body: serde_json::Value| {
            let _ = seen_tx.send((app, auth, body));
            warp::reply::json(&serde_json::json!([]))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(stand_in).incoming(listener).run());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gept"))
        .args(["discord", "register-commands"])
        .env("GEPT__DISCORD__API_BASE", format!("http://{addr}/api"))
        .env("GEPT__DISCORD__APPLICATION_ID", "1234")
        .env("GEPT__DISCORD__TOKEN", "bot-token")
        .env(
            "GEPT__UPSTREAM__USER_AGENT",
            "gept-tests (tests@gept.invalid)",
        )
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (app, auth, body) = seen_rx.recv().await.unwrap();
    assert_eq!((app.as_str(), auth.as_str()), ("1234", "Bot bot-token"));
    let names: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["flip", "item", "status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("registered /flip, /item, /status"));
    service.shutdown().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message of `kind`, within 30 s.
async fn next_of(ws: &mut Ws, kind: &str) -> serde_json::Value {
    next_of_within(ws, kind, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no {kind} message within 30 s"))
}

async fn next_of_within(ws: &mut Ws, kind: &str, within: Duration) -> Option<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.ok()??.ok()?;
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_ne!(v["type"], "error", "{v}");
            if v["type"] == kind {
                return Some(v);
            }
        }
    }
}

// ------------------------------------------------------------ the browser

/// A WebDriver session on a chromedriver child (the W3C protocol over HTTP).
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status = format!("{base}/status");
        let h = http.clone();
        common::wait_for("chromedriver", 30, move || {
            let (h, u) = (h.clone(), status.clone());
            async move { h.get(u).send().await.is_ok() }
        })
        .await;
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}")],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let r: serde_json::Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
        }
    }

    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let r: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
        assert!(r["value"]["error"].is_null(), "WebDriver {path}: {r}");
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(
            reqwest::Method::POST,
            "url",
            serde_json::json!({"url": url}),
        )
        .await;
    }

    /// Runs `script` (a function body) in the page and answers its value.
    async fn eval(&self, script: &str) -> serde_json::Value {
        self.cmd(
            reqwest::Method::POST,
            "execute/sync",
            serde_json::json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits (bounded) until `script` answers something truthy; answers it.
    async fn wait_for(&self, what: &str, secs: u64, script: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(script).await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self
            .cmd(reqwest::Method::GET, "screenshot", serde_json::Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }

    /// The browser console's errors since the last call.
    async fn console_errors(&self) -> Vec<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "se/log",
                serde_json::json!({"type": "browser"}),
            )
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromium_available() -> bool {
    let ok = |c: &str| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ok("chromedriver") && Path::new("/usr/bin/chromium").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    if !chromium_available() {
        common::skip(
            "the_dashboard_in_a_real_browser",
            "chromium and chromedriver (scripts/setup.sh installs them)",
        );
        return;
    }
    let out: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let meta = tokio::task::spawn_blocking({
        let m = model.clone();
        move || small_model(&m)
    })
    .await
    .unwrap();
    let url = common::sqlite_with_active_model(tmp.path(), "gept.db", &meta, &model).await;
    let mock = mock_api::start(
        &common::recordings(),
        "127.0.0.1:0".parse().unwrap(),
        MockOptions {
            clock: Clock::Step,
            faults: Default::default(),
            seed: 1,
            max_snapshots: None,
        },
    )
    .await
    .unwrap();
    let mut env = serve_env(mock.addr, &url);
    env.extend(
        [
            ("GEPT__COLLECTORS__LATEST__INTERVAL", "700ms"),
            ("GEPT__INFERENCE__DEVICE", "cpu"),
            ("GEPT__API__TRUSTED_CLIENTS", "127.0.0.1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let serve = Serve::start(&env);
    let http = reqwest::Client::new();
    let recs_url = format!(
        "{}/api/v1/recommendations?capital=100000000&risk=high&style=active&slots=8",
        serve.url
    );
    // The player's first visit waits for what the API has to say.
    let (h, u) = (http.clone(), recs_url.clone());
    common::wait_for("recommendations", 180, move || {
        let (h, u) = (h.clone(), u.clone());
        async move {
            let Ok(r) = h.get(u).send().await else {
                return false;
            };
            r.status() == 200
                && r.json::<serde_json::Value>().await.is_ok_and(|v| {
                    v["recommendations"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty())
                })
        }
    })
    .await;

    let browser = Browser::start(1280, 1000).await;
    browser.goto(&format!("{}/", serve.url)).await;
    browser
        .eval("localStorage.setItem('gept.flips', JSON.stringify({capital: '100000000', risk: 'high', style: 'active', slots: '8'})); return true;")
        .await;
    browser.goto(&format!("{}/#/flips", serve.url)).await;
    let rows = browser
        .wait_for(
            "the Flips page lists recommendations",
            60,
            "return document.querySelectorAll('#flips tbody tr').length",
        )
        .await;
    assert!(rows.as_u64().unwrap() >= 1);
    // What the page shows is what the API answers for the same inputs at
    // the same tick (ticks arrive every 700 ms: the page and a later call
    // can straddle one, so both are read until they name the same tick).
    let seen = Arc::new(Mutex::new(None));
    let (b, h, u, s) = (&browser, &http, &recs_url, seen.clone());
    common::wait_for("the page and the API at the same tick", 60, move || {
        let s = s.clone();
        async move {
            let page: serde_json::Value = b
                .eval("const t = document.querySelector('#flips'); const r = t.querySelector('tbody tr'); return r ? {tick: +t.dataset.tick, item: +r.dataset.item} : null;")
                .await;
            let Ok(r) = h.get(u).send().await else {
                return false;
            };
            let Ok(api) = r.json::<serde_json::Value>().await else {
                return false;
            };
            if page.is_null() || api["tick_time"] != page["tick"] {
                return false;
            }
            *s.lock().unwrap() = Some((page, api));
            true
        }
    })
    .await;
    let (page, api) = seen.lock().unwrap().take().unwrap();
    let item = page["item"].as_i64().unwrap();
    let listed: Vec<i64> = api["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item_id"].as_i64().unwrap())
        .collect();
    assert!(listed.contains(&item), "{item} not in {listed:?}");
    let live = browser.wait_for("the live chip", 30, "return document.querySelector('#live.ok') && document.querySelector('#live').textContent").await;
    assert!(live.as_str().unwrap().starts_with("live"), "{live}");
    browser.screenshot(&out.join("flips.png")).await;

    // The Item page of a recommended (liquid) item: its surface changes
    // when a later tick arrives.
    browser.goto(&format!("{}/#/item/{item}", serve.url)).await;
    let read_cells = "const c = [...document.querySelectorAll('#surface td.cell')]; return c.length === 108 ? c.map(x => x.textContent).join('|') : null;";
    let before = browser.wait_for("the surface", 60, read_cells).await;
    // Every target has its probability (a percentage), none left blank.
    let shown = before.as_str().unwrap();
    assert!(
        shown.split('|').all(|c| c.ends_with('%')),
        "surface cells: {shown}"
    );
    browser
        .wait_for(
            "the price chart",
            30,
            "return document.querySelector('#price-chart svg path.series') !== null",
        )
        .await;
    let name = browser
        .eval("return document.querySelector('#item-name').textContent")
        .await;
    assert!(
        name.as_str().unwrap().ends_with(&format!("({item})")),
        "{name}"
    );
    let changed = format!(
        "const c = [...document.querySelectorAll('#surface td.cell')].map(x => x.textContent).join('|'); return c !== {} && c;",
        serde_json::to_string(before.as_str().unwrap()).unwrap()
    );
    browser
        .wait_for("the surface to change with a later tick", 120, &changed)
        .await;
    // The prices over the surface are the 1.25 % and 2.5 % round trips at
    // the market the page shows (the labels' rounding).
    let shown = browser
        .eval("const f = [...document.querySelectorAll('#item-facts div')].map(d => d.lastChild.textContent); \
               const p = [...document.querySelectorAll('#surface .prices')].map(e => e.textContent); \
               return {low: f[0], high: f[1], first: p[0], last: p[5]};")
        .await;
    let num =
        |v: &serde_json::Value| -> i64 { v.as_str().unwrap().replace(',', "").parse().unwrap() };
    let (low, high) = (num(&shown["low"]), num(&shown["high"]));
    let gp = gept::recommend::gp;
    assert_eq!(
        shown["first"],
        format!(
            "{} → {}",
            gp(buy_price(low, 125)),
            gp(sell_price(high, 125))
        ),
        "{shown}"
    );
    assert_eq!(
        shown["last"],
        format!(
            "{} → {}",
            gp(buy_price(low, 250)),
            gp(sell_price(high, 250))
        ),
        "{shown}"
    );
    browser.screenshot(&out.join("item.png")).await;

    browser.goto(&format!("{}/#/accuracy", serve.url)).await;
    browser
        .wait_for(
            "the accuracy page",
            30,
            "return document.querySelector('#accuracy .muted, #accuracy .message') !== null",
        )
        .await;
    browser.screenshot(&out.join("accuracy.png")).await;

    browser.goto(&format!("{}/#/status", serve.url)).await;
    let model = browser
        .wait_for(
            "the status page",
            30,
            "const f = document.querySelector('#status .facts'); return f && f.textContent",
        )
        .await;
    assert!(model.as_str().unwrap().contains(&meta.version), "{model}");
    browser.screenshot(&out.join("status.png")).await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    drop(browser);

    // On a phone-sized screen the Flips table fits without the wide columns.
    let phone = Browser::start(390, 844).await;
    phone.goto(&format!("{}/", serve.url)).await;
    phone
        .eval("localStorage.setItem('gept.flips', JSON.stringify({capital: '100000000', risk: 'high', style: 'active', slots: '8'})); return true;")
        .await;
    phone.goto(&format!("{}/#/flips", serve.url)).await;
    phone
        .wait_for(
            "the Flips page on a phone",
            60,
            "return document.querySelectorAll('#flips tbody tr').length",
        )
        .await;
    let overflow = phone
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page scrolls sideways by {overflow} px"
    );
    phone.screenshot(&out.join("flips-phone.png")).await;
    assert!(phone.console_errors().await.is_empty());
    drop(phone);
    eprintln!("screenshots in {}", out.display());
    serve.stop();
}
