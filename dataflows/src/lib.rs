//! Timely and differential-dataflow graphs of GePT: per-tick incremental
//! features (`features`).

pub mod features;
