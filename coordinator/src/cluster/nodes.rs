//! Storage nodes as the leader sees them: heartbeats register a node (or mark it up) and answer
//! with its assignments; the liveness loop marks silent nodes down. Liveness is committed only
//! when it changes, so the log does not grow with heartbeats.

use std::sync::Arc;
use std::time::Instant;

use quiver_net::check_peer_addr;
use quiver_proto::{valid_node_id, ControlResponse, NodeError, NodeHello};
use tokio_util::sync::CancellationToken;

use super::types::Proposal;
use super::{ControlPlane, LIVENESS_TICK};
use crate::catalog::CatalogCommand;

impl ControlPlane {
    /// A node's heartbeat, answered by the leader: registers the node or marks it up when
    /// needed, then returns its assignments read linearizably.
    pub(super) async fn heartbeat(&self, hello: NodeHello) -> ControlResponse {
        use subtle::ConstantTimeEq;
        if !bool::from(
            hello
                .join_token
                .as_bytes()
                .ct_eq(self.join_token.as_bytes()),
        ) {
            tracing::warn!(node = %hello.node_id, "heartbeat with a wrong join token");
            return ControlResponse::Unauthorized;
        }
        if !valid_node_id(&hello.node_id) || check_peer_addr(&hello.addr).is_err() {
            return ControlResponse::Rejected(NodeError::InvalidRequest(
                "node id must be 1-64 characters [A-Za-z0-9._-] and addr host:port".into(),
            ));
        }
        if !self.is_leader() {
            return ControlResponse::NotLeader {
                leader: self.leader_addr(),
            };
        }
        self.last_seen
            .lock()
            .insert(hello.node_id.clone(), Instant::now());
        // Registering (new node or new address) also marks the node up.
        let change = match self.state.read().node(&hello.node_id) {
            Some(node)
                if node.addr == hello.addr && node.incarnation == hello.incarnation && node.up =>
            {
                None
            }
            Some(node) if node.addr == hello.addr && node.incarnation == hello.incarnation => {
                Some(CatalogCommand::SetNodeUp {
                    id: hello.node_id.clone(),
                    up: true,
                })
            }
            known => {
                if known.is_some_and(|node| node.incarnation != hello.incarnation) {
                    // Its replicas are not assigned to it any more (`CatalogState::assignments`).
                    tracing::warn!(node = %hello.node_id, "node came back with a new incarnation: it lost its data directory, and with it the shard replicas it held");
                }
                Some(CatalogCommand::RegisterNode {
                    id: hello.node_id.clone(),
                    addr: hello.addr.clone(),
                    incarnation: hello.incarnation,
                })
            }
        };
        if let Some(command) = change {
            tracing::info!(node = %hello.node_id, addr = %hello.addr, "node is up");
            if let Err(error) = self.raft.client_write(Proposal::once(command)).await {
                return ControlResponse::Unavailable(error.to_string());
            }
        }
        if self.state.read().cluster_id().is_none() {
            // Named once, when the first node joins; every later answer carries the same id.
            let name = CatalogCommand::SetClusterId(uuid::Uuid::new_v4().as_u128());
            if let Err(error) = self.raft.client_write(Proposal::once(name)).await {
                return ControlResponse::Unavailable(error.to_string());
            }
        }
        if let Err(error) = self.raft.ensure_linearizable().await {
            return ControlResponse::Unavailable(error.to_string());
        }
        let state = self.state.read();
        let Some(cluster_id) = state.cluster_id() else {
            return ControlResponse::Unavailable("the cluster has no id yet".into());
        };
        ControlResponse::Assignments {
            cluster_id,
            shards: state.assignments(&hello.node_id),
            nodes: state.node_directory(),
        }
    }

    /// While this coordinator leads, marks down the nodes that stopped heartbeating. A new
    /// leader gives every node a full timeout from the moment it took over.
    pub async fn run_liveness(self: Arc<Self>, shutdown: CancellationToken) {
        let mut leading_since: Option<(u64, Instant)> = None;
        let mut ticker = tokio::time::interval(LIVENESS_TICK);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let term = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                (metrics.current_leader == Some(self.id)).then_some(metrics.current_term)
            };
            let Some(term) = term else {
                leading_since = None;
                continue;
            };
            let since = match leading_since {
                Some((t, since)) if t == term => since,
                _ => {
                    let now = Instant::now();
                    leading_since = Some((term, now));
                    now
                }
            };
            let silent: Vec<String> = {
                let seen = self.last_seen.lock();
                let state = self.state.read();
                state
                    .nodes()
                    .filter(|node| node.up)
                    .filter(|node| {
                        let last = seen.get(&node.id).copied().unwrap_or(since).max(since);
                        last.elapsed() > self.node_timeout
                    })
                    .map(|node| node.id.clone())
                    .collect()
            };
            for id in silent {
                tracing::warn!(node = %id, "node missed its heartbeats; marking it down");
                if let Err(error) = self
                    .raft
                    .client_write(Proposal::once(CatalogCommand::SetNodeUp { id, up: false }))
                    .await
                {
                    tracing::warn!(%error, "could not mark the node down");
                }
            }
        }
    }
}
