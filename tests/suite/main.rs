//! Most integration tests, in one binary: one link against libtorch instead
//! of one per file, and the harness's threads shared across the files, so a
//! file whose test runs alone no longer leaves a core idle.
//!
//! Six files stay binaries of their own (`tests/*.rs`). Five assert exact
//! values of process-wide metrics (the Prometheus recorder is installed once
//! per process), which another file's in-process service would move:
//! accuracy (the drift gauge), alerts (the firing gauge), collectors
//! (restart and error counters), supervision (restart counts) and trainer
//! (trainings counted by outcome). Standby times a takeover against its
//! lease, which a test beside it on two cores would distort. A test here
//! that reads a metric reads a change it caused, not an absolute value.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod backtest;
mod backup;
mod cli;
mod faces;
mod features;
mod http_edges;
mod kill;
mod model;
mod outage;
mod prometheus;
mod registry;
mod retention;
mod store;
mod stored_predictions;
mod stream;
mod tch_smoke;
mod ticks;
mod upstream;
mod wire_recordings;
