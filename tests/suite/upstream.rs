//! The upstream client against a local HTTP server that answers from a
//! script: 500s, 429 with `Retry-After`, a response slower than the timeout,
//! a truncated body, malformed JSON. Retries, the bound on backoff, the
//! circuit breaker opening and closing, one breaker per host (a failing news
//! page never blocks `/latest`), and cancellation.

use gept_actors::upstream::{FetchError, UpstreamClient};
use gept_core::config::{Config, UpstreamConfig};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A `/latest` body with two items.
const LATEST: &str = r#"{"data":{"2":{"high":170,"highTime":1747717190,"low":165,"lowTime":1747717150},"4151":{"high":1500000,"highTime":1747717100,"low":1450000,"lowTime":1747717000}}}"#;

/// What the scripted server does with one request.
#[derive(Clone, Debug)]
enum Answer {
    Ok(&'static str),
    Status(u16),
    TooManyRequests {
        retry_after_s: u64,
    },
    /// Waits this long before answering 200 (past the client's timeout).
    Slow(Duration, &'static str),
    /// Announces more bytes than it sends, then closes.
    Truncated,
}

/// A local server answering each request with the next scripted answer (the
/// last one repeats), counting requests.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (script, seen) = (script.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    seen.lock().unwrap().push(line);
                    let answer = {
                        let mut s = script.lock().unwrap();
                        if s.len() > 1 {
                            s.pop_front().unwrap()
                        } else {
                            s.front().cloned().unwrap()
                        }
                    };
                    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
                    let ok = |body: &str| {
                        format!(
                            "HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let reply = match answer {
                        Answer::Ok(body) => ok(body),
                        Answer::Status(code) => format!(
                            "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                        Answer::TooManyRequests { retry_after_s } => format!(
                            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after_s}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                        Answer::Slow(wait, body) => {
                            tokio::time::sleep(wait).await;
                            ok(body)
                        }
                        Answer::Truncated => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{}",
                            &LATEST[..40]
                        ),
                    };
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Scripted { addr, requests }
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}

/// The client's configuration against `base` (the news page at `news`):
/// fast backoff, `retries` retries, the breaker after `breaker` failures.
fn config(base: &str, news: &str, retries: u32, breaker: u32) -> UpstreamConfig {
    let env = [
        ("GEPT__UPSTREAM__BASE_URL", base.to_string()),
        ("GEPT__UPSTREAM__NEWS_URL", news.to_string()),
        (
            "GEPT__UPSTREAM__USER_AGENT",
            "gept-tests (tests@gept.invalid)".into(),
        ),
        ("GEPT__UPSTREAM__TIMEOUT", "300ms".into()),
        ("GEPT__UPSTREAM__MAX_RETRIES", retries.to_string()),
        ("GEPT__UPSTREAM__BACKOFF_BASE", "5ms".into()),
        ("GEPT__UPSTREAM__BACKOFF_MAX", "50ms".into()),
        ("GEPT__UPSTREAM__BREAKER_FAILURES", breaker.to_string()),
        ("GEPT__UPSTREAM__BREAKER_COOLDOWN", "300ms".into()),
    ];
    Config::load_with_env(None, env.map(|(k, v)| (k.to_string(), v)))
        .unwrap()
        .upstream
}

fn client(server: &Scripted, retries: u32, breaker: u32) -> UpstreamClient {
    UpstreamClient::new(&config(
        &server.url("api/v1/osrs"),
        &server.url("news.rss"),
        retries,
        breaker,
    ))
    .unwrap()
}

#[tokio::test]
async fn server_errors_are_retried_until_an_answer() {
    let server = Scripted::start(vec![
        Answer::Status(500),
        Answer::Status(502),
        Answer::Ok(LATEST),
    ])
    .await;
    let (parsed, _) = client(&server, 4, 10).latest().await.unwrap();
    assert_eq!(
        parsed.rows.iter().map(|r| r.item_id).collect::<Vec<_>>(),
        [2, 4151]
    );
    assert_eq!(server.count(), 3, "two failures, then the answer");
}

#[tokio::test]
async fn retries_stop_at_the_configured_count() {
    let server = Scripted::start(vec![Answer::Status(503)]).await;
    let err = client(&server, 2, 100).latest().await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 503, .. }),
        "{err}"
    );
    assert_eq!(server.count(), 3, "the first try and two retries");
}

#[tokio::test]
async fn a_429_waits_for_retry_after_but_never_past_the_backoff_cap() {
    // Retry-After asks for an hour; the cap (backoff_max, 50 ms) bounds the
    // wait, so the retry comes at once and the test ends.
    let server = Scripted::start(vec![
        Answer::TooManyRequests {
            retry_after_s: 3600,
        },
        Answer::Ok(LATEST),
    ])
    .await;
    let started = std::time::Instant::now();
    let c = client(&server, 3, 10);
    let fetched = tokio::time::timeout(Duration::from_secs(30), c.latest()).await;
    assert!(
        fetched.expect("the wait is capped").is_ok(),
        "the retry after the 429 succeeds"
    );
    assert_eq!(server.count(), 2);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let server = Scripted::start(vec![
        Answer::Slow(Duration::from_secs(5), LATEST),
        Answer::Ok(LATEST),
    ])
    .await;
    let (parsed, _) = client(&server, 2, 10).latest().await.unwrap();
    assert_eq!(parsed.rows.len(), 2);
    assert_eq!(server.count(), 2, "the timed-out request, then the retry");
}

