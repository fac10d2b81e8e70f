//! Model directories that describe themselves: `model.json` (feature list,
//! target list, input scaling, architecture, calibration, metrics, version,
//! the weights' sha256) beside `weights.safetensors`.

use crate::calibration::{monotone, Calibration, Platt};
use crate::net::{self, Net, Scaling};
use gept_core::{target_names, N_TARGETS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{nn, Device};

/// Format tag of `model.json`.
/// Format 2: quantile input scaling, features a model may leave unread.
pub const FORMAT: &str = "gept-model/2";
pub const META_FILE: &str = "model.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: String,
    /// `YYYYMMDDTHHMMSSZ-<first 12 hex of the weights' sha256>`.
    pub version: String,
    pub created_at: i64,
    pub features: Vec<String>,
    pub targets: Vec<String>,
    pub scaling: Vec<Scaling>,
    pub hidden: Vec<i64>,
    pub calibration: Calibration,
    /// Validation metrics (`mean_auc`, `targets`, ...), used by the gates.
    pub metrics: serde_json::Value,
    /// How it was trained: options, rows, split, epochs, device, seconds.
    pub training: serde_json::Value,
    pub weights: String,
    pub weights_sha256: String,
    /// For a model recalibrated on live rows: the version whose weights it
    /// shares (the first of the line, itself never recalibrated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibrated_from: Option<String>,
}

impl ModelMeta {
    /// The version that trained these weights: itself, or the one it was
    /// recalibrated from.
    pub fn base_version(&self) -> &str {
        self.recalibrated_from.as_deref().unwrap_or(&self.version)
    }

    /// This model with the groups of `fits` replaced (each fitted on live
    /// rows of this model's line, `live` set): the same weights under a new
    /// version, `<base>-live-<8 hex of the calibration's sha256>`, created
    /// `now`. Its metrics stay the validation figures it was trained with;
    /// `detail` (the fits' evidence) lands in `training.live_calibration`.
    pub fn recalibrated(&self, fits: &[Platt], now: i64, detail: serde_json::Value) -> ModelMeta {
        let mut meta = self.clone();
        for fit in fits {
            if let Some(g) = meta
                .calibration
                .groups
                .iter_mut()
                .find(|g| g.horizons == fit.horizons)
            {
                *g = Platt {
                    live: true,
                    ..fit.clone()
                };
            }
        }
        let digest = sha256_hex(
            serde_json::to_string(&meta.calibration)
                .expect("a calibration serialises")
                .as_bytes(),
        );
        let base = self.base_version().to_string();
        meta.version = format!("{base}-live-{}", &digest[..8]);
        meta.recalibrated_from = Some(base);
        meta.created_at = now;
        meta.training["live_calibration"] = detail;
        meta
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a model description: {source}")]
    Meta {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}: unknown model format {1:?} (expected {FORMAT})")]
    Format(PathBuf, String),
    #[error("{path}: weights sha256 is {actual}, model.json says {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model {version} was trained on other features than this build computes ({detail})")]
    Features { version: String, detail: String },
    #[error("model {version} predicts other targets than this build serves")]
    Targets { version: String },
    #[error("loading weights: {0}")]
    Torch(#[from] tch::TchError),
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(sha256_hex(&bytes))
}

/// sha256 of bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A loaded model, ready to predict.
pub struct Model {
    pub meta: ModelMeta,
    pub device: Device,
    net: Net,
    _vs: nn::VarStore,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("version", &self.meta.version)
            .field("device", &self.device)
            .finish()
    }
}

/// Reads and checks `model.json` only (no weights).
pub fn read_meta(dir: &Path) -> Result<ModelMeta, ModelError> {
    let path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    let meta: ModelMeta = serde_json::from_str(&text).map_err(|source| ModelError::Meta {
        path: path.clone(),
        source,
    })?;
    if meta.format != FORMAT {
        return Err(ModelError::Format(path, meta.format));
    }
    Ok(meta)
}

impl Model {
    /// Horizons whose calibration group had no validation label and has
    /// not been recalibrated on live rows yet: served, marked, and never
    /// recommended on.
    pub fn uncalibrated_horizons(&self) -> Vec<u32> {
        self.meta.calibration.uncalibrated_horizons()
    }

    /// Horizons calibrated on the service's matured live rows.
    pub fn live_calibrated_horizons(&self) -> Vec<u32> {
        self.meta.calibration.live_calibrated_horizons()
    }

