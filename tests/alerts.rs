//! The service's own alerts, end to end: the service in this process
//! collects from the replay server; the replay then fails every request, the
//! `/latest` feed goes stale, and the alert is posted to a local webhook
//! receiver once, posted again after the resend interval (no duplicate in
//! between), and resolved once the replay recovers.

mod common;

use common::{serve_env, wait_for};
use gept::service::Service;
use gept_replay::{self as mock_api, Clock, FaultKind, Faults, MockOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warp::Filter;

/// Posts received: when, and the JSON body.
type Received = Arc<Mutex<Vec<(Instant, serde_json::Value)>>>;

/// A webhook receiver on loopback.
async fn receiver() -> (std::net::SocketAddr, Received) {
    let got: Received = Arc::default();
    let sink = got.clone();
    let route = warp::post()
        .and(warp::path("hook"))
        .and(warp::body::json())
        .map(move |body: serde_json::Value| {
            sink.lock().unwrap().push((Instant::now(), body));
            warp::reply()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (addr, got)
}

/// The posts about `alert` with `status`, in order.
fn posts(got: &Received, alert: &str, status: &str) -> Vec<(Instant, serde_json::Value)> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(_, b)| {
            let fields = &b["embeds"][0]["fields"];
            fields[0]["value"] == alert && fields[1]["value"] == status
        })
        .cloned()
        .collect()
}

#[test]
fn a_stale_feed_is_posted_once_resent_and_resolved() {
    gept::service::system().block_on(alerts());
}

async fn alerts() {
    let rec = common::recordings();
    let mock = mock_api::start(
        &rec,
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
    let (hook, got) = receiver().await;
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("gept.db").display());
    let mut env = serve_env(mock.addr, &url);
    for (k, v) in [
        ("GEPT__COLLECTORS__LATEST__INTERVAL", "100ms"),
        ("GEPT__API__READY_MAX_FEED_AGE", "1s"),
        ("GEPT__ALERTS__INTERVAL", "100ms"),
        ("GEPT__ALERTS__PENDING_FOR", "300ms"),
        ("GEPT__ALERTS__RESEND_INTERVAL", "2s"),
        ("GEPT__RETENTION__ENABLED", "false"),
        ("GEPT__BACKUP__ENABLED", "false"),
    ] {
        env.push((k.into(), v.into()));
    }
    env.push((
        "GEPT__ALERTS__WEBHOOK_URL".into(),
        format!("http://{hook}/hook"),
    ));
    let config = gept_core::config::Config::load_with_env(None, env).unwrap();
    let service = Service::start(&config).await.unwrap();
    let base = format!("http://{}", service.addr);

    // The feed flows: nothing is posted about it.
    let ready_url = format!("{base}/readyz");
    wait_for("the feed to flow", 60, || {
        let u = ready_url.clone();
        async move { reqwest::get(u).await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(posts(&got, "feed_stale", "firing").is_empty());

    // Every upstream request fails: the feed goes stale and the alert fires.
    let faults_url = format!("http://{}/_mock/faults", mock.addr);
    let http = reqwest::Client::new();
    http.post(&faults_url)
        .json(&Faults {
            rate: 1.0,
            kinds: vec![FaultKind::ServerError],
            ..Faults::default()
        })
        .send()
        .await
        .unwrap();
    let g = got.clone();
    wait_for("the alert to be posted", 60, || {
        let g = g.clone();
        async move { !posts(&g, "feed_stale", "firing").is_empty() }
    })
    .await;
    let first = posts(&got, "feed_stale", "firing");
    let body = &first[0].1;
    assert!(
        body["content"]
            .as_str()
            .unwrap()
            .contains("FIRING feed_stale"),
        "{body}"
    );
    assert_eq!(body["username"], "GePT");
    // Resent once the resend interval has passed, never before.
    let g = got.clone();
    wait_for("the alert to be resent", 60, || {
        let g = g.clone();
        async move { posts(&g, "feed_stale", "firing").len() >= 2 }
    })
    .await;
    let fired = posts(&got, "feed_stale", "firing");
    let gap = fired[1].0 - fired[0].0;
    assert!(
        gap >= Duration::from_millis(1_900),
        "resent after {gap:?}, within the 2 s resend interval"
    );

    // The upstream recovers: the alert resolves, once.
    http.post(&faults_url)
        .json(&Faults::default())
        .send()
        .await
        .unwrap();
    let g = got.clone();
    wait_for("the alert to resolve", 60, || {
        let g = g.clone();
        async move { !posts(&g, "feed_stale", "resolved").is_empty() }
    })
    .await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::metric_value(&metrics, "gept_alerts_firing{alert=\"feed_stale\"}"),
        Some(0.0),
        "the firing gauge is back to 0"
    );
    let delivered =
        common::metric_value(&metrics, "gept_alert_notifications_total{outcome=\"ok\"}")
            .expect("deliveries counted");
    assert!(delivered >= 3.0, "{delivered}");
    assert_eq!(posts(&got, "feed_stale", "resolved").len(), 1);
    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");
}
