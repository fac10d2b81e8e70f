//! The model registry: PENDING → ACTIVE → DEPRECATED → ARCHIVED, at most one
//! ACTIVE (a unique partial index enforces it), on either backend.

use super::{Store, StoreError};

/// Lifecycle state of a registered model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModelState {
    Pending,
    Active,
    Deprecated,
    Archived,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Pending => "PENDING",
            ModelState::Active => "ACTIVE",
            ModelState::Deprecated => "DEPRECATED",
            ModelState::Archived => "ARCHIVED",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "PENDING" => ModelState::Pending,
            "ACTIVE" => ModelState::Active,
            "DEPRECATED" => ModelState::Deprecated,
            "ARCHIVED" => ModelState::Archived,
            other => {
                return Err(StoreError::Invalid(format!(
                    "unknown model state {other:?}"
                )))
            }
        })
    }
}

/// One row of `model_registry`; times are Unix seconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelEntry {
    pub version: String,
    pub state: ModelState,
    pub path: String,
    pub sha256: String,
    pub mean_auc: Option<f64>,
    /// Validation metrics as JSON text.
    pub metrics: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub deprecated_at: Option<i64>,
    pub archived_at: Option<i64>,
}

const SQLITE_COLUMNS: &str = "version, state, path, sha256, mean_auc, metrics, created_at, activated_at, deprecated_at, archived_at";
const PG_COLUMNS: &str = "version, state, path, sha256, mean_auc, metrics::text, EXTRACT(EPOCH FROM created_at)::int8, \
    EXTRACT(EPOCH FROM activated_at)::int8, EXTRACT(EPOCH FROM deprecated_at)::int8, EXTRACT(EPOCH FROM archived_at)::int8";

