//! Supervision of the parts that run on threads of their own (the feature
//! engine and the inference): the restart policy they share, and the faults a
//! crash test injects into them.
//!
//! A supervised part catches a panic of its work, waits a backoff that grows
//! with the restarts in the storm window, rebuilds its state and goes on. A
//! restart storm (at least [`STORM_RESTARTS`] within [`STORM_WINDOW`]) is a
//! gauge an alert reads, never a hot loop: the backoff reaches
//! [`MAX_BACKOFF`] first.

use gept_core::metrics as m;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First wait before a restart.
pub const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Restarts within [`STORM_WINDOW`] that make a storm.
pub const STORM_RESTARTS: usize = 5;
/// The window restarts are counted over.
pub const STORM_WINDOW: Duration = Duration::from_secs(600);

/// The restart history of one supervised part.
#[derive(Debug)]
pub struct Restarts {
    component: &'static str,
    recent: VecDeque<Instant>,
    total: u64,
}

impl Restarts {
    /// A part named `component` (the metrics' label), running.
    pub fn new(component: &'static str) -> Self {
        metrics::gauge!(m::COMPONENT_UP, "component" => component).set(1.0);
        metrics::gauge!(m::RESTART_STORM, "component" => component).set(0.0);
        metrics::counter!(m::COMPONENT_RESTARTS, "component" => component).absolute(0);
        Restarts {
            component,
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Records a crash at `now` and answers how long to wait before the
    /// restart: [`BASE_BACKOFF`] doubled for each other restart within
    /// [`STORM_WINDOW`], at most [`MAX_BACKOFF`].
    pub fn crashed(&mut self, now: Instant, why: &str) -> Duration {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > STORM_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.total += 1;
        let storm = self.recent.len() >= STORM_RESTARTS;
        let c = self.component;
        metrics::counter!(m::COMPONENT_RESTARTS, "component" => c).increment(1);
        metrics::gauge!(m::RESTART_STORM, "component" => c).set(if storm { 1.0 } else { 0.0 });
        metrics::gauge!(m::COMPONENT_UP, "component" => c).set(0.0);
        let doublings = (self.recent.len() - 1).min(16) as u32;
        let wait = BASE_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF);
        if storm {
            tracing::error!(component = c, restarts = self.recent.len(), window = ?STORM_WINDOW, ?wait, why, "restart storm");
        } else {
            tracing::error!(component = c, ?wait, why, "crashed; restarting");
        }
        wait
    }

    /// The part runs again.
    pub fn running(&self) {
        metrics::gauge!(m::COMPONENT_UP, "component" => self.component).set(1.0);
    }

    /// Restarts since the part started.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Faults a crash test injects. There is no configuration key for them: only
/// code that starts the service itself (the tests, through
/// `gept::service::Service::start_with_faults`) can set them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Share of collector polls that panic mid-batch, after fetching and
    /// before writing.
    pub collector_panic_rate: f64,
    /// The feature engine panics once, in the middle of its n-th tick
    /// (counted from 1).
    pub engine_panic_on_tick: Option<u64>,
    /// The inference panics once, in the middle of its n-th tick.
    pub inference_panic_on_tick: Option<u64>,
    /// The feature engine stays down this much longer after a crash (to
    /// observe readiness while it is down).
    pub engine_restart_hold: Option<Duration>,
    /// The trainer trains on shuffled labels (a model the gates must refuse).
    pub trainer_shuffle_labels: bool,
}

impl Faults {
    /// No faults: what production runs.
    pub fn none() -> Self {
        Self::default()
    }
}

/// Fires a fault once, at the n-th call of [`OnceAt::hit`].
#[derive(Debug, Clone, Default)]
pub struct OnceAt {
    at: Option<u64>,
    calls: Arc<AtomicU64>,
}

impl OnceAt {
    pub fn new(at: Option<u64>) -> Self {
        OnceAt {
            at,
            calls: Arc::default(),
        }
    }

    /// Counts a call; panics with `what` on the n-th.
    pub fn hit(&self, what: &str) {
        if let Some(at) = self.at {
            if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == at {
                panic!("injected panic in {what}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_the_window_and_resets_after_it() {
        let mut r = Restarts::new("test");
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..10)
            .map(|i| r.crashed(t0 + Duration::from_secs(i), "test"))
            .collect();
        assert_eq!(waits[0], BASE_BACKOFF);
        assert_eq!(waits[1], BASE_BACKOFF * 2);
        assert_eq!(waits[4], BASE_BACKOFF * 16);
        assert_eq!(waits[9], MAX_BACKOFF, "capped: {waits:?}");
        // Long after the storm, a crash waits the base again.
        let later = t0 + STORM_WINDOW + Duration::from_secs(60);
        assert_eq!(r.crashed(later, "test"), BASE_BACKOFF);
        assert_eq!(r.total(), 11);
    }

    #[test]
    fn a_fault_fires_once_at_its_call() {
        let f = OnceAt::new(Some(3));
        f.hit("x");
        f.hit("x");
        let third = std::panic::catch_unwind(|| f.hit("x"));
        assert!(third.is_err());
        f.hit("x");
        OnceAt::new(None).hit("never");
    }
}