    /// Writes a trained network to `dir` (created), naming the version from
    /// the weights' sha256; returns the written description.
    pub fn save(dir: &Path, vs: &nn::VarStore, mut meta: ModelMeta) -> anyhow::Result<ModelMeta> {
        std::fs::create_dir_all(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        vs.save(&weights)?;
        meta.format = FORMAT.into();
        meta.weights = WEIGHTS_FILE.into();
        meta.weights_sha256 = sha256_file(&weights)?;
        let stamp = chrono::DateTime::from_timestamp(meta.created_at, 0)
            .unwrap_or_default()
            .format("%Y%m%dT%H%M%SZ");
        meta.version = format!("{stamp}-{}", &meta.weights_sha256[..12]);
        std::fs::write(dir.join(META_FILE), serde_json::to_string_pretty(&meta)?)?;
        Ok(meta)
    }

    /// Loads `dir` on `device`, checking the weights' checksum and that the
    /// model's features and targets are this build's.
    pub fn load(dir: &Path, device: Device) -> Result<Model, ModelError> {
        let meta = read_meta(dir)?;
        let weights = dir.join(&meta.weights);
        let actual = sha256_file(&weights)?;
        if actual != meta.weights_sha256 {
            return Err(ModelError::Checksum {
                path: weights,
                expected: meta.weights_sha256,
                actual,
            });
        }
        let ours = gept_dataflows::features::feature_names();
        if meta.features != ours || meta.scaling.len() != ours.len() {
            let detail = match ours.iter().zip(&meta.features).position(|(a, b)| a != b) {
                Some(i) => format!(
                    "feature {i}: {:?} here, {:?} in the model",
                    ours[i], meta.features[i]
                ),
                None => format!(
                    "{} features here, {} in the model",
                    ours.len(),
                    meta.features.len()
                ),
            };
            return Err(ModelError::Features {
                version: meta.version,
                detail,
            });
        }
        if meta.targets != target_names() {
            return Err(ModelError::Targets {
                version: meta.version,
            });
        }
        let mut vs = nn::VarStore::new(device);
        let net = Net::for_loading(
            &vs.root(),
            net::input_width(&meta.scaling) as i64,
            &meta.hidden,
        );
        vs.load(&weights)?;
        Ok(Model {
            meta,
            device,
            net,
            _vs: vs,
        })
    }

    /// Calibrated, monotone probabilities (row-major, `N_TARGETS` per row) of
    /// feature rows (row-major, NaN for null).
    pub fn predict(&self, x: &[f32]) -> Vec<f32> {
        if x.is_empty() {
            return Vec::new();
        }
        self.predict_encoded(&net::encode(x, &self.meta.scaling))
    }

    /// [`Model::predict`] with the quantile search guided by `hints` (see
    /// [`net::encode_hinted`]): the same probabilities, bit for bit; faster
    /// when `x` holds the same items in the same order as the last call
    /// with these hints, as the inference thread's ticks do.
    pub fn predict_hinted(&self, x: &[f32], hints: &mut Vec<u16>) -> Vec<f32> {
        if x.is_empty() {
            return Vec::new();
        }
        self.predict_encoded(&net::encode_hinted(x, &self.meta.scaling, hints))
    }

    fn predict_encoded(&self, encoded: &[f32]) -> Vec<f32> {
        let inputs = net::input_width(&self.meta.scaling);
        let rows = (encoded.len() / inputs) as i64;
        tch::no_grad(|| {
            let x = tch::Tensor::from_slice(encoded)
                .view([rows, inputs as i64])
                .to(self.device);
            let p = self
                .meta
                .calibration
                .sigmoid_tensor(&self.net.logits(&x))
                .to(tch::Device::Cpu)
                .contiguous()
                .view([-1]);
            let mut p = Vec::<f32>::try_from(&p).expect("f32 probabilities");
            p.chunks_exact_mut(N_TARGETS).for_each(monotone);
            p
        })
    }

    /// Raw logits of feature rows.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let inputs = net::input_width(&self.meta.scaling);
        let encoded = net::encode(x, &self.meta.scaling);
        let out = net::predict_logits(&self.net, &encoded, inputs, self.device);
        debug_assert_eq!(out.len(), x.len() / self.meta.scaling.len() * N_TARGETS);
        out
    }
}
