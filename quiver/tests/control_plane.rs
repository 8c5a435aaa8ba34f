//! A coordinator's cluster port: garbage, bad heartbeats and requests outside the caller's
//! certificate roles get typed refusals and change nothing; a node joins, is marked down when it stops heartbeating, and up again when it returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::node::{start_node, NodeSettings};
use quiver::process::{
    start_coordinator, ApiSettings, Bootstrap, Coordinator, CoordinatorSettings, FaultHook,
};
use quiver_coordinator::auth::AuthConfig;
use quiver_coordinator::catalog::{Catalog, CatalogCommand};
use quiver_coordinator::cluster::network::call;
use quiver_coordinator::cluster::peer::{PeerRequest, PeerResponse};
use quiver_coordinator::cluster::types::Proposal;
use quiver_coordinator::cluster::RaftTimings;
use quiver_coordinator::throttle::RateLimits;
use quiver_coordinator::tokens::TokenSigner;
use quiver_net::tls::{ClusterIdentity, GeneratedCa, Role, CLUSTER_SERVER_NAME};
use quiver_net::QuicTransport;
use quiver_proto::{
    decode, encode, ControlRequest, ControlResponse, Envelope, NodeError, NodeHello,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use tokio_util::sync::CancellationToken;

mod common;

const TOKEN: &str = "a-join-token-for-the-tests";
const CALL: Duration = Duration::from_secs(10);

fn identity(ca: &GeneratedCa, name: &str, roles: &[Role]) -> ClusterIdentity {
    let (cert, key) = ca.issue(name, &["127.0.0.1".into()], roles).expect("issue");
    ClusterIdentity::from_pem(ca.cert_pem.as_bytes(), cert.as_bytes(), key.as_bytes())
        .expect("identity")
}

async fn coordinator(
    dir: &std::path::Path,
    id: &ClusterIdentity,
    shutdown: &CancellationToken,
) -> Coordinator {
    let any_port = "127.0.0.1:0".parse().expect("addr");
    coordinator_with(1, any_port, Bootstrap::Solo, dir, id, shutdown).await
}

async fn coordinator_with(
    raft_id: u64,
    cluster_listen: SocketAddr,
    bootstrap: Bootstrap,
    dir: &std::path::Path,
    id: &ClusterIdentity,
    shutdown: &CancellationToken,
) -> Coordinator {
    let options = Options {
        raft: FAST_RAFT,
        faults: None,
    };
    coordinator_with_options(
        raft_id,
        cluster_listen,
        bootstrap,
        dir,
        id,
        shutdown,
        options,
    )
    .await
}

/// Short Raft timings so elections in tests take a fraction of a second.
const FAST_RAFT: RaftTimings = RaftTimings {
    heartbeat_ms: 50,
    election_timeout_min_ms: 150,
    election_timeout_max_ms: 300,
    snapshot_every: 10,
};

struct Options {
    raft: RaftTimings,
    /// Receives the coordinator's fault-injecting transport.
    faults: Option<FaultHook>,
}

async fn coordinator_with_options(
    raft_id: u64,
    cluster_listen: SocketAddr,
    bootstrap: Bootstrap,
    dir: &std::path::Path,
    id: &ClusterIdentity,
    shutdown: &CancellationToken,
    options: Options,
) -> Coordinator {
    start_coordinator(
        CoordinatorSettings {
            id: raft_id,
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            cluster_listen,
            advertise: None,
            data_dir: dir.to_owned(),
            join_token: TOKEN.into(),
            bootstrap,
            raft: options.raft,
            node_timeout: Duration::from_secs(1),
            faults: options.faults,
        },
        ApiSettings {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            auth: AuthConfig::dev("testkey", "testsecret"),
            shards_per_index: 2,
            replication_factor: 1,
            max_concurrent_requests: 8,
            max_http_connections: 0,
            limits: RateLimits {
                write_requests_per_second: 0,
                write_vectors_per_second: 0,
                read_requests_per_second: 0,
            },
            tokens: TokenSigner::from_shared_secret(TOKEN),
        },
        id,
        shutdown.clone(),
    )
    .await
    .expect("coordinator")
}

/// node-1 with its data in `data_dir`, heartbeating to `coordinator` every 100 ms.
fn node_settings(
    data_dir: &std::path::Path,
    listen: SocketAddr,
    coordinator: SocketAddr,
) -> NodeSettings {
    NodeSettings {
        id: "node-1".into(),
        listen,
        advertise: None,
        data_dir: data_dir.to_owned(),
        coordinators: vec![coordinator.to_string()],
        join_token: TOKEN.into(),
        heartbeat_interval: Duration::from_millis(100),
        shard: Default::default(),
        replication: Default::default(),
        http_listen: None,
    }
}

/// Waits until the stopped node's Raft log is closed (its last shard tasks finished), so a node
/// can start again on the same data directory in this process.
async fn node_released(data_dir: &std::path::Path) {
    let log = data_dir.join("raft-log.redb");
    wait_until(
        "the stopped node's raft log closed",
        Duration::from_secs(10),
        || redb::Database::create(&log).is_ok(),
    )
    .await;
}

async fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn raw_exchange(connection: &quinn::Connection, bytes: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(bytes).await.expect("write");
    send.finish().expect("finish");
    tokio::time::timeout(CALL, recv.read_to_end(MAX_FRAME_BYTES))
        .await
        .expect("answer in time")
        .expect("answer")
}

fn answer(bytes: &[u8]) -> ControlResponse {
    decode::<ControlResponse>(bytes)
        .expect("a decodable answer")
        .body
}

fn hello(node_id: &str, addr: &str, token: &str) -> ControlRequest {
    ControlRequest::Heartbeat(NodeHello {
        node_id: node_id.into(),
        addr: addr.into(),
        join_token: token.into(),
        incarnation: 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_bad_heartbeats_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let shutdown = CancellationToken::new();
    let c = coordinator(
        dir.path(),
        &identity(&ca, "coordinator-1", &[Role::Coordinator]),
        &shutdown,
    )
    .await;
    // A peer allowed everything, so that only the bytes decide the answers below.
    let id = identity(&ca, "probe", &Role::ALL);
    wait_until("a leader", Duration::from_secs(10), || {
        c.control.has_leader()
    })
    .await;

    let client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let connection = client
        .connect_with(
            id.quic_client_config().expect("config"),
            c.cluster_addr,
            CLUSTER_SERVER_NAME,
        )
        .expect("connect")
        .await
        .expect("handshake");
    let mut rng_state = 0x2545_f491_4f6c_dd1d_u64;
    for size in [0usize, 1, 3, 17, 100, 4096, 70_000] {
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state as u8
            })
            .collect();
        let reply = answer(&raw_exchange(&connection, &bytes).await);
        assert!(
            matches!(reply, ControlResponse::Rejected(_)),
            "{size} bytes: {reply:?}"
        );
        // The same bytes as an opaque peer message: refused after decoding the envelope.
        let peer = Envelope {
            version: PROTOCOL_VERSION,
            request_id: "garbage".into(),
            deadline_unix_ms: u64::MAX,
            body: ControlRequest::Peer(bytes),
        };
        let reply = answer(&raw_exchange(&connection, &encode(&peer).expect("encode")).await);
        assert!(
            matches!(reply, ControlResponse::Rejected(NodeError::Malformed(_))),
            "peer garbage of {size} bytes: {reply:?}"
        );
    }

    let transport = QuicTransport::new(&id).expect("transport");
    let addr: SocketAddr = c.cluster_addr;
    let peer = addr.to_string();
    let control_call = |request: ControlRequest| {
        quiver_net::rpc::<_, ControlResponse>(&*transport, &peer, "t", CALL, request)
    };
    let reply = control_call(hello("node-1", "127.0.0.1:9", "wrong-token-wrong-token"))
        .await
        .expect("call");
    assert_eq!(reply, ControlResponse::Unauthorized);
    for (id, addr) in [
        ("bad id!", "127.0.0.1:9"),
        ("node-1", "not an address"),
        ("node-1", "no-port.example"),
        ("node-1", "bad host:9"),
    ] {
        let reply = control_call(hello(id, addr, TOKEN)).await.expect("call");
        assert!(
            matches!(
                reply,
                ControlResponse::Rejected(NodeError::InvalidRequest(_))
            ),
            "{id} at {addr}: {reply:?}"
        );
    }
    // Roles: a coordinator's certificate cannot heartbeat, a node's cannot speak Raft or read
    // the status, an operator's cannot write to the catalog.
    let as_role =
        |role: Role| QuicTransport::new(&identity(&ca, role.name(), &[role])).expect("transport");
    let reply = quiver_net::rpc::<_, ControlResponse>(
        &*as_role(Role::Coordinator),
        &peer,
        "t",
        CALL,
        hello("node-1", "127.0.0.1:9", TOKEN),
    )
    .await
    .expect("call");
    assert_eq!(reply, ControlResponse::Unauthorized);
    for (role, request) in [
        (Role::Node, PeerRequest::Status { digests: false }),
        (Role::Node, PeerRequest::ReadIndex),
        (
            Role::Admin,
            PeerRequest::Execute(Proposal::retryable(CatalogCommand::RegisterNode {
                id: "x".into(),
                addr: "127.0.0.1:1".into(),
                incarnation: 7,
            })),
        ),
        (Role::Coordinator, PeerRequest::RemoveCoordinator { id: 1 }),
    ] {
        let kind = request.kind();
        let reply = call(&*as_role(role), &peer, "t", CALL, &request)
            .await
            .expect("call");
        assert!(
            matches!(&reply, PeerResponse::Failed(reason) if reason.starts_with("forbidden")),
            "{kind} as {role:?}: {reply:?}"
        );
    }
    assert!(matches!(
        call(
            &*as_role(Role::Admin),
            &peer,
            "t",
            CALL,
            &PeerRequest::Status { digests: false }
        )
        .await,
        Ok(PeerResponse::Status(_))
    ));
    assert_eq!(
        c.control.state().nodes().count(),
        0,
        "nothing was registered"
    );
    assert!(c.control.has_leader(), "the coordinator still leads");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_goes_down_and_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let shutdown = CancellationToken::new();
    let c = coordinator(
        &dir.path().join("c"),
        &identity(&ca, "coordinator-1", &[Role::Coordinator]),
        &shutdown,
    )
    .await;
    let control = Arc::clone(&c.control);
    let node_identity = identity(&ca, "node-1", &[Role::Node]);
    let start = |stop: CancellationToken, listen: SocketAddr| {
        let settings = node_settings(&dir.path().join("n"), listen, c.cluster_addr);
        let node_identity = node_identity.clone();
        async move {
            start_node(settings, &node_identity, stop)
                .await
                .expect("node")
        }
    };
    let first = CancellationToken::new();
    let node = start(first.clone(), "127.0.0.1:0".parse().expect("addr")).await;
    let is_up = |up: bool| {
        let control = control.clone();
        move || control.state().node("node-1").is_some_and(|n| n.up == up)
    };
    wait_until(
        "node registered and up",
        Duration::from_secs(10),
        is_up(true),
    )
    .await;
    first.cancel();
    for task in node.tasks {
        let _ = task.await;
    }
    // The node's endpoint (its UDP port) is released once nothing holds it any more.
    let addr = node.addr;
    node.service.shutdown().await;
    drop(node.service);
    node_released(&dir.path().join("n")).await;
    wait_until("node marked down", Duration::from_secs(10), is_up(false)).await;
    let _again = start(shutdown.clone(), addr).await;
    wait_until("node up again", Duration::from_secs(10), is_up(true)).await;
    shutdown.cancel();
}

/// A coordinator that was down while the others took snapshots and purged their logs catches up
/// from a snapshot sent over QUIC (openraft's InstallSnapshot through our network and store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_coordinator_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let id = identity(&ca, "coordinator", &[Role::Coordinator]);
    let (addrs, members) = members_on_free_ports(3);
    let start = |i: usize, token: CancellationToken| {
        let dir = dir.path().join(format!("c{i}"));
        let members = members.clone();
        let id = id.clone();
        let addr = addrs[i];
        async move {
            coordinator_with(
                i as u64 + 1,
                addr,
                Bootstrap::Members(members),
                &dir,
                &id,
                &token,
            )
            .await
        }
    };
    let tokens: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
    let mut running = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        running.push(Some(start(i, token.clone()).await));
    }
    let leader_id = {
        let probe = running[0].as_ref().expect("running").control.clone();
        wait_until("a leader", Duration::from_secs(10), || probe.has_leader()).await;
        let leader = probe.raft().metrics().borrow().current_leader;
        leader.expect("leader")
    };
    let leader = running[leader_id as usize - 1]
        .as_ref()
        .expect("leader")
        .control
        .clone();
    let lagging = (0..3)
        .find(|i| *i as u64 + 1 != leader_id)
        .expect("a follower");
    tokens[lagging].cancel();
    if let Some(stopped) = running[lagging].take() {
        for task in stopped.tasks {
            let _ = task.await;
        }
    }
    for n in 0..40 {
        leader
            .execute(
                "t",
                CatalogCommand::RegisterNode {
                    id: format!("n{n}"),
                    addr: "127.0.0.1:1".into(),
                    incarnation: 7,
                },
            )
            .await
            .expect("command");
    }
    wait_until("the leader purged its log", Duration::from_secs(10), || {
        // Purged well past the stopped coordinator's last entry (a handful at start-up), so
        // the log alone can no longer bring it up to date.
        leader
            .raft()
            .metrics()
            .borrow()
            .purged
            .is_some_and(|purged| purged.index >= 20)
    })
    .await;
    // In this process the stopped coordinator's socket closes once its connections drain.
    wait_until(
        "the stopped coordinator's port is free",
        Duration::from_secs(20),
        || std::net::UdpSocket::bind(addrs[lagging]).is_ok(),
    )
    .await;
    let back = start(lagging, CancellationToken::new()).await;
    let control = back.control.clone();
    wait_until(
        "the restarted coordinator caught up",
        Duration::from_secs(20),
        || control.state().nodes().count() == 40,
    )
    .await;
    for token in &tokens {
        token.cancel();
    }
}

