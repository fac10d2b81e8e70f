//! Shared helpers of the integration tests: where the recordings are, and
//! fresh databases on each backend.
#![allow(dead_code)]

use gept_store::Store;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether the suite runs under CI (`CI` set to anything but empty, `0` or
/// `false`): there, a test that cannot find its data or database fails.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A test cannot run because `what` is missing: under CI that is a failure
/// (CI must prove the whole suite ran); elsewhere it prints `SKIP` straight to
/// the terminal (past the test harness's capture, so `cargo test --quiet`
/// shows it) and the caller returns.
pub fn skip(test: &str, what: &str) {
    if ci() {
        panic!("{test}: {what} is missing, and CI must run every test");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {what} is missing");
}

/// The full development recordings, if this checkout sits beside them
/// (`GEPT_TEST_RECORDINGS=fixture` hides them, to run the suite as a
/// machine without `../shared` would).
pub fn shared_recordings() -> Option<PathBuf> {
    if std::env::var("GEPT_TEST_RECORDINGS").as_deref() == Ok("fixture") {
        return None;
    }
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/osrs/ernestoreza-ge_data");
    dir.join("latest_snapshots.jsonl.zst")
        .is_file()
        .then_some(dir)
}

/// The in-repo excerpt of the recordings (`tests/fixtures/osrs`, cut by
/// `scripts/cut_fixture.py`).
pub fn fixture_recordings() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/osrs")
}

/// The full recordings when present, else the small in-repo excerpt. Under
/// CI the full recordings must be there: their absence fails the test.
pub fn recordings() -> PathBuf {
    shared_recordings().unwrap_or_else(|| {
        if ci() {
            panic!(
                "../shared/data/osrs/ernestoreza-ge_data/latest_snapshots.jsonl.zst is missing, and CI must run on the full recordings"
            );
        }
        use std::io::Write;
        static NOTED: std::sync::Once = std::sync::Once::new();
        NOTED.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "note: ../shared/data/osrs is absent; tests use the in-repo excerpt tests/fixtures/osrs"
            );
        });
        fixture_recordings()
    })
}

/// Training epochs for a test model: a few on the full recordings (thousands
/// of items), more on the excerpt (about 50 items, so an epoch is a few
/// hundred milliseconds and one alone learns little).
pub fn test_epochs(full: usize) -> usize {
    if shared_recordings().is_some() {
        full
    } else {
        12
    }
}

/// A fresh SQLite database in a temporary folder (kept alive by the guard).
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("gept.db").display());
    let store = Store::connect(&url, 4).await.unwrap();
    (store, dir)
}

/// The PostgreSQL server of the tests: `GEPT_TEST_DATABASE_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_admin_url() -> String {
    std::env::var("GEPT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// A fresh PostgreSQL database (its URL), or `None` with a printed SKIP
/// when the server is unreachable. Under CI, or with
/// `GEPT_REQUIRE_POSTGRES=1`, an unreachable server fails the test instead.
pub async fn postgres_database() -> Option<String> {
    let admin_url = postgres_admin_url();
    let admin = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::PgPool::connect(&admin_url),
    )
    .await
    {
        Ok(Ok(pool)) => pool,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            if std::env::var("GEPT_REQUIRE_POSTGRES").as_deref() == Ok("1") || ci() {
                panic!("PostgreSQL required but unreachable at {admin_url}: {why}");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP PostgreSQL: unreachable at {admin_url} ({why}); set GEPT_TEST_DATABASE_URL"
            );
            return None;
        }
    };
    let name = format!(
        "gept_test_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap();
    Some(format!("{base}/{name}"))
}

/// Drops a database made by [`postgres_database`].
pub async fn drop_postgres_database(url: &str) {
    let name = url.rsplit_once('/').unwrap().1;
    if let Ok(admin) = sqlx::PgPool::connect(&postgres_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
        admin.close().await;
    }
}

/// A `gept serve` child process.
pub struct Serve {
    pub child: std::process::Child,
    /// `http://127.0.0.1:port`
    pub url: String,
}

