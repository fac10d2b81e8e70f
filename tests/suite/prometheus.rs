//! The operations files against the real tools: the alert rules checked and
//! unit-tested with `promtool`; the rules and the Grafana dashboard reference
//! only metrics the service defines; and a real Prometheus scrapes a running
//! service fed recorded ticks, answering our series back through its HTTP
//! API, with a rate() and a histogram_quantile() of the tick latency.
//!
//! Prometheus comes from Debian's package (scripts/setup.sh installs it);
//! without it these tests print SKIP, and fail under CI.

use crate::common;

use gept::service::Service;
use gept_actors::collectors::{FeedEvent, Tick};
use gept_core::metrics::{Kind, ALL};
use gept_core::recordings::LATEST_FILE;
use gept_dataflows::inputs::load_ticks;
use gept_model::net::TrainOptions;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops")
}

/// Whether `tool` runs; prints SKIP (fails under CI) when not.
fn have(tool: &str, test: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::skip(
            test,
            &format!("{tool} (Debian's prometheus package; scripts/setup.sh installs it)"),
        );
    }
    ok
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    if !have("promtool", "alert_rules_pass_promtool_and_their_unit_tests") {
        return;
    }
    let dir = ops().join("prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["check", "config", "prometheus.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every `gept_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("gept_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn rules_and_dashboard_reference_only_metrics_that_exist() {
    let histograms: BTreeSet<&str> = ALL
        .iter()
        .filter(|(_, k, _)| *k == Kind::Histogram)
        .map(|(n, _, _)| *n)
        .collect();
    let known = |name: &str| {
        ALL.iter().any(|(n, _, _)| *n == name)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|base| histograms.contains(base))
            })
    };
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ops().join("grafana/gept.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 20, "{} dashboard queries", exprs.len());
    let rules = std::fs::read_to_string(ops().join("prometheus/alerts.yml")).unwrap();
    for (what, text) in [("dashboard", exprs.join("\n")), ("alert rules", rules)] {
        let names = metric_names(&text);
        assert!(names.len() >= 10, "{what}: {names:?}");
        let unknown: Vec<&String> = names.iter().filter(|n| !known(n)).collect();
        assert!(
            unknown.is_empty(),
            "{what} reference unknown metrics: {unknown:?}"
        );
    }
}

/// A query through Prometheus's HTTP API: the first result's value.
async fn query(http: &reqwest::Client, prom: &str, q: &str) -> Option<f64> {
    let r: serde_json::Value = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    r["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
}

/// Kills the Prometheus child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_service_and_reads_our_series_back() {
    if !have(
        "prometheus",
        "a_real_prometheus_scrapes_the_service_and_reads_our_series_back",
    ) {
        return;
    }
    gept::service::system().block_on(round_trip());
}

async fn round_trip() {
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
        ("GEPT__RETENTION__ENABLED", "false"),
        ("GEPT__BACKUP__ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut config = gept_core::config::Config::load_with_env(None, env).unwrap();
    config.collectors.disable_all();
    let service = Service::start(&config).await.unwrap();

    // Prometheus, scraping the service every second, with our rules loaded.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom_dir = tmp.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::copy(
        ops().join("prometheus/alerts.yml"),
        prom_dir.join("alerts.yml"),
    )
    .unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: gept\n    static_configs:\n      - targets: [\"{}\"]\n",
            service.addr
        ),
    )
    .unwrap();
    let _prometheus = Child(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(prom_dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let prom = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let (h, p) = (http.clone(), prom.clone());
    common::wait_for("Prometheus to scrape the service", 60, move || {
        let (h, p) = (h.clone(), p.clone());
        async move { query(&h, &p, "up{job=\"gept\"}").await == Some(1.0) }
    })
    .await;

    // Ticks in two halves, Prometheus scraping the first's predictions
    // before the second comes: the rate has two different samples.
    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(40)).unwrap();
    assert!(ticks.len() >= 30);
    let (first, second) = ticks.split_at(ticks.len() / 2);
    for half in [first, second] {
        for tick in half {
            service.feed(FeedEvent::Tick(Arc::new(Tick {
                observed_at: tick.time,
                arrived: Instant::now(),
                rows: tick.rows.clone(),
            })));
        }
        let last = half.last().unwrap().time;
        let inference = service.inference.clone();
        common::wait_for("the half's last tick to be predicted", 60, move || {
            let inference = inference.clone();
            async move { inference.snapshot.load().tick_time == Some(last) }
        })
        .await;
        let ours = reqwest::get(format!("http://{}/metrics", service.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let predicted =
            common::metric_value(&ours, "gept_predictions_total").expect("predictions counted");
        let (h, p) = (http.clone(), prom.clone());
        common::wait_for(
            "Prometheus to scrape the half's predictions",
            60,
            move || {
                let (h, p) = (h.clone(), p.clone());
                async move {
                    query(&h, &p, "gept_predictions_total")
                        .await
                        .is_some_and(|v| v >= predicted)
                }
            },
        )
        .await;
    }

    let rate = "sum(rate(gept_predictions_total[15s]))";
    let p99 = "histogram_quantile(0.99, sum by (le) (rate(gept_tick_to_prediction_latency_seconds_bucket[15s])))";
    let (h, pr) = (http.clone(), prom.clone());
    common::wait_for(
        "Prometheus to hold the predictions' rate and latency",
        60,
        move || {
            let (h, pr) = (h.clone(), pr.clone());
            async move {
                query(&h, &pr, rate).await.is_some_and(|r| r > 0.0)
                    && query(&h, &pr, p99).await.is_some_and(|q| q > 0.0)
            }
        },
    )
    .await;
    let total = query(&http, &prom, "gept_predictions_total").await.unwrap();
    let served: usize = ticks.len();
    assert!(
        total >= served as f64,
        "{total} predictions for {served} ticks"
    );
    let p99_value = query(&http, &prom, p99).await.unwrap();
    assert!(p99_value > 0.0 && p99_value < 10.0, "p99 {p99_value} s");
    // The rules are loaded and evaluated against our series.
    let rules: serde_json::Value = http
        .get(format!("{prom}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded = rules["data"]["groups"][0]["rules"].as_array().unwrap();
    assert!(loaded.len() >= 10, "{rules}");
    assert!(
        loaded
            .iter()
            .all(|r| r["health"] == "ok" || r["health"] == "unknown"),
        "{rules}"
    );
    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");
}
