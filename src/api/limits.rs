//! Per-client token buckets (by IP address), sharded to keep lock contention
//! low under load.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// A shard forgets its idle, refilled clients when it holds more than this.
const SHARD_CAPACITY: usize = 50_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    trusted: Vec<IpAddr>,
    trusted_rate: f64,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64, trusted: Vec<IpAddr>, trusted_rate: f64) -> Self {
        RateLimiter {
            rate: rate.max(1e-6),
            burst: burst.max(1.0),
            trusted,
            trusted_rate: trusted_rate.max(1e-6),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes a token for `client`, or says how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = if self.trusted.contains(&client) {
            (self.trusted_rate, self.trusted_rate.max(self.burst))
        } else {
            (self.rate, self.burst)
        };
        let shard = match client {
            IpAddr::V4(a) => u32::from(a) as usize,
            IpAddr::V6(a) => u128::from(a) as usize,
        } % SHARDS;
        let mut map = self.shards[shard].lock().expect("rate limiter lock");
        if map.len() > SHARD_CAPACITY {
            map.retain(|_, b| (now - b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the nearest address in `X-Forwarded-For` that is not itself a trusted
/// proxy (proxies append, so the rightmost untrusted entry is the one the
/// nearest trusted proxy saw). Unparsable entries stop the walk.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for entry in header.rsplit(',') {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted.contains(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Caps on websocket connections at once: in all and per client address.
pub struct WsSlots {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open websocket connection's place; released when dropped.
pub struct WsSlot {
    slots: std::sync::Arc<WsSlots>,
    ip: IpAddr,
}

impl WsSlots {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        WsSlots {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A place for a connection from `ip`, or why there is none.
    pub fn acquire(self: &std::sync::Arc<Self>, ip: IpAddr) -> Result<WsSlot, String> {
        let mut open = self.open.lock().expect("ws slots lock");
        if open.0 >= self.max_total {
            return Err(format!(
                "the server has {} websocket connections, its limit; try again later",
                self.max_total
            ));
        }
        let mine = open.1.entry(ip).or_insert(0);
        if *mine >= self.max_per_ip {
            return Err(format!(
                "{} websocket connections from your address already, the limit per client",
                self.max_per_ip
            ));
        }
        *mine += 1;
        open.0 += 1;
        Ok(WsSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl std::fmt::Debug for WsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WsSlot({})", self.ip)
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("ws slots lock");
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_client() {
        let limiter = RateLimiter::new(2.0, 3.0, vec!["10.0.0.9".parse().unwrap()], 1000.0);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(a, t0).is_ok());
        }
        let wait = limiter.check(a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert!(limiter.check(b, t0).is_ok(), "another client is served");
        assert!(limiter.check(a, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.check(a, t0 + Duration::from_millis(500)).is_err());
        let trusted: IpAddr = "10.0.0.9".parse().unwrap();
        assert!((0..500).all(|_| limiter.check(trusted, t0).is_ok()));
    }

    #[test]
    fn the_client_is_read_from_trusted_proxies_only() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = [proxy, lb];
        let player: IpAddr = "203.0.113.7".parse().unwrap();
        // A peer that is no proxy: its header is ignored.
        assert_eq!(client_ip(player, Some("1.2.3.4"), &trusted), player);
        // Through one proxy.
        assert_eq!(client_ip(proxy, Some("203.0.113.7"), &trusted), player);
        // Through two: the client spoofs a first entry; the nearest untrusted wins.
        assert_eq!(
            client_ip(proxy, Some("6.6.6.6, 203.0.113.7, 10.0.0.2"), &trusted),
            player
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("nonsense"), &trusted), proxy);
    }

    #[test]
    fn websocket_slots_cap_per_client_and_in_all() {
        let slots = std::sync::Arc::new(WsSlots::new(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = slots.acquire(a).unwrap();
        let _a2 = slots.acquire(a).unwrap();
        assert!(slots.acquire(a).unwrap_err().contains("per client"));
        let _b1 = slots.acquire(b).unwrap();
        assert!(slots.acquire(b).unwrap_err().contains("its limit"));
        drop(a1);
        assert!(
            slots.acquire(b).is_ok(),
            "a closed connection frees its place"
        );
    }
}
