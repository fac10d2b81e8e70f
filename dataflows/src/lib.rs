//! Timely and differential-dataflow graphs of GePT: per-tick incremental
//! features (`features`), and their plain batch peer (`batch`).

pub mod batch;
pub mod features;
