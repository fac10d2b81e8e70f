//! Health of the collectors as operators see it: shared by the collector
//! actors (which survive restarts), `/status`, `/metrics` and the
//! `collector_status` table.

use gept_core::metrics as m;
use gept_core::CollectorStatus;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Per-collector status and the newest data time of each feed.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<HealthInner>>,
}

#[derive(Default)]
struct HealthInner {
    collectors: BTreeMap<String, CollectorStatus>,
    newest: BTreeMap<String, i64>,
}

impl Health {
    fn with<R>(&self, name: &str, f: impl FnOnce(&mut CollectorStatus) -> R) -> R {
        let mut inner = self.inner.lock().unwrap();
        let s = inner
            .collectors
            .entry(name.to_string())
            .or_insert_with(|| CollectorStatus {
                collector: name.to_string(),
                ..Default::default()
            });
        f(s)
    }

    /// Registers a collector so it shows before its first poll.
    pub fn register(&self, name: &str) {
        self.with(name, |_| ());
    }

    /// A poll of `name` succeeded and handed `rows` rows to the writer.
    pub fn success(&self, name: &str, rows: u64, now: i64) -> CollectorStatus {
        metrics::counter!(m::COLLECTOR_POLLS, "collector" => name.to_string()).increment(1);
        metrics::gauge!(m::COLLECTOR_CONSECUTIVE_FAILURES, "collector" => name.to_string())
            .set(0.0);
        metrics::gauge!(m::COLLECTOR_LAST_SUCCESS, "collector" => name.to_string()).set(now as f64);
        self.with(name, |s| {
            s.last_success = Some(now);
            s.consecutive_failures = 0;
            s.rows_written += rows as i64;
            s.clone()
        })
    }

    /// A poll of `name` failed.
    pub fn failure(&self, name: &str, error: &str, now: i64) -> CollectorStatus {
        metrics::counter!(m::COLLECTOR_ERRORS, "collector" => name.to_string()).increment(1);
        self.with(name, |s| {
            s.last_error = Some(error.to_string());
            s.last_error_at = Some(now);
            s.consecutive_failures += 1;
            metrics::gauge!(m::COLLECTOR_CONSECUTIVE_FAILURES, "collector" => name.to_string())
                .set(s.consecutive_failures as f64);
            s.clone()
        })
    }

    /// The supervisor restarted `name`.
    pub fn restarted(&self, name: &str) -> CollectorStatus {
        metrics::counter!(m::COLLECTOR_RESTARTS, "collector" => name.to_string()).increment(1);
        self.with(name, |s| {
            s.restarts += 1;
            s.clone()
        })
    }

    /// The newest upstream time of `feed` is now `at` (never goes back).
    pub fn saw_data(&self, feed: &str, at: i64) {
        let mut inner = self.inner.lock().unwrap();
        let e = inner.newest.entry(feed.to_string()).or_insert(at);
        *e = (*e).max(at);
    }

    /// Every collector's status, by name.
    pub fn collectors(&self) -> Vec<CollectorStatus> {
        self.inner
            .lock()
            .unwrap()
            .collectors
            .values()
            .cloned()
            .collect()
    }

    /// Newest upstream time per feed.
    pub fn newest(&self) -> BTreeMap<String, i64> {
        self.inner.lock().unwrap().newest.clone()
    }

    /// Sets the data-age gauges for `now` (call before rendering metrics).
    pub fn update_age_gauges(&self, now: i64) {
        for (feed, at) in self.newest() {
            metrics::gauge!(m::DATA_AGE, "feed" => feed).set((now - at) as f64);
        }
    }
}

/// Whether a long-running part (the feature engine or inference thread) is
/// running: set while an [`AliveGuard`] lives, cleared when it drops, also
/// when the thread unwinds from a panic.
#[derive(Clone, Default, Debug)]
pub struct Alive(Arc<std::sync::atomic::AtomicBool>);

/// Marks its [`Alive`] as running until dropped.
pub struct AliveGuard(Alive);

impl Alive {
    /// Marks the part as running until the guard drops.
    pub fn enter(&self) -> AliveGuard {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        AliveGuard(self.clone())
    }

    /// Whether the part is running now.
    pub fn is_alive(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        (self.0).0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::Alive;

    #[test]
    fn a_thread_that_panics_is_not_alive() {
        let alive = Alive::default();
        assert!(!alive.is_alive());
        let (started, wait) = std::sync::mpsc::channel();
        let (go, release) = std::sync::mpsc::channel::<()>();
        let a = alive.clone();
        let t = std::thread::spawn(move || {
            let _g = a.enter();
            started.send(()).unwrap();
            release.recv().unwrap();
            panic!("injected");
        });
        wait.recv().unwrap();
        assert!(alive.is_alive());
        go.send(()).unwrap();
        assert!(t.join().is_err());
        assert!(!alive.is_alive(), "a panicked thread still counts as alive");
    }
}
