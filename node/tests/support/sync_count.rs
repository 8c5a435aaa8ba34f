//! A redb storage backend for tests that counts fsyncs: every write the database makes is
//! marked unsynced until a durable `sync_data(false)` follows it. A store opened on it lets a
//! test check that an operation which reports "durable" really fsynced everything it wrote
//! before it returned: weakening a commit to `Durability::Eventual` (a `sync_data(true)`, a
//! barrier only) or `Durability::None` (no sync at all) fails the check.
//!
//! Shared by `node/tests` and `coordinator/tests` (included by `#[path]`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::StorageBackend;

/// What the backend saw.
#[derive(Debug, Default)]
pub struct SyncCounts {
    durable_syncs: AtomicU64,
    writes: AtomicU64,
    unsynced: AtomicBool,
}

impl SyncCounts {
    /// A mark to compare an operation's effect against.
    pub fn mark(&self) -> (u64, u64) {
        (
            self.durable_syncs.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }

    /// Panics unless the operation since `mark` wrote something and every byte written so far
    /// is covered by a durable sync.
    pub fn assert_durable_since(&self, mark: (u64, u64), what: &str) {
        let (syncs, writes) = self.mark();
        assert!(writes > mark.1, "{what}: wrote nothing");
        assert!(syncs > mark.0, "{what}: returned without an fsync");
        assert!(
            !self.unsynced.load(Ordering::SeqCst),
            "{what}: returned with written data not yet fsynced"
        );
    }
}

/// redb's file backend, counting.
#[derive(Debug)]
pub struct CountingBackend {
    inner: FileBackend,
    counts: Arc<SyncCounts>,
}

impl CountingBackend {
    pub fn open(path: &Path) -> (CountingBackend, Arc<SyncCounts>) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("open the database file");
        let counts = Arc::new(SyncCounts::default());
        let backend = CountingBackend {
            inner: FileBackend::new(file).expect("lock the database file"),
            counts: counts.clone(),
        };
        (backend, counts)
    }

    fn wrote(&self) {
        self.counts.writes.fetch_add(1, Ordering::SeqCst);
        self.counts.unsynced.store(true, Ordering::SeqCst);
    }
}

impl StorageBackend for CountingBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.wrote();
        self.inner.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        self.inner.sync_data(eventual)?;
        if !eventual {
            self.counts.unsynced.store(false, Ordering::SeqCst);
            self.counts.durable_syncs.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.wrote();
        self.inner.write(offset, data)
    }
}
