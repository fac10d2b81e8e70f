//! The fill model of GePT: datasets built by replaying history through the
//! serving feature graphs (`dataset`), the tch network and its training
//! (`net`), calibration (`calibration`), self-describing model files
//! (`file`), evaluation (`metrics`, `eval`) and the registry's activation
//! gates (`gates`) with activation through them (`registry`).

pub mod calibration;
pub mod dataset;
pub mod eval;
pub mod file;
pub mod gates;
pub mod history;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod registry;
pub mod stream;

pub use file::{Model, ModelMeta};
