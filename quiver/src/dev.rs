//! `quiver dev`: one process with a coordinator (a single-voter Raft group) and a node that
//! joins it over loopback QUIC with mutual TLS, exactly as in a cluster. Data under one
//! directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use quiver_coordinator::api::ArnScope;
use quiver_coordinator::auth::{AuthConfig, DEV_ACCESS_KEY_ID, DEV_SECRET_ACCESS_KEY};
use quiver_coordinator::cluster::RaftTimings;
use quiver_coordinator::throttle::{RateLimits, DEFAULT_MAX_CONCURRENT_REQUESTS};
use quiver_coordinator::tokens::TokenSigner;
use quiver_net::tls::ClusterIdentity;
use quiver_node::shard::ShardConfig;
use tokio_util::sync::CancellationToken;

use crate::node::{start_node, NodeSettings};
use crate::process::{start_coordinator, ApiSettings, Bootstrap, CoordinatorSettings};

/// The node id of the embedded node; shard maps refer to it, so it never changes.
pub const DEV_NODE_ID: &str = "node-1";

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// HTTP address of the S3 Vectors API.
    #[arg(long, default_value = "127.0.0.1:8277", env = "QUIVER_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for all data (catalog, shards, TLS material).
    #[arg(long, default_value = "./quiver-data", env = "QUIVER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// QUIC address of the embedded node (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0", env = "QUIVER_NODE_LISTEN")]
    pub node_listen: SocketAddr,
    /// AWS account id used in ARNs.
    #[arg(long, default_value = "123456789012", env = "QUIVER_ACCOUNT_ID")]
    pub account_id: String,
    /// AWS region used in ARNs and expected in signatures.
    #[arg(long, default_value = "us-east-1", env = "QUIVER_REGION")]
    pub region: String,
    /// Shards per new index (at least 2).
    #[arg(long, default_value_t = 2, env = "QUIVER_SHARDS_PER_INDEX")]
    pub shards_per_index: u32,
    /// TOML file with users (access keys, secrets, IAM identity policies). Without it the
    /// documented dev credentials get full access.
    #[arg(long, env = "QUIVER_AUTH_CONFIG")]
    pub auth_config: Option<PathBuf>,
    /// Allow the dev credentials on a non-loopback --listen address (anyone who can reach the
    /// port and knows the documented keys gets full access).
    #[arg(long, default_value_t = false)]
    pub allow_dev_credentials_on_public_address: bool,
    /// Per-index limit on PutVectors + DeleteVectors requests per second (0 = unlimited);
    /// the default is the S3 Vectors service limit. Over it: 429 TooManyRequestsException.
    #[arg(
        long,
        default_value_t = RateLimits::DEFAULT.write_requests_per_second,
        env = "QUIVER_MAX_WRITE_REQUESTS_PER_INDEX"
    )]
    pub max_write_requests_per_index: u32,
    /// Per-index limit on vectors written or deleted per second (0 = unlimited).
    #[arg(
        long,
        default_value_t = RateLimits::DEFAULT.write_vectors_per_second,
        env = "QUIVER_MAX_WRITE_VECTORS_PER_INDEX"
    )]
    pub max_write_vectors_per_index: u32,
    /// Per-index limit on QueryVectors + GetVectors + ListVectors requests per second
    /// (0 = unlimited, the default).
    #[arg(
        long,
        default_value_t = RateLimits::DEFAULT.read_requests_per_second,
        env = "QUIVER_MAX_READ_REQUESTS_PER_INDEX"
    )]
    pub max_read_requests_per_index: u32,
    /// API requests executing at once; more wait up to 2 s for a slot, then get 429.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS, env = "QUIVER_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: usize,
    /// HTTP connections held at once; over it an idle one is closed, or the newcomer when all
    /// are busy. 0: the open-file limit minus a reserve for storage (logged at start).
    #[arg(long, default_value_t = 0, env = "QUIVER_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: usize,
    /// FAISS index description for new shards (wrapped in IDMap2).
    #[arg(long, default_value = quiver_node::index::vector::DEFAULT_INDEX_DESCRIPTION, env = "QUIVER_FAISS_INDEX")]
    pub faiss_index: String,
}

/// Raft timing of the single-voter group: elections only happen at start, so keep them short.
const DEV_RAFT: RaftTimings = RaftTimings {
    heartbeat_ms: 100,
    election_timeout_min_ms: 300,
    election_timeout_max_ms: 600,
    snapshot_every: 1_000,
};
/// How long start-up waits for the embedded node to join.
const JOIN_WAIT: Duration = Duration::from_secs(30);

