//! A real node in-process behind its QUIC server, driven over loopback:
//!
//! * the happy path through [`QuicTransport`]: create a shard, write, get, list, search (with and
//!   without a filter), overwrite/delete, validation errors, drop;
//! * garbage over a valid mutual-TLS connection (random bytes, truncated and mutated envelopes, a
//!   wrong protocol version, declared lengths far beyond the data, a frame over the size limit, a
//!   reset stream): every stream gets a decodable error answer (or a reset for the over-limit
//!   frame) and the node keeps serving with its data unchanged;
//! * clients without a certificate from the cluster CA cannot get anything done;
//! * random UDP datagrams at the node's port do not disturb it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use quiver_net::server;
use quiver_net::tls::{self, ClusterIdentity, GeneratedCa};
use quiver_net::{rpc, QuicTransport, TransportError};
use quiver_node::service::{NodeIdentity, NodeLimits, NodeService};
use quiver_node::shard::ShardConfig;
use quiver_proto::{
    decode, encode, DistanceMetric, Envelope, Filter, FilterValue, HashRange, Hit, IndexUid,
    MetaValue, Metadata, NodeError, NodeRequest, NodeResponse, ReplicaId, ShardId, ShardMember,
    ShardSpec, VectorRecord, WriteOp, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Node RPCs by socket address, the way the coordinator's data plane makes them.
trait NodeCall {
    async fn call(
        &self,
        addr: SocketAddr,
        request_id: &str,
        timeout: Duration,
        request: NodeRequest,
    ) -> Result<NodeResponse, TransportError>;
}

impl NodeCall for Arc<QuicTransport> {
    async fn call(
        &self,
        addr: SocketAddr,
        request_id: &str,
        timeout: Duration,
        request: NodeRequest,
    ) -> Result<NodeResponse, TransportError> {
        rpc(&**self, &addr.to_string(), request_id, timeout, request).await
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A node serving on a loopback port; stops serving when dropped.
struct Node {
    addr: SocketAddr,
    identity: ClusterIdentity,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    service: Arc<NodeService>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The node id the test node answers as; every test shard has one replica, on it.
const NODE_ID: &str = "node-1";

/// A fresh request id for each write.
fn request_id() -> u128 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

async fn start_node() -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity =
        ClusterIdentity::load_or_create_dev(&dir.path().join("tls")).expect("dev identity");
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let endpoint = server::bind(listen, &identity).expect("bind");
    let addr = endpoint.local_addr().expect("local address");
    let transport =
        QuicTransport::on_endpoint(endpoint.clone(), &identity).expect("node transport");
    let service = NodeService::start(
        &dir.path().join("data"),
        NodeIdentity {
            node_id: NODE_ID.into(),
            transport,
            replication: Default::default(),
        },
        ShardConfig::default(),
        NodeLimits::default(),
    )
    .await
    .expect("node starts");
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(endpoint, service.clone(), shutdown.clone()));
    Node {
        addr,
        identity,
        dir,
        shutdown,
        service,
    }
}

fn shard_id() -> ShardId {
    ShardId {
        index: IndexUid(0xab_cdef),
        shard: 3,
    }
}

fn shard_spec() -> ShardSpec {
    ShardSpec {
        id: shard_id(),
        dimension: 4,
        metric: DistanceMetric::Euclidean,
        non_filterable_keys: vec!["note".into()],
        range: HashRange::FULL,
        replicas: vec![ShardMember {
            replica: ReplicaId(1),
            node: NODE_ID.into(),
        }],
    }
}

fn meta(genre: &str, year: u32) -> Metadata {
    Metadata(vec![
        ("genre".into(), MetaValue::Str(genre.into())),
        ("year".into(), MetaValue::Num(f64::from(year))),
        ("note".into(), MetaValue::Str("not filterable".into())),
    ])
}

fn put(key: &str, vector: [f32; 4], metadata: Metadata) -> WriteOp {
    WriteOp::Put {
        key: key.into(),
        vector: vector.to_vec(),
        metadata,
    }
}

/// Six vectors around the origin, chosen so that L2 (not squared) distances from the origin are
/// 0, 1, 2, 2, 5, 1 and two pairs tie (broken by key).
fn seed_ops() -> Vec<WriteOp> {
    vec![
        put("a", [0.0, 0.0, 0.0, 0.0], meta("drama", 2019)),
        put("b", [1.0, 0.0, 0.0, 0.0], meta("comedy", 2020)),
        put("c", [0.0, 2.0, 0.0, 0.0], meta("drama", 2021)),
        put("d", [1.0, 1.0, 1.0, 1.0], meta("comedy", 2022)),
        put("e", [3.0, 4.0, 0.0, 0.0], meta("drama", 2023)),
        put("f", [-1.0, 0.0, 0.0, 0.0], meta("horror", 2024)),
    ]
}

async fn call(
    transport: &Arc<QuicTransport>,
    addr: SocketAddr,
    request: NodeRequest,
) -> NodeResponse {
    let kind = request.kind();
    transport
        .call(addr, "test-request", CALL_TIMEOUT, request)
        .await
        .unwrap_or_else(|e| panic!("{kind} over QUIC failed: {e}"))
}

fn hits(response: NodeResponse) -> Vec<(String, f32)> {
    match response {
        NodeResponse::Hits(hits) => hits.into_iter().map(|h| (h.key, h.distance)).collect(),
        other => panic!("expected hits, got {other:?}"),
    }
}

fn pairs(expected: &[(&str, f32)]) -> Vec<(String, f32)> {
    expected
        .iter()
        .map(|(k, d)| ((*k).to_owned(), *d))
        .collect()
}

fn search(vector: [f32; 4], top_k: u32, filter: Option<Filter>) -> NodeRequest {
    NodeRequest::Search {
        shard: shard_id(),
        vector: vector.to_vec(),
        top_k,
        filter,
        return_metadata: false,
    }
}

fn list_everything() -> NodeRequest {
    NodeRequest::List {
        shard: shard_id(),
        after: None,
        limit: 1_000,
        range: None,
        return_data: true,
        return_metadata: true,
    }
}

/// Creates the shard and writes the seed vectors through a fresh transport.
async fn seeded_node() -> (Node, Arc<QuicTransport>) {
    let node = start_node().await;
    let transport = QuicTransport::new(&node.identity).expect("transport");
    assert_eq!(
        call(
            &transport,
            node.addr,
            NodeRequest::CreateShard(shard_spec())
        )
        .await,
        NodeResponse::Done
    );
    assert_eq!(
        call(
            &transport,
            node.addr,
            NodeRequest::Write {
                request_id: request_id(),
                shard: shard_id(),
                ops: seed_ops(),
            }
        )
        .await,
        NodeResponse::Written { seq: 1 }
    );
    (node, transport)
}

/// Everything the node stores, as List returns it.
async fn stored(transport: &Arc<QuicTransport>, addr: SocketAddr) -> Vec<VectorRecord> {
    match call(transport, addr, list_everything()).await {
        NodeResponse::Listed { vectors, more } => {
            assert!(!more, "everything fits in one page");
            vectors
        }
        other => panic!("expected a listing, got {other:?}"),
    }
}

/// Writes a marker and returns the sequence number it got: proves the node still accepts writes
/// and that no other write was applied since the last known sequence number.
async fn write_marker(transport: &Arc<QuicTransport>, addr: SocketAddr, key: &str) -> u64 {
    match call(
        transport,
        addr,
        NodeRequest::Write {
            request_id: request_id(),
            shard: shard_id(),
            ops: vec![put(key, [9.0, 9.0, 9.0, 9.0], Metadata::default())],
        },
    )
    .await
    {
        NodeResponse::Written { seq } => seq,
        other => panic!("expected Written, got {other:?}"),
    }
}

fn envelope(version: u16, request_id: &str, body: NodeRequest) -> Vec<u8> {
    envelope_with_deadline(version, request_id, now_ms() + 10_000, body)
}

fn envelope_with_deadline(
    version: u16,
    request_id: &str,
    deadline_unix_ms: u64,
    body: NodeRequest,
) -> Vec<u8> {
    encode(&Envelope {
        version,
        request_id: request_id.into(),
        deadline_unix_ms,
        body,
    })
    .expect("encode")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A raw QUIC connection with the given client configuration (the test speaks bytes itself).
async fn raw_connect(
    config: quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::Connection), String> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))
        .map_err(|e| format!("client endpoint: {e}"))?;
    let connecting = endpoint
        .connect_with(config, addr, tls::CLUSTER_SERVER_NAME)
        .map_err(|e| format!("connect: {e}"))?;
    let connection = tokio::time::timeout(CALL_TIMEOUT, connecting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((endpoint, connection))
}

/// Sends `bytes` on a new bidirectional stream and reads the whole answer.
async fn raw_exchange(connection: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let exchange = async {
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| format!("open stream: {e}"))?;
        send.write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        send.finish().map_err(|e| format!("finish: {e}"))?;
        recv.read_to_end(MAX_FRAME_BYTES)
            .await
            .map_err(|e| format!("read: {e}"))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| "exchange timed out".to_owned())?
}

