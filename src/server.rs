//! The HTTP server under the routes: accepts connections within caps and
//! keeps each within timeouts, so that no client (hostile, slow or gone)
//! holds the process's file descriptors or memory.
//!
//! - Connections open at once are capped in all (`api.max_connections`) and
//!   per peer address (`api.max_connections_per_ip`; a trusted proxy is not
//!   capped per address, its clients are told apart by the rate limit). Over
//!   either, the connection is answered `503` with a JSON error and closed.
//! - A request's headers must arrive within `api.header_read_timeout`
//!   (hyper's timer); a connection with nothing read or written for
//!   `api.idle_timeout` is closed, keep-alive and websocket alike (websocket
//!   clients are pinged, so a live one is never idle); a write the client
//!   does not take within `api.write_timeout` closes the connection.
//! - hyper answers requests it cannot parse itself (`400`, `414`, `431`)
//!   with an empty body; [`TimedIo`] gives those answers the JSON body every
//!   other error has.
//!
//! Each request carries its connection's [`Peer`] address in its extensions.

use gept_core::metrics as m;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use warp::Filter;

/// The address a request's connection came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Caps and timeouts of the server (`[api]` in the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// Peers not capped per address (trusted proxies).
    pub uncapped: Vec<IpAddr>,
}

impl Limits {
    pub fn from_config(api: &gept_core::config::ApiConfig, uncapped: Vec<IpAddr>) -> Limits {
        Limits {
            max_connections: api.max_connections.max(1),
            max_connections_per_ip: api.max_connections_per_ip.max(1),
            header_read_timeout: api.header_read_timeout,
            idle_timeout: api.idle_timeout,
            write_timeout: api.write_timeout,
            uncapped,
        }
    }
}

/// Connections open now: in all and per address.
#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One open connection's place in [`Open`], given back when it drops.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("connections lock");
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
        metrics::gauge!(m::HTTP_CONNECTIONS).set(open.total as f64);
    }
}

/// Takes a place for a connection from `ip`, or says which cap is full.
fn admit(open: &Arc<Mutex<Open>>, ip: IpAddr, limits: &Limits) -> Result<Slot, &'static str> {
    let mut o = open.lock().expect("connections lock");
    if o.total >= limits.max_connections {
        return Err("the server has too many connections open");
    }
    let capped = !limits.uncapped.contains(&ip);
    let mine = o.by_ip.get(&ip).copied().unwrap_or(0);
    if capped && mine >= limits.max_connections_per_ip {
        return Err("too many connections open from this address");
    }
    o.total += 1;
    *o.by_ip.entry(ip).or_default() += 1;
    metrics::gauge!(m::HTTP_CONNECTIONS).set(o.total as f64);
    Ok(Slot {
        open: open.clone(),
        ip,
    })
}

/// Serves `filter` on `listener` until `cancel` fires, then lets open
/// requests finish (websocket handlers watch the same token and close).
pub async fn serve<F>(listener: TcpListener, filter: F, limits: Limits, cancel: CancellationToken)
where
    F: Filter<Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let open = Arc::new(Mutex::new(Open::default()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limits = Arc::new(limits);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cancel.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = match admit(&open, peer.ip(), &limits) {
            Ok(slot) => slot,
            Err(why) => {
                metrics::counter!(m::HTTP_CONNECTIONS_REFUSED).increment(1);
                tokio::spawn(refuse(stream, why, limits.write_timeout));
                continue;
            }
        };
        // The route tree is cloned once per connection, not per request
        // (a clone copies every route's captured state); `call` only
        // borrows it to build the request's future.
        let svc = std::cell::RefCell::new(warp::service(filter.clone()));
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                svc.borrow_mut().call(req)
            });
        let io = TokioIo::new(TimedIo::new(
            stream,
            limits.idle_timeout,
            limits.write_timeout,
        ));
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                metrics::counter!(m::HTTP_CONNECTION_ERRORS).increment(1);
                if crate::telemetry::CONNECTION_ERRORS.allow_now() {
                    tracing::info!(%peer, error = %e, "connection ended with an error (at most 10 such lines a minute)");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection over a cap with `503` and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, why: &str, write_timeout: Duration) {
    let body = serde_json::json!({ "error": why }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(write_timeout, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A connection's stream with an idle timeout (nothing read or written), a
/// write timeout (a write the peer does not take), and JSON bodies for the
/// bodiless error answers hyper writes itself.
pub struct TimedIo<S> {
    inner: S,
    idle_timeout: Duration,
    write_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    /// Armed while a write waits on the peer.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Bytes to send before anything else (an error answer rewritten with a
    /// body), and how many of them are sent.
    pending: Vec<u8>,
    sent: usize,
}

impl<S> TimedIo<S> {
    pub fn new(inner: S, idle_timeout: Duration, write_timeout: Duration) -> Self {
        TimedIo {
            inner,
            idle_timeout,
            write_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            stalled: None,
            pending: Vec::new(),
            sent: 0,
        }
    }

    fn progressed(&mut self) {
        self.idle.as_mut().reset(Instant::now() + self.idle_timeout);
    }

    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.idle.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle too long",
            ));
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TimedIo<S> {
    /// Writes what [`TimedIo::pending`] holds; `Ready(Ok)` once all is out.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.sent += n;
                    self.stalled = None;
                    self.progressed();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.stall(cx),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A write waits on the peer: arms the write timeout, fails once it ends.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not take a write in time",
            )));
        }
        Poll::Pending
    }
}

