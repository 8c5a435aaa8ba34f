//! Quiver's test-harness tools (the `quiver-chaos` binary): a load generator speaking the S3
//! Vectors HTTP API with SigV4, and a benchmark of raw FAISS against Quiver end to end.
//!
//! Pure logic (workload, exact search and recall, percentiles and reports) lives in `dataset`,
//! `exact`, `workload` and `report`, tested without IO; `client`, `server`, `load` and `bench` are
//! the async shell.

pub mod bench;
pub mod chaos;
pub mod client;
pub mod dataset;
pub mod exact;
pub mod load;
pub mod plot;
pub mod report;
pub mod server;
pub mod siege;
pub mod workload;
