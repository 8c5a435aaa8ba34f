//! Snapshot files: a logical dump of a shard's store, written from one read transaction (writes
//! continue meanwhile) and streamed record batch by record batch, so neither the sender nor the
//! receiver holds a whole shard in memory.
//!
//! A file is a sequence of frames, each a little-endian `u32` length and a postcard [`Frame`]:
//! one `Header`, any number of `Records`, then `End` with the record count (a file without its
//! `End` is refused). The FAISS index is not in the file: the receiver rebuilds it from the
//! records when it opens the shard.
//!
//! Installing one fills a new store in `incoming/<shard>`, marks it complete, then swaps it in for
//! the shard's directory (two renames). A crash between the renames leaves a complete incoming
//! directory and no shard directory, which [`recover_incoming`] finishes at start.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use quiver_proto::ShardSpec;
use serde::{Deserialize, Serialize};

use crate::store::{ShardStore, StoreError, StoreImage, StoreSnapshot, StoredRecord};

/// The snapshot file format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// Records per frame, and the byte budget of one frame.
const RECORDS_PER_FRAME: usize = 1_000;
const FRAME_BYTES: usize = 8 * 1024 * 1024;
/// Largest frame a reader accepts (a frame holds at most one record beyond `FRAME_BYTES`).
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Marks an incoming store as complete.
const COMPLETE: &str = "COMPLETE";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding: {0}")]
    Encode(#[from] postcard::Error),
    #[error("malformed snapshot: {0}")]
    Malformed(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    applied_seq: u64,
    next_id: u64,
    requests: Vec<(u128, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    Header(Header),
    Records(Vec<(String, StoredRecord)>),
    End { records: u64 },
}

fn write_frame(out: &mut impl Write, frame: &Frame) -> Result<(), SnapshotError> {
    let bytes = postcard::to_stdvec(frame)?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| SnapshotError::Malformed("frame over 4 GiB".into()))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&bytes)?;
    Ok(())
}

fn read_frame(input: &mut impl Read) -> Result<Frame, SnapshotError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(SnapshotError::Malformed(format!("frame of {len} bytes")));
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    Ok(postcard::from_bytes(&bytes)?)
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the store as seen by `view` to `path` (through a temporary file, fsynced, renamed).
pub fn write(view: &StoreSnapshot, path: &Path) -> Result<u64, SnapshotError> {
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp)?;
    let mut out = BufWriter::new(file);
    let (applied_seq, next_id) = view.counters()?;
    write_frame(
        &mut out,
        &Frame::Header(Header {
            format: SNAPSHOT_FORMAT,
            applied_seq,
            next_id,
            requests: view.requests()?,
        }),
    )?;
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    let mut count = 0u64;
    let mut frame_error = None;
    view.for_each_record(|key, record| {
        batch_bytes += key.len() + record.vector.len() * 4 + 64;
        batch.push((key, record));
        count += 1;
        if batch.len() >= RECORDS_PER_FRAME || batch_bytes >= FRAME_BYTES {
            if let Err(error) = write_frame(&mut out, &Frame::Records(std::mem::take(&mut batch))) {
                frame_error = Some(error);
                return Err(StoreError::Io(std::io::Error::other(
                    "snapshot write failed",
                )));
            }
            batch_bytes = 0;
        }
        Ok(())
    })
    .map_err(|e| frame_error.take().unwrap_or(SnapshotError::Store(e)))?;
    if !batch.is_empty() {
        write_frame(&mut out, &Frame::Records(batch))?;
    }
    write_frame(&mut out, &Frame::End { records: count })?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(size)
}

/// Loads a snapshot file into a new store at `incoming` (replacing anything there), with
/// `raft_state` as its applied state, and marks it complete. Returns the record count.
pub fn load(
    file: std::fs::File,
    incoming: &Path,
    spec: &ShardSpec,
    raft_state: Vec<u8>,
) -> Result<u64, SnapshotError> {
    if incoming.exists() {
        std::fs::remove_dir_all(incoming)?;
    }
    let mut input = BufReader::new(file);
    let Frame::Header(header) = read_frame(&mut input)? else {
        return Err(SnapshotError::Malformed("no header".into()));
    };
    if header.format != SNAPSHOT_FORMAT {
        return Err(SnapshotError::Malformed(format!(
            "snapshot format {} (this build reads {SNAPSHOT_FORMAT})",
            header.format
        )));
    }
    let store = ShardStore::open(incoming, spec)?;
    let mut count = 0u64;
    loop {
        match read_frame(&mut input)? {
            Frame::Records(records) => {
                count += records.len() as u64;
                store.insert_records(&records)?;
            }
            Frame::End { records } if records == count => break,
            Frame::End { records } => {
                return Err(SnapshotError::Malformed(format!(
                    "{count} records, the trailer says {records}"
                )))
            }
            Frame::Header(_) => return Err(SnapshotError::Malformed("a second header".into())),
        }
    }
    store.finish_image(&StoreImage {
        applied_seq: header.applied_seq,
        next_id: header.next_id,
        raft_state,
        requests: header.requests,
    })?;
    drop(store);
    let marker = std::fs::File::create(incoming.join(COMPLETE))?;
    marker.sync_all()?;
    fsync_dir(incoming)?;
    Ok(count)
}

/// Swaps a complete incoming store in for the shard directory `dir`; the old directory goes to
/// `trash` (removed afterwards).
pub fn swap_in(incoming: &Path, dir: &Path, trash: &Path) -> std::io::Result<()> {
    if let Some(parent) = trash.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if dir.exists() {
        std::fs::rename(dir, trash)?;
    }
    std::fs::rename(incoming, dir)?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    std::fs::remove_file(dir.join(COMPLETE))?;
    if trash.exists() {
        std::fs::remove_dir_all(trash)?;
    }
    Ok(())
}

/// At start: finishes swaps a crash interrupted (a complete incoming store whose shard directory
/// is missing) and removes every other incoming store. `shard_dir` maps an incoming directory's
/// name to its shard directory.
pub fn recover_incoming(
    incoming_root: &Path,
    shard_dir: impl Fn(&str) -> PathBuf,
) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(incoming_root) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let dir = shard_dir(&name);
        if path.join(COMPLETE).exists() && !dir.exists() {
            tracing::warn!(shard = %name, "finishing a snapshot install a crash interrupted");
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&path, &dir)?;
            std::fs::remove_file(dir.join(COMPLETE))?;
        } else {
            std::fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}
