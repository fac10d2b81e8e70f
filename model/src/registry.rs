//! The model side of the registry: what a model directory registers as,
//! activation behind the quality gates, and models that travel through the
//! database. The store keeps the rows (`gept_store::Store::register_model`,
//! `activate_model`, `put_model_artifact`); this module knows what a model
//! is and when it is good enough to serve.
//!
//! A registered model's files (`model.json` and the weights) are stored in
//! the registry beside its row, so any process on the same database loads a
//! model another one registered: [`materialise`] writes them into a local
//! cache folder, after checking the weights against the registry's sha256.

use crate::file::{self, sha256_hex, META_FILE};
use crate::gates::{self, Verdict};
use crate::{Model, ModelMeta};
use gept_store::{ModelArtifact, ModelEntry, ModelState, Store, StoreError};
use std::path::{Path, PathBuf};

/// Registers the model directory `dir` as PENDING, with its files: loads it
/// first (checksum, features, targets), so a broken directory is refused.
pub async fn register_dir(store: &Store, dir: &Path) -> anyhow::Result<ModelEntry> {
    let model = Model::load(dir, tch::Device::Cpu)?;
    drop(model);
    let meta = file::read_meta(dir)?;
    let meta_bytes = std::fs::read(dir.join(META_FILE))?;
    let weights = std::fs::read(dir.join(&meta.weights))?;
    let path = std::fs::canonicalize(dir)?;
    let entry = pending_entry(&meta, path.display().to_string());
    let artifact = ModelArtifact {
        meta: meta_bytes,
        sha256: sha256_hex(&weights),
        weights,
    };
    store.register_model(&entry).await?;
    store.put_model_artifact(&entry.version, &artifact).await?;
    Ok(entry)
}

/// Where model `entry` lies on this machine: its files from the registry,
/// written under `cache` (`cache/<version>`, reused when already there),
/// or its registered `path` for a model stored without files. Refuses files
/// whose weights do not match the registry's sha256.
pub async fn materialise(
    store: &Store,
    entry: &ModelEntry,
    cache: &Path,
) -> Result<PathBuf, String> {
    let artifact = store
        .model_artifact(&entry.version)
        .await
        .map_err(|e| format!("reading model {} from the registry: {e}", entry.version))?;
    let Some(artifact) = artifact else {
        return Ok(PathBuf::from(&entry.path));
    };
    let actual = sha256_hex(&artifact.weights);
    if actual != entry.sha256 || artifact.sha256 != entry.sha256 {
        return Err(format!(
            "model {}: the registry's weights have sha256 {actual}, the registry row says {}; refused",
            entry.version, entry.sha256
        ));
    }
    let meta: ModelMeta = serde_json::from_slice(&artifact.meta).map_err(|e| {
        format!(
            "model {}: unreadable model.json in the registry: {e}",
            entry.version
        )
    })?;
    if meta.weights_sha256 != entry.sha256
        || meta.weights.contains(['/', '\\'])
        || meta.weights.starts_with('.')
    {
        return Err(format!(
            "model {}: the registry's model.json does not describe its weights; refused",
            entry.version
        ));
    }
    let dir = cache.join(&entry.version);
    if file::sha256_file(&dir.join(&meta.weights)).ok().as_deref() == Some(entry.sha256.as_str())
        && std::fs::read(dir.join(META_FILE)).ok().as_deref() == Some(&artifact.meta[..])
    {
        return Ok(dir);
    }
    // Written beside, then renamed: a reader never sees half a model.
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(cache)?;
        let tmp = cache.join(format!(".{}.{}", entry.version, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(tmp.join(&meta.weights), &artifact.weights)?;
        std::fs::write(tmp.join(META_FILE), &artifact.meta)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)
    };
    write().map_err(|e| {
        format!(
            "writing model {} under {}: {e}",
            entry.version,
            cache.display()
        )
    })?;
    Ok(dir)
}

/// Registers the ACTIVE model `parent` recalibrated on live rows (its
/// groups replaced by `fits`, [`ModelMeta::recalibrated`]) and activates it:
/// the parent's files are written under `cache`, the new `model.json` beside
/// a copy of the same weights in `cache/<new version>`, registered with its
/// files (so other processes load it too) and put through the gates (its
/// validation figures are the parent's: a Platt scaling with a > 0 keeps
/// every target's order). Returns the new entry and whether it is ACTIVE.
pub async fn register_recalibrated(
    store: &Store,
    parent: &ModelEntry,
    cache: &Path,
    fits: &[crate::calibration::Platt],
    detail: serde_json::Value,
    now: i64,
) -> anyhow::Result<(ModelEntry, Verdict)> {
    let from = materialise(store, parent, cache)
        .await
        .map_err(anyhow::Error::msg)?;
    let meta = file::read_meta(&from)?.recalibrated(fits, now, detail);
    let dir = cache.join(&meta.version);
    let write = || -> std::io::Result<()> {
        let tmp = cache.join(format!(".{}.{}", meta.version, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        std::fs::copy(from.join(&meta.weights), tmp.join(&meta.weights))?;
        let text = serde_json::to_string_pretty(&meta).map_err(std::io::Error::other)?;
        std::fs::write(tmp.join(META_FILE), text)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)
    };
    write()?;
    let entry = register_dir(store, &dir).await?;
    let verdict = activate_gated(store, &entry.version, false, now, false).await?;
    Ok((entry, verdict))
}

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
/// one; activates it when the gates pass or `force` is set. The ACTIVE
/// model's validation mean AUC is a bar only when `against_active` (the
/// trainer compares the two on the same unseen rows instead).
pub async fn activate_gated(
    store: &Store,
    version: &str,
    force: bool,
    now: i64,
    against_active: bool,
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
        .and_then(|a| a.mean_auc)
        .filter(|_| against_active);
    let verdict = gates::check(entry.mean_auc, &targets, active);
    if verdict.passed || force {
        store.activate_model(version, now).await?;
    }
    Ok(verdict)
}