/// A node that joined one cluster ignores a different control plane (wiped or wrong
/// coordinators) instead of dropping the shards it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_never_follows_another_cluster() {
    use quiver_coordinator::catalog::{BucketRecord, IndexMode, NewIndex, NewShard};
    use quiver_proto::{DistanceMetric, HashRange, IndexUid};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let coordinator_identity = identity(&ca, "coordinator", &[Role::Coordinator]);
    let node_identity = identity(&ca, "node-1", &[Role::Node]);
    let first = CancellationToken::new();
    let a = coordinator(&dir.path().join("a"), &coordinator_identity, &first).await;
    let start_node_at = |coordinator: SocketAddr, stop: CancellationToken| {
        let any_port = "127.0.0.1:0".parse().expect("addr");
        let settings = node_settings(&dir.path().join("n"), any_port, coordinator);
        let node_identity = node_identity.clone();
        async move {
            start_node(settings, &node_identity, stop)
                .await
                .expect("node")
        }
    };
    let node_stop = CancellationToken::new();
    let mut node = start_node_at(a.cluster_addr, node_stop.clone()).await;
    node.joined.wait_for(|j| *j).await.expect("joined");
    let bucket = BucketRecord {
        name: "b".into(),
        creation_time: 0.0,
        encryption: Default::default(),
        tags: Default::default(),
        default_index_mode: IndexMode::Enhanced,
        policy: None,
    };
    a.control
        .execute("t", CatalogCommand::CreateBucket(bucket))
        .await
        .expect("bucket");
    let index = NewIndex {
        bucket: "b".into(),
        name: "i".into(),
        uid: IndexUid(42),
        creation_time: 0.0,
        dimension: 4,
        metric: DistanceMetric::Euclidean,
        non_filterable_keys: None,
        encryption: None,
        tags: Default::default(),
        index_mode: IndexMode::Enhanced,
        shards: vec![NewShard {
            range: HashRange::FULL,
            nodes: vec!["node-1".into()],
        }],
    };
    a.control
        .execute("t", CatalogCommand::CreateIndex(index))
        .await
        .expect("index");
    let service = node.service.clone();
    wait_until(
        "the node created its shard",
        Duration::from_secs(10),
        || service.shard_count() == 1,
    )
    .await;
    node_stop.cancel();
    for task in node.tasks.drain(..) {
        let _ = task.await;
    }
    node.service.shutdown().await;
    drop(service);
    drop(node);
    node_released(&dir.path().join("n")).await;
    let other = coordinator(&dir.path().join("b"), &coordinator_identity, &first).await;
    let node = start_node_at(other.cluster_addr, first.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !*node.joined.borrow(),
        "the node must not join another cluster"
    );
    assert_eq!(node.service.shard_count(), 1, "and keeps its shard");
    first.cancel();
}

