//! Wire-format tests for the postcard codec.
//!
//! * Round trips: every message shape survives `encode` -> `decode` unchanged.
//! * Golden bytes: a few fixed envelopes encode to hard-coded bytes, so an accidental change of
//!   the wire format (reordered fields or variants, changed types) fails loudly instead of
//!   silently breaking mixed-version clusters. If a change is intentional, bump
//!   `PROTOCOL_VERSION` and re-capture the bytes.
//! * Robustness: garbage and truncated frames decode to `Err`, never panic.
//! * The frame size limit is enforced on both sides.

use proptest::prelude::*;
use quiver_proto::{
    decode, encode, CodecError, DistanceMetric, Envelope, Filter, FilterValue, HashRange, Hit,
    IndexUid, MetaValue, Metadata, NodeError, NodeRequest, NodeResponse, ReplicaId, ShardId,
    ShardMember, ShardSpec, VectorRecord, WriteOp, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Finite floats of every class (both zeros, subnormals, normals), so `PartialEq` is a faithful
/// equality check. Bit-exactness is checked separately by re-encoding.
fn f64s() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

fn f32s() -> impl Strategy<Value = f32> {
    use proptest::num::f32::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Short strings with arbitrary unicode, including the empty string.
fn strings() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn vectors() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(f32s(), 0..8)
}

fn shard_ids() -> impl Strategy<Value = ShardId> {
    (any::<u64>(), any::<u32>()).prop_map(|(index, shard)| ShardId {
        index: IndexUid(index),
        shard,
    })
}

fn hash_ranges() -> impl Strategy<Value = HashRange> {
    (any::<u64>(), any::<Option<u64>>()).prop_map(|(start, end)| HashRange { start, end })
}

fn meta_values() -> impl Strategy<Value = MetaValue> {
    let leaf = prop_oneof![
        strings().prop_map(MetaValue::Str),
        f64s().prop_map(MetaValue::Num),
        any::<bool>().prop_map(MetaValue::Bool),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(MetaValue::List)
    })
}

fn metadata() -> impl Strategy<Value = Metadata> {
    // The codec does not care whether keys are distinct, so neither does the strategy.
    prop::collection::vec((strings(), meta_values()), 0..4).prop_map(Metadata)
}

fn filter_values() -> impl Strategy<Value = FilterValue> {
    prop_oneof![
        strings().prop_map(FilterValue::Str),
        f64s().prop_map(FilterValue::Num),
        any::<bool>().prop_map(FilterValue::Bool),
    ]
}

fn filters() -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        (strings(), filter_values()).prop_map(|(k, v)| Filter::Eq(k, v)),
        (strings(), filter_values()).prop_map(|(k, v)| Filter::Ne(k, v)),
        (strings(), f64s()).prop_map(|(k, v)| Filter::Gt(k, v)),
        (strings(), f64s()).prop_map(|(k, v)| Filter::Gte(k, v)),
        (strings(), f64s()).prop_map(|(k, v)| Filter::Lt(k, v)),
        (strings(), f64s()).prop_map(|(k, v)| Filter::Lte(k, v)),
        (strings(), prop::collection::vec(filter_values(), 0..4))
            .prop_map(|(k, v)| Filter::In(k, v)),
        (strings(), prop::collection::vec(filter_values(), 0..4))
            .prop_map(|(k, v)| Filter::Nin(k, v)),
        (strings(), any::<bool>()).prop_map(|(k, v)| Filter::Exists(k, v)),
        (strings(), strings()).prop_map(|(k, v)| Filter::StartsWith(k, v)),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Filter::And),
            prop::collection::vec(inner, 0..4).prop_map(Filter::Or),
        ]
    })
}

