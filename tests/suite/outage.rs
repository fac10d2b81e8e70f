//! A database outage at service level: `gept serve`'s service in this
//! process collects from the replay server into PostgreSQL through a TCP
//! proxy; mid-replay the proxy cuts the database for 60 s. The process stays
//! up, `/healthz` answers and `/readyz` names the database, and once the
//! database returns the store holds exactly the recording (the same check as
//! the collectors test): nothing lost, nothing twice.

use crate::common;

use crate::common::{assert_exact, expected, matches, mock_status, serve_env, wait_for};
use gept::service::Service;
use gept_replay::{self as mock_api, Clock, MockOptions};
use gept_store::Store;
use std::time::{Duration, Instant};

/// Snapshots replayed: most of them arrive while the database is away.
const SNAPSHOTS: usize = 300;
/// How long the database is cut.
const OUTAGE: Duration = Duration::from_secs(60);

#[test]
fn a_sixty_second_database_outage_loses_nothing() {
    gept::service::system().block_on(outage());
}

async fn outage() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let direct = Store::connect(&url, 2).await.unwrap();
    direct.migrate().await.unwrap();
    let (proxy, proxied) = common::proxied_postgres(&url).await;

    let rec = common::recordings();
    let mock = mock_api::start(
        &rec,
        "127.0.0.1:0".parse().unwrap(),
        MockOptions {
            clock: Clock::Step,
            faults: Default::default(),
            seed: 3,
            max_snapshots: Some(SNAPSHOTS),
        },
    )
    .await
    .unwrap();
    let exp = expected(&rec, SNAPSHOTS);
    let mut env = serve_env(mock.addr, &proxied);
    for (k, v) in [
        ("GEPT__COLLECTORS__LATEST__INTERVAL", "150ms"),
        ("GEPT__RETENTION__ENABLED", "false"),
        ("GEPT__BACKUP__ENABLED", "false"),
        ("GEPT__ALERTS__ENABLED", "false"),
    ] {
        env.push((k.into(), v.into()));
    }
    let config = gept_core::config::Config::load_with_env(None, env).unwrap();
    let service = Service::start(&config).await.unwrap();
    let base = format!("http://{}", service.addr);
    let addr = mock.addr;
    wait_for("a tenth of the replay", 120, || async move {
        mock_status(addr).await["served"].as_u64().unwrap() >= SNAPSHOTS as u64 / 10
    })
    .await;

    // The database goes away for 60 s.
    proxy.cut();
    let cut_at = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut saw_database_down = false;
    let mut served_during = 0;
    while cut_at.elapsed() < OUTAGE {
        let health = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "/healthz during the outage");
        let ready: serde_json::Value = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["checks"]["database"]["ok"] == false {
            saw_database_down = true;
            assert_eq!(ready["ready"], false, "{ready}");
        }
        served_during = mock_status(addr).await["served"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(saw_database_down, "/readyz never named the database");
    assert!(
        served_during > SNAPSHOTS as u64 / 10 + 50,
        "the collectors stopped during the outage ({served_during} served)"
    );
    proxy.restore();

    wait_for("the replay to finish", 300, || async move {
        mock_status(addr).await["finished"] == true
    })
    .await;
    let (s, e) = (&direct, &exp);
    wait_for("the store to hold the recording", 300, || async move {
        matches(s, e).await
    })
    .await;
    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");
    assert_exact(&direct, &exp).await;
    direct.close().await;
    common::drop_postgres_database(&url).await;
}
