//! "Acknowledged means fsynced", checked on the storage itself: the shard store and the node's
//! Raft log are opened on a redb backend that counts fsyncs (`support/sync_count.rs`), and each
//! operation that reports a write durable must have fsynced all it wrote before it returned.
//! A kill -9 test cannot show this (the page cache survives the process); this one fails if a
//! commit is weakened to `Durability::Eventual` or `Durability::None`.

#[path = "support/sync_count.rs"]
mod sync_count;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use quiver_node::replication::log::LogEngine;
use quiver_node::replication::ShardTypeConfig;
use quiver_node::store::{RecordChange, RequestRecord, ShardStore, StoreImage, StoredRecord};
use quiver_proto::{
    DistanceMetric, HashRange, IndexUid, MetaValue, Metadata, ReplicaId, ShardId, ShardMember,
    ShardSpec,
};
use sync_count::CountingBackend;

fn spec() -> ShardSpec {
    ShardSpec {
        id: ShardId {
            index: IndexUid(5),
            shard: 0,
        },
        dimension: 3,
        metric: DistanceMetric::Cosine,
        non_filterable_keys: Vec::new(),
        range: HashRange::FULL,
        replicas: vec![ShardMember {
            replica: ReplicaId(1),
            node: "node-1".into(),
        }],
    }
}

fn record(id: u64) -> StoredRecord {
    StoredRecord {
        id,
        vector: vec![id as f32, 1.0, 2.0],
        metadata: Metadata(vec![("genre".into(), MetaValue::Str("jazz".into()))]),
    }
}

#[test]
fn every_acknowledged_shard_store_commit_is_fsynced_before_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard_dir = dir.path().join("shard");
    std::fs::create_dir_all(&shard_dir).expect("dir");
    let (backend, counts) = CountingBackend::open(&shard_dir.join("shard.redb"));
    let store = ShardStore::open_with_backend(&shard_dir, &spec(), backend).expect("open");

    // A batch of upserts: what PutVectors applies.
    let (a, b) = (record(1), record(2));
    let mark = counts.mark();
    store
        .commit_batch(
            &[
                RecordChange::Upsert {
                    key: "a",
                    record: &a,
                },
                RecordChange::Upsert {
                    key: "b",
                    record: &b,
                },
            ],
            1,
            3,
            b"applied-1",
            Some(RequestRecord {
                id: 11,
                evict: None,
            }),
        )
        .expect("commit");
    counts.assert_durable_since(mark, "commit_batch (upserts)");

    // A batch of removals: what DeleteVectors applies.
    let mark = counts.mark();
    store
        .commit_batch(
            &[RecordChange::Remove { key: "a" }],
            2,
            3,
            b"applied-2",
            None,
        )
        .expect("commit");
    counts.assert_durable_since(mark, "commit_batch (removal)");

    // An entry without records (membership, a leader's blank entry).
    let mark = counts.mark();
    store.save_raft_state(b"applied-3").expect("raft state");
    counts.assert_durable_since(mark, "save_raft_state");

    // A snapshot installed: records go in without a sync, the finishing commit syncs them all.
    let mark = counts.mark();
    store
        .insert_records(&[("c".into(), record(3))])
        .expect("insert");
    store
        .finish_image(&StoreImage {
            applied_seq: 9,
            next_id: 10,
            raft_state: b"applied-9".to_vec(),
            requests: vec![(12, 9)],
        })
        .expect("finish");
    counts.assert_durable_since(mark, "insert_records + finish_image");

    let loaded = store.load().expect("load");
    assert_eq!(loaded.applied_seq, 9);
    let keys: Vec<&str> = loaded.records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "c"]);
}

fn blank(index: u64) -> Entry<ShardTypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Blank,
    }
}

#[tokio::test]
async fn every_raft_log_append_vote_truncate_and_purge_is_fsynced_before_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, counts) = CountingBackend::open(&dir.path().join("raft-log.redb"));
    let engine = LogEngine::open_with_backend(backend).expect("open");
    let mut log = engine.replica(1);

    let mark = counts.mark();
    log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    counts.assert_durable_since(mark, "save_vote");

    // blocking_append returns once openraft's flush callback has fired: the fsync must be done.
    let mark = counts.mark();
    log.blocking_append((1..=5).map(blank))
        .await
        .expect("append");
    counts.assert_durable_since(mark, "append");

    let mark = counts.mark();
    log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
        .await
        .expect("truncate");
    counts.assert_durable_since(mark, "truncate");

    let mark = counts.mark();
    log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
        .await
        .expect("purge");
    counts.assert_durable_since(mark, "purge");

    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(2));
    assert_eq!(state.last_log_id.map(|id| id.index), Some(3));
}
