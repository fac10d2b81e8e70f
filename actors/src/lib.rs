//! Long-lived parts of GePT: the upstream client, the batched store writer,
//! the supervised collector actors, the feature engine and inference threads,
//! retention and backups.

pub mod accuracy;
pub mod alerts;
pub mod backup;
pub mod collectors;
pub mod features;
pub mod health;
pub mod inference;
pub mod journal;
pub mod recalibrate;
pub mod retention;
pub mod standby;
pub mod supervise;
pub mod trainer;
pub mod upstream;
pub mod writer;
