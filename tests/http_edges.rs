//! `/readyz` that tells the truth, and the HTTP edges a hostile or careless
//! client hits: the service in this process over the replay server.

mod common;

use common::{serve_env, wait_for};
use gept::service::Service;
use gept_replay::{self as mock_api, Clock, MockOptions};

#[test]
fn readiness_follows_the_feed_and_bad_requests_get_clear_errors() {
    gept::service::system().block_on(readiness_and_edges());
}

async fn readiness_and_edges() {
    let rec = common::recordings();
    let mock = mock_api::start(
        &rec,
        "127.0.0.1:0".parse().unwrap(),
        MockOptions {
            clock: Clock::Step,
            faults: Default::default(),
            seed: 1,
            max_snapshots: Some(20),
        },
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("gept.db").display());
    let mut env = serve_env(mock.addr, &url);
    env.push(("GEPT__API__READY_MAX_FEED_AGE".into(), "2s".into()));
    env.push((
        "GEPT__ADMIN__TOKEN".into(),
        "an-admin-token-of-length".into(),
    ));
    env.push(("GEPT__COLLECTORS__LATEST__INTERVAL".into(), "100ms".into()));
    let config = gept_core::config::Config::load_with_env(None, env).unwrap();
    let service = Service::start(&config).await.unwrap();
    let base = format!("http://{}", service.addr);
    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client, base: String| async move {
        let r = http.get(format!("{base}/readyz")).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };

    // Ready once the feed flows (no model: nothing to predict).
    wait_for("ready", 60, || {
        let (http, base) = (http.clone(), base.clone());
        async move { ready(http, base).await.0 == 200 }
    })
    .await;
    let (_, body) = ready(http.clone(), base.clone()).await;
    assert_eq!(body["ready"], true, "{body}");
    for check in [
        "database",
        "latest_feed",
        "feature_engine",
        "inference",
        "predictions",
    ] {
        assert_eq!(body["checks"][check]["ok"], true, "{check}: {body}");
    }

    // Edges.
    let get = |path: &str| http.get(format!("{base}{path}")).send();
    let r = http
        .get(format!("{base}/api/v1/stream"))
        .header("connection", "keep-alive")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 426);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("websocket"), "{e}");
    for path in ["/api/v1/items/abc", "/api/v1/predictions/abc"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains("\"abc\""), "{e}");
    }
    assert_eq!(
        get("/api/v1/items/4151/elsewhere")
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    for (path, word) in [
        ("/api/v1/predictions?min_probability=2", "min_probability"),
        ("/api/v1/predictions?min_probability=-1", "min_probability"),
        ("/api/v1/items/2/history?step=1m&limit=30000", "limit"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains(word), "{path}: {e}");
    }
    let r = http
        .post(format!(
            "{base}/api/v1/admin/models/no-such-version/activate"
        ))
        .bearer_auth("an-admin-token-of-length")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // The feed stops: within the 2 s bound readiness says so, and why.
    mock.stop().await;
    wait_for("not ready after the feed stopped", 60, || {
        let (http, base) = (http.clone(), base.clone());
        async move { ready(http, base).await.0 == 503 }
    })
    .await;
    let (_, body) = ready(http.clone(), base.clone()).await;
    assert_eq!(body["checks"]["latest_feed"]["ok"], false, "{body}");
    assert!(body["checks"]["latest_feed"]["why"]
        .as_str()
        .unwrap()
        .contains("/latest"));
    assert_eq!(body["checks"]["feature_engine"]["ok"], true, "{body}");
    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");
}
