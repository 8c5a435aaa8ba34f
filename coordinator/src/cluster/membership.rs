//! Membership of the coordinators' Raft group (add or remove a voter, on the leader) and the
//! status view `quiver admin status` prints.

use std::collections::BTreeSet;

use openraft::ChangeMembers;

use super::peer::{ClusterStatus, CoordinatorStatus, NodeStatus, PeerResponse, ShardStatus};
use super::types::CoordinatorNode;
use quiver_net::rpc;
use quiver_proto::{NodeRequest, NodeResponse};

/// How long `status` waits for each node's replica report.
const NODE_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use super::ControlPlane;

impl ControlPlane {
    /// Changes the voters on the leader; a new voter (`learner` given) first catches up as a
    /// learner.
    pub(super) async fn change_voters(
        &self,
        learner: Option<CoordinatorNode>,
        change: ChangeMembers<u64, CoordinatorNode>,
    ) -> PeerResponse {
        if !self.is_leader() {
            return PeerResponse::NotLeader {
                leader: self.leader_addr(),
            };
        }
        if let (Some(node), ChangeMembers::AddVoterIds(ids)) = (learner, &change) {
            for id in ids {
                if let Err(e) = self.raft.add_learner(*id, node.clone(), true).await {
                    return PeerResponse::Failed(e.to_string());
                }
            }
        }
        match self.raft.change_membership(change, false).await {
            Ok(_) => PeerResponse::Done,
            Err(e) => PeerResponse::Failed(e.to_string()),
        }
    }

    /// The operator's view: Raft roles, nodes with liveness, shards with their replicas, and
    /// each replica's Raft state as its node reports it (asked of every node that is up).
    pub async fn status(&self, digests: bool) -> ClusterStatus {
        let mut status = self.catalog_status();
        let up: Vec<String> = status
            .nodes
            .iter()
            .filter(|node| node.up)
            .map(|node| node.addr.clone())
            .collect();
        let answers = futures::future::join_all(up.iter().map(|addr| {
            rpc::<NodeRequest, NodeResponse>(
                &*self.transport,
                addr,
                "status",
                NODE_STATUS_TIMEOUT,
                NodeRequest::Replicas { digests },
            )
        }))
        .await;
        for (addr, answer) in up.iter().zip(answers) {
            match answer {
                Ok(NodeResponse::Replicas(replicas)) => status.replicas.extend(replicas),
                Ok(other) => tracing::warn!(node = %addr, ?other, "unexpected status answer"),
                Err(error) => {
                    tracing::warn!(node = %addr, %error, "node did not report its replicas")
                }
            }
        }
        status.replicas.sort_by_key(|r| (r.shard, r.replica));
        status
    }

    fn catalog_status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let voters: BTreeSet<u64> = metrics.membership_config.voter_ids().collect();
        let coordinators = metrics
            .membership_config
            .nodes()
            .map(|(id, node)| CoordinatorStatus {
                id: *id,
                cluster_addr: node.cluster_addr.clone(),
                http_addr: node.http_addr.clone(),
                role: if metrics.current_leader == Some(*id) {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                }
                .into(),
            })
            .collect();
        let state = self.state.read();
        let counts = state.shard_counts();
        let nodes = state
            .nodes()
            .map(|node| NodeStatus {
                id: node.id.clone(),
                addr: node.addr.clone(),
                up: node.up,
                shards: counts.get(&node.id).copied().unwrap_or(0),
            })
            .collect();
        let shards = state
            .all_indexes()
            .flat_map(|index| {
                index.shards.iter().map(move |placement| ShardStatus {
                    bucket: index.bucket.clone(),
                    index: index.name.clone(),
                    shard: placement.shard,
                    replicas: placement
                        .replicas
                        .iter()
                        .map(|replica| replica.node.clone())
                        .collect(),
                })
            })
            .collect();
        ClusterStatus {
            id: self.id,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_applied: metrics.last_applied.map(|id| id.index),
            last_log_index: metrics.last_log_index,
            coordinators,
            nodes,
            shards,
            replicas: Vec::new(),
        }
    }
}
