//! `/readyz` that tells the truth, and the HTTP edges a hostile or careless
//! client hits: the service in this process over the replay server.

use crate::common;

use crate::common::{serve_env, wait_for};
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

#[test]
fn clients_behind_a_trusted_proxy_are_limited_apart_and_websockets_are_capped() {
    gept::service::system().block_on(proxies_and_caps());
}

async fn proxies_and_caps() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("gept.db").display());
    let mut env: Vec<(String, String)> = [
        ("GEPT__DATABASE__URL", url.as_str()),
        ("GEPT__API__LISTEN", "127.0.0.1:0"),
        (
            "GEPT__UPSTREAM__USER_AGENT",
            "gept-tests (tests@gept.invalid)",
        ),
        ("GEPT__API__RATE_LIMIT_PER_SECOND", "0.01"),
        ("GEPT__API__RATE_LIMIT_BURST", "3"),
        ("GEPT__API__TRUSTED_PROXIES", "127.0.0.1"),
        ("GEPT__API__WS_MAX_CLIENTS_PER_IP", "2"),
        ("GEPT__RETENTION__ENABLED", "false"),
        ("GEPT__BACKUP__ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut config = gept_core::config::Config::load_with_env(None, env.clone()).unwrap();
    config.collectors.disable_all();
    let service = Service::start(&config).await.unwrap();
    let base = format!("http://{}", service.addr);
    let status_of = |client: reqwest::Client, xff: Option<&'static str>| {
        let url = format!("{base}/api/v1/items");
        async move {
            let mut req = client.get(url);
            if let Some(x) = xff {
                req = req.header("x-forwarded-for", x);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    // Through the trusted proxy (127.0.0.1), each player has a bucket of 3.
    let proxy = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(status_of(proxy.clone(), Some("198.51.100.1")).await, 200);
    }
    assert_eq!(status_of(proxy.clone(), Some("198.51.100.1")).await, 429);
    assert_eq!(
        status_of(proxy.clone(), Some("198.51.100.2")).await,
        200,
        "another player behind the same proxy has its own bucket"
    );
    // A spoofed first entry does not buy a fresh bucket: the proxy appended
    // the real address last.
    assert_eq!(
        status_of(proxy.clone(), Some("203.0.113.99, 198.51.100.1")).await,
        429
    );
    // An untrusted peer's header is ignored: it is limited as itself.
    let untrusted = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    for k in 0..3 {
        let xff = ["192.0.2.1", "192.0.2.2", "192.0.2.3"][k];
        assert_eq!(status_of(untrusted.clone(), Some(xff)).await, 200);
    }
    assert_eq!(status_of(untrusted.clone(), Some("192.0.2.4")).await, 429);

    // /metrics: open by default (this service has no token).
    assert_eq!(
        proxy
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");

    // Websockets (a second service, without the tight rate limit): two from
    // one client, the third refused with a reason.
    env.retain(|(k, _)| !k.starts_with("GEPT__API__RATE_LIMIT"));
    env.push(("GEPT__METRICS__TOKEN".into(), "a-scrape-token-0123".into()));
    let mut config = gept_core::config::Config::load_with_env(None, env).unwrap();
    config.collectors.disable_all();
    let service = Service::start(&config).await.unwrap();
    let ws_url = format!("ws://{}/api/v1/stream", service.addr);
    // With a metrics token, /metrics wants it.
    let metrics_url = format!("http://{}/metrics", service.addr);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&metrics_url).send().await.unwrap().status(), 401);
    let r = http
        .get(&metrics_url)
        .bearer_auth("wrong-token-xxxxxxxx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&metrics_url)
        .bearer_auth("a-scrape-token-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("gept_http_requests_total"));
    let (a, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (b, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    match tokio_tungstenite::connect_async(&ws_url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("per client"), "{body}");
        }
        other => panic!("a third websocket from one client was not refused: {other:?}"),
    }
    // Closing one frees its place.
    drop(a);
    wait_for("the closed connection's place to be freed", 10, || {
        let ws_url = ws_url.clone();
        async move { tokio_tungstenite::connect_async(&ws_url).await.is_ok() }
    })
    .await;
    drop(b);
    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");
}

/// Reads from `stream` until the server closes it (EOF or reset), within
/// `secs`; answers what was read.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, secs: u64) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(secs), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open over {secs} s; read: {}",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

/// The JSON body of a raw HTTP answer.
fn body_of(answer: &str) -> serde_json::Value {
    let (_, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {answer:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[test]
fn connections_are_capped_and_timed_out_and_unparsable_requests_get_json() {
    gept::service::system().block_on(connection_limits());
}

async fn connection_limits() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("gept.db").display());
    let env: Vec<(String, String)> = [
        ("GEPT__DATABASE__URL", url.as_str()),
        ("GEPT__API__LISTEN", "127.0.0.1:0"),
        (
            "GEPT__UPSTREAM__USER_AGENT",
            "gept-tests (tests@gept.invalid)",
        ),
        ("GEPT__API__MAX_CONNECTIONS_PER_IP", "3"),
        ("GEPT__API__CORS_ORIGINS", "https://gept.example.org"),
        ("GEPT__API__HEADER_READ_TIMEOUT", "1s"),
        ("GEPT__API__IDLE_TIMEOUT", "2s"),
        ("GEPT__API__WS_PING_INTERVAL", "1s"),
        ("GEPT__RETENTION__ENABLED", "false"),
        ("GEPT__BACKUP__ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut config = gept_core::config::Config::load_with_env(None, env).unwrap();
    config.collectors.disable_all();
    let service = Service::start(&config).await.unwrap();
    let addr = service.addr;

    // CORS: no origin is refused an answer; only an allowed one gets the
    // header that lets its script read it; every answer varies by Origin.
    let http = reqwest::Client::new();
    for (origin, allowed) in [
        ("https://gept.example.org", true),
        ("https://elsewhere.example", false),
        (format!("http://{addr}").leak() as &str, false),
    ] {
        let r = http
            .get(format!("http://{addr}/healthz"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{origin}");
        assert_eq!(r.headers()["vary"], "Origin", "{origin}");
        assert_eq!(
            r.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            allowed.then_some(origin),
            "{origin}"
        );
        let pre = http
            .request(
                reqwest::Method::OPTIONS,
                format!("http://{addr}/api/v1/items"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(pre.status(), if allowed { 204 } else { 403 }, "{origin}");
        if allowed {
            assert!(pre.headers()["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("GET"));
        }
    }
    drop(http);

    // Headers cut off midway: closed after the header-read timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow, 15).await;
    assert!(!answer.contains("200 OK"), "{answer}");

    // A keep-alive connection left idle after its answer: closed.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle, 15).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    // Requests hyper cannot parse get the JSON error body every error has.
    for (request, status, why) in [
        (
            b"NOT A REQUEST\r\n\r\n".to_vec(),
            "400",
            "malformed request",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            "414",
            "request URI too long",
        ),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nhost: x\r\n{}\r\n",
                (0..150)
                    .map(|i| format!("x-h{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            "431",
            "request headers too large",
        ),
    ] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&request).await.unwrap();
        let answer = read_until_closed(&mut c, 15).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{status}: {answer}"
        );
        assert_eq!(body_of(&answer)["error"], why, "{answer}");
    }

    // Refusals counted so far by this process (other tests' services share
    // its metrics recorder): this one must add to them.
    let refused_before = refused_count(addr).await;
    // Three connections from one address are open; a fourth is refused with
    // a 503 that says why, and a place frees when one closes.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let answer = read_until_closed(&mut fourth, 15).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        body_of(&answer)["error"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{answer}"
    );
    drop(open.pop());
    wait_for("a connection place to free", 15, || async move {
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    drop(open);
    // The refusal is counted by the accept loop after the connection is
    // dropped: wait (bounded) for the counter to move, not just for a scrape.
    wait_for("the refusal in the metrics", 15, || async move {
        refused_count(addr).await > refused_before
    })
    .await;
    let report = service.shutdown().await;
    assert!(report.clean(), "{report:?}");
}

/// `gept_http_connections_refused_total` in a scrape of `addr` (0 before the
/// first refusal creates it).
async fn refused_count(addr: std::net::SocketAddr) -> f64 {
    let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    common::metric_value(&text, "gept_http_connections_refused_total").unwrap_or(0.0)
}
