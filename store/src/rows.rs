//! Rows of the tables that both backends read and write, and the one mapping
//! from a selected tuple to each row type. Both backends select the same
//! columns in the same order (PostgreSQL converts times to Unix seconds in
//! SQL), so a row is built from a tuple in one place.

use crate::predictions::TickPredictions;
use crate::StoreError;
use gept_core::{BucketPrice, ItemId, LatestPrice, N_TARGETS};

/// One item's probabilities at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    pub item_id: ItemId,
    pub tick_time: i64,
    pub observed_at: i64,
    pub model_version: String,
    pub probabilities: Vec<f32>,
}

/// A registered model's files as the registry stores them: `model.json` and
/// the weights, with the weights' sha256 (lower-case hex).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelArtifact {
    pub meta: Vec<u8>,
    pub weights: Vec<u8>,
    pub sha256: String,
}

/// What inference did at one tick.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InferenceStatus {
    pub tick_time: i64,
    pub items: i64,
    pub latency_ms: f64,
    pub model_version: Option<String>,
    /// `ok`, `no_model` or `error`.
    pub outcome: String,
    pub message: Option<String>,
}

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
    /// The state as stored in `model_registry.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Pending => "PENDING",
            ModelState::Active => "ACTIVE",
            ModelState::Deprecated => "DEPRECATED",
            ModelState::Archived => "ARCHIVED",
        }
    }

    /// Reads a stored state.
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

/// Probabilities as kept in memory by the accuracy monitor and written in
/// stored bodies: 108 little-endian `u16`, each [`gept_core::p_units`] (the
/// published resolution, 10⁻⁴).
pub fn encode_probabilities(p: &[f32]) -> Vec<u8> {
    p.iter()
        .flat_map(|&v| gept_core::p_units(v).to_le_bytes())
        .collect()
}

/// The probabilities of [`encode_probabilities`]'s bytes; any size but 108
/// `u16` is an error.
pub fn decode_probabilities(b: &[u8]) -> Result<Vec<f32>, StoreError> {
    if b.len() != N_TARGETS * 2 {
        return Err(StoreError::Invalid(format!(
            "{} bytes of probabilities, not {}",
            b.len(),
            N_TARGETS * 2
        )));
    }
    Ok(b.chunks_exact(2)
        .map(|c| gept_core::from_p_units(u16::from_le_bytes([c[0], c[1]])))
        .collect())
}

/// The probabilities of a row of `predictions_v1` (a row per item and
/// tick, before `predictions` held a row per tick): 108 `u16` of p × 65,535
/// (216 bytes), or, from before that, 108 f32 (432 bytes).
fn decode_v1_probabilities(b: &[u8]) -> Result<Vec<f32>, StoreError> {
    if b.len() == N_TARGETS * 2 {
        return Ok(b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32 / 65_535.0)
            .collect());
    }
    if b.len() == N_TARGETS * 4 {
        return Ok(b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect());
    }
    Err(StoreError::Invalid(format!(
        "a stored prediction has {} bytes, not {} (u16) or {} (f32)",
        b.len(),
        N_TARGETS * 2,
        N_TARGETS * 4
    )))
}

/// `model_registry` as selected: version, state, path, sha256, mean_auc,
/// metrics, created_at, activated_at, deprecated_at, archived_at.
pub(crate) type EntryTuple = (
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

pub(crate) fn entry(r: EntryTuple) -> Result<ModelEntry, StoreError> {
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

/// `predictions_v1` (a row per item and tick, before `predictions` held a
/// row per tick) as selected: item_id, tick_time, observed_at, model_version,
/// probabilities.
pub(crate) type PredictionTuple = (i64, i64, i64, String, Vec<u8>);

pub(crate) fn prediction(r: PredictionTuple) -> Result<PredictionRow, StoreError> {
    Ok(PredictionRow {
        item_id: r.0 as ItemId,
        tick_time: r.1,
        observed_at: r.2,
        model_version: r.3,
        probabilities: decode_v1_probabilities(&r.4)?,
    })
}

/// `predictions` as selected: tick_time, model_version, items, body.
pub(crate) fn prediction_tick(r: (i64, String, i64, Vec<u8>)) -> TickPredictions {
    TickPredictions {
        tick_time: r.0,
        model_version: r.1,
        items: r.2,
        body: r.3,
    }
}

/// `inference_status` as selected: tick_time, items, latency_ms, model_version, outcome, message.
pub(crate) type StatusTuple = (i64, i64, f64, Option<String>, String, Option<String>);

pub(crate) fn inference_status(r: StatusTuple) -> InferenceStatus {
    InferenceStatus {
        tick_time: r.0,
        items: r.1,
        latency_ms: r.2,
        model_version: r.3,
        outcome: r.4,
        message: r.5,
    }
}

/// One item's `/latest` row as selected: timestamp, high, high_time, low, low_time.
pub(crate) type ItemLatestTuple = (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

pub(crate) fn item_latest(item: ItemId, r: ItemLatestTuple) -> LatestPrice {
    LatestPrice {
        item_id: item,
        timestamp: r.0,
        high: r.1,
        high_time: r.2,
        low: r.3,
        low_time: r.4,
    }
}

/// One item's bucket as selected: timestamp, avg_high_price, high_price_volume,
/// avg_low_price, low_price_volume.
pub(crate) type ItemBucketTuple = (i64, Option<i64>, i64, Option<i64>, i64);

pub(crate) fn item_bucket(item: ItemId, r: ItemBucketTuple) -> BucketPrice {
    BucketPrice {
        item_id: item,
        timestamp: r.0,
        avg_high_price: r.1,
        high_price_volume: r.2,
        avg_low_price: r.3,
        low_price_volume: r.4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_round_trip_within_half_a_unit() {
        let p: Vec<f32> = (0..N_TARGETS)
            .map(|k| (k as f32 * 0.00917).fract())
            .collect();
        let bytes = encode_probabilities(&p);
        assert_eq!(bytes.len(), 216);
        let back = decode_probabilities(&bytes).unwrap();
        for (a, b) in p.iter().zip(&back) {
            assert!((a - b).abs() <= 0.5e-4 + 1e-7, "{a} vs {b}");
        }
        // Ends are exact; out-of-range values are clamped.
        let ends: Vec<f32> = [0.0, 1.0, -0.5, 2.0]
            .into_iter()
            .cycle()
            .take(N_TARGETS)
            .collect();
        let back = decode_probabilities(&encode_probabilities(&ends)).unwrap();
        assert_eq!(&back[..4], [0.0, 1.0, 0.0, 1.0]);
        assert!(decode_probabilities(&[0; 100]).is_err());
        // Rows of predictions_v1: u16 of p × 65,535, and f32 before that.
        let v1: Vec<u8> = p
            .iter()
            .flat_map(|v| ((v * 65_535.0).round() as u16).to_le_bytes())
            .collect();
        for (a, b) in p.iter().zip(decode_v1_probabilities(&v1).unwrap()) {
            assert!((a - b).abs() <= 0.5 / 65_535.0 + 1e-7);
        }
        let legacy: Vec<u8> = p.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_v1_probabilities(&legacy).unwrap(), p);
        assert!(decode_v1_probabilities(&[0; 100]).is_err());
    }
}
