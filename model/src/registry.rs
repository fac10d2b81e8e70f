//! The model side of the registry: what a model directory registers as, and
//! activation behind the quality gates. The store keeps the rows
//! (`gept_store::Store::register_model`, `activate_model`); this module
//! knows what a model is and when it is good enough to serve.

use crate::gates::{self, Verdict};
use crate::ModelMeta;
use gept_store::{ModelEntry, ModelState, Store, StoreError};

/// The PENDING entry of a model directory at `path`, from its description.
pub fn pending_entry(meta: &ModelMeta, path: String) -> ModelEntry {
    ModelEntry {
        version: meta.version.clone(),
        state: ModelState::Pending,
        path,
        sha256: meta.weights_sha256.clone(),
        mean_auc: meta.metrics["mean_auc"].as_f64(),
        metrics: meta.metrics.to_string(),
        created_at: meta.created_at,
        activated_at: None,
        deprecated_at: None,
        archived_at: None,
    }
}

/// The activation gates' verdict on a registered model, against the ACTIVE
/// one; activates it when the gates pass or `force` is set.
pub async fn activate_gated(
    store: &Store,
    version: &str,
    force: bool,
    now: i64,
) -> Result<Verdict, StoreError> {
    let models = store.models().await?;
    let entry = models
        .iter()
        .find(|m| m.version == version)
        .ok_or_else(|| StoreError::Invalid(format!("no model {version} in the registry")))?;
    let metrics: serde_json::Value = serde_json::from_str(&entry.metrics)
        .map_err(|e| StoreError::Invalid(format!("model {version}: unreadable metrics: {e}")))?;
    let targets: Vec<crate::eval::TargetMetrics> =
        serde_json::from_value(metrics["targets"].clone()).unwrap_or_default();
    let active = models
        .iter()
        .find(|m| m.state == ModelState::Active && m.version != version)
        .and_then(|a| a.mean_auc);
    let verdict = gates::check(entry.mean_auc, &targets, active);
    if verdict.passed || force {
        store.activate_model(version, now).await?;
    }
    Ok(verdict)
}
