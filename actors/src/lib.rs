//! Long-lived concerns of GePT: the store, the upstream client, the batched
//! store writer and the supervised collector actors.

pub mod collectors;
pub mod health;
pub mod store;
pub mod upstream;
pub mod writer;

pub use store::{Backend, Store, StoreError};
