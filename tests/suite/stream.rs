//! The websocket protocol message by message (docs/API.md), against the
//! service started in this process through `gept::service::Service` with the
//! collectors off, fed recorded ticks through its feed as the collectors
//! would: hello, subscribe and subscribed, per-tick predictions equal to the
//! snapshot, errors without parser internals, binary frames, a client that
//! does not read falling behind and getting `lagged` with a snapshot, the
//! size limit closing with 1009, and the service's stop closing with 1001.

use crate::common;

use futures::{SinkExt, StreamExt};
use gept::service::{Service, ServiceHandle};
use gept_actors::collectors::{FeedEvent, Tick};
use gept_core::recordings::LATEST_FILE;
use gept_core::target_names;
use gept_dataflows::inputs::load_ticks;
use gept_model::net::TrainOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message as JSON, within 30 s.
async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message within 30 s")
            .expect("the stream is open")
            .expect("a frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next frame that is not a ping, within 30 s.
async fn next_frame(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

fn feed_tick(service: &ServiceHandle, tick: &gept_dataflows::features::TickInput) {
    service.feed(FeedEvent::Tick(Arc::new(Tick {
        observed_at: tick.time,
        arrived: Instant::now(),
        rows: tick.rows.clone(),
    })));
}

/// Reads predictions messages until the one of `tick_time`.
async fn until_tick(ws: &mut Ws, tick_time: i64) -> serde_json::Value {
    loop {
        let m = next_json(ws).await;
        if m["type"] == "predictions" && m["tick_time"] == tick_time {
            return m;
        }
        assert_eq!(m["type"], "predictions", "{m}");
    }
}

#[test]
fn the_websocket_protocol_message_by_message() {
    gept::service::system().block_on(protocol());
}

async fn protocol() {
    let rec = common::recordings();
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    let meta = common::train_model(
        &rec,
        100,
        TrainOptions {
            hidden: vec![16],
            max_epochs: 1,
            ..TrainOptions::default()
        },
        &model_dir,
    );
    let url = common::sqlite_with_active_model(tmp.path(), "gept.db", &meta, &model_dir).await;

    let env: Vec<(String, String)> = [
        ("GEPT__DATABASE__URL", url.as_str()),
        ("GEPT__API__LISTEN", "127.0.0.1:0"),
        (
            "GEPT__UPSTREAM__USER_AGENT",
            "gept-tests (tests@gept.invalid)",
        ),
        ("GEPT__INFERENCE__DEVICE", "cpu"),
        ("GEPT__API__WS_CLIENT_QUEUE", "2"),
        ("GEPT__API__WS_MAX_MESSAGE_BYTES", "512"),
        ("GEPT__SERVICE__SHUTDOWN_TIMEOUT", "30s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut config = gept_core::config::Config::load_with_env(None, env).unwrap();
    config.collectors.disable_all();
    let service = Service::start(&config).await.unwrap();
    let ws_url = format!("ws://{}/api/v1/stream", service.addr);
    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(200)).unwrap();
    assert!(ticks.len() >= 20, "{} ticks", ticks.len());

    // hello: the 108 targets in canonical order, no tick yet.
    let (mut a, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let hello = next_json(&mut a).await;
    assert_eq!(hello["type"], "hello");
    let names = target_names();
    let hello_targets: Vec<String> = serde_json::from_value(hello["targets"].clone()).unwrap();
    assert_eq!(hello_targets, names);
    assert_eq!(hello["p_scale"], 10_000.0);
    assert!(hello["tick_time"].is_null());

    // subscribe → subscribed, with the targets it selects.
    let first = &ticks[0];
    let ids: Vec<u32> = first.rows.iter().take(2).map(|r| r.item_id).collect();
    a.send(Message::text(
        serde_json::json!({"type": "subscribe", "items": ids, "horizons": [1, 4], "offsets": [1.25]})
            .to_string(),
    ))
    .await
    .unwrap();
    let sub = next_json(&mut a).await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["items"], serde_json::json!(ids));
    let wanted: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| *n == "fill_1h_1.25pct" || *n == "fill_4h_1.25pct")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(wanted.len(), 2, "target names changed: {names:?}");
    assert_eq!(
        sub["targets"],
        serde_json::json!([names[wanted[0]], names[wanted[1]]])
    );

    // Errors name what is expected, never the parser's internals.
    a.send(Message::text("{\"type\":\"unsubscribe\"}"))
        .await
        .unwrap();
    let e = next_json(&mut a).await;
    assert_eq!(e["type"], "error");
    let text = e["error"].as_str().unwrap();
    assert!(text.contains("expected"), "{text}");
    assert!(
        !text.contains("internally tagged") && !text.contains("variant"),
        "parser internals leaked: {text}"
    );
    a.send(Message::text(
        serde_json::json!({"type": "subscribe", "horizons": [999]}).to_string(),
    ))
    .await
    .unwrap();
    let e = next_json(&mut a).await;
    assert_eq!(e["type"], "error");
    assert!(e["error"].as_str().unwrap().contains("horizon 999"), "{e}");
    a.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let e = next_json(&mut a).await;
    assert_eq!(e["type"], "error");
    assert!(e["error"].as_str().unwrap().contains("binary"), "{e}");

    // A tick: the subscribed items, the subscribed targets, equal to the
    // snapshot's probabilities × 10,000, rounded.
    feed_tick(&service, first);
    let m = until_tick(&mut a, first.time).await;
    assert_eq!(m["model_version"], meta.version.as_str());
    let preds = m["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), ids.len(), "{m}");
    let snapshot = service.inference.snapshot.load();
    assert_eq!(snapshot.tick_time, Some(first.time));
    for p in preds {
        let id = p["item_id"].as_u64().unwrap() as u32;
        assert!(ids.contains(&id));
        let full = &snapshot.predictions[&id].probabilities;
        let expected: Vec<u32> = wanted
            .iter()
            .map(|&t| (full[t] * 10_000.0).round() as u32)
            .collect();
        let got: Vec<u32> = serde_json::from_value(p["p"].clone()).unwrap();
        assert_eq!(got, expected, "item {id}");
    }

    // Compression: a client of every item and one of `a`'s subscription, each
    // with gzip, get binary frames that inflate to exactly the text a plain
    // client of the same subscription gets for the same tick; an unknown
    // compression is refused.
    let (mut plain, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut all_gz, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut some_gz, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    for ws in [&mut plain, &mut all_gz, &mut some_gz] {
        assert_eq!(next_json(ws).await["type"], "hello");
    }
    all_gz
        .send(Message::text(
            r#"{"type":"subscribe","compression":"gzip"}"#,
        ))
        .await
        .unwrap();
    let sub = next_json(&mut all_gz).await;
    assert_eq!(sub["compression"], "gzip", "{sub}");
    some_gz
        .send(Message::text(
            serde_json::json!({"type": "subscribe", "items": ids, "horizons": [1, 4], "offsets": [1.25], "compression": "gzip"})
                .to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut some_gz).await["compression"], "gzip");
    some_gz
        .send(Message::text(r#"{"type":"subscribe","compression":"br"}"#))
        .await
        .unwrap();
    let e = next_json(&mut some_gz).await;
    assert!(e["error"].as_str().unwrap().contains("compression"), "{e}");
    let second = &ticks[1];
    feed_tick(&service, second);
    let inflate = |frame: Option<Message>| -> String {
        let Some(Message::Binary(gz)) = frame else {
            panic!("expected a binary frame, got {frame:?}");
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        text
    };
    let plain_text = loop {
        match next_frame(&mut plain).await {
            Some(Message::Text(t))
                if t.as_str()
                    .contains(&format!(r#""tick_time":{}"#, second.time)) =>
            {
                break t.as_str().to_string()
            }
            Some(Message::Text(_)) => continue,
            other => panic!("expected the tick's text message, got {other:?}"),
        }
    };
    assert!(plain_text.starts_with(r#"{"type":"predictions""#));
    let all_text = inflate(next_frame(&mut all_gz).await);
    assert_eq!(
        all_text, plain_text,
        "the gzip'd all-items message inflates to the text"
    );
    let some_text = inflate(next_frame(&mut some_gz).await);
    let expected = until_tick(&mut a, second.time).await;
    let got: serde_json::Value = serde_json::from_str(&some_text).unwrap();
    assert_eq!(
        got, expected,
        "the gzip'd subscription's message inflates to the plain one"
    );
    drop((plain, all_gz, some_gz));

    // A client of every item that does not read falls behind: its queue
    // (2 messages) fills once the socket buffers do, ticks are dropped and
    // counted, and when it reads again it is told `lagged` with a snapshot.
    let (mut b, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let metrics_url = format!("http://{}/metrics", service.addr);
    let dropped = || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("gept_websocket_dropped_messages_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    // Other tests in this process may have dropped messages before: count
    // from here.
    let dropped_before = dropped().await;
    let mut fed = 2;
    while dropped().await == dropped_before {
        assert!(
            fed + 1 < ticks.len(),
            "no message dropped after {fed} ticks to a client that does not read"
        );
        feed_tick(&service, &ticks[fed]);
        until_tick(&mut a, ticks[fed].time).await;
        fed += 1;
    }
    // The client reads again: it drains what was queued, and at the next
    // tick is told `lagged` with the snapshot of every item.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let m = next_json(&mut b).await;
            let lagged = m["type"] == "lagged";
            let _ = seen_tx.send(m);
            if lagged {
                return b;
            }
        }
    });
    assert_eq!(seen.recv().await.unwrap()["type"], "hello");
    let reading_from = fed;
    let lagged = 'wait: loop {
        assert!(fed < ticks.len(), "no lagged message after {fed} ticks");
        feed_tick(&service, &ticks[fed]);
        until_tick(&mut a, ticks[fed].time).await;
        fed += 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), seen.recv()).await {
                Ok(Some(m)) if m["type"] == "lagged" => break 'wait m,
                Ok(Some(m)) => assert_eq!(m["type"], "predictions", "{m}"),
                Ok(None) => panic!("the client's reader ended"),
                Err(_) => break,
            }
        }
    };
    let b = reader.await.unwrap();
    assert!(lagged["missed"].as_u64().unwrap() >= 1, "{lagged}");
    // The snapshot of the first tick that found room in the client's queue
    // after the drop: the tick that dropped (its writer may have taken a
    // message off the queue meanwhile) or one fed since.
    let snapshot_tick = lagged["snapshot"]["tick_time"].as_i64().unwrap();
    assert!(
        ticks[reading_from - 1..fed]
            .iter()
            .any(|t| t.time == snapshot_tick),
        "lagged carries tick {snapshot_tick}, not one fed since the drop"
    );
    assert_eq!(
        lagged["snapshot"]["predictions"].as_array().unwrap().len(),
        service.inference.snapshot.load().predictions.len()
    );

    // A message over the limit (512 bytes) closes with 1009.
    let (mut c, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    assert_eq!(next_json(&mut c).await["type"], "hello");
    c.send(Message::text("x".repeat(600))).await.unwrap();
    match next_frame(&mut c).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a close with 1009, got {other:?}"),
    }

    // The service's stop closes open clients with 1001 (going away).
    let stop = tokio::spawn(service.shutdown());
    let close = loop {
        match next_frame(&mut a).await {
            Some(Message::Text(_)) => continue,
            other => break other,
        }
    };
    match close {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close with 1001, got {other:?}"),
    }
    drop(b);
    let report = stop.await.unwrap();
    assert!(report.clean(), "{report:?}");
}