/// Three coordinators forming one Raft group, each with its fault-injecting transport.
async fn three_with_faults(
    dir: &std::path::Path,
    id: &ClusterIdentity,
    shutdown: &CancellationToken,
    raft: RaftTimings,
) -> (
    Vec<SocketAddr>,
    Vec<Coordinator>,
    Vec<Arc<quiver_net::fault::FaultTransport>>,
) {
    let (addrs, members) = members_on_free_ports(3);
    let mut running = Vec::new();
    let mut faults = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let slot = Arc::new(std::sync::Mutex::new(None));
        let hook_slot = slot.clone();
        let hook: FaultHook = Box::new(move |f| {
            *hook_slot.lock().expect("slot") = Some(f);
        });
        let options = Options {
            raft: raft.clone(),
            faults: Some(hook),
        };
        let members = Bootstrap::Members(members.clone());
        let dir = dir.join(format!("c{i}"));
        running.push(
            coordinator_with_options(i as u64 + 1, *addr, members, &dir, id, shutdown, options)
                .await,
        );
        faults.push(slot.lock().expect("slot").take().expect("fault transport"));
    }
    (addrs, running, faults)
}

/// The leader as `running[0]` sees it, as an index into `running`, once there is one.
async fn leader_index(running: &[Coordinator]) -> usize {
    let probe = running[0].control.clone();
    wait_until("a leader", Duration::from_secs(10), || probe.has_leader()).await;
    let leader = probe
        .raft()
        .metrics()
        .borrow()
        .current_leader
        .expect("leader");
    leader as usize - 1
}

