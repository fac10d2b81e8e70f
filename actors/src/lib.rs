//! Long-lived concerns of GePT: the store, the upstream client, the batched
//! store writer, the supervised collector actors and the feature engine.

pub mod collectors;
pub mod features;
pub mod health;
pub mod inference;
pub mod upstream;
pub mod writer;
