//! Alerts the service sends about itself: every `alerts.interval` it
//! evaluates its own conditions and posts each alert's changes to a webhook
//! as Discord-compatible JSON (a Discord webhook URL works as is).
//!
//! A condition must hold for `alerts.pending_for` before its alert fires.
//! A firing alert is posted once, then again every `alerts.resend_interval`
//! while it keeps firing, and once more when it resolves: no duplicates in
//! between. A post that fails is retried at the next evaluation. Without a
//! webhook the alerts still show in the log and in `gept_alerts_firing`.
//!
//! The Prometheus rules in `ops/prometheus/alerts.yml` watch the same
//! failures from outside (and what only an outside watcher sees: the process
//! gone); this notifier is for a deployment without Alertmanager.

use crate::health::{Alive, Health};
use crate::inference::ModelStatus;
use crate::upstream::UpstreamClient;
use gept_core::metrics as m;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the conditions read.
pub struct Watched {
    pub health: Health,
    pub engine: Alive,
    pub inference: Alive,
    pub model: Arc<Mutex<ModelStatus>>,
    /// A follower's feed is the store it follows, not a collector.
    pub role: Arc<crate::standby::Role>,
    /// The upstream client and the `/latest` URL whose breaker is watched.
    pub upstream: Option<(UpstreamClient, String)>,
    /// Volumes whose free space is watched: (label, a path on it).
    pub volumes: Vec<(&'static str, PathBuf)>,
    /// The `/latest` feed (and predictions) may be at most this old.
    pub max_feed_age: Duration,
    /// Unix time the service started (a feed not yet seen is stale only
    /// after `max_feed_age` of uptime).
    pub started_at: i64,
}

/// Timing of the alerts (`[alerts]`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub interval: Duration,
    pub pending_for: Duration,
    pub resend_interval: Duration,
    pub disk_free_min: f64,
}

impl Policy {
    pub fn from_config(c: &gept_core::config::AlertsConfig) -> Policy {
        Policy {
            interval: c.interval,
            pending_for: c.pending_for,
            resend_interval: c.resend_interval,
            disk_free_min: c.disk_free_min,
        }
    }
}

/// Free and total bytes of the filesystem holding `path`.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let mut probe = path.to_path_buf();
    while !probe.exists() {
        probe = probe.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let block = s.f_frsize as u64;
    Some((s.f_bavail as u64 * block, s.f_blocks as u64 * block))
}

impl Watched {
    /// Each alert's condition now: `Some(what is wrong)` while it holds.
    /// Also sets the disk gauges.
    pub fn evaluate(&self, now: i64, policy: &Policy) -> BTreeMap<&'static str, Option<String>> {
        let max_age = self.max_feed_age.as_secs() as i64;
        let mut out = BTreeMap::new();
        let latest = if self.role.is_primary() {
            self.health
                .collectors()
                .into_iter()
                .find(|c| c.collector == "latest")
                .and_then(|c| c.last_success)
        } else {
            self.role.followed_at()
        };
        let stale = match latest {
            Some(t) if now - t > max_age => Some(format!(
                "the /latest feed last succeeded {} s ago (bound {max_age} s)",
                now - t
            )),
            None if now - self.started_at > max_age => Some(format!(
                "no /latest poll has succeeded in the {} s since the start",
                now - self.started_at
            )),
            _ => None,
        };
        out.insert("feed_stale", stale);
        out.insert(
            "feature_engine_down",
            (!self.engine.is_alive())
                .then(|| "the feature engine is not running (crashed or re-warming)".into()),
        );
        out.insert(
            "inference_down",
            (!self.inference.is_alive()).then(|| "the inference thread is not running".into()),
        );
        let model = self.model.lock().expect("status lock").clone();
        let newest = self.health.newest().get("latest").copied();
        let behind = match (&model.version, newest) {
            (Some(v), Some(newest)) => {
                let last = model.last_tick.unwrap_or(i64::MIN / 2);
                (newest - last > max_age).then(|| {
                    format!(
                        "model {v} has not predicted the newest tick ({newest}); its last is {}",
                        model.last_tick.map_or("none".into(), |t| t.to_string())
                    )
                })
            }
            _ => None,
        };
        out.insert("predictions_behind", behind);
        out.insert(
            "upstream_breaker_open",
            self.upstream.as_ref().and_then(|(client, url)| {
                client.breaker_open(url).then(|| {
                    "the circuit breaker of the prices API host is open (repeated failures)".into()
                })
            }),
        );
        let mut filling = Vec::new();
        for (volume, path) in &self.volumes {
            if let Some((free, total)) = disk_space(path) {
                metrics::gauge!(m::DISK_FREE_BYTES, "volume" => *volume).set(free as f64);
                metrics::gauge!(m::DISK_SIZE_BYTES, "volume" => *volume).set(total as f64);
                if total > 0 && (free as f64) < policy.disk_free_min * total as f64 {
                    filling.push(format!(
                        "{volume}: {:.1} % free ({} MB of {} MB)",
                        100.0 * free as f64 / total as f64,
                        free >> 20,
                        total >> 20
                    ));
                }
            }
        }
        out.insert(
            "disk_filling",
            (!filling.is_empty()).then(|| filling.join("; ")),
        );
        out
    }
}