/// Environment of a `gept serve` against a replay server at `mock_base`,
/// storing into `database_url`, with fast schedules for tests.
pub fn serve_env(mock_addr: std::net::SocketAddr, database_url: &str) -> Vec<(String, String)> {
    [
        // Each database its own writer journal (the default, `journal` in
        // `./data`, would be shared by every service a test starts).
        (
            "GEPT__DATABASE__JOURNAL_DIR",
            journal_dir(database_url).display().to_string(),
        ),
        ("GEPT__DATABASE__URL", database_url.to_string()),
        ("GEPT__API__LISTEN", "127.0.0.1:0".into()),
        (
            "GEPT__UPSTREAM__BASE_URL",
            format!("http://{mock_addr}/api/v1/osrs"),
        ),
        (
            "GEPT__UPSTREAM__NEWS_URL",
            format!("http://{mock_addr}/m=news/latest_news.rss"),
        ),
        (
            "GEPT__UPSTREAM__PLAYER_COUNT_URL",
            format!("http://{mock_addr}/"),
        ),
        (
            "GEPT__UPSTREAM__USER_AGENT",
            "gept-tests (tests@gept.invalid)".into(),
        ),
        ("GEPT__UPSTREAM__TIMEOUT", "5s".into()),
        ("GEPT__UPSTREAM__BACKOFF_BASE", "10ms".into()),
        ("GEPT__UPSTREAM__BACKOFF_MAX", "200ms".into()),
        ("GEPT__UPSTREAM__BREAKER_COOLDOWN", "200ms".into()),
        ("GEPT__COLLECTORS__LATEST__INTERVAL", "1ms".into()),
        // The recording's snapshots are 5 (a few 10) minutes apart.
        ("GEPT__COLLECTORS__LATEST__GAP_AFTER", "11m".into()),
        ("GEPT__COLLECTORS__5M__INTERVAL", "20ms".into()),
        ("GEPT__COLLECTORS__1H__INTERVAL", "20ms".into()),
        ("GEPT__COLLECTORS__MAPPING__INTERVAL", "1h".into()),
        ("GEPT__COLLECTORS__NEWS__INTERVAL", "1s".into()),
        ("GEPT__COLLECTORS__PLAYER_COUNT__INTERVAL", "1s".into()),
        ("GEPT__COLLECTORS__TIMESERIES__ENABLED", "false".into()),
        ("GEPT__SUPERVISOR__RESTART_MIN", "10ms".into()),
        ("GEPT__SUPERVISOR__RESTART_MAX", "200ms".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The writer journal of the services `serve_env` starts on `database_url`:
/// a folder of the system's temporary directory named after the URL.
pub fn journal_dir(database_url: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    database_url.hash(&mut h);
    std::env::temp_dir().join(format!("gept-test-journal-{:016x}", h.finish()))
}

impl Serve {
    /// Starts `gept serve` with `env` (overriding the process's GEPT__ variables)
    /// and waits (bounded) until it listens.
    pub fn start(env: &[(String, String)]) -> Serve {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gept"));
        cmd.arg("serve")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GEPT__")) {
            cmd.env_remove(k);
        }
        cmd.env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("gept serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.strip_prefix("gept: listening on ") {
                    let _ = tx.send(url.to_string());
                }
                eprintln!("[serve] {line}");
            }
        });
        let url = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("gept serve did not start listening within 60 s");
        Serve { child, url }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "gept serve exited with {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gept serve did not stop within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Waits until `check` holds, polling every 50 ms, for at most `secs` seconds.
pub async fn wait_for<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Trains a model on the first `snapshots` of the recordings in `dir` (30 %
/// validation; every 4th tick of the full recordings, every tick of the
/// excerpt, whose 60 items give few rows) and saves it to `out`, on the CPU.
pub fn train_model(
    dir: &std::path::Path,
    snapshots: usize,
    opts: gept_model::net::TrainOptions,
    out: &std::path::Path,
) -> gept_model::ModelMeta {
    use gept_core::recordings::{HOURLY_FILE, LATEST_FILE, MAPPING_FILE};
    use gept_dataflows::inputs::{load_hours, load_items, load_ticks};
    let ticks = load_ticks(&dir.join(LATEST_FILE), Some(snapshots)).unwrap();
    let hours = load_hours(Some(&dir.join(HOURLY_FILE))).unwrap();
    let items = load_items(Some(&dir.join(MAPPING_FILE))).unwrap();
    let split = gept_model::pipeline::Split {
        validation_fraction: 0.3,
        stride: if shared_recordings().is_some() { 4 } else { 1 },
    };
    let (vs, meta) = gept_model::pipeline::train(
        &ticks,
        &hours,
        &items,
        &split,
        &opts,
        tch::Device::Cpu,
        false,
    )
    .unwrap();
    gept_model::Model::save(out, &vs, meta).unwrap()
}

/// A [`CutProxy`] in front of the PostgreSQL database at `url`, and the URL
/// that reaches the database through it.
pub async fn proxied_postgres(url: &str) -> (CutProxy, String) {
    let (head, rest) = url.split_once('@').expect("a postgres URL with a user");
    let (hostport, db) = rest
        .split_once('/')
        .expect("a postgres URL with a database");
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    let target = tokio::net::lookup_host(hostport)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = CutProxy::start(target).await;
    let proxied = format!("{head}@{}/{db}", proxy.addr);
    (proxy, proxied)
}

/// A series' value in a `/metrics` text (`series` with its labels, as
/// rendered), if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A fresh SQLite database `name` in `dir` whose registry holds `model_dir`
/// (trained by [`train_model`]) as ACTIVE; answers its URL.
pub async fn sqlite_with_active_model(
    dir: &std::path::Path,
    name: &str,
    meta: &gept_model::ModelMeta,
    model_dir: &std::path::Path,
) -> String {
    let url = format!("sqlite://{}?mode=rwc", dir.join(name).display());
    let store = Store::connect(&url, 1).await.unwrap();
    store.migrate().await.unwrap();
    gept_model::registry::register_dir(&store, model_dir)
        .await
        .unwrap();
    store.activate_model(&meta.version, 1).await.unwrap();
    store.close().await;
    url
}

/// A TCP proxy on loopback in front of a database, that a test can cut (every
/// open connection is dropped and new ones are refused) and restore.
pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl CutProxy {
    /// Starts forwarding connections to `target`.
    pub async fn start(target: std::net::SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (flag, gen) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = gen.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        CutProxy {
            addr,
            up,
            generation,
        }
    }

    /// The database goes away: open connections drop, new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// The database comes back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

// ---- what a replay must leave in the store ----

use gept_core::recordings::{self, bucket_snapshots, latest_snapshots};
use gept_core::{wire, BucketPrice, BucketStep, LatestPrice};
use std::path::Path;

/// Exactly what the replay of the first `n` snapshots must leave in the store.
pub struct Expected {
    pub latest: Vec<LatestPrice>,
    pub buckets: Vec<(BucketStep, Vec<BucketPrice>)>,
}

pub fn expected(dir: &Path, n: usize) -> Expected {
    let mut latest = Vec::new();
    let mut times = Vec::new();
    for snap in latest_snapshots(&dir.join(recordings::LATEST_FILE))
        .unwrap()
        .take(n)
    {
        let snap = snap.unwrap();
        times.push(snap.timestamp);
        latest.extend(
            wire::parse_latest(snap.body.as_bytes(), snap.timestamp)
                .unwrap()
                .rows,
        );
    }
    latest.sort_by_key(|r| (r.timestamp, r.item_id));
    let (first, last) = (times[0], *times.last().unwrap());
    let mut buckets = Vec::new();
    for (step, file) in [
        (BucketStep::FiveMinutes, recordings::FIVE_MINUTE_FILE),
        (BucketStep::OneHour, recordings::HOURLY_FILE),
    ] {
        let s = step.seconds();
        // The first bucket a collector sees is the newest complete one at the
        // first snapshot; from there on every complete bucket is fetched.
        let first_seen = first.div_euclid(s) * s - s;
        let mut rows: Vec<BucketPrice> = bucket_snapshots(&dir.join(file))
            .unwrap()
            .iter()
            .filter(|b| b.timestamp >= first_seen && b.timestamp + s <= last)
            .flat_map(|b| wire::parse_bucket(b.body.as_bytes()).unwrap().rows)
            .collect();
        rows.sort_by_key(|r| (r.timestamp, r.item_id));
        buckets.push((step, rows));
    }
    Expected { latest, buckets }
}

pub async fn matches(store: &Store, e: &Expected) -> bool {
    // Cheap checks first: the newest tick, then the small bucket tables, then
    // the count of ticks (each is stored whole, in one transaction).
    if store.newest_time("prices_latest_1m").await.unwrap() != e.latest.last().map(|r| r.timestamp)
    {
        return false;
    }
    for (step, rows) in &e.buckets {
        if store.newest_time(step.table()).await.unwrap() != rows.last().map(|r| r.timestamp) {
            return false;
        }
        if store.count(step.table()).await.unwrap() != rows.len() as i64 {
            return false;
        }
    }
    let mut ticks: Vec<i64> = e.latest.iter().map(|r| r.timestamp).collect();
    ticks.dedup();
    store.count("latest_ticks").await.unwrap() == ticks.len() as i64
}

pub async fn assert_exact(store: &Store, e: &Expected) {
    let latest = store.load_latest(0, i64::MAX / 2).await.unwrap();
    assert_eq!(latest.len(), e.latest.len());
    assert!(
        latest == e.latest,
        "prices_latest_1m differs from the recording"
    );
    for (step, rows) in &e.buckets {
        let back = store.load_buckets(*step, 0, i64::MAX / 2).await.unwrap();
        assert!(&back == rows, "{} differs from the recording", step.table());
    }
}

/// GET `url`, its body as JSON (panics on a transport error or bad JSON).
pub async fn get_json(url: impl reqwest::IntoUrl) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// GET `url`, its body as text (e.g. a `/metrics` scrape).
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// `/api/v1/status` of the service at `base` (`http://host:port`).
pub async fn status(base: &str) -> serde_json::Value {
    get_json(format!("{base}/api/v1/status")).await
}

pub async fn mock_status(addr: std::net::SocketAddr) -> serde_json::Value {
    get_json(format!("http://{addr}/_mock/status")).await
}

/// Stores and publishes recorded ticks on a service's feed as the collectors
/// do, with each `/1h` bucket two minutes after its hour ends (stored, then
/// published before the first tick at or after that time).
pub async fn feed_recorded(
    service: &gept::service::ServiceHandle,
    ticks: &[gept_dataflows::features::TickInput],
    hours: &[gept_dataflows::features::BucketInput],
) {
    use gept_actors::collectors::FeedEvent;
    use std::sync::Arc;
    let mut next_hour = 0;
    for tick in ticks {
        while next_hour < hours.len() && hours[next_hour].start + 3_600 + 120 <= tick.time {
            let h = &hours[next_hour];
            service
                .store
                .insert_buckets(gept_core::BucketStep::OneHour, &h.rows)
                .await
                .unwrap();
            service.feed(FeedEvent::Bucket {
                step: gept_core::BucketStep::OneHour,
                timestamp: h.start,
                rows: Arc::new(h.rows.clone()),
            });
            next_hour += 1;
        }
        feed_tick(service, tick).await;
    }
    assert!(next_hour > 0, "no /1h bucket was replayed");
}

/// Stores and publishes one recorded `/latest` tick as the collector does.
pub async fn feed_tick(
    service: &gept::service::ServiceHandle,
    tick: &gept_dataflows::features::TickInput,
) {
    use gept_actors::collectors::{FeedEvent, Tick};
    service.store.insert_latest(&tick.rows).await.unwrap();
    service.feed(FeedEvent::Tick(std::sync::Arc::new(Tick {
        observed_at: tick.time,
        arrived: std::time::Instant::now(),
        rows: tick.rows.clone(),
    })));
}

/// The configuration of a service started in the test process on
/// `database_url`: any free port, inference on the CPU with a deep stream
/// buffer, the collectors off (the test publishes the feed), then `extra`
/// (`GEPT__...` pairs) over that.
pub fn in_process_config(database_url: &str, extra: &[(&str, &str)]) -> gept_core::config::Config {
    let base = [
        ("GEPT__DATABASE__URL", database_url),
        ("GEPT__API__LISTEN", "127.0.0.1:0"),
        (
            "GEPT__UPSTREAM__USER_AGENT",
            "gept-tests (tests@gept.invalid)",
        ),
        ("GEPT__INFERENCE__DEVICE", "cpu"),
        ("GEPT__INFERENCE__STREAM_BUFFER", "1024"),
    ];
    let env = base
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let mut config = gept_core::config::Config::load_with_env(None, env).unwrap();
    config.collectors.disable_all();
    config
}