/// Checks the node's answer to bytes that are not a valid v1 request: a decodable response
/// envelope in the current protocol version carrying `Malformed` (undecodable request) or
/// `ProtocolVersion` (decodable, other version, with the request id echoed).
fn assert_rejected(sent: &[u8], answer: &[u8], context: &str) {
    let response = decode::<NodeResponse>(answer)
        .unwrap_or_else(|e| panic!("{context}: the answer does not decode: {e}"));
    assert_eq!(
        response.version, PROTOCOL_VERSION,
        "{context}: answer version"
    );
    match decode::<NodeRequest>(sent) {
        Err(_) => assert!(
            matches!(response.body, NodeResponse::Error(NodeError::Malformed(_))),
            "{context}: expected Malformed, got {:?}",
            response.body
        ),
        Ok(request) => {
            assert_ne!(
                request.version, PROTOCOL_VERSION,
                "{context}: the test only sends invalid requests"
            );
            assert_eq!(
                response.body,
                NodeResponse::Error(NodeError::ProtocolVersion {
                    got: request.version,
                    supported: PROTOCOL_VERSION,
                }),
                "{context}"
            );
            assert_eq!(response.request_id, request.request_id, "{context}");
        }
    }
}

/// Whether the node would execute these bytes (a decodable request in the current version).
fn is_valid_request(bytes: &[u8]) -> bool {
    decode::<NodeRequest>(bytes).is_ok_and(|e| e.version == PROTOCOL_VERSION)
}

