//! Spawning `quiver dev` on a free loopback port with a temporary data directory, and reading its
//! peak memory. The child is killed when the handle is dropped, so no run leaves a server behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::client::S3VectorsClient;

/// How long a spawned server may take to answer `GET /health` and write `dev.json`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

pub struct DevServer {
    child: Child,
    data_dir: tempfile::TempDir,
    pub endpoint: String,
}

/// `$CARGO_TARGET_DIR/release/quiver` (default target dir `~/.cache/quiver/target`).
pub fn default_quiver_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/quiver/target")
        });
    target.join("release/quiver")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl DevServer {
    /// `unlimited_writes` turns off the per-index write rate limits (the S3 Vectors service limits
    /// the server applies by default) so that a benchmark measures Quiver, not the limiter. They
    /// are set through the environment, which an older binary without them ignores.
    ///
    /// The shard count and the FAISS index description are passed explicitly (a command-line
    /// flag beats the environment), so a `QUIVER_SHARDS_PER_INDEX` or `QUIVER_FAISS_INDEX` in
    /// the caller's environment cannot make the server differ from what a report says it ran.
    pub async fn spawn(
        binary: &Path,
        unlimited_writes: bool,
        shards_per_index: u32,
    ) -> anyhow::Result<DevServer> {
        if !binary.exists() {
            bail!(
                "quiver binary {} not found (build it, or pass --quiver-bin / --endpoint)",
                binary.display()
            );
        }
        let data_dir = tempfile::Builder::new()
            .prefix("quiver-chaos-")
            .tempdir()
            .context("creating a temp data dir")?;
        let port = free_port()?;
        let log = std::fs::File::create(data_dir.path().join("server.log"))?;
        let mut command = Command::new(binary);
        if unlimited_writes {
            command
                .env("QUIVER_MAX_WRITE_REQUESTS_PER_INDEX", "0")
                .env("QUIVER_MAX_WRITE_VECTORS_PER_INDEX", "0");
        }
        let child = command
            .arg("dev")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir.path().join("data"))
            .arg("--shards-per-index")
            .arg(shards_per_index.to_string())
            .arg("--faiss-index")
            .arg(quiver_node::index::vector::DEFAULT_INDEX_DESCRIPTION)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = DevServer {
            child,
            data_dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = S3VectorsClient::new(&self.endpoint, "x", "x", "us-east-1", 1)?;
        let dev_json = self.data_dir.path().join("data/dev.json");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "quiver dev exited with {status} during startup:\n{}",
                    self.log_tail()
                );
            }
            if dev_json.exists() && client.healthy().await {
                let info: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&dev_json)?).context("dev.json")?;
                if let Some(endpoint) = info["endpoint"].as_str() {
                    self.endpoint = endpoint.to_owned();
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "quiver dev did not become ready within {STARTUP_TIMEOUT:?}:\n{}",
            self.log_tail()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size of the server (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid())
    }

    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmHWM of a process from /proc, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_parsed() {
        let status = "Name:\tquiver\nVmPeak:\t  999 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(123456));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        assert!(peak_rss_kib(std::process::id()).is_some());
    }
}
