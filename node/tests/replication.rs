//! Replicated shards in-process: three node services on one in-process transport, each shard a
//! Raft group of three replicas (one per node).
//!
//! * openraft's storage test suite against the node's shared log and the shard state machine;
//! * a write is acknowledged by the leader only, reads on a follower are redirected, and every
//!   replica ends with identical contents (digests);
//! * a retried write (same request id) applies once;
//! * the leader's node stops: the others elect a leader and take writes; the node comes back and
//!   catches up from the log;
//! * a node that was away while the leader purged its log catches up from a snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use parking_lot::RwLock;
use quiver_net::local::LocalTransport;
use quiver_net::tls::{Role, Roles};
use quiver_net::{rpc, Transport};
use quiver_node::replication::log::{LogEngine, ShardLog};
use quiver_node::replication::machine::{MachinePaths, ShardMachine};
use quiver_node::replication::{ReplicationConfig, ShardTypeConfig};
use quiver_node::service::{NodeIdentity, NodeLimits, NodeService};
use quiver_node::shard::{Shard, ShardConfig};
use quiver_proto::{
    DistanceMetric, HashRange, IndexUid, Metadata, NodeError, NodeRequest, NodeResponse, ReplicaId,
    ReplicaStatus, ShardId, ShardMember, ShardSpec, VectorRecord, WriteOp,
};

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const CALL: Duration = Duration::from_secs(10);

fn shard_id() -> ShardId {
    ShardId {
        index: IndexUid(77),
        shard: 0,
    }
}