// ---------------------------------------------------------------------------------------------
// a) Happy path
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_through_the_quic_transport() {
    let node = start_node().await;
    let addr = node.addr;
    let transport = QuicTransport::new(&node.identity).expect("transport");
    assert_eq!(
        call(&transport, addr, NodeRequest::Ping).await,
        NodeResponse::Pong
    );

    // Creating is idempotent for the same spec and refused for another spec under the same id.
    for _ in 0..2 {
        assert_eq!(
            call(&transport, addr, NodeRequest::CreateShard(shard_spec())).await,
            NodeResponse::Done
        );
    }
    let other = ShardSpec {
        dimension: 8,
        ..shard_spec()
    };
    assert!(
        matches!(
            call(&transport, addr, NodeRequest::CreateShard(other)).await,
            NodeResponse::Error(NodeError::InvalidRequest(_))
        ),
        "same id with another spec is refused"
    );
    assert_eq!(node.service.shard_count(), 1);

    assert_eq!(
        call(
            &transport,
            addr,
            NodeRequest::Write {
                request_id: request_id(),
                shard: shard_id(),
                ops: seed_ops(),
            }
        )
        .await,
        NodeResponse::Written { seq: 1 }
    );

    // Get: requested order, duplicates once, missing keys skipped; data/metadata on request.
    let response = call(
        &transport,
        addr,
        NodeRequest::Get {
            shard: shard_id(),
            keys: vec!["e".into(), "missing".into(), "a".into(), "e".into()],
            return_data: true,
            return_metadata: true,
        },
    )
    .await;
    assert_eq!(
        response,
        NodeResponse::Vectors(vec![
            VectorRecord {
                key: "e".into(),
                vector: Some(vec![3.0, 4.0, 0.0, 0.0]),
                metadata: Some(meta("drama", 2023)),
            },
            VectorRecord {
                key: "a".into(),
                vector: Some(vec![0.0; 4]),
                metadata: Some(meta("drama", 2019)),
            },
        ])
    );
    let response = call(
        &transport,
        addr,
        NodeRequest::Get {
            shard: shard_id(),
            keys: vec!["b".into()],
            return_data: false,
            return_metadata: false,
        },
    )
    .await;
    assert_eq!(
        response,
        NodeResponse::Vectors(vec![VectorRecord {
            key: "b".into(),
            vector: None,
            metadata: None,
        }])
    );

    // List: ascending keys, pages with `after`.
    let everything = stored(&transport, addr).await;
    let keys: Vec<&str> = everything.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(everything[3].vector.as_deref(), Some(&[1.0f32; 4][..]));
    let page = |after: Option<&str>| NodeRequest::List {
        shard: shard_id(),
        after: after.map(String::from),
        limit: 4,
        range: None,
        return_data: false,
        return_metadata: false,
    };
    match call(&transport, addr, page(None)).await {
        NodeResponse::Listed { vectors, more } => {
            let keys: Vec<&str> = vectors.iter().map(|r| r.key.as_str()).collect();
            assert_eq!(keys, ["a", "b", "c", "d"]);
            assert!(more, "two keys follow");
        }
        other => panic!("expected a listing, got {other:?}"),
    }
    match call(&transport, addr, page(Some("d"))).await {
        NodeResponse::Listed { vectors, more } => {
            let keys: Vec<&str> = vectors.iter().map(|r| r.key.as_str()).collect();
            assert_eq!(keys, ["e", "f"]);
            assert!(!more, "last page");
        }
        other => panic!("expected a listing, got {other:?}"),
    }

    // Search: L2 distances (not squared), ties broken by key.
    let origin = [0.0; 4];
    assert_eq!(
        hits(call(&transport, addr, search(origin, 10, None)).await),
        pairs(&[
            ("a", 0.0),
            ("b", 1.0),
            ("f", 1.0),
            ("c", 2.0),
            ("d", 2.0),
            ("e", 5.0)
        ]),
        "all six, ascending by (distance, key)"
    );
    assert_eq!(
        hits(call(&transport, addr, search(origin, 3, None)).await),
        pairs(&[("a", 0.0), ("b", 1.0), ("f", 1.0)])
    );
    assert_eq!(
        hits(call(&transport, addr, search([3.0, 4.0, 0.0, 0.0], 2, None)).await),
        pairs(&[("e", 0.0), ("c", 13f32.sqrt())])
    );

    // Search with filters.
    let drama = Filter::Eq("genre".into(), FilterValue::Str("drama".into()));
    assert_eq!(
        hits(call(&transport, addr, search(origin, 10, Some(drama.clone()))).await),
        pairs(&[("a", 0.0), ("c", 2.0), ("e", 5.0)])
    );
    let recent_comedy = Filter::And(vec![
        Filter::Gte("year".into(), 2021.0),
        Filter::Eq("genre".into(), FilterValue::Str("comedy".into())),
    ]);
    assert_eq!(
        hits(call(&transport, addr, search(origin, 10, Some(recent_comedy))).await),
        pairs(&[("d", 2.0)])
    );
    let or = Filter::Or(vec![
        Filter::Lt("year".into(), 2020.0),
        Filter::In(
            "genre".into(),
            vec![FilterValue::Str("horror".into()), FilterValue::Num(1.0)],
        ),
    ]);
    assert_eq!(
        hits(call(&transport, addr, search(origin, 10, Some(or))).await),
        pairs(&[("a", 0.0), ("f", 1.0)])
    );
    let non_filterable = Filter::Exists("note".into(), true);
    assert_eq!(
        hits(call(&transport, addr, search(origin, 10, Some(non_filterable))).await),
        Vec::<(String, f32)>::new(),
        "non-filterable keys behave as absent"
    );
    // return_metadata carries the metadata of each hit.
    let response = call(
        &transport,
        addr,
        NodeRequest::Search {
            shard: shard_id(),
            vector: vec![1.0, 0.0, 0.0, 0.0],
            top_k: 1,
            filter: Some(drama),
            return_metadata: true,
        },
    )
    .await;
    assert_eq!(
        response,
        NodeResponse::Hits(vec![Hit {
            key: "a".into(),
            distance: 1.0,
            metadata: Some(meta("drama", 2019)),
        }])
    );

    // Overwrite and delete, then read them back.
    assert_eq!(
        call(
            &transport,
            addr,
            NodeRequest::Write {
                request_id: request_id(),
                shard: shard_id(),
                ops: vec![
                    put("a", [10.0, 0.0, 0.0, 0.0], meta("western", 2000)),
                    WriteOp::Delete { key: "b".into() },
                    WriteOp::Delete {
                        key: "never-existed".into()
                    },
                ],
            }
        )
        .await,
        NodeResponse::Written { seq: 2 }
    );
    assert_eq!(
        hits(call(&transport, addr, search(origin, 10, None)).await),
        pairs(&[("f", 1.0), ("c", 2.0), ("d", 2.0), ("e", 5.0), ("a", 10.0)])
    );

    // Invalid requests are refused without side effects.
    let before = stored(&transport, addr).await;
    let bad_write = NodeRequest::Write {
        request_id: request_id(),
        shard: shard_id(),
        ops: vec![
            put("g", [1.0; 4], Metadata::default()),
            WriteOp::Put {
                key: "h".into(),
                vector: vec![1.0; 3],
                metadata: Metadata::default(),
            },
        ],
    };
    assert!(
        matches!(
            call(&transport, addr, bad_write).await,
            NodeResponse::Error(NodeError::InvalidRequest(_))
        ),
        "a batch with a wrong-dimension vector is refused"
    );
    let wrong_dimension = NodeRequest::Search {
        shard: shard_id(),
        vector: vec![1.0; 5],
        top_k: 1,
        filter: None,
        return_metadata: false,
    };
    for request in [
        wrong_dimension,
        search(origin, 0, None),
        search(origin, 10_001, None),
    ] {
        assert!(
            matches!(
                call(&transport, addr, request.clone()).await,
                NodeResponse::Error(NodeError::InvalidRequest(_))
            ),
            "{request:?} is refused"
        );
    }
    assert!(
        matches!(
            call(
                &transport,
                addr,
                NodeRequest::CreateShard(ShardSpec {
                    id: ShardId {
                        index: IndexUid(1),
                        shard: 0
                    },
                    dimension: 0,
                    ..shard_spec()
                })
            )
            .await,
            NodeResponse::Error(NodeError::InvalidRequest(_))
        ),
        "dimension 0 is refused"
    );
    assert_eq!(stored(&transport, addr).await, before);
    assert_eq!(
        write_marker(&transport, addr, "marker").await,
        3,
        "the refused batch did not consume a sequence number"
    );

    // Unknown shards, and dropping.
    let unknown = ShardId {
        index: IndexUid(999),
        shard: 0,
    };
    assert_eq!(
        call(
            &transport,
            addr,
            NodeRequest::Get {
                shard: unknown,
                keys: vec!["a".into()],
                return_data: false,
                return_metadata: false,
            }
        )
        .await,
        NodeResponse::Error(NodeError::ShardNotFound(unknown))
    );
    for _ in 0..2 {
        assert_eq!(
            call(&transport, addr, NodeRequest::DropShard(shard_id())).await,
            NodeResponse::Done,
            "dropping is idempotent"
        );
    }
    assert_eq!(
        call(&transport, addr, search(origin, 1, None)).await,
        NodeResponse::Error(NodeError::ShardNotFound(shard_id()))
    );
    assert_eq!(node.service.shard_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_connection() {
    let (node, transport) = seeded_node().await;
    let calls = (0..64).map(|i| {
        let transport = transport.clone();
        let addr = node.addr;
        async move {
            let x = (i % 4) as f32;
            transport
                .call(
                    addr,
                    &format!("concurrent-{i}"),
                    CALL_TIMEOUT,
                    search([x, 0.0, 0.0, 0.0], 1, None),
                )
                .await
        }
    });
    for (i, result) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let response = result.unwrap_or_else(|e| panic!("call {i}: {e}"));
        // (0,0,0,0) is a; (1,0,0,0) is b; (2,0,0,0) and (3,0,0,0) are nearest to b.
        let expected = if i % 4 == 0 { "a" } else { "b" };
        assert_eq!(
            hits(response)[0].0,
            expected,
            "call {i} found the nearest vector"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// b) Garbage over a valid mutual-TLS connection
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_valid_connection_gets_error_answers_and_the_node_keeps_serving() {
    let (node, transport) = seeded_node().await;
    let addr = node.addr;
    let before = stored(&transport, addr).await;
    let config = node.identity.quic_client_config().expect("client config");
    let (_endpoint, connection) = raw_connect(config, addr)
        .await
        .expect("a cluster identity completes the handshake");
    let mut rng = StdRng::seed_from_u64(0x5eed);

    // A valid Ping on the raw connection, as the baseline.
    let answer = raw_exchange(
        &connection,
        &envelope(PROTOCOL_VERSION, "ping", NodeRequest::Ping),
    )
    .await
    .expect("ping");
    let answer = decode::<NodeResponse>(&answer).expect("decodable");
    assert_eq!(answer.body, NodeResponse::Pong);
    assert_eq!(answer.request_id, "ping");

    let mut cases: Vec<(String, Vec<u8>)> = vec![("empty stream".into(), Vec::new())];

    // Random bytes of many sizes (skipping the rare draw that is a valid v1 request).
    for size in [
        1usize,
        2,
        3,
        4,
        7,
        16,
        31,
        64,
        200,
        1_000,
        4_096,
        65_536,
        1 << 20,
    ] {
        for round in 0..3 {
            let bytes = loop {
                let bytes: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
                if !is_valid_request(&bytes) {
                    break bytes;
                }
            };
            cases.push((format!("{size} random bytes #{round}"), bytes));
        }
    }
    // Every proper prefix of a valid Write envelope.
    let write = envelope(
        PROTOCOL_VERSION,
        "truncated",
        NodeRequest::Write {
            request_id: request_id(),
            shard: shard_id(),
            ops: vec![put("evil", [7.0, 7.0, 7.0, 7.0], meta("evil", 1))],
        },
    );
    for len in 0..write.len() {
        cases.push((
            format!("write truncated to {len} bytes"),
            write[..len].to_vec(),
        ));
    }
    // Random mutations of a valid Write envelope that no longer decode or change the version.
    let mut mutations = 0;
    while mutations < 200 {
        let mut bytes = write.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..bytes.len());
            bytes[at] = rng.gen();
        }
        if !is_valid_request(&bytes) {
            cases.push((format!("mutated write #{mutations}"), bytes));
            mutations += 1;
        }
    }
    // Other protocol versions, including a write that must not be applied.
    for version in [
        0u16,
        PROTOCOL_VERSION - 1,
        PROTOCOL_VERSION + 1,
        0x7fff,
        u16::MAX,
    ] {
        cases.push((
            format!("ping in protocol version {version}"),
            envelope(version, &format!("v{version}"), NodeRequest::Ping),
        ));
        cases.push((
            format!("write in protocol version {version}"),
            envelope(
                version,
                "future-write",
                NodeRequest::Write {
                    request_id: request_id(),
                    shard: shard_id(),
                    ops: vec![put("evil", [1.0; 4], Metadata::default())],
                },
            ),
        ));
    }
    // Declared lengths far beyond the bytes that follow (must not allocate or wait for them).
    let huge: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    let no_ops = envelope_with_deadline(
        PROTOCOL_VERSION,
        "R",
        0,
        NodeRequest::Write {
            request_id: request_id(),
            shard: shard_id(),
            ops: Vec::new(),
        },
    );
    // Envelope: version, request id (length 1, "R"), deadline, body; an empty ops list ends in 0.
    assert_eq!(
        &no_ops[..3],
        &[PROTOCOL_VERSION as u8, 1, b'R'],
        "envelope layout"
    );
    assert_eq!(no_ops.last(), Some(&0));
    cases.push((
        "request id declared 2^63 bytes long".into(),
        [&[PROTOCOL_VERSION as u8], huge, &no_ops[2..]].concat(),
    ));
    cases.push((
        "write declaring 2^63 ops".into(),
        [&no_ops[..no_ops.len() - 1], huge].concat(),
    ));
    cases.push((
        "write declaring 4 billion ops".into(),
        [&no_ops[..no_ops.len() - 1], &[0xff, 0xff, 0xff, 0xff, 0x0f]].concat(),
    ));
    let one_put = envelope_with_deadline(
        PROTOCOL_VERSION,
        "R",
        0,
        NodeRequest::Write {
            request_id: request_id(),
            shard: shard_id(),
            ops: vec![put("k", [0.5; 4], Metadata::default())],
        },
    );
    // The vector follows its key ("k"): length 4, then 4 f32s; declare 2^63 floats instead.
    let vector_at = one_put.len() - 1 - 16 - 1;
    assert_eq!(one_put[vector_at], 4, "vector length prefix");
    cases.push((
        "vector declaring 2^63 floats".into(),
        [&one_put[..vector_at], huge, &one_put[vector_at + 1..]].concat(),
    ));
    cases.push((
        "request id that is not UTF-8".into(),
        [&[1, 1, 0xff], &no_ops[3..]].concat(),
    ));

    for (name, bytes) in &cases {
        let answer = raw_exchange(&connection, bytes)
            .await
            .unwrap_or_else(|e| panic!("{name}: no answer: {e}"));
        assert_rejected(bytes, &answer, name);
    }

    // A valid request whose deadline has passed is refused, and not executed.
    let expired = envelope_with_deadline(
        PROTOCOL_VERSION,
        "expired",
        1,
        NodeRequest::Write {
            request_id: request_id(),
            shard: shard_id(),
            ops: vec![put("evil", [1.0; 4], Metadata::default())],
        },
    );
    let answer = raw_exchange(&connection, &expired)
        .await
        .expect("expired request answered");
    let answer = decode::<NodeResponse>(&answer).expect("decodable");
    assert_eq!(
        answer.body,
        NodeResponse::Error(NodeError::DeadlineExceeded)
    );
    assert_eq!(answer.request_id, "expired");

    // Many garbage streams at once on the same connection.
    let concurrent = (0..100).map(|i| {
        let connection = connection.clone();
        let bytes: Vec<u8> = vec![0xff; 10 + i];
        async move {
            let answer = raw_exchange(&connection, &bytes).await;
            (bytes, answer)
        }
    });
    for (bytes, answer) in futures::future::join_all(concurrent).await {
        let answer = answer.unwrap_or_else(|e| panic!("concurrent garbage: no answer: {e}"));
        assert_rejected(&bytes, &answer, "concurrent garbage");
    }

    // A stream the client resets half-way is answered with a reset.
    let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
    send.write_all(&write[..5]).await.expect("write");
    send.reset(7u32.into()).expect("reset");
    let read = tokio::time::timeout(CALL_TIMEOUT, recv.read_to_end(1 << 20))
        .await
        .expect("answered in time");
    assert!(
        matches!(
            read,
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))
        ),
        "a reset request stream is reset back: {read:?}"
    );

    // The node still answers, on this connection and through the transport, and nothing changed.
    let answer = raw_exchange(
        &connection,
        &envelope(PROTOCOL_VERSION, "ping", NodeRequest::Ping),
    )
    .await
    .expect("ping after garbage");
    assert_eq!(
        decode::<NodeResponse>(&answer).expect("decodable").body,
        NodeResponse::Pong
    );
    assert_eq!(
        call(&transport, addr, NodeRequest::Ping).await,
        NodeResponse::Pong
    );
    assert_eq!(
        stored(&transport, addr).await,
        before,
        "stored data is unchanged"
    );
    assert_eq!(
        write_marker(&transport, addr, "marker").await,
        2,
        "no garbage stream applied a write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_size_limit_is_reset_and_the_node_keeps_serving() {
    let (node, transport) = seeded_node().await;
    let addr = node.addr;
    let before = stored(&transport, addr).await;
    let config = node.identity.quic_client_config().expect("client config");
    let (_endpoint, connection) = raw_connect(config, addr).await.expect("handshake");

    // A valid envelope start followed by more bytes than MAX_FRAME_BYTES in total.
    let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
    let writer = async move {
        let chunk = vec![0x42u8; 1 << 20];
        let mut sent = 0usize;
        let result = async {
            while sent <= MAX_FRAME_BYTES {
                send.write_all(&chunk).await?;
                sent += chunk.len();
            }
            send.finish()?;
            Ok::<(), quinn::WriteError>(())
        }
        .await;
        (sent, result)
    };
    let reader = recv.read_to_end(MAX_FRAME_BYTES);
    let ((sent, written), read) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("the over-limit stream ends in time");
    assert!(
        matches!(
            read,
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))
        ),
        "an over-limit request is answered with a stream reset, got {read:?}"
    );
    // The node stops reading (STOP_SENDING) once the limit is exceeded.
    if let Err(error) = &written {
        assert!(
            matches!(error, quinn::WriteError::Stopped(_)),
            "the writer sees the stream stopped, got {error}"
        );
    }
    assert!(
        sent > MAX_FRAME_BYTES / 2,
        "the node read a good part of the frame"
    );

    let answer = raw_exchange(
        &connection,
        &envelope(PROTOCOL_VERSION, "ping", NodeRequest::Ping),
    )
    .await
    .expect("ping on the same connection");
    assert_eq!(
        decode::<NodeResponse>(&answer).expect("decodable").body,
        NodeResponse::Pong
    );
    assert_eq!(stored(&transport, addr).await, before);
    assert_eq!(write_marker(&transport, addr, "marker").await, 2);
}

