//! openraft's own storage test suite against the control plane's redb log store and state
//! machine, a restart check (a reopened store has the log, the vote and the snapshot), and the
//! fsync check: every write openraft is told is durable was fsynced before it returned.

#[path = "../../node/tests/support/sync_count.rs"]
mod sync_count;

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use parking_lot::RwLock;
use quiver_coordinator::catalog::format::CATALOG_FORMAT_VERSION;
use quiver_coordinator::catalog::{
    BucketRecord, CatalogCommand, CatalogState, EncryptionConfig, IndexMode,
};
use quiver_coordinator::cluster::store::{self, LogStore, StateMachine};
use quiver_coordinator::cluster::types::{Proposal, TypeConfig};
use sync_count::CountingBackend;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = store::open(&dir.path().join("raft.redb")).expect("open");
        let machine =
            StateMachine::open(db.clone(), Arc::new(RwLock::new(CatalogState::default()))).await?;
        Ok((dir, LogStore::new(db), machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

/// Entry 1 creates a bucket, the others set its policy.
fn proposal(index: u64) -> Entry<TypeConfig> {
    let command = if index == 1 {
        CatalogCommand::CreateBucket(BucketRecord {
            name: "bucket".into(),
            creation_time: 1.0,
            encryption: EncryptionConfig::default(),
            tags: BTreeMap::new(),
            default_index_mode: IndexMode::Enhanced,
            policy: None,
        })
    } else {
        CatalogCommand::SetBucketPolicy {
            bucket: "bucket".into(),
            policy: Some(format!("{{\"Version\":\"{index}\"}}")),
        }
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
        payload: EntryPayload::Normal(Proposal::retryable(command)),
    }
}

fn debug_all<T: std::fmt::Debug>(items: &[T]) -> Vec<String> {
    items.iter().map(|item| format!("{item:?}")).collect()
}

#[tokio::test]
async fn a_reopened_store_keeps_vote_log_and_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let vote = Vote::new(3, 1);
    let entries: Vec<_> = (1..=5).map(proposal).collect();
    let log_id = |index| LogId::new(CommittedLeaderId::new(2, 1), index);
    let snapshot = {
        let db = store::open(&path).expect("open");
        let mut log = LogStore::new(db.clone());
        log.save_vote(&vote).await.expect("vote");
        log.blocking_append(entries.clone()).await.expect("append");
        // Keep 3..=4: entry 5 truncated away, 1..=2 purged.
        log.truncate(log_id(5)).await.expect("truncate");
        log.purge(log_id(2)).await.expect("purge");
        let mut machine = StateMachine::open(db, Arc::new(RwLock::new(CatalogState::default())))
            .await
            .expect("machine");
        machine.apply(entries[..2].to_vec()).await.expect("apply");
        let mut builder = machine.get_snapshot_builder().await;
        let snapshot = builder.build_snapshot().await.expect("snapshot");
        (snapshot.meta, snapshot.snapshot.into_inner())
    };
    assert_eq!(snapshot.0.last_log_id, Some(log_id(2)));

    let db = store::open(&path).expect("reopen");
    let mut log = LogStore::new(db.clone());
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(2)));
    assert_eq!(state.last_log_id, Some(log_id(4)));
    let kept = log.try_get_log_entries(0..10).await.expect("log");
    assert_eq!(debug_all(&kept), debug_all(&entries[2..4]));

    let state = Arc::new(RwLock::new(CatalogState::default()));
    let mut machine = StateMachine::open(db, state.clone())
        .await
        .expect("machine");
    let stored = machine
        .get_current_snapshot()
        .await
        .expect("snapshot")
        .expect("a snapshot was stored");
    assert_eq!(stored.meta, snapshot.0);
    assert_eq!(stored.snapshot.into_inner(), snapshot.1);
    // The restored catalog is the one the snapshot was built from: entries 1 and 2 applied.
    let applied = machine.applied_state().await.expect("applied").0;
    assert_eq!(applied, Some(log_id(2)));
    let mut expected = CatalogState::default();
    for entry in &entries[..2] {
        if let EntryPayload::Normal(p) = &entry.payload {
            expected.apply(p.id, p.command.clone()).expect("apply");
        }
    }
    assert_ne!(expected, CatalogState::default());
    assert_eq!(*state.read(), expected);
}

#[tokio::test]
async fn every_raft_append_vote_truncate_purge_and_snapshot_is_fsynced_before_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, counts) = CountingBackend::open(&dir.path().join("raft.redb"));
    let db = store::open_with_backend(backend).expect("open");
    let mut log = LogStore::new(db.clone());
    let log_id = |index| LogId::new(CommittedLeaderId::new(2, 1), index);

    let mark = counts.mark();
    log.save_vote(&Vote::new(2, 1)).await.expect("vote");
    counts.assert_durable_since(mark, "save_vote");

    // Catalog changes are durable through the log: a proposal is acknowledged once its entry
    // is appended on a quorum, and openraft counts an append only after its flush callback.
    let mark = counts.mark();
    log.blocking_append((1..=5).map(proposal))
        .await
        .expect("append");
    counts.assert_durable_since(mark, "append");

    let mark = counts.mark();
    log.truncate(log_id(5)).await.expect("truncate");
    counts.assert_durable_since(mark, "truncate");

    let mark = counts.mark();
    log.purge(log_id(2)).await.expect("purge");
    counts.assert_durable_since(mark, "purge");

    let mut machine = StateMachine::open(db, Arc::new(RwLock::new(CatalogState::default())))
        .await
        .expect("machine");
    let mark = counts.mark();
    machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    counts.assert_durable_since(mark, "build_snapshot");
}

/// A raft.redb as the code before catalog format versions wrote it: the same tables, values in
/// plain postcard, no format marker.
fn write_unversioned_raft_db(path: &std::path::Path) {
    let log: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("raft_log");
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("raft_meta");
    let db = redb::Database::create(path).expect("create");
    let txn = db.begin_write().expect("txn");
    {
        let mut meta = txn.open_table(meta).expect("meta");
        let vote = postcard::to_stdvec(&Vote::<u64>::new(1, 1)).expect("vote");
        meta.insert("vote", vote.as_slice()).expect("insert");
        let mut log = txn.open_table(log).expect("log");
        // A blank entry of term 1, leader 1, index 1.
        log.insert(1, [1u8, 1, 1, 0].as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}

#[test]
fn a_raft_db_from_before_format_versions_is_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    write_unversioned_raft_db(&path);
    let error = store::open(&path).expect_err("refused");
    assert!(matches!(error, store::OpenError::Unversioned), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("(format 0)"), "{message}");
    assert!(
        message.contains(&format!("format version {CATALOG_FORMAT_VERSION}")),
        "{message}"
    );
    // Refusing changed nothing: the old data is still there, still without a marker.
    assert!(matches!(
        store::open(&path),
        Err(store::OpenError::Unversioned)
    ));
}

#[test]
fn a_raft_db_of_another_format_version_is_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    drop(store::open(&path).expect("create"));
    {
        let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("raft_meta");
        let db = redb::Database::create(&path).expect("open");
        let txn = db.begin_write().expect("txn");
        txn.open_table(meta)
            .expect("meta")
            .insert("catalog_format", b"QCAT\x03".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let message = store::open(&path).expect_err("refused").to_string();
    assert!(
        message.contains("catalog format version 3 is not supported"),
        "{message}"
    );
}