fn spec() -> ShardSpec {
    ShardSpec {
        id: shard_id(),
        dimension: 4,
        metric: DistanceMetric::Euclidean,
        non_filterable_keys: Vec::new(),
        range: HashRange::FULL,
        replicas: NODES
            .iter()
            .zip(1u64..)
            .map(|(node, id)| ShardMember {
                replica: ReplicaId(id),
                node: (*node).into(),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// openraft's storage suite
// ---------------------------------------------------------------------------------------------

struct Builder;

impl StoreBuilder<ShardTypeConfig, ShardLog, ShardMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, ShardLog, ShardMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = LogEngine::open(&dir.path().join("raft-log.redb")).expect("log");
        let shard =
            Shard::open(&dir.path().join("shard"), spec(), ShardConfig::default()).expect("shard");
        let machine = ShardMachine::new(
            Arc::new(RwLock::new(shard)),
            MachinePaths {
                snapshots: dir.path().join("snapshots"),
                incoming: dir.path().join("incoming"),
                trash_root: dir.path().join("trash"),
            },
            Arc::default(),
            Arc::new(|| {}),
        )?;
        Ok((dir, engine.replica(1), machine))
    }
}

#[test]
fn openraft_storage_suite_passes_on_the_shard_log_and_machine() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

// ---------------------------------------------------------------------------------------------
// Three nodes in one process
// ---------------------------------------------------------------------------------------------

struct Cluster {
    transport: Arc<LocalTransport>,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Arc<NodeService>>>,
    replication: ReplicationConfig,
}

fn fast_replication(snapshot_every: u64) -> ReplicationConfig {
    ReplicationConfig {
        heartbeat_ms: 100,
        election_timeout_min_ms: 400,
        election_timeout_max_ms: 800,
        snapshot_every,
    }
}

impl Cluster {
    async fn start(replication: ReplicationConfig) -> Cluster {
        let transport = LocalTransport::new(Roles::of(&[Role::Coordinator, Role::Node]));
        let mut cluster = Cluster {
            transport,
            dirs: NODES
                .iter()
                .map(|_| tempfile::tempdir().expect("tempdir"))
                .collect(),
            nodes: vec![None, None, None],
            replication,
        };
        for i in 0..NODES.len() {
            cluster.start_node(i).await;
        }
        cluster
    }

    async fn start_node(&mut self, i: usize) {
        let service = NodeService::start(
            self.dirs[i].path(),
            NodeIdentity {
                node_id: NODES[i].into(),
                transport: self.transport.clone() as Arc<dyn Transport>,
                replication: self.replication.clone(),
            },
            ShardConfig::default(),
            NodeLimits::default(),
        )
        .await
        .expect("node starts");
        // On this transport a node's address is its id.
        service.set_directory(NODES.iter().map(|n| ((*n).into(), (*n).into())).collect());
        self.transport.serve(NODES[i], service.clone());
        self.nodes[i] = Some(service);
    }

    async fn stop_node(&mut self, i: usize) {
        self.transport.remove(NODES[i]);
        if let Some(service) = self.nodes[i].take() {
            service.shutdown().await;
        }
    }

    async fn call(&self, i: usize, request: NodeRequest) -> NodeResponse {
        rpc(&*self.transport, NODES[i], "test", CALL, request)
            .await
            .expect("transport")
    }

    /// Sends `request` to every running node until one answers other than `NotLeader` /
    /// `ShardUnavailable`; returns that node and its answer.
    async fn call_leader(&self, request: NodeRequest) -> (usize, NodeResponse) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for i in 0..NODES.len() {
                if self.nodes[i].is_none() {
                    continue;
                }
                let response = self.call(i, request.clone()).await;
                match &response {
                    NodeResponse::Error(
                        NodeError::NotLeader { .. } | NodeError::ShardUnavailable(_),
                    ) => {}
                    _ => return (i, response),
                }
            }
            assert!(Instant::now() < deadline, "no leader answered {request:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn states(&self) -> Vec<ReplicaStatus> {
        let mut states = Vec::new();
        for node in self.nodes.iter().flatten() {
            states.push(
                node.replica_status(shard_id(), true)
                    .await
                    .expect("replica"),
            );
        }
        states
    }

    /// Waits until every running replica applied the same entries and holds the same records.
    async fn converged(&self) -> Vec<ReplicaStatus> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let states = self.states().await;
            let first = &states[0];
            if first.applied.is_some()
                && states
                    .iter()
                    .all(|s| s.applied == first.applied && s.digest == first.digest)
            {
                return states;
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn put(key: &str, x: f32) -> WriteOp {
    WriteOp::Put {
        key: key.into(),
        vector: vec![x, 1.0, 2.0, 3.0],
        metadata: Metadata::default(),
    }
}

fn write(request_id: u128, ops: Vec<WriteOp>) -> NodeRequest {
    NodeRequest::Write {
        shard: shard_id(),
        request_id,
        ops,
    }
}

fn get(keys: &[&str]) -> NodeRequest {
    NodeRequest::Get {
        shard: shard_id(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        return_data: true,
        return_metadata: false,
    }
}

async fn create(cluster: &Cluster) {
    for i in 0..NODES.len() {
        let response = cluster.call(i, NodeRequest::CreateShard(spec())).await;
        assert_eq!(response, NodeResponse::Done);
    }
}

fn keys_of(response: &NodeResponse) -> Vec<String> {
    match response {
        NodeResponse::Vectors(records) => records
            .iter()
            .map(|r: &VectorRecord| r.key.clone())
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_replicate_to_every_replica_and_only_the_leader_serves() {
    let cluster = Cluster::start(fast_replication(1_000)).await;
    create(&cluster).await;
    let (leader, answer) = cluster
        .call_leader(write(1, vec![put("a", 1.0), put("b", 2.0)]))
        .await;
    assert!(matches!(answer, NodeResponse::Written { .. }), "{answer:?}");
    // The bootstrap replica (the smallest id, on node-1) started the group and leads it.
    assert_eq!(leader, 0);
    for i in 1..3 {
        let answer = cluster.call(i, get(&["a"])).await;
        assert!(
            matches!(&answer, NodeResponse::Error(NodeError::NotLeader { leader: Some(l), .. }) if l == "node-1"),
            "a follower redirects reads to the leader: {answer:?}"
        );
        let answer = cluster.call(i, write(9, vec![put("z", 0.0)])).await;
        assert!(
            matches!(answer, NodeResponse::Error(NodeError::NotLeader { .. })),
            "and writes: {answer:?}"
        );
    }
    // A retry of request 1 (its answer was lost, say) answers the first result; it does not
    // apply again over the newer write of "a".
    let (_, newer) = cluster.call_leader(write(2, vec![put("a", 5.0)])).await;
    let (_, retried) = cluster
        .call_leader(write(1, vec![put("a", 1.0), put("b", 2.0)]))
        .await;
    assert!(
        matches!(newer, NodeResponse::Written { seq: 2 }),
        "{newer:?}"
    );
    assert!(
        matches!(retried, NodeResponse::Written { seq: 1 }),
        "{retried:?}"
    );
    let (_, read) = cluster.call_leader(get(&["a", "b"])).await;
    match read {
        NodeResponse::Vectors(records) => {
            let a = records.iter().find(|r| r.key == "a").expect("a");
            assert_eq!(a.vector.as_deref(), Some(&[5.0, 1.0, 2.0, 3.0][..]));
        }
        other => panic!("{other:?}"),
    }
    let states = cluster.converged().await;
    assert!(states.iter().all(|s| s.vectors == 2), "{states:?}");
    assert_eq!(
        states.iter().filter(|s| s.is_leader).count(),
        1,
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_leader_is_replaced_and_catches_up_when_it_returns() {
    let mut cluster = Cluster::start(fast_replication(1_000)).await;
    create(&cluster).await;
    let (leader, _) = cluster.call_leader(write(1, vec![put("k0", 0.0)])).await;
    cluster.stop_node(leader).await;
    let stopped_at = Instant::now();
    let (new_leader, answer) = cluster.call_leader(write(2, vec![put("k1", 1.0)])).await;
    assert!(matches!(answer, NodeResponse::Written { .. }), "{answer:?}");
    assert_ne!(new_leader, leader);
    println!(
        "writes resumed {:?} after the leader stopped",
        stopped_at.elapsed()
    );
    for n in 2..20u128 {
        let (_, answer) = cluster
            .call_leader(write(n + 1, vec![put(&format!("k{n}"), n as f32)]))
            .await;
        assert!(matches!(answer, NodeResponse::Written { .. }), "{answer:?}");
    }
    cluster.start_node(leader).await;
    let states = cluster.converged().await;
    assert!(states.iter().all(|s| s.vectors == 20), "{states:?}");
    let keys: Vec<String> = (0..20).map(|n| format!("k{n}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (_, read) = cluster.call_leader(get(&refs)).await;
    assert_eq!(keys_of(&read).len(), 20);
}

/// A snapshot built from one replica's machine, streamed into another's (as openraft's chunked
/// transfer does), replaces the receiver's contents: same records, same ids, same digest, and the
/// receiver's applied state is the snapshot's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_moves_a_shard_to_another_replica() {
    use openraft::storage::RaftStateMachine;
    use openraft::{RaftSnapshotBuilder, StoredMembership};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let machine = |name: &str, shard: Arc<RwLock<Shard>>| {
        ShardMachine::new(
            shard,
            MachinePaths {
                snapshots: dir.path().join(name).join("snapshots"),
                incoming: dir.path().join(name).join("incoming"),
                trash_root: dir.path().join(name).join("trash"),
            },
            Arc::default(),
            Arc::new(|| {}),
        )
        .expect("machine")
    };
    let open = |name: &str| {
        Arc::new(RwLock::new(
            Shard::open(
                &dir.path().join(name).join("shard"),
                spec(),
                ShardConfig::default(),
            )
            .expect("shard"),
        ))
    };
    let source = open("source");
    let mut sender = machine("source", source.clone());
    // Apply 30 entries of two puts each (and a delete) through the machine.
    let entries: Vec<_> = (1..=30u64)
        .map(|n| {
            let mut ops = vec![put(&format!("k{n}"), n as f32), put("same", n as f32)];
            if n == 30 {
                ops.push(WriteOp::Delete { key: "k7".into() });
            }
            openraft::Entry::<ShardTypeConfig> {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), n),
                payload: openraft::EntryPayload::Normal(quiver_node::replication::ShardCommand {
                    request_id: u128::from(n),
                    ops,
                }),
            }
        })
        .collect();
    sender.apply(entries).await.expect("apply");
    let mut builder = sender.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.expect("snapshot");
    assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(30));

    let target = open("target");
    target
        .write()
        .apply(vec![put("stale", 9.0)])
        .expect("a record the snapshot replaces");
    let mut receiver = machine("target", target.clone());
    let mut incoming = receiver
        .begin_receiving_snapshot()
        .await
        .expect("receiving");
    let mut data = Vec::new();
    let mut file = snapshot.snapshot;
    file.read_to_end(&mut data).await.expect("read snapshot");
    // Chunks, as the transport delivers them.
    for chunk in data.chunks(1000) {
        incoming.write_all(chunk).await.expect("chunk");
    }
    receiver
        .install_snapshot(&snapshot.meta, incoming)
        .await
        .expect("install");
    let (applied, membership) = receiver.applied_state().await.expect("state");
    assert_eq!(applied.map(|id| id.index), Some(30));
    assert_eq!(membership, StoredMembership::default());
    {
        let (source, target) = (source.read(), target.read());
        assert_eq!(target.len(), 30, "30 keys, one deleted, plus `same`");
        assert_eq!(source.digest(), target.digest());
        assert!(target.get(&["stale".into()], false, false).is_empty());
        assert_eq!(target.applied_request(30), source.applied_request(30));
    }
    assert!(receiver
        .get_current_snapshot()
        .await
        .expect("current")
        .is_some());
}
