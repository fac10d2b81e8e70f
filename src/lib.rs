//! The `gept` binary's library: command-line interface, the commands it runs,
//! the HTTP API and the replay server.

pub mod api;
pub mod cli;
pub mod commands;
pub mod http;
pub mod mock_api;
pub mod recommend;
pub mod telemetry;

pub use gept_core::config::Config;
