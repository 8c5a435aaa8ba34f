//! `quiver admin`: the operator's commands, sent to a coordinator's cluster port over mutual
//! TLS (the operator presents a certificate from the cluster CA, like any process).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use quiver_coordinator::cluster::network::call;
use quiver_coordinator::cluster::peer::{ClusterStatus, PeerRequest, PeerResponse};
use quiver_coordinator::cluster::types::CoordinatorNode;
use quiver_net::tls::ClusterIdentity;
use quiver_net::QuicTransport;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Cluster (QUIC) address of any coordinator, `host:port`.
    #[arg(long, env = "QUIVER_ADMIN_COORDINATOR", value_parser = peer_addr)]
    pub coordinator: String,
    /// Directory with ca.pem and the operator's NAME.pem / NAME.key.
    #[arg(long, env = "QUIVER_ADMIN_TLS_DIR")]
    pub tls_dir: PathBuf,
    /// Certificate name in --tls-dir.
    #[arg(long, default_value = "admin", env = "QUIVER_ADMIN_TLS_NAME")]
    pub tls_name: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Coordinators with their Raft role, nodes with liveness, shards with their node.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Also ask every node for a digest of each replica's records (reads them all).
        #[arg(long)]
        digests: bool,
    },
    /// Add a coordinator to the Raft group (it catches up as a learner, then votes).
    AddCoordinator {
        #[arg(long)]
        id: u64,
        /// `host:port` of its cluster port, as the other processes reach it.
        #[arg(long, value_parser = peer_addr)]
        cluster_addr: String,
        /// `host:port` of its S3 Vectors API.
        #[arg(long, value_parser = peer_addr)]
        http_addr: String,
    },
    /// Remove a coordinator from the Raft group.
    RemoveCoordinator {
        #[arg(long)]
        id: u64,
    },
}

fn peer_addr(value: &str) -> Result<String, String> {
    quiver_net::check_peer_addr(value).map(|()| value.to_owned())
}

/// Sends `request` to the coordinator, following `NotLeader` redirects.
async fn send(args: &AdminArgs, request: PeerRequest) -> anyhow::Result<PeerResponse> {
    let identity = ClusterIdentity::load(&args.tls_dir, &args.tls_name)
        .with_context(|| format!("loading {}/{}.pem", args.tls_dir.display(), args.tls_name))?;
    let transport = QuicTransport::new(&identity)?;
    let mut target = args.coordinator.clone();
    for _ in 0..=MAX_REDIRECTS {
        let response = call(&*transport, &target, "admin", ADMIN_TIMEOUT, &request).await?;
        match response {
            PeerResponse::NotLeader {
                leader: Some(leader),
            } => target = leader,
            PeerResponse::NotLeader { leader: None } => {
                anyhow::bail!("the cluster has no leader right now; retry shortly")
            }
            PeerResponse::Failed(reason) => anyhow::bail!("{target} refused: {reason}"),
            other => return Ok(other),
        }
    }
    anyhow::bail!("too many leader redirects")
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let request = match &args.command {
        AdminCommand::Status { digests, .. } => PeerRequest::Status { digests: *digests },
        AdminCommand::AddCoordinator {
            id,
            cluster_addr,
            http_addr,
        } => PeerRequest::AddCoordinator {
            id: *id,
            node: CoordinatorNode {
                cluster_addr: cluster_addr.to_string(),
                http_addr: http_addr.to_string(),
            },
        },
        AdminCommand::RemoveCoordinator { id } => PeerRequest::RemoveCoordinator { id: *id },
    };
    match (send(&args, request).await?, &args.command) {
        (PeerResponse::Status(status), AdminCommand::Status { json, .. }) => {
            if *json {
                println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
            } else {
                print!("{}", status_text(&status));
            }
        }
        (PeerResponse::Done, _) => println!("done"),
        (other, _) => anyhow::bail!("unexpected answer {other:?}"),
    }
    Ok(())
}

pub fn status_json(status: &ClusterStatus) -> serde_json::Value {
    serde_json::json!({
        "answered_by": status.id,
        "term": status.term,
        "leader": status.leader,
        "last_applied": status.last_applied,
        "last_log_index": status.last_log_index,
        "coordinators": status.coordinators.iter().map(|c| serde_json::json!({
            "id": c.id, "role": c.role, "cluster_addr": c.cluster_addr, "http_addr": c.http_addr,
        })).collect::<Vec<_>>(),
        "nodes": status.nodes.iter().map(|n| serde_json::json!({
            "id": n.id, "addr": n.addr, "up": n.up, "shards": n.shards,
        })).collect::<Vec<_>>(),
        "shards": status.shards.iter().map(|s| serde_json::json!({
            "bucket": s.bucket, "index": s.index, "shard": s.shard, "replicas": s.replicas,
        })).collect::<Vec<_>>(),
        "replicas": status.replicas.iter().map(|r| serde_json::json!({
            "shard": r.shard.to_string(), "replica": r.replica.0, "node": r.node,
            "leader": r.is_leader, "term": r.term, "last_log": r.last_log, "applied": r.applied,
            "snapshot": r.snapshot, "purged": r.purged, "vectors": r.vectors,
            "digest": r.digest.map(|d| format!("{d:016x}")),
            "lag": r.lag.iter().map(|(replica, behind)| serde_json::json!({
                "replica": replica, "behind": behind,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn status_text(status: &ClusterStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let leader = status
        .leader
        .map(|id| id.to_string())
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(
        out,
        "term {}  leader {}  applied {}  (answered by coordinator {})\n",
        status.term,
        leader,
        status.last_applied.unwrap_or(0),
        status.id
    );
    let _ = writeln!(out, "COORDINATOR  ROLE       CLUSTER                HTTP");
    for c in &status.coordinators {
        let _ = writeln!(
            out,
            "{:<12} {:<10} {:<22} {}",
            c.id, c.role, c.cluster_addr, c.http_addr
        );
    }
    let _ = writeln!(out, "\nNODE         STATE  SHARDS  ADDR");
    for n in &status.nodes {
        let state = if n.up { "up" } else { "down" };
        let _ = writeln!(out, "{:<12} {:<6} {:<7} {}", n.id, state, n.shards, n.addr);
    }
    let _ = writeln!(out, "\nSHARD                                     REPLICAS");
    for s in &status.shards {
        let name = format!("{}/{}#{}", s.bucket, s.index, s.shard);
        let _ = writeln!(out, "{name:<41} {}", s.replicas.join(","));
    }
    let _ = writeln!(
        out,
        "\nSHARD                 REPLICA  NODE         ROLE      TERM  APPLIED  LOG      LAG   VECTORS   DIGEST"
    );
    for r in &status.replicas {
        let role = if r.is_leader { "leader" } else { "follower" };
        let lag = r.lag.iter().map(|(_, behind)| *behind).max().unwrap_or(0);
        let index = |i: Option<u64>| i.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
        let digest = r.digest.map(|d| format!("{d:016x}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<21} {:<8} {:<12} {:<9} {:<5} {:<8} {:<8} {:<5} {:<9} {}",
            r.shard.to_string(),
            r.replica.0,
            r.node,
            role,
            r.term,
            index(r.applied),
            index(r.last_log),
            lag,
            r.vectors,
            digest
        );
    }
    out
}
