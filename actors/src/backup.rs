//! Backups: a consistent copy of the database on a schedule, with rotation.
//! [`backup_now`] makes one (the schedule and `gept backup now` both use it):
//! `gept-<UTC time>.<db|dump>` in the backup folder, written under a
//! temporary name and renamed once complete (`Store::backup_to`), then the
//! oldest beyond `keep` are deleted. A failed backup is a log line and a
//! metric, and never touches the backups already there.

use gept_core::metrics as m;
use gept_store::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The file names of this folder's backups, oldest first.
pub fn backups_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("gept-") && (name.ends_with(".db") || name.ends_with(".dump"))
        })
        .collect();
    // The names embed the time as %Y%m%dT%H%M%S%3fZ: name order is time order.
    found.sort();
    found
}

/// Makes a backup in `dir`, keeps the newest `keep`, and returns its path
/// and size.
pub async fn backup_now(
    store: &Store,
    dir: &Path,
    keep: usize,
) -> Result<(PathBuf, u64), StoreError> {
    let outcome = async {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backup(format!("{}: {e}", dir.display())))?;
        let name = format!(
            "gept-{}.{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ"),
            store.backup_extension()
        );
        let path = dir.join(name);
        let bytes = store.backup_to(&path).await?;
        let all = backups_in(dir);
        for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
            if let Err(e) = std::fs::remove_file(old) {
                tracing::warn!(path = %old.display(), error = %e, "cannot delete an old backup");
            }
        }
        Ok((path, bytes))
    }
    .await;
    match &outcome {
        Ok((path, bytes)) => {
            metrics::counter!(m::BACKUPS, "outcome" => "ok").increment(1);
            metrics::gauge!(m::BACKUP_LAST_SUCCESS).set(chrono::Utc::now().timestamp() as f64);
            metrics::gauge!(m::BACKUP_BYTES).set(*bytes as f64);
            tracing::info!(path = %path.display(), bytes, "backup written");
        }
        Err(e) => {
            metrics::counter!(m::BACKUPS, "outcome" => "error").increment(1);
            tracing::error!(error = %e, "backup failed; the earlier backups are untouched");
        }
    }
    outcome
}

/// A backup every `interval` (the first after one interval), until `cancel`.
pub fn spawn(
    store: Store,
    dir: PathBuf,
    interval: Duration,
    keep: usize,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = cancel.cancelled() => return,
            }
            let _ = backup_now(&store, &dir, keep).await;
        }
    })
}
