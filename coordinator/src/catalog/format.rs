//! The catalog's durable format: how what the control plane stores is encoded.
//!
//! Every value in a coordinator's `raft.redb` (Raft log entries, which carry
//! [`crate::cluster::types::Proposal`]s and so [`super::CatalogCommand`]s and records; the vote and
//! the other Raft metadata; snapshot metadata; and the snapshot data, a whole
//! [`super::CatalogState`]) is written as
//!
//! ```text
//! "QCAT" (4 bytes, MAGIC) | format version (1 byte) | postcard encoding of the value
//! ```
//!
//! Snapshot data crosses the network too (InstallSnapshot) with the same header. The version
//! covers the postcard layout of all of these types, openraft's among them (`Entry`, `Vote`,
//! `LogId`, `SnapshotMeta`), so an openraft upgrade that changes their serde layout needs a new
//! version as much as a change to a catalog record does. The golden-bytes tests below fail on any
//! layout change: when one fails, bump [`CATALOG_FORMAT_VERSION`] and teach [`decode`] to read the
//! older version (or refuse it), then update the golden bytes.
//!
//! Why a magic and not only a version byte: what Quiver wrote before this format had no header,
//! and its first byte is often 1 (an entry of Raft term 1, a snapshot of a catalog with one
//! bucket), which a bare version byte would take for version 1. No value of that layout starts
//! with "QCAT" (81, 67, 65, 84): an entry would have payload variant 84, which does not exist; a
//! snapshot, a first bucket name of 67 bytes (names have at most 63); a vote, 65 where its bool
//! is; a log id would end after its third byte; the other values start with an `Option` tag (0
//! or 1). So older data is refused, never misread. `cluster::store::open` also refuses a whole
//! `raft.redb` of the older layout up front (it has no format marker).
//!
//! Messages between coordinators (forwarded proposals, AppendEntries) are not covered by this
//! version; every coordinator of a cluster runs the same build.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::CatalogState;

/// The version this build writes, and the only one it reads.
pub const CATALOG_FORMAT_VERSION: u8 = 2;

/// The first bytes of every encoded catalog value.
pub const MAGIC: [u8; 4] = *b"QCAT";

const HEADER_LEN: usize = MAGIC.len() + 1;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "not in a versioned catalog format (no \"QCAT\" header): written by a Quiver from before \
         catalog format versions (format 0), or corrupt; this build reads catalog format \
         version {CATALOG_FORMAT_VERSION} only"
    )]
    Unversioned,
    #[error(
        "catalog format version {found} is not supported; this build reads catalog format \
         version {CATALOG_FORMAT_VERSION} only"
    )]
    UnsupportedVersion { found: u8 },
    #[error("undecodable catalog data of format version {CATALOG_FORMAT_VERSION}: {0}")]
    Decode(postcard::Error),
    #[error("{0} unexpected bytes after catalog data of format version {CATALOG_FORMAT_VERSION}")]
    TrailingBytes(usize),
    #[error("encoding catalog data: {0}")]
    Encode(postcard::Error),
}

/// Encodes `value` in the current format: header, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FormatError> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&MAGIC);
    bytes.push(CATALOG_FORMAT_VERSION);
    postcard::to_extend(value, bytes).map_err(FormatError::Encode)
}