/// One alert's state.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// The condition holds since then; not firing yet.
    Pending(Instant),
    /// Firing; when it was last posted (`None`: not delivered yet).
    Firing {
        last_sent: Option<Instant>,
        summary: String,
    },
    /// Resolved; the post saying so is not delivered yet.
    Resolving,
}

/// A post to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub alert: &'static str,
    /// `firing` or `resolved`.
    pub status: &'static str,
    pub summary: String,
}

/// The alerts' states and the decisions what to post.
#[derive(Debug, Default)]
pub struct Notifier {
    states: BTreeMap<&'static str, State>,
}

impl Notifier {
    /// Folds one evaluation in at `now`; answers what to post.
    pub fn step(
        &mut self,
        now: Instant,
        conditions: &BTreeMap<&'static str, Option<String>>,
        policy: &Policy,
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        for (&alert, condition) in conditions {
            let state = self.states.get(alert).cloned();
            let next = match (state, condition) {
                (None, Some(_)) => Some(State::Pending(now)),
                (Some(State::Pending(since)), Some(summary)) => {
                    if now.duration_since(since) >= policy.pending_for {
                        out.push(Notice {
                            alert,
                            status: "firing",
                            summary: summary.clone(),
                        });
                        Some(State::Firing {
                            last_sent: None,
                            summary: summary.clone(),
                        })
                    } else {
                        Some(State::Pending(since))
                    }
                }
                (Some(State::Firing { last_sent, .. }), Some(summary)) => {
                    if last_sent.is_none_or(|t| now.duration_since(t) >= policy.resend_interval) {
                        out.push(Notice {
                            alert,
                            status: "firing",
                            summary: summary.clone(),
                        });
                    }
                    Some(State::Firing {
                        last_sent,
                        summary: summary.clone(),
                    })
                }
                (Some(State::Resolving), Some(_)) => Some(State::Pending(now)),
                (Some(State::Firing { .. } | State::Resolving), None) => {
                    out.push(Notice {
                        alert,
                        status: "resolved",
                        summary: String::new(),
                    });
                    Some(State::Resolving)
                }
                (Some(State::Pending(_)) | None, None) => None,
            };
            match next {
                Some(s) => self.states.insert(alert, s),
                None => self.states.remove(alert),
            };
            let firing = matches!(self.states.get(alert), Some(State::Firing { .. }));
            metrics::gauge!(m::ALERTS_FIRING, "alert" => alert).set(if firing { 1.0 } else { 0.0 });
        }
        out
    }

    /// Records that `notice` was delivered at `now`.
    pub fn delivered(&mut self, notice: &Notice, now: Instant) {
        match self.states.get_mut(notice.alert) {
            Some(State::Firing { last_sent, .. }) if notice.status == "firing" => {
                *last_sent = Some(now)
            }
            Some(State::Resolving) if notice.status == "resolved" => {
                self.states.remove(notice.alert);
            }
            _ => {}
        }
    }
}

