//! The node's identity on disk: the cluster it belongs to (`<data-dir>/cluster-id`) and its
//! incarnation (`<data-dir>/incarnation`), both written durably once.

use std::path::Path;

use quiver_proto::NodeError;

use super::NodeService;

/// Writes `contents` to `path` so that a crash leaves either nothing or all of it: a temporary
/// file, fsynced, renamed, and the directory fsynced.
fn write_durably(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The node's incarnation: chosen at random when its data directory is first used, and kept
/// (`<data-dir>/incarnation`). A node whose disk was lost comes back with a new one.
pub(super) fn load_incarnation(data_dir: &Path) -> std::io::Result<u128> {
    let path = data_dir.join("incarnation");
    match std::fs::read_to_string(&path) {
        Ok(text) => u128::from_str_radix(text.trim(), 16)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let incarnation: u128 = rand::random();
            write_durably(&path, format!("{incarnation:032x}").as_bytes())?;
            Ok(incarnation)
        }
        Err(e) => Err(e),
    }
}

impl NodeService {
    /// Checks that assignments come from the cluster this node belongs to: the first cluster id
    /// seen is written (fsynced) to `<data-dir>/cluster-id`; another id later is refused, so a
    /// node pointed at a new or wrong control plane never drops the shards it holds.
    pub fn check_cluster(&self, cluster_id: u128) -> Result<(), NodeError> {
        let path = self.data_dir.join("cluster-id");
        let storage = |e: std::io::Error| NodeError::Storage(format!("{}: {e}", path.display()));
        let wanted = format!("{cluster_id:032x}");
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing.trim() == wanted => Ok(()),
            Ok(existing) => Err(NodeError::InvalidRequest(format!(
                "this node belongs to cluster {}, but the control plane is cluster {wanted}",
                existing.trim()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_durably(&path, wanted.as_bytes()).map_err(storage)?;
                tracing::info!(cluster = %wanted, "joined a cluster");
                Ok(())
            }
            Err(e) => Err(storage(e)),
        }
    }
}
