//! Raft RPCs of shard groups between nodes: each travels as one
//! [`NodeRequest::ShardRaft`] over the node transport (QUIC, mutual TLS), addressed by shard and
//! replica id; the target node is found in the [`NodeDirectory`] the control plane keeps filled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::AnyError;
use parking_lot::RwLock;
use quiver_net::{rpc, Transport};
use quiver_proto::{NodeRequest, NodeResponse, ReplicaId, ShardId, MAX_FRAME_BYTES};

use super::{RaftRequest, RaftResponse, ShardNode, ShardTypeConfig};

/// Upper bound on any one Raft RPC, whatever openraft asks for.
const MAX_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// An AppendEntries larger than this is refused before sending (`PayloadTooLarge`), so the
/// leader sends fewer entries: the frame limit less room for the envelope.
const MAX_APPEND_BYTES: usize = MAX_FRAME_BYTES - 1024 * 1024;

/// Node id -> QUIC address of every node of the cluster, as the control plane last said.
#[derive(Default)]
pub struct NodeDirectory {
    addrs: RwLock<HashMap<String, String>>,
}

impl NodeDirectory {
    pub fn replace(&self, nodes: impl IntoIterator<Item = (String, String)>) {
        *self.addrs.write() = nodes.into_iter().collect();
    }

    pub fn addr(&self, node: &str) -> Option<String> {
        self.addrs.read().get(node).cloned()
    }
}

/// The network of one shard group.
pub struct ShardNetwork {
    pub transport: Arc<dyn Transport>,
    pub directory: Arc<NodeDirectory>,
    pub shard: ShardId,
}

impl RaftNetworkFactory<ShardTypeConfig> for ShardNetwork {
    type Network = ReplicaClient;

    async fn new_client(&mut self, target: u64, node: &ShardNode) -> ReplicaClient {
        ReplicaClient {
            transport: self.transport.clone(),
            directory: self.directory.clone(),
            shard: self.shard,
            target: ReplicaId(target),
            node: node.node.clone(),
        }
    }
}

pub struct ReplicaClient {
    transport: Arc<dyn Transport>,
    directory: Arc<NodeDirectory>,
    shard: ShardId,
    target: ReplicaId,
    node: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, ShardNode, RaftError<u64, E>>>;

fn network_error<E: std::error::Error>(
    message: impl std::fmt::Display,
) -> RPCError<u64, ShardNode, RaftError<u64, E>> {
    RPCError::Network(NetworkError::from(AnyError::error(message.to_string())))
}

impl ReplicaClient {
    async fn send<E: std::error::Error>(
        &self,
        request: &RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftResponse, RPCError<u64, ShardNode, RaftError<u64, E>>> {
        let unreachable = |message: String| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(message)))
        };
        let Some(addr) = self.directory.addr(&self.node) else {
            return Err(unreachable(format!(
                "node {} has no known address",
                self.node
            )));
        };
        let payload = postcard::to_stdvec(request).map_err(network_error)?;
        if let RaftRequest::AppendEntries(append) = request {
            if payload.len() > MAX_APPEND_BYTES && append.entries.len() > 1 {
                let fit = (append.entries.len() * MAX_APPEND_BYTES / payload.len()).max(1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(fit as u64),
                ));
            }
        }
        let timeout = option.hard_ttl().min(MAX_RPC_TIMEOUT);
        let response: NodeResponse = rpc(
            &*self.transport,
            &addr,
            request.kind(),
            timeout,
            NodeRequest::ShardRaft {
                shard: self.shard,
                to: self.target,
                payload,
            },
        )
        .await
        .map_err(|error| unreachable(error.to_string()))?;
        match response {
            NodeResponse::ShardRaft(bytes) => match postcard::from_bytes(&bytes) {
                Ok(RaftResponse::Failed(reason)) => Err(network_error(reason)),
                Ok(response) => Ok(response),
                Err(error) => Err(network_error(error)),
            },
            // The replica is not there (yet, or any more): back off like an unreachable peer.
            NodeResponse::Error(error) => Err(unreachable(error.to_string())),
            other => Err(network_error(format!("unexpected answer {other:?}"))),
        }
    }
}

impl RaftNetwork<ShardTypeConfig> for ReplicaClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ShardTypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self.send(&RaftRequest::AppendEntries(rpc), &option).await? {
            RaftResponse::AppendEntries(response) => Ok(response),
            other => Err(network_error(format!("unexpected answer {other:?}"))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<ShardTypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self
            .send(&RaftRequest::InstallSnapshot(rpc), &option)
            .await?
        {
            RaftResponse::InstallSnapshot(response) => Ok(response),
            other => Err(network_error(format!("unexpected answer {other:?}"))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self.send(&RaftRequest::Vote(rpc), &option).await? {
            RaftResponse::Vote(response) => Ok(response),
            other => Err(network_error(format!("unexpected answer {other:?}"))),
        }
    }
}

/// Serves one encoded [`RaftRequest`] on `raft` (the receiving side of [`ReplicaClient`]).
pub async fn serve(raft: &super::ShardRaft, payload: &[u8]) -> Vec<u8> {
    let response = match postcard::from_bytes::<RaftRequest>(payload) {
        Err(error) => RaftResponse::Failed(format!("undecodable raft request: {error}")),
        Ok(RaftRequest::AppendEntries(request)) => match raft.append_entries(request).await {
            Ok(response) => RaftResponse::AppendEntries(response),
            Err(error) => RaftResponse::Failed(error.to_string()),
        },
        Ok(RaftRequest::Vote(request)) => match raft.vote(request).await {
            Ok(response) => RaftResponse::Vote(response),
            Err(error) => RaftResponse::Failed(error.to_string()),
        },
        Ok(RaftRequest::InstallSnapshot(request)) => match raft.install_snapshot(request).await {
            Ok(response) => RaftResponse::InstallSnapshot(response),
            Err(error) => RaftResponse::Failed(error.to_string()),
        },
    };
    postcard::to_stdvec(&response).unwrap_or_default()
}