fn shard_specs() -> impl Strategy<Value = ShardSpec> {
    (
        shard_ids(),
        any::<u32>(),
        prop_oneof![
            Just(DistanceMetric::Euclidean),
            Just(DistanceMetric::Cosine)
        ],
        prop::collection::vec(strings(), 0..4),
        hash_ranges(),
        prop::collection::vec((any::<u64>(), strings()), 0..4),
    )
        .prop_map(
            |(id, dimension, metric, non_filterable_keys, range, replicas)| ShardSpec {
                id,
                dimension,
                metric,
                non_filterable_keys,
                range,
                replicas: replicas
                    .into_iter()
                    .map(|(replica, node)| ShardMember {
                        replica: ReplicaId(replica),
                        node,
                    })
                    .collect(),
            },
        )
}

fn write_ops() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        (strings(), vectors(), metadata()).prop_map(|(key, vector, metadata)| WriteOp::Put {
            key,
            vector,
            metadata,
        }),
        strings().prop_map(|key| WriteOp::Delete { key }),
    ]
}

fn node_requests() -> impl Strategy<Value = NodeRequest> {
    prop_oneof![
        Just(NodeRequest::Ping),
        shard_specs().prop_map(NodeRequest::CreateShard),
        shard_ids().prop_map(NodeRequest::DropShard),
        (
            shard_ids(),
            any::<u128>(),
            prop::collection::vec(write_ops(), 0..4)
        )
            .prop_map(|(shard, request_id, ops)| NodeRequest::Write {
                shard,
                request_id,
                ops
            }),
        (
            shard_ids(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(shard, to, payload)| NodeRequest::ShardRaft {
                shard,
                to: ReplicaId(to),
                payload
            }),
        (
            shard_ids(),
            prop::collection::vec(strings(), 0..4),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(shard, keys, return_data, return_metadata)| NodeRequest::Get {
                    shard,
                    keys,
                    return_data,
                    return_metadata,
                }
            ),
        (
            shard_ids(),
            prop::option::of(strings()),
            any::<u32>(),
            prop::option::of(hash_ranges()),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(shard, after, limit, range, return_data, return_metadata)| NodeRequest::List {
                    shard,
                    after,
                    limit,
                    range,
                    return_data,
                    return_metadata,
                }
            ),
        (
            shard_ids(),
            vectors(),
            any::<u32>(),
            prop::option::of(filters()),
            any::<bool>(),
        )
            .prop_map(|(shard, vector, top_k, filter, return_metadata)| {
                NodeRequest::Search {
                    shard,
                    vector,
                    top_k,
                    filter,
                    return_metadata,
                }
            }),
    ]
}

fn vector_records() -> impl Strategy<Value = VectorRecord> {
    (
        strings(),
        prop::option::of(vectors()),
        prop::option::of(metadata()),
    )
        .prop_map(|(key, vector, metadata)| VectorRecord {
            key,
            vector,
            metadata,
        })
}

fn hits() -> impl Strategy<Value = Hit> {
    (strings(), f32s(), prop::option::of(metadata())).prop_map(|(key, distance, metadata)| Hit {
        key,
        distance,
        metadata,
    })
}

fn node_errors() -> impl Strategy<Value = NodeError> {
    prop_oneof![
        shard_ids().prop_map(NodeError::ShardNotFound),
        Just(NodeError::Overloaded),
        Just(NodeError::DeadlineExceeded),
        strings().prop_map(NodeError::InvalidRequest),
        (any::<u16>(), any::<u16>())
            .prop_map(|(got, supported)| NodeError::ProtocolVersion { got, supported }),
        strings().prop_map(NodeError::Malformed),
        strings().prop_map(NodeError::Storage),
        shard_ids().prop_map(NodeError::ShardUnavailable),
        (shard_ids(), prop::option::of(strings()))
            .prop_map(|(shard, leader)| NodeError::NotLeader { shard, leader }),
    ]
}

fn node_responses() -> impl Strategy<Value = NodeResponse> {
    prop_oneof![
        Just(NodeResponse::Pong),
        Just(NodeResponse::Done),
        any::<u64>().prop_map(|seq| NodeResponse::Written { seq }),
        prop::collection::vec(vector_records(), 0..4).prop_map(NodeResponse::Vectors),
        (prop::collection::vec(vector_records(), 0..4), any::<bool>())
            .prop_map(|(vectors, more)| NodeResponse::Listed { vectors, more }),
        prop::collection::vec(hits(), 0..4).prop_map(NodeResponse::Hits),
        node_errors().prop_map(NodeResponse::Error),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(NodeResponse::ShardRaft),
    ]
}

fn envelopes<T: std::fmt::Debug>(
    body: impl Strategy<Value = T>,
) -> impl Strategy<Value = Envelope<T>> {
    (any::<u16>(), strings(), any::<u64>(), body).prop_map(
        |(version, request_id, deadline_unix_ms, body)| Envelope {
            version,
            request_id,
            deadline_unix_ms,
            body,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Round trips and robustness
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn request_round_trips(envelope in envelopes(node_requests())) {
        let bytes = encode(&envelope).expect("encode");
        let decoded: Envelope<NodeRequest> = decode(&bytes).expect("decode");
        prop_assert_eq!(&decoded, &envelope);
        // Re-encoding is bit-identical (catches e.g. -0.0 turning into 0.0, which `==` hides).
        prop_assert_eq!(encode(&decoded).expect("re-encode"), bytes);
    }

    #[test]
    fn response_round_trips(envelope in envelopes(node_responses())) {
        let bytes = encode(&envelope).expect("encode");
        let decoded: Envelope<NodeResponse> = decode(&bytes).expect("decode");
        prop_assert_eq!(&decoded, &envelope);
        prop_assert_eq!(encode(&decoded).expect("re-encode"), bytes);
    }

    /// Arbitrary bytes may or may not form a valid frame, but decoding must never panic (nor
    /// try to allocate absurd amounts because of a huge length prefix).
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<NodeRequest>(&bytes);
        let _ = decode::<NodeResponse>(&bytes);
    }

    /// Postcard is self-delimiting and decoding is deterministic, so every strict prefix of a
    /// valid frame runs out of input and must be rejected.
    #[test]
    fn truncated_request_is_rejected(
        envelope in envelopes(node_requests()),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = encode(&envelope).expect("encode");
        let len = cut.index(bytes.len());
        prop_assert!(decode::<NodeRequest>(&bytes[..len]).is_err());
    }

    #[test]
    fn truncated_response_is_rejected(
        envelope in envelopes(node_responses()),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = encode(&envelope).expect("encode");
        let len = cut.index(bytes.len());
        prop_assert!(decode::<NodeResponse>(&bytes[..len]).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Golden bytes
// ---------------------------------------------------------------------------------------------

fn golden_ping() -> Envelope<NodeRequest> {
    Envelope {
        version: PROTOCOL_VERSION,
        request_id: "req-1".to_owned(),
        deadline_unix_ms: 1_700_000_000_000,
        body: NodeRequest::Ping,
    }
}

fn golden_write() -> Envelope<NodeRequest> {
    Envelope {
        version: PROTOCOL_VERSION,
        request_id: "r".to_owned(),
        deadline_unix_ms: 300,
        body: NodeRequest::Write {
            shard: ShardId {
                index: IndexUid(0x0102_0304_0506_0708),
                shard: 3,
            },
            request_id: 5,
            ops: vec![WriteOp::Put {
                key: "k".to_owned(),
                vector: vec![1.0, -0.5],
                metadata: Metadata(vec![
                    ("genre".to_owned(), MetaValue::Str("jazz".to_owned())),
                    ("year".to_owned(), MetaValue::Num(2020.0)),
                    (
                        "tags".to_owned(),
                        MetaValue::List(vec![MetaValue::Bool(true), MetaValue::Num(-1.5)]),
                    ),
                ]),
            }],
        },
    }
}

#[rustfmt::skip]
const GOLDEN_PING: &[u8] = &[
    2,                                  // version (varint)
    5, b'r', b'e', b'q', b'-', b'1',    // request_id
    128, 208, 149, 255, 188, 49,        // deadline_unix_ms 1_700_000_000_000 (varint)
    0,                                  // NodeRequest::Ping
];

#[rustfmt::skip]
const GOLDEN_WRITE: &[u8] = &[
    2,                                                  // version
    1, b'r',                                            // request_id
    172, 2,                                             // deadline_unix_ms 300 (varint)
    3,                                                  // NodeRequest::Write
    136, 142, 152, 168, 192, 224, 128, 129, 1,          // shard.index (varint)
    3,                                                  // shard.shard
    5,                                                  // request_id (varint)
    1,                                                  // ops.len()
    0,                                                  // WriteOp::Put
    1, b'k',                                            // key
    2, 0, 0, 128, 63, 0, 0, 0, 191,                     // vector [1.0, -0.5] (f32 LE)
    3,                                                  // metadata.len()
    5, b'g', b'e', b'n', b'r', b'e',                    // "genre"
    0, 4, b'j', b'a', b'z', b'z',                       // Str("jazz")
    4, b'y', b'e', b'a', b'r',                          // "year"
    1, 0, 0, 0, 0, 0, 144, 159, 64,                     // Num(2020.0) (f64 LE)
    4, b't', b'a', b'g', b's',                          // "tags"
    3, 2,                                               // List, len 2
    2, 1,                                               // Bool(true)
    1, 0, 0, 0, 0, 0, 0, 248, 191,                      // Num(-1.5)
];

#[test]
fn golden_ping_bytes() {
    let envelope = golden_ping();
    let bytes = encode(&envelope).expect("encode");
    assert_eq!(bytes, GOLDEN_PING, "wire format of Ping changed: {bytes:?}");
    assert_eq!(
        decode::<NodeRequest>(GOLDEN_PING).expect("decode"),
        envelope
    );
}

#[test]
fn golden_write_bytes() {
    let envelope = golden_write();
    let bytes = encode(&envelope).expect("encode");
    assert_eq!(
        bytes, GOLDEN_WRITE,
        "wire format of Write changed: {bytes:?}"
    );
    assert_eq!(
        decode::<NodeRequest>(GOLDEN_WRITE).expect("decode"),
        envelope
    );
}

// ---------------------------------------------------------------------------------------------
// Frame size limit
// ---------------------------------------------------------------------------------------------

/// A Ping envelope whose encoding is exactly `len` bytes (for `len` in the range where the
/// request id's length prefix takes 4 bytes, which covers `MAX_FRAME_BYTES`).
fn ping_of_encoded_len(len: usize) -> Envelope<NodeRequest> {
    // version (1 byte varint) + id length (4 byte varint) + id + deadline 0 (1) + Ping tag (1).
    let overhead = 1 + 4 + 1 + 1;
    Envelope {
        version: PROTOCOL_VERSION,
        request_id: "x".repeat(len - overhead),
        deadline_unix_ms: 0,
        body: NodeRequest::Ping,
    }
}

#[test]
fn frame_at_the_limit_is_accepted_and_one_byte_more_is_refused() {
    let envelope = ping_of_encoded_len(MAX_FRAME_BYTES);
    let mut bytes = encode(&envelope).expect("a frame of exactly the limit encodes");
    assert_eq!(bytes.len(), MAX_FRAME_BYTES);
    let decoded = decode::<NodeRequest>(&bytes).expect("a frame of exactly the limit decodes");
    assert_eq!(decoded.request_id.len(), envelope.request_id.len());
    drop(decoded);

    // Trailing garbage would otherwise be ignored by postcard: the size check must come first.
    bytes.push(0);
    match decode::<NodeRequest>(&bytes) {
        Err(CodecError::TooLarge(n)) => assert_eq!(n, MAX_FRAME_BYTES + 1),
        other => panic!(
            "expected TooLarge, got {:?}",
            other.map(|e| e.request_id.len())
        ),
    }
}

#[test]
fn encode_refuses_an_oversized_frame() {
    let envelope = ping_of_encoded_len(MAX_FRAME_BYTES + 1);
    match encode(&envelope) {
        Err(CodecError::TooLarge(n)) => assert_eq!(n, MAX_FRAME_BYTES + 1),
        other => panic!("expected TooLarge, got {:?}", other.map(|b| b.len())),
    }
}