/// The webhook body of a notice: Discord's `content` and one embed.
pub fn payload(notice: &Notice, now: i64) -> serde_json::Value {
    let (title, color, text) = if notice.status == "firing" {
        (
            format!("FIRING {}", notice.alert),
            0xE7_4C_3C,
            notice.summary.clone(),
        )
    } else {
        (
            format!("RESOLVED {}", notice.alert),
            0x2E_CC_71,
            "the condition no longer holds".to_string(),
        )
    };
    let when = chrono::DateTime::from_timestamp(now, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    serde_json::json!({
        "username": "GePT",
        "content": format!("**{title}**: {text}"),
        "embeds": [{
            "title": title,
            "description": text,
            "color": color,
            "timestamp": when,
            "fields": [
                {"name": "alert", "value": notice.alert, "inline": true},
                {"name": "status", "value": notice.status, "inline": true},
            ],
        }],
    })
}

/// Runs the notifier until `cancel` fires.
pub fn spawn(
    watched: Watched,
    policy: Policy,
    webhook: Option<String>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let mut notifier = Notifier::default();
        let mut timer = tokio::time::interval(policy.interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick() => {}
                _ = cancel.cancelled() => break,
            }
            let now = chrono::Utc::now().timestamp();
            let conditions = watched.evaluate(now, &policy);
            for notice in notifier.step(Instant::now(), &conditions, &policy) {
                if notice.status == "firing" {
                    tracing::warn!(alert = notice.alert, summary = %notice.summary, "alert firing");
                } else {
                    tracing::info!(alert = notice.alert, "alert resolved");
                }
                let Some(url) = &webhook else {
                    notifier.delivered(&notice, Instant::now());
                    continue;
                };
                let sent = http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(payload(&notice, now).to_string())
                    .send()
                    .await;
                match sent.and_then(|r| r.error_for_status()) {
                    Ok(_) => {
                        metrics::counter!(m::ALERT_NOTIFICATIONS, "outcome" => "ok").increment(1);
                        notifier.delivered(&notice, Instant::now());
                    }
                    Err(e) => {
                        metrics::counter!(m::ALERT_NOTIFICATIONS, "outcome" => "error")
                            .increment(1);
                        tracing::warn!(alert = notice.alert, error = %e.without_url(), "posting an alert failed; retrying at the next evaluation");
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            interval: Duration::from_secs(10),
            pending_for: Duration::from_secs(60),
            resend_interval: Duration::from_secs(3600),
            disk_free_min: 0.1,
        }
    }

    fn cond(holds: bool) -> BTreeMap<&'static str, Option<String>> {
        BTreeMap::from([("feed_stale", holds.then(|| "stale".to_string()))])
    }

    #[test]
    fn pending_firing_deduplicated_resent_and_resolved() {
        let p = policy();
        let mut n = Notifier::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(n.step(at(0), &cond(true), &p).is_empty(), "pending first");
        assert!(n.step(at(30), &cond(true), &p).is_empty());
        let fired = n.step(at(60), &cond(true), &p);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, "firing");
        n.delivered(&fired[0], at(60));
        for s in (70..3600).step_by(10) {
            assert!(
                n.step(at(s), &cond(true), &p).is_empty(),
                "duplicate at {s}"
            );
        }
        let again = n.step(at(3660), &cond(true), &p);
        assert_eq!(again.len(), 1, "resent after the resend interval");
        n.delivered(&again[0], at(3660));
        let resolved = n.step(at(3670), &cond(false), &p);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, "resolved");
        n.delivered(&resolved[0], at(3670));
        assert!(n.step(at(3680), &cond(false), &p).is_empty());
    }

    #[test]
    fn a_failed_post_is_retried_and_a_blip_never_fires() {
        let p = policy();
        let mut n = Notifier::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        n.step(at(0), &cond(true), &p);
        assert!(
            n.step(at(30), &cond(false), &p).is_empty(),
            "a blip under pending_for"
        );
        n.step(at(40), &cond(true), &p);
        let fired = n.step(at(100), &cond(true), &p);
        assert_eq!(fired.len(), 1);
        // Not delivered: posted again at the next evaluation.
        assert_eq!(n.step(at(110), &cond(true), &p).len(), 1);
    }
}