// ---------------------------------------------------------------------------------------------
// c) Peers without a cluster certificate
// ---------------------------------------------------------------------------------------------

fn foreign_identity(trust_real_ca: Option<&[u8]>) -> ClusterIdentity {
    let rogue_ca = GeneratedCa::generate("rogue CA").expect("rogue CA");
    let (cert, key) = rogue_ca
        .issue("rogue", &["localhost".to_owned()], &tls::Role::ALL)
        .expect("rogue leaf");
    let trusted = trust_real_ca.unwrap_or(rogue_ca.cert_pem.as_bytes());
    ClusterIdentity::from_pem(trusted, cert.as_bytes(), key.as_bytes()).expect("rogue identity")
}

fn evil_write(key: &str) -> NodeRequest {
    NodeRequest::Write {
        request_id: request_id(),
        shard: shard_id(),
        ops: vec![put(key, [6.0; 4], Metadata::default())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_cluster_certificate_get_nothing_done() {
    let (node, transport) = seeded_node().await;
    let addr = node.addr;
    let before = stored(&transport, addr).await;
    let real_ca = std::fs::read(node.dir.path().join("tls").join("ca.pem")).expect("ca.pem");

    // 1. Everything from another CA: neither side trusts the other.
    // 2. Trusts the cluster CA (so it accepts the node) but presents a certificate of another CA:
    //    the node must refuse it.
    for (name, identity) in [
        ("identity of another CA", foreign_identity(None)),
        (
            "foreign certificate, trusting the cluster CA",
            foreign_identity(Some(&real_ca)),
        ),
    ] {
        let rogue = QuicTransport::new(&identity).expect("rogue transport");
        for (i, request) in [evil_write(name), NodeRequest::Ping]
            .into_iter()
            .enumerate()
        {
            let result = rogue
                .call(addr, "rogue", Duration::from_secs(5), request)
                .await;
            match result {
                Err(
                    TransportError::Unreachable { .. }
                    | TransportError::Protocol { .. }
                    | TransportError::Timeout { .. },
                ) => {}
                Ok(response) => panic!("{name}: call {i} succeeded with {response:?}"),
            }
        }
        // The same over a raw connection: the handshake or the first exchange fails.
        let config = identity.quic_client_config().expect("client config");
        let outcome = match raw_connect(config, addr).await {
            Err(e) => Err(e),
            Ok((_endpoint, connection)) => {
                raw_exchange(
                    &connection,
                    &envelope(PROTOCOL_VERSION, "rogue", evil_write("raw-rogue")),
                )
                .await
            }
        };
        assert!(
            outcome.is_err(),
            "{name}: a raw exchange got an answer: {outcome:?}"
        );
    }

    // 3. No client certificate at all, trusting the cluster CA.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(node.identity.ca.clone()).expect("root");
    let mut tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls_config.alpn_protocols = vec![tls::ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls_config).expect("quic crypto");
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let outcome = match raw_connect(config, addr).await {
        Err(e) => Err(e),
        Ok((_endpoint, connection)) => {
            raw_exchange(
                &connection,
                &envelope(PROTOCOL_VERSION, "anonymous", evil_write("anonymous")),
            )
            .await
        }
    };
    assert!(
        outcome.is_err(),
        "a client without a certificate got an answer: {outcome:?}"
    );

    // Nothing was written and the node serves its cluster peers as before.
    assert_eq!(
        stored(&transport, addr).await,
        before,
        "no rogue write landed"
    );
    assert_eq!(
        write_marker(&transport, addr, "marker").await,
        2,
        "no rogue write consumed a sequence number"
    );
    let fresh = QuicTransport::new(&node.identity).expect("transport");
    assert_eq!(
        call(&fresh, addr, NodeRequest::Ping).await,
        NodeResponse::Pong
    );
}

// ---------------------------------------------------------------------------------------------
// d) Random UDP datagrams
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_udp_datagrams_do_not_disturb_the_node() {
    let (node, transport) = seeded_node().await;
    let addr = node.addr;
    let before = stored(&transport, addr).await;
    let mut rng = StdRng::seed_from_u64(0xdead_beef);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let mut sent = 0;
    let mut send = |bytes: &[u8]| {
        // Loopback may drop under load; that is fine, the node must simply survive.
        if socket.send_to(bytes, addr).is_ok() {
            sent += 1;
        }
    };
    // Pure noise of many sizes.
    for size in [
        0usize, 1, 2, 5, 20, 21, 100, 1_199, 1_200, 1_201, 1_350, 1_500, 4_096, 65_000,
    ] {
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
            send(&bytes);
        }
    }
    // Noise dressed as QUIC: long-header Initial packets (version 1 and unknown versions, which
    // ask for version negotiation) and short-header packets with random connection ids.
    for round in 0..600 {
        let mut packet = Vec::with_capacity(1_200);
        match round % 3 {
            0 | 1 => {
                packet.push(0xc0 | rng.gen_range(0..16u8));
                let version: u32 = if round % 3 == 0 { 1 } else { rng.gen() };
                packet.extend_from_slice(&version.to_be_bytes());
                for _ in 0..2 {
                    let cid_len = rng.gen_range(0..=20u8);
                    packet.push(cid_len);
                    packet.extend((0..cid_len).map(|_| rng.gen::<u8>()));
                }
                packet.push(0); // no token
                packet.extend_from_slice(&[0x44, 0xb0]); // payload length 1200
                while packet.len() < 1_200 {
                    packet.push(rng.gen());
                }
            }
            _ => {
                packet.push(0x40 | rng.gen_range(0..64u8));
                packet.extend((0..rng.gen_range(20..1_300)).map(|_| rng.gen::<u8>()));
            }
        }
        send(&packet);
    }
    assert!(sent > 0, "some datagrams were sent");

    // The established connection and a new one both work; nothing changed.
    assert_eq!(
        call(&transport, addr, NodeRequest::Ping).await,
        NodeResponse::Pong
    );
    let fresh = QuicTransport::new(&node.identity).expect("transport");
    assert_eq!(
        call(&fresh, addr, NodeRequest::Ping).await,
        NodeResponse::Pong
    );
    assert_eq!(stored(&fresh, addr).await, before);
    assert_eq!(
        hits(call(&fresh, addr, search([0.0; 4], 1, None)).await),
        pairs(&[("a", 0.0)])
    );
    assert_eq!(write_marker(&transport, addr, "marker").await, 2);
}

/// Reconciling with the control plane's list drops the shards it no longer names (data
/// directory included) and creates the missing ones; the ones kept keep serving, and a shard
/// opened after the list was asked for is never dropped by it.
#[tokio::test]
async fn reconcile_follows_the_assignment_list() {
    let asked_at = std::time::Instant::now();
    let node = start_node().await;
    let transport = QuicTransport::new(&node.identity).expect("transport");
    let ids: Vec<ShardId> = (0..3)
        .map(|shard| ShardId {
            index: IndexUid(0x5eed),
            shard,
        })
        .collect();
    for id in &ids {
        let spec = ShardSpec {
            id: *id,
            ..shard_spec()
        };
        let response = transport
            .call(
                node.addr,
                "retain",
                CALL_TIMEOUT,
                NodeRequest::CreateShard(spec),
            )
            .await
            .expect("create");
        assert_eq!(response, NodeResponse::Done);
    }
    let shards_dir = node.dir.path().join("data").join("shards");
    assert_eq!(std::fs::read_dir(&shards_dir).expect("dir").count(), 3);
    let keep = ids[1];
    let spec_of = |id: ShardId| ShardSpec { id, ..shard_spec() };
    // A list asked for before the shards were opened may predate them: nothing is dropped.
    let changes = node
        .service
        .reconcile(vec![spec_of(keep)], asked_at)
        .await
        .expect("reconcile");
    assert!(changes.dropped.is_empty());
    assert_eq!(node.service.shard_ids().len(), 3);
    let new = ShardId {
        index: IndexUid(0x5eee),
        shard: 0,
    };
    let changes = node
        .service
        .reconcile(vec![spec_of(keep), spec_of(new)], std::time::Instant::now())
        .await
        .expect("reconcile");
    assert_eq!(changes.dropped, vec![ids[0], ids[2]]);
    assert_eq!(changes.created, vec![new]);
    assert_eq!(node.service.shard_ids(), vec![keep, new]);
    assert_eq!(std::fs::read_dir(&shards_dir).expect("dir").count(), 2);
    let response = transport
        .call(
            node.addr,
            "retain",
            CALL_TIMEOUT,
            NodeRequest::Get {
                shard: ids[0],
                keys: vec!["a".into()],
                return_data: false,
                return_metadata: false,
            },
        )
        .await
        .expect("call");
    assert_eq!(
        response,
        NodeResponse::Error(NodeError::ShardNotFound(ids[0]))
    );
}

// ---------------------------------------------------------------------------------------------
// d) Certificate roles: coordinators call shards, nodes only carry shard Raft traffic
// ---------------------------------------------------------------------------------------------

/// A client of the node's own cluster CA whose certificate grants only `roles`.
fn identity_with(node: &Node, roles: &[tls::Role]) -> ClusterIdentity {
    let tls_dir = node.dir.path().join("tls");
    let read = |name: &str| std::fs::read_to_string(tls_dir.join(name)).expect(name);
    let ca = GeneratedCa::from_pem(&read("ca.pem"), &read("ca.key")).expect("cluster CA");
    let (cert, key) = ca
        .issue("peer", &["localhost".to_owned()], roles)
        .expect("leaf");
    ClusterIdentity::from_pem(ca.cert_pem.as_bytes(), cert.as_bytes(), key.as_bytes())
        .expect("identity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_coordinators_call_shards_and_only_nodes_send_shard_raft_traffic() {
    let (node, transport) = seeded_node().await;
    let before = stored(&transport, node.addr).await;
    let raft = || NodeRequest::ShardRaft {
        shard: shard_id(),
        to: ReplicaId(1),
        payload: vec![0xff; 8],
    };
    let forbidden =
        |response: &NodeResponse| matches!(response, NodeResponse::Error(NodeError::Forbidden(_)));
    // A node's certificate: no data request, no shard management.
    let as_node = QuicTransport::new(&identity_with(&node, &[tls::Role::Node])).expect("node");
    for request in [
        evil_write("from-a-node"),
        NodeRequest::DropShard(shard_id()),
        NodeRequest::Replicas { digests: true },
    ] {
        let response = call(&as_node, node.addr, request).await;
        assert!(forbidden(&response), "{response:?}");
    }
    // ... but its Raft traffic reaches the shard's group (garbage here: refused by the group,
    // not by the role check).
    let response = call(&as_node, node.addr, raft()).await;
    assert!(
        matches!(response, NodeResponse::ShardRaft(_)),
        "{response:?}"
    );
    // A coordinator's or an operator's certificate: no Raft traffic.
    for roles in [&[tls::Role::Coordinator][..], &[tls::Role::Admin]] {
        let peer = QuicTransport::new(&identity_with(&node, roles)).expect("peer");
        let response = call(&peer, node.addr, raft()).await;
        assert!(forbidden(&response), "{roles:?}: {response:?}");
    }
    assert_eq!(stored(&transport, node.addr).await, before);
}
