//! The `gept` binary's library: command-line interface, the commands it runs,
//! the HTTP API and the one wiring of the running service (`service`).

pub mod api;
pub mod backtest;
pub mod cli;
pub mod commands;
pub mod discord;
pub mod http;
pub mod offers;
pub mod recommend;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod web;

pub use gept_core::config::Config;
