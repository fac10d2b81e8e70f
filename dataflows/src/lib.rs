//! Timely and differential-dataflow graphs of GePT.
