//! The control plane: a Raft group of coordinators (openraft) whose state machine is the
//! [`CatalogState`]: buckets, indexes, policies, tags, storage nodes and the shard map.
//!
//! - [`types`]: the openraft type configuration.
//! - [`store`]: log, vote and snapshots in redb (fsync before an append is reported durable);
//!   the in-memory state machine.
//! - [`network`]: Raft RPCs over QUIC (mutual TLS).
//! - [`peer`]: coordinator-to-coordinator messages (Raft, forwarded writes, read index, admin).
//!
//! [`ControlPlane`] ties them together. It implements [`Catalog`] for the API (writes go to the
//! leader, forwarded if need be; reads come from the local state, with a linearizable barrier
//! on demand) and [`RpcService`] for the coordinator's QUIC endpoint (Raft traffic from other
//! coordinators, heartbeats from nodes). The leader tracks node heartbeats and commits a node's
//! liveness when it changes.

pub mod network;
pub mod peer;
pub mod store;
pub mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use quiver_net::server::RpcService;
use quiver_net::tls::{Role, Roles};
use quiver_net::{check_peer_addr, Transport};
use quiver_proto::{valid_node_id, ControlRequest, ControlResponse, NodeError, NodeHello};
use tokio_util::sync::CancellationToken;

use self::network::{call, Network, PeerError};
use self::peer::{
    ClusterStatus, CoordinatorStatus, NodeStatus, PeerRequest, PeerResponse, ShardStatus,
};
use self::types::{CoordinatorNode, Proposal, Raft};
use crate::catalog::{Catalog, CatalogCommand, CatalogError, CatalogState};

/// How long a control-plane write may look for a leader before it fails with 503.
pub const EXECUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one forwarded request to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a coordinator waits to apply what the leader committed for it.
const APPLY_WAIT: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often the leader checks for silent nodes.
const LIVENESS_TICK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken every this many log entries, and as many entries before it are kept
    /// for followers that lag a little; one that lags more catches up from the snapshot.
    pub snapshot_every: u64,
}

impl RaftTimings {
    pub const DEFAULT: RaftTimings = RaftTimings {
        heartbeat_ms: 250,
        election_timeout_min_ms: 1_000,
        election_timeout_max_ms: 2_000,
        snapshot_every: 1_000,
    };
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings::DEFAULT
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening {path}: {source}")]
    Storage {
        path: String,
        source: store::OpenError,
    },
    #[error("raft storage: {0}")]
    Raft(String),
    #[error("invalid raft settings: {0}")]
    Config(String),
}

pub struct ControlPlane {
    id: u64,
    raft: Raft,
    state: Arc<RwLock<CatalogState>>,
    transport: Arc<dyn Transport>,
    join_token: String,
    node_timeout: Duration,
    /// Last heartbeat of each node, as seen by this coordinator while it leads.
    last_seen: Mutex<HashMap<String, Instant>>,
}

fn unavailable(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Unavailable(e.to_string())
}

