//! Timely and differential-dataflow graphs of GePT: per-tick incremental
//! features (`features`), their plain batch peer (`batch`), and the fill
//! labels of the 108 targets (`labels`), and their inputs read from
//! recordings (`inputs`).

pub mod batch;
pub mod features;
pub mod inputs;
pub mod labels;
