//! What arrives on a coordinator's cluster port: Raft traffic and forwarded requests from other
//! coordinators, heartbeats from nodes, operator commands, each checked against the roles in
//! the caller's certificate.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use quiver_net::server::RpcService;
use quiver_net::tls::{Role, Roles};
use quiver_proto::{ControlRequest, ControlResponse, NodeError};

use super::peer::{PeerRequest, PeerResponse};
use super::ControlPlane;

impl ControlPlane {
    async fn handle_peer(&self, request: PeerRequest) -> PeerResponse {
        let failed = |e: &dyn std::fmt::Display| PeerResponse::Failed(e.to_string());
        match request {
            PeerRequest::AppendEntries(rpc) => match self.raft.append_entries(rpc).await {
                Ok(response) => PeerResponse::AppendEntries(response),
                Err(e) => failed(&e),
            },
            PeerRequest::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(response) => PeerResponse::Vote(response),
                Err(e) => failed(&e),
            },
            PeerRequest::InstallSnapshot(rpc) => match self.raft.install_snapshot(rpc).await {
                Ok(response) => PeerResponse::InstallSnapshot(response),
                Err(e) => failed(&e),
            },
            PeerRequest::Execute(proposal) => match self.raft.client_write(proposal).await {
                Ok(response) => PeerResponse::Executed {
                    result: response.data,
                    index: response.log_id.index,
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    PeerResponse::NotLeader {
                        leader: forward.leader_node.map(|n| n.cluster_addr),
                    }
                }
                Err(e) => failed(&e),
            },
            PeerRequest::ReadIndex => match self.raft.ensure_linearizable().await {
                Ok(read) => PeerResponse::ReadIndex(read.map(|id| id.index).unwrap_or(0)),
                Err(e) => match e.forward_to_leader() {
                    Some(forward) => PeerResponse::NotLeader {
                        leader: forward.leader_node.as_ref().map(|n| n.cluster_addr.clone()),
                    },
                    None => failed(&e),
                },
            },
            PeerRequest::Status { digests } => PeerResponse::Status(self.status(digests).await),
            PeerRequest::AddCoordinator { id, node } => {
                self.change_voters(Some(node), ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                    .await
            }
            PeerRequest::RemoveCoordinator { id } => {
                self.change_voters(None, ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                    .await
            }
        }
    }
}

impl RpcService for ControlPlane {
    type Request = ControlRequest;
    type Response = ControlResponse;

    fn kind(request: &ControlRequest) -> &'static str {
        request.kind()
    }

    fn reject(error: NodeError) -> ControlResponse {
        ControlResponse::Rejected(error)
    }

    fn is_error(response: &ControlResponse) -> bool {
        matches!(
            response,
            ControlResponse::Rejected(_)
                | ControlResponse::Unauthorized
                | ControlResponse::Unavailable(_)
        )
    }

    fn handle(
        self: Arc<Self>,
        request: ControlRequest,
        roles: Roles,
        deadline: Instant,
    ) -> BoxFuture<'static, ControlResponse> {
        Box::pin(async move {
            let work = async {
                match request {
                    ControlRequest::Heartbeat(_) if !roles.contains(Role::Node) => {
                        tracing::warn!("heartbeat from a certificate without the node role");
                        ControlResponse::Unauthorized
                    }
                    ControlRequest::Heartbeat(hello) => self.heartbeat(hello).await,
                    ControlRequest::Peer(bytes) => {
                        // Strict: a message must be exactly one PeerRequest.
                        let request: PeerRequest = match postcard::take_from_bytes(&bytes) {
                            Ok((request, [])) => request,
                            Ok((_, rest)) => {
                                return ControlResponse::Rejected(NodeError::Malformed(format!(
                                    "{} unexpected bytes after the message",
                                    rest.len()
                                )))
                            }
                            Err(e) => {
                                return ControlResponse::Rejected(NodeError::Malformed(
                                    e.to_string(),
                                ))
                            }
                        };
                        let span = tracing::debug_span!("peer", kind = request.kind());
                        let response = if request.allowed(roles) {
                            tracing::Instrument::instrument(self.handle_peer(request), span).await
                        } else {
                            tracing::warn!(
                                kind = request.kind(),
                                "peer request without the role it needs"
                            );
                            PeerResponse::Failed(format!(
                                "forbidden: the certificate does not grant the role {} needs",
                                request.kind()
                            ))
                        };
                        match postcard::to_stdvec(&response) {
                            Ok(bytes) => ControlResponse::Peer(bytes),
                            Err(e) => ControlResponse::Unavailable(e.to_string()),
                        }
                    }
                }
            };
            match tokio::time::timeout_at(deadline.into(), work).await {
                Ok(response) => response,
                Err(_) => ControlResponse::Rejected(NodeError::DeadlineExceeded),
            }
        })
    }
}
