//! Raft RPCs over the cluster's QUIC connections (mutual TLS), one stream per RPC.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::AnyError;
use quiver_net::{rpc, Transport};
use quiver_proto::{ControlRequest, ControlResponse};

use super::peer::{PeerRequest, PeerResponse};
use super::types::{CoordinatorNode, TypeConfig};

/// Upper bound on any one Raft RPC, whatever openraft asks for.
const MAX_RPC_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("peer {0} answered: {1}")]
    Remote(String, String),
}

/// Sends one peer request to `addr` and decodes the answer.
pub async fn call(
    transport: &dyn Transport,
    addr: &str,
    request_id: &str,
    timeout: Duration,
    request: &PeerRequest,
) -> Result<PeerResponse, PeerError> {
    let unreachable = |reason: String| PeerError::Unreachable(addr.to_owned(), reason);
    let remote = |reason: String| PeerError::Remote(addr.to_owned(), reason);
    let bytes = postcard::to_stdvec(request).map_err(|e| remote(e.to_string()))?;
    let response: ControlResponse = rpc(
        transport,
        addr,
        request_id,
        timeout,
        ControlRequest::Peer(bytes),
    )
    .await
    .map_err(|e| unreachable(e.to_string()))?;
    match response {
        ControlResponse::Peer(bytes) => {
            postcard::from_bytes(&bytes).map_err(|e| remote(e.to_string()))
        }
        other => Err(remote(format!("unexpected answer {other:?}"))),
    }
}

pub struct Network {
    pub transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, _target: u64, node: &CoordinatorNode) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            addr: node.cluster_addr.clone(),
        }
    }
}

pub struct PeerClient {
    transport: Arc<dyn Transport>,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, CoordinatorNode, RaftError<u64, E>>>;

impl PeerClient {
    async fn send<E: std::error::Error>(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<u64, CoordinatorNode, RaftError<u64, E>>> {
        let timeout = option.hard_ttl().min(MAX_RPC_TIMEOUT);
        match call(&*self.transport, &self.addr, "raft", timeout, &request).await {
            Ok(PeerResponse::Failed(reason)) => Err(RPCError::Network(NetworkError::from(
                AnyError::error(reason),
            ))),
            Ok(response) => Ok(response),
            Err(error @ PeerError::Unreachable(..)) => {
                Err(RPCError::Unreachable(Unreachable::new(&error)))
            }
            Err(error @ PeerError::Remote(..)) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }

    fn unexpected<E: std::error::Error>(
        response: PeerResponse,
    ) -> RPCError<u64, CoordinatorNode, RaftError<u64, E>> {
        RPCError::Network(NetworkError::from(AnyError::error(format!(
            "unexpected answer {response:?}"
        ))))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self.send(PeerRequest::AppendEntries(rpc), &option).await? {
            PeerResponse::AppendEntries(response) => Ok(response),
            other => Err(Self::unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self
            .send(PeerRequest::InstallSnapshot(rpc), &option)
            .await?
        {
            PeerResponse::InstallSnapshot(response) => Ok(response),
            other => Err(Self::unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self.send(PeerRequest::Vote(rpc), &option).await? {
            PeerResponse::Vote(response) => Ok(response),
            other => Err(Self::unexpected(other)),
        }
    }
}
