//! Every S3 Vectors operation's HTTP handler, in-process: the real router and `AppState` over
//! an in-memory catalog (the catalog state machine without Raft), a fake storage node served
//! through `LocalTransport` (the same codec path as QUIC) and a fake cluster view, driven by
//! SigV4-signed requests (AWS's own signer). After every refused request the tests check that
//! neither the catalog nor the node's data changed.

#[path = "api_handlers/auth.rs"]
mod auth;
#[path = "api_handlers/errors.rs"]
mod errors;
#[path = "api_handlers/fakes.rs"]
mod fakes;
#[path = "api_handlers/harness.rs"]
mod harness;
#[path = "api_handlers/query.rs"]
mod query;
#[path = "api_handlers/tags.rs"]
mod tags;
#[path = "api_handlers/tour.rs"]
mod tour;
#[path = "api_handlers/vectors.rs"]
mod vectors;