/// hyper's bodiless answer to a request it could not parse, rewritten with a
/// JSON body; `None` for any other write.
fn with_error_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let why = if text.starts_with("HTTP/1.1 400 ") {
        "malformed request"
    } else if text.starts_with("HTTP/1.1 414 ") {
        "request URI too long"
    } else if text.starts_with("HTTP/1.1 431 ") {
        "request headers too large"
    } else {
        return None;
    };
    let end = text.find("\r\n\r\n")?;
    let empty = text[..end]
        .split("\r\n")
        .any(|l| l.eq_ignore_ascii_case("content-length: 0"));
    if end + 4 != text.len() || !empty {
        return None;
    }
    let mut lines: Vec<&str> = text[..end]
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:"))
        .collect();
    let body = serde_json::json!({ "error": why }).to_string();
    let length = format!("content-length: {}", body.len());
    lines.push("content-type: application/json");
    lines.push(&length);
    Some(format!("{}\r\n\r\n{body}", lines.join("\r\n")).into_bytes())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.sent == this.pending.len() {
            if let Some(rewritten) = with_error_body(buf) {
                this.pending = rewritten;
                this.sent = 0;
                // Taken whole; sent by this call and the flushes after it.
                return match this.poll_pending(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Ready(Ok(buf.len())),
                };
            }
        }
        if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
            return Poll::Ready(Err(e));
        }
        if this.sent < this.pending.len() {
            return Poll::Pending;
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.stalled = None;
                this.progressed();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.stall(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures::ready!(this.poll_pending(cx))?;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.stall(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{with_error_body, TimedIo};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_take_times_out() {
        let (ours, _peer) = tokio::io::duplex(64);
        let mut io = TimedIo::new(ours, Duration::from_secs(90), Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let e = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_cut_while_it_takes_bytes() {
        let (ours, mut peer) = tokio::io::duplex(64);
        let mut io = TimedIo::new(ours, Duration::from_secs(90), Duration::from_secs(5));
        // The peer takes 64 bytes every 4 s: each write waits less than the
        // write timeout, the whole takes far more.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut got = 0;
            while got < 1024 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                got += peer.read(&mut buf).await.unwrap();
            }
            got
        });
        let started = tokio::time::Instant::now();
        io.write_all(&[0u8; 1024]).await.unwrap();
        assert!(started.elapsed() > Duration::from_secs(50));
        assert_eq!(reader.await.unwrap(), 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_nothing_read_or_written_times_out() {
        let (ours, mut peer) = tokio::io::duplex(64);
        let mut io = TimedIo::new(ours, Duration::from_secs(30), Duration::from_secs(5));
        // Bytes every 20 s keep it open past the idle timeout...
        let talker = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                peer.write_all(b"x").await.unwrap();
            }
            peer
        });
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        }
        let _peer = talker.await.unwrap();
        // ...then silence ends it.
        let started = tokio::time::Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= Duration::from_secs(30));
    }

    #[test]
    fn hyper_error_answers_get_a_json_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 05:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(with_error_body(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(!head.contains("content-length: 0"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "request headers too large");
        // Other answers and partial heads pass through.
        assert!(with_error_body(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(with_error_body(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n").is_none());
    }
}
