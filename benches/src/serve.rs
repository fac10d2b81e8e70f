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
//! 3. the same number of clients subscribed to everything (the worst case),
//!    then again subscribed with `"compression":"gzip"` (one compressed
//!    message per tick shared by all; each client reads only the head it
//!    needs for the tick's time);
//! 4. `wrk` against `GET /api/v1/predictions/{id}` (aim ≥ 20,000 req/s with
//!    p99 ≤ 10 ms) and the whole snapshot `GET /api/v1/predictions` in each
//!    form (objects, compact, compact gzip), the server on one CPU and wrk on
//!    another, each against nginx serving the same bytes as a static file
//!    under the same pinning (aim ≥ 0.5 of nginx's rate).

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
    /// Pause between a measured tick's last delivery and the next tick.
    pub gap: Duration,
    /// Configuration overrides, `section.key=value`.
    pub settings: &'a [String],
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
            use tokio_tungstenite::tungstenite::Message;
            while let Some(Ok(msg)) = ws.next().await {
                let now = Instant::now();
                let head = match &msg {
                    Message::Text(text) => text.as_str().to_string(),
                    Message::Binary(gz) => gunzip_head(gz),
                    _ => continue,
                };
                if let Some(rest) = head.strip_prefix(r#"{"type":"predictions","tick_time":"#) {
                    let t: i64 = rest
                        .split(',')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_default();
                    arrivals.lock().unwrap().push((c, t, now));
                }
            }
        }));
    }
    Ok(tasks)
}

/// The first bytes of a gzip'd message, as text (enough for its type and
/// tick time; the rest is never inflated).
fn gunzip_head(gz: &[u8]) -> String {
    use std::io::Read;
    let mut head = [0u8; 64];
    let mut d = flate2::read::GzDecoder::new(gz);
    let mut n = 0;
    while n < head.len() {
        match d.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    String::from_utf8_lossy(&head[..n]).into_owned()
}

/// When each tick's predictions left the inference thread (its broadcast,
/// received in process): the part of a delivery before the websocket.
type Published = Arc<std::sync::Mutex<std::collections::HashMap<i64, Instant>>>;

/// A scenario's latencies (ms, each sorted): every delivery; each tick's
/// broadcast (features and inference); the inference thread's own time.
struct Figures {
    delivered: Vec<f64>,
    published: Vec<f64>,
    inference: Vec<f64>,
}

/// Feeds `ticks` through the broadcast one at a time; each waits until
/// `expect` deliveries of it arrived (bounded).
async fn measure(
    events: &ServiceFeed<'_>,
    ticks: &[gept_dataflows::features::TickInput],
    arrivals: &Arrivals,
    published: &Published,
    expect: usize,
    gap: Duration,
) -> Figures {
    let mut latencies = Vec::new();
    let mut publish = Vec::new();
    let mut inference = Vec::new();
    for tick in ticks {
        tokio::time::sleep(gap).await;
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
        if let Some(at) = published.lock().unwrap().get(&tick.time) {
            publish.push((*at - sent).as_secs_f64() * 1e3);
        }
        let status = events.service.inference.status.lock().unwrap().clone();
        if status.last_tick == Some(tick.time) {
            inference.extend(status.last_latency_ms);
        }
        if seen < expect {
            eprintln!(
                "tick {}: {seen} of {expect} deliveries within 60 s",
                tick.time
            );
        }
    }
    for v in [&mut latencies, &mut publish, &mut inference] {
        v.sort_by(f64::total_cmp);
    }
    Figures {
        delivered: latencies,
        published: publish,
        inference,
    }
}

fn report(name: &str, f: &Figures, aim_ms: f64) {
    let lat = &f.delivered;
    let (p50, p99) = (percentile(lat, 0.5), percentile(lat, 0.99));
    println!(
        "{name}: {} deliveries, p50 {p50:.1} ms, p99 {p99:.1} ms; aim p99 ≤ {aim_ms} ms: p99 at {:.2}× the aim\n  \
         of which to the tick's broadcast (features, inference): p50 {:.1} ms, p99 {:.1} ms; the inference thread's part: p50 {:.1} ms, p99 {:.1} ms",
        lat.len(),
        p99 / aim_ms,
        percentile(&f.published, 0.5),
        percentile(&f.published, 0.99),
        percentile(&f.inference, 0.5),
        percentile(&f.inference, 0.99),
    );
}

/// The snapshot routes' limit: nginx (Debian's package; `scripts/bench serve`
/// installs it) serving the same bytes as static files, one worker process,
/// `sendfile` and `gzip_static` (a request accepting gzip gets the `.gz`
/// file, as ours gets its gzip encoded once per tick). Stopped on drop.
struct Nginx {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free loopback port over `files` (name, bytes),
    /// pinned to `cpu` when given.
    fn start(files: &[(&str, &[u8])], cpu: Option<usize>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let www = dir.path().join("www");
        std::fs::create_dir(&www)?;
        for (name, bytes) in files {
            std::fs::write(www.join(name), bytes)?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1;\n\
             pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;\n\
               keepalive_requests 1000000; keepalive_timeout 75s;\n\
               types {{ }} default_type application/json;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {d}/www; gzip_static on; }}\n\
             }}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = pinned("nginx", cpu);
        cmd.args(["-p", &d.to_string(), "-c", &conf_path.display().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!(
                "nginx could not run ({e}); install it (Debian: apt-get install nginx-light), or run `scripts/bench serve`"
            )
        })?;
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    e.read_to_string(&mut err).ok();
                }
                anyhow::bail!("nginx exited ({status}): {err}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            addr,
            _dir: dir,
        })
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// `program` under `taskset -c CPU` when a CPU is given.
fn pinned(program: &str, cpu: Option<usize>) -> std::process::Command {
    match cpu {
        Some(cpu) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", &cpu.to_string(), program]);
            c
        }
        None => std::process::Command::new(program),
    }
}

