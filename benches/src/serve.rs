//! `gept-bench serve`: the serving path in one process on loopback, against
//! the aims in the same run.
//!
//! A temporary SQLite store registers `--model` as ACTIVE; the service starts
//! through `gept::service::Service`, exactly as `gept serve` starts it, with
//! the collectors off. Recorded ticks and `/1h` and `/5m` buckets go in
//! through the service's feed (what the collectors publish after fetching,
//! parsing and handing rows to the writer); the first ticks
//! warm the windows up, then each measured tick is timed from its hand-over
//! to its arrival at every websocket client:
//! 1. one client subscribed to everything (a full-universe tick; aim p99 ≤ 50 ms);
//! 2. `--subscribers` clients, each subscribed to 10 items (aim p99 ≤ 100 ms);
//! 3. the same number of clients subscribed to everything (the worst case);
//! 4. `wrk` against `GET /api/v1/predictions/{id}` (aim ≥ 20,000 req/s with
//!    p99 ≤ 10 ms) and the whole snapshot `GET /api/v1/predictions` in each
//!    form (objects, compact, compact gzip), each against a bare server
//!    sending the same bytes from memory in the same run.

use futures::StreamExt;
use gept::service::{Service, ServiceHandle};
use gept_actors::collectors::{FeedEvent, Tick};
use gept_core::BucketStep;
use gept_dataflows::features::BucketInput;
use gept_dataflows::inputs::{load_buckets, load_hours, load_items, load_ticks};
use gept_model::file::read_meta;
use gept_store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub struct Options<'a> {
    pub model: &'a Path,
    pub latest: &'a Path,
    pub hourly: Option<&'a Path>,
    pub five_minute: Option<&'a Path>,
    pub mapping: Option<&'a Path>,
    pub warmup: usize,
    pub ticks: usize,
    pub subscribers: usize,
    pub wrk_seconds: u64,
}

/// The service's feed: each tick goes in after the recorded `/1h` and `/5m`
/// buckets complete by its time, as the collectors would have published them.
struct ServiceFeed<'a> {
    service: &'a ServiceHandle,
    /// Buckets not yet published, by completion time.
    pending: std::sync::Mutex<std::collections::VecDeque<(BucketStep, BucketInput)>>,
}

impl ServiceFeed<'_> {
    fn tick(&self, tick: &gept_dataflows::features::TickInput, arrived: Instant) {
        let mut pending = self.pending.lock().unwrap();
        while pending
            .front()
            .is_some_and(|(step, b)| b.start + step.seconds() <= tick.time)
        {
            let (step, b) = pending.pop_front().expect("front exists");
            self.service.feed(FeedEvent::Bucket {
                step,
                timestamp: b.start,
                rows: Arc::new(b.rows),
            });
        }
        drop(pending);
        self.service.feed(FeedEvent::Tick(Arc::new(Tick {
            observed_at: tick.time,
            arrived,
            rows: tick.rows.clone(),
        })));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Per client, the arrival time of each tick's predictions message.
type Arrivals = Arc<std::sync::Mutex<Vec<(usize, i64, Instant)>>>;

async fn connect_clients(
    url: &str,
    n: usize,
    subscribe: impl Fn(usize) -> Option<String>,
    arrivals: Arrivals,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::with_capacity(n);
    for c in 0..n {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        // hello
        ws.next().await;
        if let Some(sub) = subscribe(c) {
            use futures::SinkExt;
            ws.send(tokio_tungstenite::tungstenite::Message::text(sub))
                .await?;
            ws.next().await; // subscribed
        }
        let arrivals = arrivals.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let now = Instant::now();
                if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
                    let text = text.as_str();
                    if let Some(rest) = text.strip_prefix(r#"{"type":"predictions","tick_time":"#) {
                        let t: i64 = rest
                            .split(',')
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_default();
                        arrivals.lock().unwrap().push((c, t, now));
                    }
                }
            }
        }));
    }
    Ok(tasks)
}

