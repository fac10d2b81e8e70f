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
}