impl ControlPlane {
    /// Opens this coordinator's Raft storage under `data_dir` and starts its Raft node.
    pub async fn start(
        id: u64,
        data_dir: &Path,
        timings: &RaftTimings,
        transport: Arc<dyn Transport>,
        join_token: String,
        node_timeout: Duration,
    ) -> Result<Arc<Self>, StartError> {
        let path = data_dir.join("raft.redb");
        let db = store::open(&path).map_err(|source| StartError::Storage {
            path: path.display().to_string(),
            source,
        })?;
        let state = Arc::new(RwLock::new(CatalogState::default()));
        let machine = store::StateMachine::open(db.clone(), state.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let config = openraft::Config {
            cluster_name: "quiver".into(),
            heartbeat_interval: timings.heartbeat_ms,
            election_timeout_min: timings.election_timeout_min_ms,
            election_timeout_max: timings.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(timings.snapshot_every),
            max_in_snapshot_log_to_keep: timings.snapshot_every,
            // One chunk carries a whole catalog snapshot in practice.
            snapshot_max_chunk_size: 16 * 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let network = Network {
            transport: transport.clone(),
        };
        let raft = Raft::new(
            id,
            Arc::new(config),
            network,
            store::LogStore::new(db),
            machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        Ok(Arc::new(ControlPlane {
            id,
            raft,
            state,
            transport,
            join_token,
            node_timeout,
            last_seen: Mutex::new(HashMap::new()),
        }))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Forms the group from `members` on first start. On a coordinator that already has a log
    /// (a restart), or once another member formed the group, this does nothing.
    pub async fn bootstrap(
        &self,
        members: BTreeMap<u64, CoordinatorNode>,
    ) -> Result<(), StartError> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?
        {
            return Ok(());
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another member's vote or log reached us first: the group exists.
            Err(RaftError::APIError(error)) => {
                tracing::info!(%error, "raft group already initialized");
                Ok(())
            }
            Err(RaftError::Fatal(error)) => Err(StartError::Raft(error.to_string())),
        }
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// The cluster address of the current leader, if known.
    fn leader_addr(&self) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, node)| node.cluster_addr.clone());
        addr
    }

    async fn wait_applied(&self, index: u64) -> Result<(), CatalogError> {
        self.raft
            .wait(Some(APPLY_WAIT))
            .applied_index_at_least(Some(index), "read after write")
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Runs `command` through Raft, forwarding it to the leader when this coordinator does not
    /// lead, and retrying while there is no leader (an election) up to [`EXECUTE_TIMEOUT`].
    async fn execute_command(
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
                        match call(
                            &*self.transport,
                            &leader.cluster_addr,
                            request_id,
                            FORWARD_TIMEOUT,
                            &request,
                        )
                        .await
                        {
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

    async fn read_barrier(&self) -> Result<(), CatalogError> {
        let deadline = Instant::now() + EXECUTE_TIMEOUT;
        loop {
            match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(error) => {
                    if let Some(leader) = error
                        .forward_to_leader()
                        .and_then(|f| f.leader_node.clone())
                    {
                        match call(
                            &*self.transport,
                            &leader.cluster_addr,
                            "read-index",
                            FORWARD_TIMEOUT,
                            &PeerRequest::ReadIndex,
                        )
                        .await
                        {
                            Ok(PeerResponse::ReadIndex(index)) => {
                                return self.wait_applied(index).await
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
            PeerRequest::Status => PeerResponse::Status(self.status()),
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

    /// Changes the voters on the leader; a new voter (`learner` given) first catches up as a
    /// learner.
    async fn change_voters(
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

    /// A node's heartbeat, answered by the leader: registers the node or marks it up when
    /// needed, then returns its assignments read linearizably.
    async fn heartbeat(&self, hello: NodeHello) -> ControlResponse {
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
            Some(node) if node.addr == hello.addr && node.up => None,
            Some(node) if node.addr == hello.addr => Some(CatalogCommand::SetNodeUp {
                id: hello.node_id.clone(),
                up: true,
            }),
            _ => Some(CatalogCommand::RegisterNode {
                id: hello.node_id.clone(),
                addr: hello.addr.clone(),
            }),
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

    /// The operator's view: Raft roles, nodes with liveness, shards with their node.
    pub fn status(&self) -> ClusterStatus {
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
                    node: placement.serving_node().unwrap_or_default().to_owned(),
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
        }
    }

    /// Whether this coordinator knows a Raft leader (it can read and forward writes).
    pub fn has_leader(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.current_leader.is_some() && metrics.state != ServerState::Shutdown
    }

    /// Whether this coordinator can serve every operation, a CreateIndex included: it knows a
    /// leader and at least one storage node is up to take shards. `/ready` answers this.
    pub fn ready(&self) -> bool {
        self.has_leader() && self.state.read().nodes().any(|node| node.up)
    }

    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
    }
}

impl Catalog for ControlPlane {
    fn execute<'a>(
        &'a self,
        request_id: &'a str,
        command: CatalogCommand,
    ) -> BoxFuture<'a, Result<(), CatalogError>> {
        Box::pin(self.execute_command(request_id, command))
    }

    fn state(&self) -> parking_lot::RwLockReadGuard<'_, CatalogState> {
        self.state.read()
    }

    fn sync(&self) -> BoxFuture<'_, Result<(), CatalogError>> {
        Box::pin(self.read_barrier())
    }
}

/// `/ready` and the Raft and catalog gauges of `/metrics`.
impl crate::api::ClusterView for ControlPlane {
    fn ready(&self) -> bool {
        ControlPlane::ready(self)
    }

    fn render_metrics(&self, metrics: &crate::metrics::Metrics) -> String {
        metrics.render(self)
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
