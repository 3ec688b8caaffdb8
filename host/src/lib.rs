//! The hubsync host: one warp server for master and client modes, and the CLI.
//!
//! Owns HTTP (local entity API, sync protocol endpoint), TLS, configuration and
//! the command line. Translates requests into calls on `hubsync-core`; knows no
//! SQL dialect.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod exchange;
pub mod file_exchange;
pub mod guard;
pub mod https_client;
pub mod init;
pub mod listener;
pub mod local_client;
pub mod metrics;
pub mod node;
pub mod plugins;
pub mod progress;
pub mod sealed_file;
pub mod security_cli;
pub mod serve;
pub mod storage;
pub mod tls;
pub mod transport;
