//! The `quiver` binary's wiring, as a library so integration tests can start processes
//! in-process: configuration files, starting a coordinator or a node, `quiver dev`, and the
//! operator's `quiver admin`.
//!
//! - [`config`]: the TOML configuration of `quiver coordinator` and `quiver node`.
//! - [`process`]: starting a coordinator (control plane + S3 Vectors API).
//! - [`node`]: starting a storage node (node service, heartbeat agent, metrics port).
//! - [`dev`]: `quiver dev`, the embedded single-process cluster.
//! - [`admin`]: `quiver admin`, the operator's commands over mutual TLS.
//! - [`cert`]: `quiver cert`, the cluster CA and certificates.
//! - [`health`]: `quiver health`, an HTTP probe for container health checks.
//! - [`http`]: the HTTP server of both (connection bound, timeouts, minimum body rate).
//! - [`fd_budget`]: the open-file limit, raised at start, and the reserve HTTP never takes.

pub mod admin;
pub mod cert;
pub mod config;
pub mod dev;
pub mod fd_budget;
pub mod health;
pub mod http;
pub mod node;
pub mod process;
