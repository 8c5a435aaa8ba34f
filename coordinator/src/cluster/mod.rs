//! The control plane: a Raft group of coordinators (openraft) whose state machine is the
//! [`CatalogState`]: buckets, indexes, policies, tags, storage nodes and the shard map.
//!
//! - [`types`]: the openraft type configuration.
//! - [`store`]: log, vote and snapshots in redb (fsync before an append is reported durable);
//!   the in-memory state machine.
//! - [`network`]: Raft RPCs over QUIC (mutual TLS).
//! - [`peer`]: coordinator-to-coordinator messages (Raft, forwarded writes, read index, admin).
//!
//! [`ControlPlane`] ties them together, one file per role:
//! - `mod.rs`: starting the Raft node, the [`Catalog`] the API uses (writes go to the leader;
//!   reads come from the local state, with a linearizable barrier on demand), readiness;
//! - `forward`: proposals and read indexes forwarded to the leader;
//! - `inbound`: the [`RpcService`] of the coordinator's QUIC endpoint (Raft traffic and forwarded
//!   requests from other coordinators, heartbeats from nodes, admin commands);
//! - `nodes`: heartbeats and the leader's liveness loop (a node's liveness is committed when it
//!   changes);
//! - `membership`: adding and removing coordinators, and the status view.

mod forward;
mod inbound;
mod membership;
pub mod network;
mod nodes;
pub mod peer;
pub mod store;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::error::RaftError;
use openraft::{ServerState, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use quiver_net::Transport;

use self::network::Network;
use self::types::{CoordinatorNode, Raft};
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