pub async fn run(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    ArnScope::new(&args.region, &args.account_id).map_err(anyhow::Error::msg)?;
    let auth_config = match &args.auth_config {
        Some(path) => AuthConfig::load(path)?,
        None => {
            if !args.listen.ip().is_loopback() && !args.allow_dev_credentials_on_public_address {
                anyhow::bail!(
                    "refusing to serve the documented dev credentials on {} (not a loopback address): \
                     give --auth-config with your own users, or pass \
                     --allow-dev-credentials-on-public-address if you really mean it",
                    args.listen
                );
            }
            AuthConfig::documented_dev()
        }
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    if args.data_dir.join("catalog.redb").exists() {
        anyhow::bail!(
            "{} was written by an earlier Quiver (catalog.redb, before the Raft control plane); \
             this version keeps the catalog in raft.redb and cannot read it. Start with a new --data-dir.",
            args.data_dir.display()
        );
    }
    let identity = ClusterIdentity::load_or_create_dev(&args.data_dir.join("tls"))
        .context("setting up the dev cluster CA")?;
    // The node and the coordinator share this process: a fresh token each start is enough.
    let join_token = hex::encode(rand::random::<[u8; 32]>());
    let coordinator = start_coordinator(
        CoordinatorSettings {
            id: 1,
            http_listen: args.listen,
            cluster_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            data_dir: args.data_dir.clone(),
            join_token: join_token.clone(),
            bootstrap: Bootstrap::Solo,
            raft: DEV_RAFT,
            node_timeout: Duration::from_secs(5),
            faults: None,
        },
        ApiSettings {
            region: args.region.clone(),
            account_id: args.account_id.clone(),
            auth: auth_config.clone(),
            shards_per_index: args.shards_per_index,
            // One embedded node: every shard is a one-voter group.
            replication_factor: 1,
            max_concurrent_requests: args.max_concurrent_requests,
            max_http_connections: args.max_http_connections,
            limits: RateLimits {
                write_requests_per_second: args.max_write_requests_per_index,
                write_vectors_per_second: args.max_write_vectors_per_index,
                read_requests_per_second: args.max_read_requests_per_index,
            },
            tokens: TokenSigner::load_or_create(&args.data_dir.join("token.key"))
                .context("creating the pagination token key")?,
        },
        &identity,
        shutdown.clone(),
    )
    .await?;
    let mut node = start_node(
        NodeSettings {
            id: DEV_NODE_ID.into(),
            listen: args.node_listen,
            advertise: None,
            data_dir: args.data_dir.join("node"),
            coordinators: vec![coordinator.cluster_addr.to_string()],
            join_token,
            heartbeat_interval: Duration::from_millis(500),
            shard: ShardConfig {
                index_description: args.faiss_index.clone(),
                ..ShardConfig::default()
            },
            replication: Default::default(),
            http_listen: None,
        },
        &identity,
        shutdown.clone(),
    )
    .await?;
    tokio::time::timeout(JOIN_WAIT, node.joined.wait_for(|joined| *joined))
        .await
        .context("the embedded node did not join the control plane in time")?
        .context("the embedded node stopped")?;
    let http_addr = coordinator.http_addr;
    let node_addr = node.addr;
    let endpoint_url = format!("http://{http_addr}");
    let dev_credentials = args.auth_config.is_none();
    let mut info = serde_json::json!({
        "endpoint": endpoint_url,
        "node_addr": node_addr.to_string(),
        "cluster_addr": coordinator.cluster_addr.to_string(),
        "region": args.region,
        "account_id": args.account_id,
    });
    if dev_credentials {
        info["access_key_id"] = DEV_ACCESS_KEY_ID.into();
        info["secret_access_key"] = DEV_SECRET_ACCESS_KEY.into();
    }
    std::fs::write(
        args.data_dir.join("dev.json"),
        serde_json::to_vec_pretty(&info)?,
    )?;
    let credentials = if dev_credentials {
        format!(
            "  access key id      {DEV_ACCESS_KEY_ID}\n  secret access key  {DEV_SECRET_ACCESS_KEY}   (dev credentials, full access)\n"
        )
    } else {
        format!(
            "  users              {} from {}\n",
            auth_config.users.len(),
            args.auth_config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    };
    println!(
        "\nQuiver dev is ready.\n\n  endpoint           {endpoint_url}\n  region             {region}\n{credentials}  data directory     {data}\n  node (QUIC, mTLS)  {node_addr} ({shards} shards open)\n\nPoint boto3 at it:\n\n  import boto3\n  s3v = boto3.client(\"s3vectors\", endpoint_url=\"{endpoint_url}\", region_name=\"{region}\",\n                     aws_access_key_id=\"{key}\", aws_secret_access_key=\"{secret}\")\n\nEvery request must carry a valid AWS SigV4 signature.\n",
        region = args.region,
        data = args.data_dir.display(),
        shards = node.service.shard_count(),
        key = if dev_credentials { DEV_ACCESS_KEY_ID } else { "<your key>" },
        secret = if dev_credentials { DEV_SECRET_ACCESS_KEY } else { "<your secret>" },
    );
    shutdown.cancelled().await;
    for task in coordinator.tasks.into_iter().chain(node.tasks) {
        let _ = task.await;
    }
    node.service.shutdown().await;
    Ok(())
}