impl ModelEntry {
    /// The PENDING entry of a model directory at `path`, from its description.
    pub fn pending(meta: &gept_model::ModelMeta, path: String) -> Self {
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
}

/// A registry row as selected by both backends' column lists.
type EntryRow = (
    String,
    String,
    String,
    String,
    Option<f64>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn entry(r: EntryRow) -> Result<ModelEntry, StoreError> {
    Ok(ModelEntry {
        version: r.0,
        state: ModelState::parse(&r.1)?,
        path: r.2,
        sha256: r.3,
        mean_auc: r.4,
        metrics: r.5,
        created_at: r.6,
        activated_at: r.7,
        deprecated_at: r.8,
        archived_at: r.9,
    })
}

impl Store {
    /// Registers a model as PENDING; an already registered version is an error.
    pub async fn register_model(&self, e: &ModelEntry) -> Result<(), StoreError> {
        let result = match self {
            Store::Sqlite(p) => {
                sqlx::query(&format!(
                    "INSERT INTO model_registry ({SQLITE_COLUMNS}) VALUES (?, 'PENDING', ?, ?, ?, ?, ?, NULL, NULL, NULL)"
                ))
                .bind(&e.version)
                .bind(&e.path)
                .bind(&e.sha256)
                .bind(e.mean_auc)
                .bind(&e.metrics)
                .bind(e.created_at)
                .execute(p)
                .await
                .map(|_| ())
            }
            Store::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO model_registry (version, state, path, sha256, mean_auc, metrics, created_at) \
                     VALUES ($1, 'PENDING', $2, $3, $4, $5::jsonb, to_timestamp($6))",
                )
                .bind(&e.version)
                .bind(&e.path)
                .bind(&e.sha256)
                .bind(e.mean_auc)
                .bind(&e.metrics)
                .bind(e.created_at)
                .execute(&p.pool)
                .await
                .map(|_| ())
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(StoreError::Invalid(
                format!("model {} is already registered", e.version),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Every registered model, oldest first.
    pub async fn models(&self) -> Result<Vec<ModelEntry>, StoreError> {
        match self {
            Store::Sqlite(p) => sqlx::query_as::<_, EntryRow>(&format!(
                "SELECT {SQLITE_COLUMNS} FROM model_registry ORDER BY created_at, version"
            ))
            .fetch_all(p)
            .await?
            .into_iter()
            .map(entry)
            .collect(),
            Store::Postgres(p) => sqlx::query_as::<_, EntryRow>(&format!(
                "SELECT {PG_COLUMNS} FROM model_registry ORDER BY created_at, version"
            ))
            .fetch_all(&p.pool)
            .await?
            .into_iter()
            .map(entry)
            .collect(),
        }
    }

    /// The ACTIVE model, if any.
    pub async fn active_model(&self) -> Result<Option<ModelEntry>, StoreError> {
        Ok(self
            .models()
            .await?
            .into_iter()
            .find(|m| m.state == ModelState::Active))
    }

    /// Makes `version` the ACTIVE model and the previous ACTIVE one
    /// DEPRECATED, in one transaction. Only a PENDING or DEPRECATED model can
    /// be activated.
    pub async fn activate_model(&self, version: &str, now: i64) -> Result<(), StoreError> {
        let target = self
            .models()
            .await?
            .into_iter()
            .find(|m| m.version == version)
            .ok_or_else(|| StoreError::Invalid(format!("no model {version} in the registry")))?;
        match target.state {
            ModelState::Active => return Ok(()),
            ModelState::Archived => {
                return Err(StoreError::Invalid(format!(
                    "model {version} is archived and cannot be activated"
                )))
            }
            ModelState::Pending | ModelState::Deprecated => {}
        }
        match self {
            Store::Sqlite(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("UPDATE model_registry SET state = 'DEPRECATED', deprecated_at = ? WHERE state = 'ACTIVE'")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE model_registry SET state = 'ACTIVE', activated_at = ?, deprecated_at = NULL WHERE version = ?")
                    .bind(now)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Store::Postgres(p) => {
                let mut tx = p.pool.begin().await?;
                sqlx::query("UPDATE model_registry SET state = 'DEPRECATED', deprecated_at = to_timestamp($1) WHERE state = 'ACTIVE'")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE model_registry SET state = 'ACTIVE', activated_at = to_timestamp($1), deprecated_at = NULL WHERE version = $2")
                    .bind(now)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Archives a model that is not ACTIVE.
    pub async fn archive_model(&self, version: &str, now: i64) -> Result<(), StoreError> {
        let n = match self {
            Store::Sqlite(p) => sqlx::query(
                "UPDATE model_registry SET state = 'ARCHIVED', archived_at = ? WHERE version = ? AND state <> 'ACTIVE'",
            )
            .bind(now)
            .bind(version)
            .execute(p)
            .await?
            .rows_affected(),
            Store::Postgres(p) => sqlx::query(
                "UPDATE model_registry SET state = 'ARCHIVED', archived_at = to_timestamp($1) WHERE version = $2 AND state <> 'ACTIVE'",
            )
            .bind(now)
            .bind(version)
            .execute(&p.pool)
            .await?
            .rows_affected(),
        };
        if n == 0 {
            return Err(StoreError::Invalid(format!(
                "no archivable model {version} (unknown, or ACTIVE)"
            )));
        }
        Ok(())
    }
}

impl Store {
    /// The activation gates' verdict on a registered model, against the
    /// ACTIVE one; activates it when the gates pass or `force` is set.
    pub async fn activate_gated(
        &self,
        version: &str,
        force: bool,
        now: i64,
    ) -> Result<gept_model::gates::Verdict, StoreError> {
        let models = self.models().await?;
        let entry = models
            .iter()
            .find(|m| m.version == version)
            .ok_or_else(|| StoreError::Invalid(format!("no model {version} in the registry")))?;
        let metrics: serde_json::Value = serde_json::from_str(&entry.metrics).map_err(|e| {
            StoreError::Invalid(format!("model {version}: unreadable metrics: {e}"))
        })?;
        let targets: Vec<gept_model::eval::TargetMetrics> =
            serde_json::from_value(metrics["targets"].clone()).unwrap_or_default();
        let active = models
            .iter()
            .find(|m| m.state == ModelState::Active && m.version != version)
            .and_then(|a| a.mean_auc);
        let verdict = gept_model::gates::check(entry.mean_auc, &targets, active);
        if verdict.passed || force {
            self.activate_model(version, now).await?;
        }
        Ok(verdict)
    }
}