/// Free loopback UDP ports for `n` coordinators and the Raft membership naming them.
fn members_on_free_ports(
    n: usize,
) -> (
    Vec<SocketAddr>,
    std::collections::BTreeMap<u64, quiver_coordinator::cluster::types::CoordinatorNode>,
) {
    use quiver_coordinator::cluster::types::CoordinatorNode;
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|_| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe port");
            socket.local_addr().expect("addr")
        })
        .collect();
    let members = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let node = CoordinatorNode {
                cluster_addr: addr.to_string(),
                http_addr: "127.0.0.1:1".into(),
            };
            (i as u64 + 1, node)
        })
        .collect();
    (addrs, members)
}

/// The leader cut off from both followers (through the fault-injecting transport every
/// coordinator's cluster traffic goes through) cannot commit; the majority elects a leader and
/// commits without it; once healed, the old leader's write goes through exactly once and every
/// coordinator converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_coordinator_cannot_commit_and_recovers_when_healed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let id = identity(&ca, "coordinator", &[Role::Coordinator]);
    let shutdown = CancellationToken::new();
    let (addrs, running, faults) = three_with_faults(dir.path(), &id, &shutdown, FAST_RAFT).await;
    let old = leader_index(&running).await;
    let old_addr = addrs[old].to_string();
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let other_addrs: Vec<String> = others.iter().map(|i| addrs[*i].to_string()).collect();
    faults[old].partition(other_addrs.iter().map(String::as_str));
    for i in &others {
        faults[*i].partition([old_addr.as_str()]);
    }

    let isolated = running[old].control.clone();
    let stuck = tokio::spawn(async move {
        isolated
            .execute(
                "partitioned",
                CatalogCommand::RegisterNode {
                    id: "during-partition".into(),
                    addr: "127.0.0.1:1".into(),
                    incarnation: 7,
                },
            )
            .await
    });
    let majority = running[others[0]].control.clone();
    wait_until(
        "the majority elects a new leader",
        Duration::from_secs(15),
        || {
            let leader = majority.raft().metrics().borrow().current_leader;
            leader.is_some_and(|l| l as usize - 1 != old)
        },
    )
    .await;
    tokio::time::timeout(
        Duration::from_secs(10),
        majority.execute(
            "majority",
            CatalogCommand::RegisterNode {
                id: "majority".into(),
                addr: "127.0.0.1:1".into(),
                incarnation: 7,
            },
        ),
    )
    .await
    .expect("the majority commits in time")
    .expect("the majority commits");
    let has = |c: &Coordinator, node: &str| c.control.state().node(node).is_some();
    assert!(
        !has(&running[old], "majority"),
        "the cut-off coordinator cannot see the majority's commits"
    );
    assert!(
        !has(&running[old], "during-partition") && !has(&running[others[0]], "during-partition"),
        "the cut-off leader cannot commit"
    );
    let went_through = if stuck.is_finished() {
        // It may give up; what it must never do is succeed while cut off.
        let result = stuck.await.expect("join");
        assert!(
            result.is_err(),
            "a write through the cut-off leader succeeded"
        );
        false
    } else {
        for f in &faults {
            f.heal();
        }
        tokio::time::timeout(Duration::from_secs(20), stuck)
            .await
            .expect("the old leader's write finishes once healed")
            .expect("join")
            .expect("and goes through the new leader");
        true
    };
    for f in &faults {
        f.heal();
    }
    for c in &running {
        let control = c.control.clone();
        wait_until(
            "every coordinator converges",
            Duration::from_secs(20),
            || {
                let state = control.state();
                state.node("majority").is_some()
                    && state.node("during-partition").is_some() == went_through
            },
        )
        .await;
    }
    // The healed coordinator can commit again.
    running[old]
        .control
        .execute(
            "healed",
            CatalogCommand::RegisterNode {
                id: "after-heal".into(),
                addr: "127.0.0.1:1".into(),
                incarnation: 7,
            },
        )
        .await
        .expect("commit after healing");
    shutdown.cancel();
}

