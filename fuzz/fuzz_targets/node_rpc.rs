//! Arbitrary bytes as a request stream on a node's QUIC port: the postcard envelope and every
//! `NodeRequest` (filters, vectors, metadata, ids), answered by the server's `respond` over the
//! handler tests' in-memory node.
//!
//! Oracles: no panic; whatever the bytes, the answer is a well-formed response envelope.

#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use quiver_fuzz::fakes::FakeNode;
use quiver_fuzz::runtime;
use quiver_net::tls::{Role, Roles};
use quiver_proto::NodeResponse;

/// Requests before the node is replaced (writes make its state grow).
const REBUILD_EVERY: u32 = 5_000;

static NODE: Mutex<Option<(Arc<FakeNode>, u32)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let node = {
        let mut node = NODE.lock().unwrap_or_else(|e| e.into_inner());
        if node.as_ref().is_none_or(|(_, n)| *n >= REBUILD_EVERY) {
            *node = Some((Arc::new(FakeNode::default()), 0));
        }
        let Some((node, count)) = node.as_mut() else {
            return;
        };
        *count += 1;
        node.clone()
    };
    let roles = Roles::of(&[Role::Coordinator]);
    let answer = runtime()
        .block_on(quiver_net::server::respond(node, data, roles))
        .expect("an answer is always encodable");
    quiver_proto::decode::<NodeResponse>(&answer).expect("the answer decodes");
});