/// Feeds `ticks` through the broadcast one at a time; each waits until
/// `expect` deliveries of it arrived (bounded). Returns delivery latencies (ms).
async fn measure(
    events: &ServiceFeed<'_>,
    ticks: &[gept_dataflows::features::TickInput],
    arrivals: &Arrivals,
    expect: usize,
) -> Vec<f64> {
    let mut latencies = Vec::new();
    for tick in ticks {
        arrivals.lock().unwrap().clear();
        let sent = Instant::now();
        events.tick(tick, sent);
        let deadline = sent + Duration::from_secs(60);
        loop {
            let n = arrivals
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.1 == tick.time)
                .count();
            if n >= expect || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = arrivals.lock().unwrap();
        let mut seen = 0;
        for (_, t, at) in got.iter() {
            if *t == tick.time {
                latencies.push((*at - sent).as_secs_f64() * 1e3);
                seen += 1;
            }
        }
        if seen < expect {
            eprintln!(
                "tick {}: {seen} of {expect} deliveries within 60 s",
                tick.time
            );
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn report(name: &str, lat: &[f64], aim_ms: f64) {
    let (p50, p99) = (percentile(lat, 0.5), percentile(lat, 0.99));
    println!(
        "{name}: {} deliveries, p50 {p50:.1} ms, p99 {p99:.1} ms; aim p99 ≤ {aim_ms} ms: p99 at {:.2}× the aim",
        lat.len(),
        p99 / aim_ms
    );
}

/// A bare HTTP server on loopback answering every request with `body`
/// (the snapshot's peer: the same bytes, from memory).
async fn static_peer(body: bytes::Bytes) -> anyhow::Result<std::net::SocketAddr> {
    use warp::Filter;
    let route = warp::any().map(move || {
        let mut r = warp::reply::Response::new(body.clone().into());
        r.headers_mut().insert(
            "content-type",
            warp::http::HeaderValue::from_static("application/json"),
        );
        r
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(warp::serve(route).incoming(listener).run());
    Ok(addr)
}

/// Runs `wrk` on `url`; prints and returns (requests/s, p99 ms).
fn wrk(url: &str, seconds: u64, connections: u32) -> anyhow::Result<(f64, f64)> {
    wrk_with(url, seconds, connections, &[])
}

/// [`wrk`] with extra request headers (`Name: value`).
fn wrk_with(
    url: &str,
    seconds: u64,
    connections: u32,
    headers: &[&str],
) -> anyhow::Result<(f64, f64)> {
    let mut args = vec![
        "-t2".to_string(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".to_string(),
    ];
    for h in headers {
        args.push("-H".into());
        args.push(h.to_string());
    }
    args.push(url.to_string());
    let out = std::process::Command::new("wrk")
        .args(&args)
        .output()
        .map_err(|e| {
            anyhow::anyhow!("wrk could not run ({e}); install it (Debian: apt-get install wrk)")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected wrk output:\n{text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| {
            let v = v.trim();
            let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let x: f64 = num.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => x / 1e3,
                "s" => x * 1e3,
                _ => x,
            }
        })
        .unwrap_or(f64::NAN);
    let non2xx = text.lines().find(|l| l.contains("Non-2xx"));
    if let Some(l) = non2xx {
        println!("  wrk: {}", l.trim());
    }
    Ok((rps, p99))
}

pub async fn run(o: Options<'_>) -> anyhow::Result<()> {
    let meta = read_meta(o.model)?;
    let all = load_ticks(o.latest, Some(o.warmup + o.ticks))?;
    anyhow::ensure!(all.len() > o.warmup, "the recording has too few snapshots");
    let hours = load_hours(o.hourly)?;
    let five = load_buckets(o.five_minute, BucketStep::FiveMinutes)?;
    let items = load_items(o.mapping)?;
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    // The model is ACTIVE before the service starts, so inference loads it
    // before the first tick.
    let store = Store::connect(&url, 1).await?;
    store.migrate().await?;
    gept_model::registry::register_dir(&store, o.model).await?;
    store
        .activate_model(&meta.version, chrono::Utc::now().timestamp())
        .await?;
    store
        .upsert_items(
            &items.values().cloned().collect::<Vec<_>>(),
            chrono::Utc::now().timestamp(),
        )
        .await?;
    store.close().await;

    // The service as `gept serve` runs it, with the collectors off: the
    // benchmark publishes the recorded feed exactly as they would.
    let env: Vec<(String, String)> = [
        ("GEPT__DATABASE__URL", url.as_str()),
        ("GEPT__API__LISTEN", "127.0.0.1:0"),
        (
            "GEPT__UPSTREAM__USER_AGENT",
            "gept-bench (bench@gept.invalid)",
        ),
        ("GEPT__API__TRUSTED_CLIENTS", "127.0.0.1"),
        // One address plays a thousand players: lift the per-address caps.
        ("GEPT__API__WS_MAX_CLIENTS_PER_IP", "100000"),
        ("GEPT__API__MAX_CONNECTIONS_PER_IP", "100000"),
        ("GEPT__API__TRUSTED_RATE_LIMIT_PER_SECOND", "1000000000"),
        ("GEPT__INFERENCE__DEVICE", "cpu"),
        ("GEPT__INFERENCE__STREAM_BUFFER", "64"),
        ("GEPT__INFERENCE__REGISTRY_POLL", "1h"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut config = gept_core::config::Config::load_with_env(None, env)
        .map_err(|e| anyhow::anyhow!("bench configuration: {e}"))?;
    config.collectors.disable_all();
    let service = Service::start(&config).await?;
    let (addr, inference, store) = (
        service.addr,
        service.inference.clone(),
        service.store.clone(),
    );
    let mut buckets: Vec<(BucketStep, BucketInput)> = hours
        .into_iter()
        .map(|h| (BucketStep::OneHour, h))
        .chain(five.into_iter().map(|b| (BucketStep::FiveMinutes, b)))
        .collect();
    buckets.sort_by_key(|(step, b)| (b.start + step.seconds(), *step));
    let events = ServiceFeed {
        service: &service,
        pending: std::sync::Mutex::new(buckets.into()),
    };
    let ws_url = format!("ws://{addr}/api/v1/stream");

    // Warm-up: the windows fill; wait for each tick's predictions.
    let (warm, measured) = all.split_at(o.warmup.min(all.len() - 1));
    let mut stream = inference.stream.subscribe();
    for tick in warm {
        events.tick(tick, Instant::now());
        loop {
            match tokio::time::timeout(Duration::from_secs(60), stream.recv()).await {
                Ok(Ok(p)) if p.tick_time == tick.time => break,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                _ => anyhow::bail!("no predictions for warm-up tick {}", tick.time),
            }
        }
    }
    drop(stream);
    // Let the store catch up with the warm-up's prediction rows, so that
    // the measured ticks see the steady state (a tick a minute) rather than
    // a backlog of writes.
    let deadline = Instant::now() + Duration::from_secs(600);
    while store.count("inference_status").await.unwrap_or(0) < warm.len() as i64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let items_per_tick =
        measured.iter().map(|t| t.rows.len()).sum::<usize>() / measured.len().max(1);
    println!(
        "model {}; {} warm-up ticks, {} measured ticks of about {items_per_tick} items; {} CPU threads",
        meta.version,
        warm.len(),
        measured.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let thirds = measured.len() / 3;
    let (m1, rest) = measured.split_at(thirds.max(1));
    let (m2, m3) = rest.split_at(thirds.min(rest.len()));

    // 1. One client, every item.
    let arrivals: Arrivals = Arc::default();
    let tasks = connect_clients(&ws_url, 1, |_| None, arrivals.clone()).await?;
    let lat = measure(&events, m1, &arrivals, 1).await;
    report("tick → websocket, 1 client, all items", &lat, 50.0);
    tasks.iter().for_each(|t| t.abort());

    // 2. Many clients, 10 items each.
    let ids: Vec<u32> = measured[0].rows.iter().map(|r| r.item_id).collect();
    let arrivals: Arrivals = Arc::default();
    let tasks = connect_clients(
        &ws_url,
        o.subscribers,
        |c| {
            let pick: Vec<u32> = (0..10)
                .map(|k| ids[(c * 37 + k * 101) % ids.len()])
                .collect();
            Some(serde_json::json!({"type": "subscribe", "items": pick}).to_string())
        },
        arrivals.clone(),
    )
    .await?;
    let lat = measure(&events, m2, &arrivals, o.subscribers).await;
    report(
        &format!("tick → websocket, {} clients × 10 items", o.subscribers),
        &lat,
        100.0,
    );
    tasks.iter().for_each(|t| t.abort());

    // 3. Many clients, every item.
    let arrivals: Arrivals = Arc::default();
    let tasks = connect_clients(&ws_url, o.subscribers, |_| None, arrivals.clone()).await?;
    let lat = measure(&events, m3, &arrivals, o.subscribers).await;
    report(
        &format!("tick → websocket, {} clients × all items", o.subscribers),
        &lat,
        100.0,
    );
    tasks.iter().for_each(|t| t.abort());

    // 4. HTTP under wrk.
    if o.wrk_seconds > 0 {
        let one = format!("http://{addr}/api/v1/predictions/{}", ids[0]);
        let (rps, p99) = wrk(&one, o.wrk_seconds, 64)?;
        println!(
            "GET /api/v1/predictions/{{id}}: {rps:.0} req/s, p99 {p99:.2} ms; aim ≥ 20000 req/s, p99 ≤ 10 ms: {:.2}× the rate, p99 at {:.2}× the limit",
            rps / 20_000.0,
            p99 / 10.0
        );
        // The whole snapshot, in each form, against a peer in the same run:
        // a bare HTTP server sending the same bytes from memory (what a
        // static file server at its best does).
        let snap = service.inference.snapshot.load_full();
        let cache = gept::api::snapshot::SnapshotCache::default();
        for (form, query, gzip) in [
            (gept::api::snapshot::Form::Objects, "", false),
            (gept::api::snapshot::Form::Compact, "?format=compact", false),
            (gept::api::snapshot::Form::Compact, "?format=compact", true),
        ] {
            let encoded = cache.get(&snap, form);
            let body = if gzip {
                encoded.gzip.clone()
            } else {
                encoded.json.clone()
            };
            let bytes = body.len();
            let peer = static_peer(body).await?;
            let headers: &[&str] = if gzip {
                &["Accept-Encoding: gzip"]
            } else {
                &[]
            };
            let (peer_rps, peer_p99) =
                wrk_with(&format!("http://{peer}/"), o.wrk_seconds, 8, headers)?;
            let url = format!("http://{addr}/api/v1/predictions{query}");
            let (rps, p99) = wrk_with(&url, o.wrk_seconds, 8, headers)?;
            println!(
                "GET /api/v1/predictions{query}{} (every item, ~{items_per_tick} × 108, {:.2} MB): {rps:.1} req/s, p99 {p99:.1} ms; static peer, same bytes: {peer_rps:.1} req/s, p99 {peer_p99:.1} ms: {:.2}× the peer's rate",
                if gzip { " gzip" } else { "" },
                bytes as f64 / 1e6,
                rps / peer_rps
            );
        }
    }
    drop(events);
    let report = service.shutdown().await;
    anyhow::ensure!(
        report.clean(),
        "the service did not stop cleanly: {report:?}"
    );
    Ok(())
}