/// Pins every thread of this process (the service's runtime, its engine and
/// inference threads) to `cpu`.
fn pin_this_process(cpu: usize) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset -a -p failed: {status}");
    Ok(())
}

/// Runs `wrk` on `url` with extra request headers (`Name: value`), one
/// thread pinned to `cpu` when given, else two unpinned; returns
/// (requests/s, p99 ms).
fn wrk(
    url: &str,
    seconds: u64,
    connections: u32,
    headers: &[&str],
    cpu: Option<usize>,
) -> anyhow::Result<(f64, f64)> {
    let mut args = vec![
        if cpu.is_some() { "-t1" } else { "-t2" }.to_string(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".to_string(),
    ];
    for h in headers {
        args.push("-H".into());
        args.push(h.to_string());
    }
    args.push(url.to_string());
    let out = pinned("wrk", cpu).args(&args).output().map_err(|e| {
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
    .chain(o.settings.iter().map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (
            format!("GEPT__{}", k.replace('.', "__").to_uppercase()),
            v.to_string(),
        )
    }))
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
        "model {}; {} warm-up ticks, {} measured ticks of about {items_per_tick} items; {} CPU threads; {} ms between a tick's deliveries and the next tick{}",
        meta.version,
        warm.len(),
        measured.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        o.gap.as_millis(),
        if o.settings.is_empty() { String::new() } else { format!("; settings {:?}", o.settings) }
    );
    let quarter = measured.len() / 4;
    let (m1, rest) = measured.split_at(quarter.max(1));
    let (m2, rest) = rest.split_at(quarter.min(rest.len()));
    let (m3, m4) = rest.split_at(quarter.min(rest.len()));

    // When each tick leaves the inference thread.
    let published: Published = Arc::default();
    let recorder = {
        let published = published.clone();
        let mut stream = inference.stream.subscribe();
        tokio::spawn(async move {
            loop {
                match stream.recv().await {
                    Ok(p) => {
                        published
                            .lock()
                            .unwrap()
                            .insert(p.tick_time, Instant::now());
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    };

    // 1. One client, every item.
    let arrivals: Arrivals = Arc::default();
    let tasks = connect_clients(&ws_url, 1, |_| None, arrivals.clone()).await?;
    let lat = measure(&events, m1, &arrivals, &published, 1, o.gap).await;
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
    let lat = measure(&events, m2, &arrivals, &published, o.subscribers, o.gap).await;
    report(
        &format!("tick → websocket, {} clients × 10 items", o.subscribers),
        &lat,
        100.0,
    );
    tasks.iter().for_each(|t| t.abort());

    // 3. Many clients, every item.
    let arrivals: Arrivals = Arc::default();
    let tasks = connect_clients(&ws_url, o.subscribers, |_| None, arrivals.clone()).await?;
    let lat = measure(&events, m3, &arrivals, &published, o.subscribers, o.gap).await;
    report(
        &format!("tick → websocket, {} clients × all items", o.subscribers),
        &lat,
        100.0,
    );
    tasks.iter().for_each(|t| t.abort());

    // 3b. Many clients, every item, gzip'd frames.
    let arrivals: Arrivals = Arc::default();
    let tasks = connect_clients(
        &ws_url,
        o.subscribers,
        |_| Some(r#"{"type":"subscribe","compression":"gzip"}"#.to_string()),
        arrivals.clone(),
    )
    .await?;
    let lat = measure(&events, m4, &arrivals, &published, o.subscribers, o.gap).await;
    report(
        &format!(
            "tick → websocket, {} clients × all items, gzip",
            o.subscribers
        ),
        &lat,
        100.0,
    );
    tasks.iter().for_each(|t| t.abort());

    // 4. HTTP under wrk: the server on one CPU and wrk on another
    // (taskset), each route against its limit in the same run: nginx serving
    // the same bytes as a static file under the same pinning and connections.
    if o.wrk_seconds > 0 {
        use gept::api::snapshot::{Form, SnapshotCache};
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (server_cpu, load_cpu) = if cpus >= 2 {
            (Some(0), Some(1))
        } else {
            println!("one CPU: the servers and wrk share it, unpinned");
            (None, None)
        };
        let snap = service.inference.snapshot.load_full();
        let cache = SnapshotCache::default();
        let (objects, compact) = (
            cache.get(&snap, Form::Objects),
            cache.get(&snap, Form::Compact),
        );
        let item = ids[0];
        let fetch = |path: String| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await?;
            anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
            Ok::<_, anyhow::Error>(r.bytes().await?)
        };
        let item_body = fetch(format!("/api/v1/predictions/{item}")).await?;
        // The files nginx serves are the bytes our routes answer.
        anyhow::ensure!(
            fetch("/api/v1/predictions".into()).await? == objects.json
                && fetch("/api/v1/predictions?format=compact".into()).await? == compact.json,
            "the snapshot route's bytes differ from the encoded snapshot"
        );
        let nginx = Nginx::start(
            &[
                ("item.json", &item_body[..]),
                ("objects.json", &objects.json[..]),
                ("compact.json", &compact.json[..]),
                ("compact.json.gz", &compact.gzip[..]),
            ],
            server_cpu,
        )?;
        if let Some(cpu) = server_cpu {
            pin_this_process(cpu)?;
        }
        println!(
            "HTTP: server and nginx on CPU {}, wrk (one thread) on CPU {}; {} s per run",
            server_cpu.map_or("any".into(), |c| c.to_string()),
            load_cpu.map_or("any".into(), |c| c.to_string()),
            o.wrk_seconds
        );
        let gzip: &[&str] = &["Accept-Encoding: gzip"];
        for (route, path, file, bytes, connections, headers) in [
            (
                "GET /api/v1/predictions/{id}",
                format!("/api/v1/predictions/{item}"),
                "item.json",
                item_body.len(),
                64,
                &[][..],
            ),
            (
                "GET /api/v1/predictions (objects)",
                "/api/v1/predictions".to_string(),
                "objects.json",
                objects.json.len(),
                8,
                &[][..],
            ),
            (
                "GET /api/v1/predictions?format=compact",
                "/api/v1/predictions?format=compact".to_string(),
                "compact.json",
                compact.json.len(),
                8,
                &[][..],
            ),
            (
                "GET /api/v1/predictions?format=compact, gzip",
                "/api/v1/predictions?format=compact".to_string(),
                "compact.json",
                compact.gzip.len(),
                8,
                gzip,
            ),
        ] {
            let (peer_rps, peer_p99) = wrk(
                &nginx.url(file),
                o.wrk_seconds,
                connections,
                headers,
                load_cpu,
            )?;
            let (rps, p99) = wrk(
                &format!("http://{addr}{path}"),
                o.wrk_seconds,
                connections,
                headers,
                load_cpu,
            )?;
            println!(
                "{route} ({bytes} bytes, {connections} connections): {rps:.0} req/s, p99 {p99:.2} ms; nginx, same bytes: {peer_rps:.0} req/s, p99 {peer_p99:.2} ms: {:.2}× nginx's rate (aim ≥ 0.5)",
                rps / peer_rps
            );
            if file == "item.json" {
                println!(
                    "  one item: aim ≥ 20000 req/s and p99 ≤ 10 ms: {:.2}× the rate, p99 at {:.2}× the limit",
                    rps / 20_000.0,
                    p99 / 10.0
                );
            }
        }
    }
    recorder.abort();
    drop(events);
    let report = service.shutdown().await;
    anyhow::ensure!(
        report.clean(),
        "the service did not stop cleanly: {report:?}"
    );
    Ok(())
}