/// Decodes a value written by [`encode`]. Refuses data without the header, of another format
/// version, or with bytes left over, so nothing is ever decoded under the wrong layout.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    let body = body(bytes)?;
    let (value, rest) = postcard::take_from_bytes(body).map_err(FormatError::Decode)?;
    if !rest.is_empty() {
        return Err(FormatError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// The bytes after the header, once the header says they are in this build's format.
fn body(bytes: &[u8]) -> Result<&[u8], FormatError> {
    match bytes.split_at_checked(HEADER_LEN) {
        Some((header, body)) if header[..MAGIC.len()] == MAGIC => match header[MAGIC.len()] {
            CATALOG_FORMAT_VERSION => Ok(body),
            found => Err(FormatError::UnsupportedVersion { found }),
        },
        _ => Err(FormatError::Unversioned),
    }
}

/// The data of a snapshot: the whole catalog state.
pub fn encode_snapshot(state: &CatalogState) -> Result<Vec<u8>, FormatError> {
    encode(state)
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<CatalogState, FormatError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use quiver_proto::{DistanceMetric, HashRange, IndexUid};

    use super::*;
    use crate::catalog::{
        BucketRecord, CatalogCommand, EncryptionConfig, IndexMode, NewIndex, NewShard, SseType,
    };
    use crate::cluster::types::{Proposal, TypeConfig};

    type Entry = openraft::Entry<TypeConfig>;

    fn golden_entry() -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 3),
            payload: EntryPayload::Normal(Proposal {
                id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
                command: CatalogCommand::CreateIndex(NewIndex {
                    bucket: "b".into(),
                    name: "i".into(),
                    uid: IndexUid(7),
                    creation_time: 1.5,
                    dimension: 3,
                    metric: DistanceMetric::Cosine,
                    non_filterable_keys: Some(vec!["k".into()]),
                    encryption: Some(EncryptionConfig {
                        sse_type: SseType::Kms,
                        kms_key_arn: Some("a".into()),
                    }),
                    tags: BTreeMap::from([("t".into(), "v".into())]),
                    index_mode: IndexMode::Classic,
                    shards: vec![
                        NewShard {
                            range: HashRange {
                                start: 0,
                                end: Some(1 << 63),
                            },
                            nodes: vec!["n1".into()],
                        },
                        NewShard {
                            range: HashRange {
                                start: 1 << 63,
                                end: None,
                            },
                            nodes: vec!["n2".into()],
                        },
                    ],
                }),
            }),
        }
    }

    fn bucket() -> BucketRecord {
        BucketRecord {
            name: "b".into(),
            creation_time: 1.0,
            encryption: EncryptionConfig::default(),
            tags: BTreeMap::new(),
            default_index_mode: IndexMode::Enhanced,
            policy: None,
        }
    }

    /// A catalog with a cluster id, one node, one bucket and a one-shard index; the first command
    /// was proposal 9 (remembered), the others proposals 0 (not remembered).
    fn golden_state() -> CatalogState {
        let mut state = CatalogState::default();
        let commands = [
            CatalogCommand::RegisterNode {
                id: "n".into(),
                addr: "a".into(),
                incarnation: 7,
            },
            CatalogCommand::SetClusterId(5),
            CatalogCommand::CreateBucket(bucket()),
            CatalogCommand::CreateIndex(NewIndex {
                bucket: "b".into(),
                name: "i".into(),
                uid: IndexUid(7),
                creation_time: 2.0,
                dimension: 2,
                metric: DistanceMetric::Euclidean,
                non_filterable_keys: None,
                encryption: None,
                tags: BTreeMap::new(),
                index_mode: IndexMode::Enhanced,
                shards: vec![NewShard {
                    range: HashRange::FULL,
                    nodes: vec!["n".into()],
                }],
            }),
        ];
        for (id, command) in [9, 0, 0, 0].into_iter().zip(commands) {
            state.apply(id, command).expect("apply");
        }
        state
    }

    #[rustfmt::skip]
    const GOLDEN_ENTRY: &[u8] = &[
        b'Q', b'C', b'A', b'T', 2,              // magic, format version 2
        2, 1, 3,                                // log_id: term 2, leader 1, index 3
        1,                                      // EntryPayload::Normal
        144, 158, 184, 232, 192, 225, 130, 133, 137,
        144, 156, 176, 208, 128, 193, 129, 130, 2, // Proposal.id (varint)
        2,                                      // CatalogCommand::CreateIndex
        1, b'b', 1, b'i',                       // bucket, name
        7,                                      // uid
        0, 0, 0, 0, 0, 0, 248, 63,              // creation_time 1.5 (f64, little endian)
        3,                                      // dimension
        1,                                      // DistanceMetric::Cosine
        1, 1, 1, b'k',                          // non_filterable_keys: Some(["k"])
        1, 1, 1, 1, b'a',                       // encryption: Some(Kms, Some("a"))
        1, 1, b't', 1, b'v',                    // tags {"t": "v"}
        0,                                      // IndexMode::Classic
        2,                                      // two shards
        0, 1, 128, 128, 128, 128, 128, 128, 128, 128, 128, 1, // [0, Some(2^63))
        1, 2, b'n', b'1',                       // nodes ["n1"]
        128, 128, 128, 128, 128, 128, 128, 128, 128, 1, 0, // [2^63, None)
        1, 2, b'n', b'2',                       // nodes ["n2"]
    ];

    #[rustfmt::skip]
    const GOLDEN_SNAPSHOT: &[u8] = &[
        b'Q', b'C', b'A', b'T', 2,              // magic, format version 2
        1,                                      // buckets: one
        1, b'b',                                //   key
        1, b'b', 0, 0, 0, 0, 0, 0, 240, 63,     //   name, creation_time 1.0
        0, 0,                                   //   encryption: Aes256, no key
        0, 1, 0,                                //   no tags, IndexMode::Enhanced, no policy
        1,                                      // indexes: one
        1, b'b', 1, b'i',                       //   key
        1, b'b', 1, b'i', 7,                    //   bucket, name, uid
        0, 0, 0, 0, 0, 0, 0, 64, 2, 0,          //   creation_time 2.0, dimension, Euclidean
        0, 0, 0, 1,                             //   no keys, no encryption, no tags, Enhanced
        1,                                      //   shards: one
        0, 0, 0,                                //     shard 0, range [0, None)
        1, 1, 1, b'n', 7,                       //     replicas: [ReplicaId(1) on "n", incarnation 7]
        1,                                      //     epoch
        1,                                      // nodes: one
        1, b'n', 1, b'n', 1, b'a', 1, 7,        //   key, id, addr, up, incarnation 7
        2,                                      // next_replica_id
        1, 5,                                   // cluster_id: Some(5)
        1, 9, 0,                                // results: proposal 9 answered Ok
        1, 9,                                   // order: [9]
    ];

    /// The encoding of a Raft log entry: changing it needs a new format version (see the module
    /// documentation).
    #[test]
    fn golden_entry_bytes() {
        let entry = golden_entry();
        let bytes = encode(&entry).expect("encode");
        assert_eq!(bytes, GOLDEN_ENTRY, "log entry format changed: {bytes:?}");
        let decoded: Entry = decode(GOLDEN_ENTRY).expect("decode");
        assert_eq!(decoded.log_id, entry.log_id);
        match (decoded.payload, entry.payload) {
            (EntryPayload::Normal(decoded), EntryPayload::Normal(expected)) => {
                assert_eq!(decoded, expected)
            }
            _ => panic!("payload kind changed"),
        }
    }

    /// The encoding of snapshot data: changing it needs a new format version.
    #[test]
    fn golden_snapshot_bytes() {
        let state = golden_state();
        let bytes = encode_snapshot(&state).expect("encode");
        assert_eq!(bytes, GOLDEN_SNAPSHOT, "snapshot format changed: {bytes:?}");
        assert_eq!(decode_snapshot(GOLDEN_SNAPSHOT).expect("decode"), state);
    }

    #[test]
    fn other_versions_are_refused_naming_the_version() {
        for version in [0, 1, 3, 255] {
            let mut bytes = GOLDEN_SNAPSHOT.to_vec();
            bytes[MAGIC.len()] = version;
            let error = decode_snapshot(&bytes).expect_err("refused");
            assert!(
                matches!(error, FormatError::UnsupportedVersion { found } if found == version),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                format!(
                    "catalog format version {version} is not supported; this build reads \
                     catalog format version 2 only"
                )
            );
        }
    }

    #[test]
    fn data_without_the_header_is_refused_as_format_0() {
        for bytes in [
            &GOLDEN_SNAPSHOT[MAGIC.len()..],
            &[],
            b"QCAT",
            b"QCA\x01\x00",
        ] {
            let error = decode_snapshot(bytes).expect_err("refused");
            assert!(matches!(error, FormatError::Unversioned), "{error:?}");
            assert!(error.to_string().contains("(format 0)"), "{error}");
        }
    }

    #[test]
    fn trailing_or_missing_bytes_are_refused() {
        let mut longer = GOLDEN_SNAPSHOT.to_vec();
        longer.push(0);
        assert!(matches!(
            decode_snapshot(&longer),
            Err(FormatError::TrailingBytes(1))
        ));
        let shorter = &GOLDEN_SNAPSHOT[..GOLDEN_SNAPSHOT.len() - 1];
        assert!(matches!(
            decode_snapshot(shorter),
            Err(FormatError::Decode(_))
        ));
    }

    /// What Quiver wrote before this format (commit 20b429c): postcard without a header, with
    /// String index modes and encryption types and a single node per shard. The types below
    /// reproduce that layout.
    mod before_versioning {
        use std::collections::BTreeMap;

        use serde::Serialize;

        #[derive(Serialize)]
        pub struct LogId {
            pub term: u64,
            pub node_id: u64,
            pub index: u64,
        }

        #[derive(Serialize)]
        pub enum Payload {
            _Blank,
            Normal(Proposal),
        }

        #[derive(Serialize)]
        pub struct Entry {
            pub log_id: LogId,
            pub payload: Payload,
        }

        #[derive(Serialize)]
        pub struct Proposal {
            pub id: u128,
            pub command: Command,
        }

        #[derive(Serialize)]
        pub enum Command {
            CreateBucket(Bucket),
        }

        #[derive(Serialize)]
        pub struct Encryption {
            pub sse_type: String,
            pub kms_key_arn: Option<String>,
        }

        #[derive(Serialize)]
        pub struct Bucket {
            pub name: String,
            pub creation_time: f64,
            pub encryption: Encryption,
            pub tags: BTreeMap<String, String>,
            pub default_index_mode: String,
            pub policy: Option<String>,
        }

        #[derive(Serialize)]
        pub struct State {
            pub buckets: BTreeMap<String, Bucket>,
            pub indexes: BTreeMap<(String, String), ()>,
            pub nodes: BTreeMap<String, ()>,
            pub cluster_id: Option<u128>,
            pub results: BTreeMap<u128, Result<(), ()>>,
            pub order: Vec<u128>,
        }

        pub fn bucket() -> Bucket {
            Bucket {
                name: "b".into(),
                creation_time: 1.0,
                encryption: Encryption {
                    sse_type: "AES256".into(),
                    kms_key_arn: None,
                },
                tags: BTreeMap::new(),
                default_index_mode: "ENHANCED".into(),
                policy: None,
            }
        }
    }

    /// Entries and snapshots as the previous code wrote them start with byte 1 in a first term
    /// and with one bucket: a bare version byte would take them for version 1. The magic
    /// refuses them.
    #[test]
    fn data_written_before_versioning_is_refused_never_misread() {
        let entry = before_versioning::Entry {
            log_id: before_versioning::LogId {
                term: 1,
                node_id: 1,
                index: 5,
            },
            payload: before_versioning::Payload::Normal(before_versioning::Proposal {
                id: 0,
                command: before_versioning::Command::CreateBucket(before_versioning::bucket()),
            }),
        };
        let old_entry = postcard::to_stdvec(&entry).expect("encode");
        assert_eq!(old_entry[0], 1);
        let error = decode::<Entry>(&old_entry).expect_err("refused");
        assert!(matches!(error, FormatError::Unversioned), "{error:?}");

        let state = before_versioning::State {
            buckets: BTreeMap::from([("b".into(), before_versioning::bucket())]),
            indexes: BTreeMap::new(),
            nodes: BTreeMap::new(),
            cluster_id: None,
            results: BTreeMap::new(),
            order: vec![],
        };
        let old_snapshot = postcard::to_stdvec(&state).expect("encode");
        assert_eq!(old_snapshot[0], 1);
        let error = decode_snapshot(&old_snapshot).expect_err("refused");
        assert!(matches!(error, FormatError::Unversioned), "{error:?}");
        assert!(error.to_string().contains("(format 0)"));
    }
}
