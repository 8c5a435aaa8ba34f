//! Writes and linearizable reads through the leader: a coordinator that does not lead forwards
//! a proposal (or asks for a read index) to the leader it knows, then waits until it has
//! applied the leader's index itself, so a client sees its own writes through any coordinator.

use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};

use super::network::{call, PeerError};
use super::peer::{PeerRequest, PeerResponse};
use super::types::{CoordinatorNode, Proposal};
use super::{unavailable, ControlPlane, EXECUTE_TIMEOUT, FORWARD_TIMEOUT, RETRY_PAUSE};
use crate::catalog::{CatalogCommand, CatalogError};

impl ControlPlane {
    /// One request to the leader, bounded by [`FORWARD_TIMEOUT`].
    async fn forward(
        &self,
        leader: &CoordinatorNode,
        request_id: &str,
        request: &PeerRequest,
    ) -> Result<PeerResponse, PeerError> {
        call(
            &*self.transport,
            &leader.cluster_addr,
            request_id,
            FORWARD_TIMEOUT,
            request,
        )
        .await
    }

    /// Runs `command` through Raft, forwarding it to the leader when this coordinator does not
    /// lead, and retrying while there is no leader (an election) up to [`EXECUTE_TIMEOUT`].
    pub(super) async fn execute_command(
        &self,
        request_id: &str,
        command: CatalogCommand,
    ) -> Result<(), CatalogError> {
        let deadline = Instant::now() + EXECUTE_TIMEOUT;
        // One id for every attempt: a retry of a proposal that did commit answers its result.
        let proposal = Proposal::retryable(command);
        loop {
            match self.raft.client_write(proposal.clone()).await {
                Ok(response) => return response.data,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    if let Some(leader) = forward.leader_node {
                        let request = PeerRequest::Execute(proposal.clone());
                        match self.forward(&leader, request_id, &request).await {
                            Ok(PeerResponse::Executed { result, index }) => {
                                // Read-your-writes on this coordinator too.
                                self.wait_applied(index).await?;
                                return result;
                            }
                            Ok(PeerResponse::NotLeader { .. }) => {}
                            Ok(PeerResponse::Failed(reason)) => return Err(unavailable(reason)),
                            Ok(other) => {
                                return Err(unavailable(format!("unexpected answer {other:?}")))
                            }
                            Err(error @ PeerError::Unreachable(..)) => {
                                tracing::debug!(%error, "leader unreachable, retrying");
                            }
                            Err(error @ PeerError::Remote(..)) => return Err(unavailable(error)),
                        }
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                    return Err(unavailable(error))
                }
                Err(RaftError::Fatal(error)) => return Err(unavailable(error)),
            }
            if Instant::now() >= deadline {
                return Err(unavailable("no control-plane leader could be reached"));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    pub(super) async fn read_barrier(&self) -> Result<(), CatalogError> {
        let deadline = Instant::now() + EXECUTE_TIMEOUT;
        loop {
            match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(error) => {
                    tracing::debug!(%error, "not the leader: asking the leader for a read index");
                    if let Some(leader) = error
                        .forward_to_leader()
                        .and_then(|f| f.leader_node.clone())
                    {
                        match self
                            .forward(&leader, "read-index", &PeerRequest::ReadIndex)
                            .await
                        {
                            Ok(PeerResponse::ReadIndex(index)) => {
                                return self.wait_applied(index).await.inspect_err(|error| {
                                    tracing::debug!(index, %error, "did not apply the read index in time")
                                })
                            }
                            Ok(other) => tracing::debug!(?other, "read index refused, retrying"),
                            Err(error) => tracing::debug!(%error, "read index failed, retrying"),
                        }
                    } else if let RaftError::Fatal(error) = error {
                        return Err(unavailable(error));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(unavailable("no control-plane leader could be reached"));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
