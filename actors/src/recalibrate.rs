//! The recalibrator: horizon groups the serving model's validation had no
//! label for (a model trained on a short history) are served but marked
//! uncalibrated and never recommended on. Once the accuracy monitor holds
//! enough matured live labels of such a group, and its fit does not worsen
//! the held-out Brier ([`crate::accuracy::GroupFit::ready`]), this task
//! registers the ACTIVE model with those groups Platt-scaled on the live
//! rows: a new version with the same weights
//! (`gept_model::registry::register_recalibrated`), activated through the
//! gates and hot-swapped. It acts after the monitor publishes, on the
//! primary only, once per (model, groups).

use crate::accuracy::Monitor;
use crate::inference::Inference;
use crate::standby::Role;
use gept_core::metrics as m;
use gept_model::calibration::Platt;
use gept_store::Store;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the recalibrator works with.
pub struct RecalibratorEnv {
    pub monitor: Monitor,
    pub store: Store,
    pub inference: Inference,
    pub role: Arc<Role>,
    /// Where registry models are written to be loaded.
    pub model_cache: PathBuf,
}

/// Starts the recalibrator on the tokio runtime.
pub fn spawn(env: RecalibratorEnv, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tried: HashSet<(String, Vec<String>)> = HashSet::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = env.monitor.published.notified() => {}
            }
            if !env.role.is_primary() {
                continue;
            }
            if let Some(outcome) = recalibrate(&env, &mut tried).await {
                metrics::counter!(m::RECALIBRATIONS, "outcome" => outcome).increment(1);
            }
        }
    })
}

/// One look at the monitor's report: the outcome when it acted.
async fn recalibrate(
    env: &RecalibratorEnv,
    tried: &mut HashSet<(String, Vec<String>)>,
) -> Option<&'static str> {
    let report = env.monitor.report.load_full();
    let proposal = report.recalibration.as_ref()?;
    let ready: Vec<_> = proposal.groups.iter().filter(|g| g.ready).collect();
    if ready.is_empty() {
        return None;
    }
    let active = match env.store.active_model().await {
        Ok(Some(active)) if active.version == proposal.version => active,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "recalibrator: cannot read the registry");
            return None;
        }
    };
    // Once per model and groups: a failure is not retried on every publish.
    let key = (
        active.version.clone(),
        ready.iter().map(|g| g.group.clone()).collect(),
    );
    if !tried.insert(key) {
        return None;
    }
    let fits: Vec<Platt> = ready
        .iter()
        .map(|g| Platt {
            horizons: g.horizons_h.clone(),
            a: g.a,
            b: g.b,
            n: g.labels,
            live: true,
        })
        .collect();
    let detail = serde_json::json!({
        "through": report.through,
        "groups": ready,
    });
    let now = chrono::Utc::now().timestamp();
    let groups: Vec<&str> = ready.iter().map(|g| g.group.as_str()).collect();
    match gept_model::registry::register_recalibrated(
        &env.store,
        &active,
        &env.model_cache,
        &fits,
        detail,
        now,
    )
    .await
    {
        Ok((entry, verdict)) if verdict.passed => {
            tracing::info!(
                from = %active.version,
                version = %entry.version,
                ?groups,
                "recalibrator: groups calibrated on matured live rows; the new version is ACTIVE"
            );
            if let Err(e) = env.inference.reload().await {
                tracing::warn!(error = %e, "recalibrator: the inference did not reload yet; the registry poll will");
            }
            Some("activated")
        }
        Ok((entry, verdict)) => {
            tracing::warn!(
                version = %entry.version,
                reasons = ?verdict.reasons,
                "recalibrator: the gates refused the recalibrated model"
            );
            let _ = env.store.archive_model(&entry.version, now).await;
            Some("rejected")
        }
        Err(e) => {
            tracing::error!(from = %active.version, error = %e, "recalibrator: recalibrating failed");
            Some("failed")
        }
    }
}
