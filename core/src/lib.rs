//! Shared domain of GePT: item ids, price observations, wire formats of the
//! upstream API with their validation, targets, the GE tax, configuration and
//! readers of recorded API responses.
//!
//! Every other crate depends on this one; it depends on none of them.

pub mod config;
pub mod duration;
pub mod metrics;
pub mod recordings;
pub mod tax;
pub mod types;
pub mod wire;

pub use types::*;