#[tokio::test]
async fn truncated_and_malformed_bodies_are_retried() {
    let server = Scripted::start(vec![
        Answer::Truncated,
        Answer::Ok(r#"{"data":{"2":{"high":"#),
        Answer::Ok("not json at all"),
        Answer::Ok(LATEST),
    ])
    .await;
    let (parsed, _) = client(&server, 5, 10).latest().await.unwrap();
    assert_eq!(parsed.rows.len(), 2);
    assert_eq!(server.count(), 4);
    // With no retries left the caller sees the body error.
    let server = Scripted::start(vec![Answer::Ok("not json at all")]).await;
    let err = client(&server, 0, 10).latest().await.unwrap_err();
    assert!(matches!(err, FetchError::Body { .. }), "{err}");
}

#[tokio::test]
async fn the_breaker_opens_after_failures_and_closes_after_its_cooldown() {
    let server = Scripted::start(vec![
        Answer::Status(500),
        Answer::Status(500),
        Answer::Status(500),
        Answer::Ok(LATEST),
    ])
    .await;
    let c = client(&server, 0, 3);
    for _ in 0..3 {
        assert!(matches!(
            c.latest().await.unwrap_err(),
            FetchError::Status { status: 500, .. }
        ));
    }
    // Open: the next call fails without reaching the server.
    let err = c.latest().await.unwrap_err();
    assert!(matches!(err, FetchError::CircuitOpen(_)), "{err}");
    assert_eq!(server.count(), 3);
    assert!(c.breaker_open(&c.api_url("latest")));
    // After the cooldown (300 ms) a trial request goes through and closes it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let parsed = loop {
        match c.latest().await {
            Ok((parsed, _)) => break parsed,
            Err(FetchError::CircuitOpen(wait)) => {
                assert!(wait <= Duration::from_millis(300), "{wait:?}");
                assert!(std::time::Instant::now() < deadline, "never closed");
                tokio::time::sleep(wait).await;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    };
    assert_eq!(parsed.rows.len(), 2);
    assert!(!c.breaker_open(&c.api_url("latest")));
    assert_eq!(server.count(), 4);
}

#[tokio::test]
async fn a_failing_host_never_blocks_latest() {
    // The news page lives on another host (here: another port) and is down;
    // /5m on the API host answers 404 (an answer, not an outage).
    let api = Scripted::start(vec![Answer::Ok(LATEST)]).await;
    let news = Scripted::start(vec![Answer::Status(500)]).await;
    let api_5m_missing = Scripted::start(vec![Answer::Status(404)]).await;
    let c = UpstreamClient::new(&config(
        &api.url("api/v1/osrs"),
        &news.url("news.rss"),
        0,
        2,
    ))
    .unwrap();
    for _ in 0..5 {
        assert!(c.news().await.is_err());
    }
    assert!(
        c.breaker_open(&news.url("news.rss")),
        "the news host's breaker is open"
    );
    assert!(matches!(
        c.news().await.unwrap_err(),
        FetchError::CircuitOpen(_)
    ));
    for _ in 0..5 {
        let (parsed, _) = c.latest().await.unwrap();
        assert_eq!(parsed.rows.len(), 2);
    }
    assert!(!c.breaker_open(&c.api_url("latest")));
    // Repeated 404s do not open the breaker of their host.
    let c404 = UpstreamClient::new(&config(
        &api_5m_missing.url("api/v1/osrs"),
        &news.url("news.rss"),
        0,
        2,
    ))
    .unwrap();
    for _ in 0..5 {
        let err = c404.latest().await.unwrap_err();
        assert!(
            matches!(err, FetchError::Status { status: 404, .. }),
            "{err}"
        );
    }
    assert_eq!(api_5m_missing.count(), 5, "every request reached the host");
}

#[tokio::test]
async fn cancellation_ends_a_wait_at_once() {
    // Without a cap the client would wait; cancelling ends the fetch.
    let server = Scripted::start(vec![Answer::Slow(Duration::from_secs(60), LATEST)]).await;
    let mut cfg = config(&server.url("api/v1/osrs"), &server.url("news.rss"), 5, 100);
    cfg.timeout = Duration::from_secs(120);
    let cancel = CancellationToken::new();
    let c = UpstreamClient::new(&cfg)
        .unwrap()
        .with_cancel(cancel.clone());
    let fetch = tokio::spawn(async move { c.latest().await });
    // Cancel once the request is in flight at the server.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.count() == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("cancellation ends the fetch")
        .unwrap();
    assert!(matches!(result, Err(FetchError::Cancelled)), "{result:?}");
}