/// Control-plane reads are linearizable through any coordinator: a bucket policy or tags changed
/// through the leader are read back at once through a follower, even while the leader's
/// replication to that follower runs late (a delay injected on the leader's transport). Without
/// the read barrier (`Operation::read_kind` = `ControlRead`) the follower would answer from its
/// stale state and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_reads_through_another_coordinator_see_the_latest_write() {
    use quiver_net::fault::Fault;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = GeneratedCa::generate("test CA").expect("ca");
    let id = identity(&ca, "coordinator", &[Role::Coordinator]);
    let shutdown = CancellationToken::new();
    // Slower heartbeats than the other tests: openraft times replication out after one heartbeat
    // interval, and the delay injected below must stay well inside it on a loaded machine.
    let raft = RaftTimings {
        heartbeat_ms: 400,
        election_timeout_min_ms: 2_000,
        election_timeout_max_ms: 4_000,
        snapshot_every: 1_000,
    };
    let (addrs, running, faults) = three_with_faults(dir.path(), &id, &shutdown, raft).await;
    let leader = leader_index(&running).await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    for c in &running {
        let control = c.control.clone();
        wait_until(
            "every coordinator knows the leader",
            Duration::from_secs(10),
            || control.has_leader(),
        )
        .await;
    }
    let client = |i: usize| {
        common::sdk_client(
            &format!("http://{}", running[i].http_addr),
            "testkey",
            "testsecret",
        )
    };
    let (writer, reader) = (client(leader), client(follower));
    writer
        .create_vector_bucket()
        .vector_bucket_name("shared")
        .send()
        .await
        .expect("create bucket");
    // From now on the follower hears of every entry 150 ms late: far longer than a client's
    // write-then-read on loopback, well inside openraft's replication timeout (one heartbeat
    // interval), so it keeps following, only late.
    faults[leader].set(
        &addrs[follower].to_string(),
        Fault::Delay(Duration::from_millis(150)),
    );
    for round in 0..10 {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"r{round}","Effect":"Deny","Principal":"*","Action":"s3vectors:DeleteIndex","Resource":"*"}}]}}"#
        );
        writer
            .put_vector_bucket_policy()
            .vector_bucket_name("shared")
            .policy(&policy)
            .send()
            .await
            .expect("put policy");
        let read = reader
            .get_vector_bucket_policy()
            .vector_bucket_name("shared")
            .send()
            .await
            .expect("get policy");
        assert_eq!(read.policy(), Some(policy.as_str()), "round {round}");

        let arn = "arn:aws:s3vectors:us-east-1:123456789012:bucket/shared";
        writer
            .tag_resource()
            .resource_arn(arn)
            .tags("round", round.to_string())
            .send()
            .await
            .expect("tag");
        let tags = reader
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .expect("list tags");
        assert_eq!(
            tags.tags().get("round").map(String::as_str),
            Some(round.to_string().as_str()),
            "round {round}"
        );
    }
    shutdown.cancel();
}
