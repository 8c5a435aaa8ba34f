//! Starting the processes of a cluster: a coordinator (control plane + S3 Vectors API) and a
//! storage node. `quiver coordinator`, `quiver node` and `quiver dev` all start through here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::response::IntoResponse;
use quiver_node::agent::{self, AgentConfig};
use quiver_node::client::QuicTransport;
use quiver_node::shard::ShardConfig;
use quiver_node::supervisor::{NodeLimits, NodeService};
use quiver_node::tls::ClusterIdentity;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{router, ApiConfig, AppState, ArnScope};
use crate::auth::{AuthConfig, Authenticator};
use crate::cluster::types::CoordinatorNode;
use crate::cluster::{ControlPlane, RaftTimings};
use crate::dataplane::DataPlane;
use crate::throttle::RateLimits;
use crate::tokens::TokenSigner;

/// What the S3 Vectors API of a coordinator needs.
pub struct ApiSettings {
    pub region: String,
    pub account_id: String,
    pub auth: AuthConfig,
    pub shards_per_index: u32,
    pub max_concurrent_requests: usize,
    pub limits: RateLimits,
    pub tokens: TokenSigner,
}

/// How the Raft group is formed on a coordinator's first start.
pub enum Bootstrap {
    /// Join a group formed by others (or already formed: a restart).
    None,
    /// Form the group from these members (every initial member may say the same).
    Members(BTreeMap<u64, CoordinatorNode>),
    /// Form a group of this coordinator alone (`quiver dev`).
    Solo,
}

pub struct CoordinatorSettings {
    pub id: u64,
    pub http_listen: SocketAddr,
    pub cluster_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub join_token: String,
    pub bootstrap: Bootstrap,
    pub raft: RaftTimings,
    /// A node silent this long is marked down.
    pub node_timeout: Duration,
}

pub struct Coordinator {
    pub control: Arc<ControlPlane>,
    pub http_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub tasks: Vec<JoinHandle<()>>,
}

pub fn validate_scope(region: &str, account_id: &str) -> anyhow::Result<()> {
    if account_id.len() != 12 || !account_id.chars().all(|c| c.is_ascii_digit()) {
        anyhow::bail!("account id must be 12 digits, got {account_id:?}");
    }
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        anyhow::bail!("region must look like us-east-1, got {region:?}");
    }
    Ok(())
}

pub async fn start_coordinator(
    settings: CoordinatorSettings,
    api: ApiSettings,
    identity: &ClusterIdentity,
    shutdown: CancellationToken,
) -> anyhow::Result<Coordinator> {
    validate_scope(&api.region, &api.account_id)?;
    let auth = Authenticator::new(&api.auth, &api.region, &api.account_id)
        .context("invalid auth configuration")?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    // One QUIC endpoint per process: it serves Raft and heartbeats, and makes the outgoing
    // connections to other coordinators and to nodes.
    let endpoint = quiver_node::server::bind(settings.cluster_listen, identity)
        .with_context(|| format!("binding the cluster port {}", settings.cluster_listen))?;
    let cluster_addr = endpoint.local_addr().context("cluster address")?;
    let transport = QuicTransport::on_endpoint(endpoint.clone(), identity)?;
    let control = ControlPlane::start(
        settings.id,
        &settings.data_dir,
        &settings.raft,
        transport.clone(),
        settings.join_token.clone(),
        settings.node_timeout,
    )
    .await
    .context("starting the control plane")?;
    let listener = tokio::net::TcpListener::bind(settings.http_listen)
        .await
        .with_context(|| format!("binding {}", settings.http_listen))?;
    let http_addr = listener.local_addr()?;
    let mut tasks = vec![tokio::spawn(quiver_node::server::serve(
        endpoint,
        control.clone(),
        shutdown.clone(),
    ))];
    let members = match settings.bootstrap {
        Bootstrap::None => None,
        Bootstrap::Members(members) => Some(members),
        Bootstrap::Solo => Some(BTreeMap::from([(
            settings.id,
            CoordinatorNode {
                cluster_addr: cluster_addr.to_string(),
                http_addr: http_addr.to_string(),
            },
        )])),
    };
    if let Some(members) = members {
        control
            .bootstrap(members)
            .await
            .context("forming the raft group")?;
    }
    tasks.push(tokio::spawn(control.clone().run_liveness(shutdown.clone())));
    let state = Arc::new(AppState::new(
        ApiConfig {
            scope: ArnScope {
                partition: "aws".into(),
                region: api.region.clone(),
                account_id: api.account_id.clone(),
            },
            shards_per_index: api.shards_per_index.max(2),
            max_concurrent_requests: api.max_concurrent_requests,
        },
        control.clone(),
        control.clone(),
        DataPlane::new(Arc::new(transport), control.clone()),
        auth,
        api.tokens,
        api.limits,
    ));
    let http = serve_http(listener, router(state), shutdown.clone());
    let shutdown_control = control.clone();
    tasks.push(tokio::spawn(async move {
        http.await;
        shutdown_control.shutdown().await;
    }));
    Ok(Coordinator {
        control,
        http_addr,
        cluster_addr,
        tasks,
    })
}

pub struct NodeSettings {
    pub id: String,
    pub listen: SocketAddr,
    /// The address coordinators use (default: the bound address).
    pub advertise: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub coordinators: Vec<SocketAddr>,
    pub join_token: String,
    pub heartbeat_interval: Duration,
    pub shard: ShardConfig,
    /// Where /health, /ready and /metrics are served, if anywhere.
    pub http_listen: Option<SocketAddr>,
}

pub struct Node {
    pub service: Arc<NodeService>,
    pub addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    /// Turns true once the control plane answered a heartbeat with the node's assignments.
    pub joined: watch::Receiver<bool>,
    pub tasks: Vec<JoinHandle<()>>,
}

pub async fn start_node(
    settings: NodeSettings,
    identity: &ClusterIdentity,
    shutdown: CancellationToken,
) -> anyhow::Result<Node> {
    let service = NodeService::start(&settings.data_dir, settings.shard, NodeLimits::default())
        .await
        .context("starting the node")?;
    let endpoint = quiver_node::server::bind(settings.listen, identity)
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr = endpoint.local_addr().context("node address")?;
    // Heartbeats leave from the node's own endpoint.
    let transport = QuicTransport::on_endpoint(endpoint.clone(), identity)?;
    let mut tasks = vec![tokio::spawn(quiver_node::server::serve(
        endpoint,
        service.clone(),
        shutdown.clone(),
    ))];
    let (joined_tx, joined) = watch::channel(false);
    tasks.push(tokio::spawn(agent::run(
        service.clone(),
        transport,
        AgentConfig {
            node_id: settings.id.clone(),
            advertise: settings.advertise.unwrap_or(addr),
            coordinators: settings.coordinators,
            join_token: settings.join_token,
            interval: settings.heartbeat_interval,
        },
        joined_tx,
        shutdown.clone(),
    )));
    let mut http_addr = None;
    if let Some(listen) = settings.http_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        http_addr = Some(listener.local_addr()?);
        let app = node_router(settings.id, service.clone(), joined.clone());
        tasks.push(tokio::spawn(serve_http(listener, app, shutdown.clone())));
    }
    Ok(Node {
        service,
        addr,
        http_addr,
        joined,
        tasks,
    })
}

/// Serves `app` on `listener` until `shutdown`, then lets requests in flight finish.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "http server failed");
    }
}

/// /health, /ready (joined the cluster) and /metrics of a node.
fn node_router(
    id: String,
    service: Arc<NodeService>,
    joined: watch::Receiver<bool>,
) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    let ready_joined = joined.clone();
    axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || {
                let joined = *ready_joined.borrow();
                async move {
                    if joined {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not joined yet").into_response()
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body =
                    crate::metrics::node_metrics(&id, service.shard_count(), *joined.borrow());
                async move { crate::metrics::exposition(body) }
            }),
        )
}

/// `quiver coordinator --config F`.
pub async fn run_coordinator(
    config: crate::config::CoordinatorConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let auth = match &config.auth_config {
        Some(path) => AuthConfig::load(path)?,
        None if config.allow_dev_credentials => {
            tracing::warn!("serving the documented dev credentials (allow_dev_credentials = true)");
            AuthConfig::dev(
                crate::dev::DEV_ACCESS_KEY_ID,
                crate::dev::DEV_SECRET_ACCESS_KEY,
            )
        }
        None => anyhow::bail!(
            "no auth_config: give the coordinator a users file (see deploy/auth.example.toml), \
             or set allow_dev_credentials = true for a local test cluster"
        ),
    };
    let identity = ClusterIdentity::load(&config.tls.dir, &config.tls.name)
        .with_context(|| format!("loading certificates from {}", config.tls.dir.display()))?;
    let members = config.members();
    let coordinator = start_coordinator(
        CoordinatorSettings {
            id: config.id,
            http_listen: config.http_listen,
            cluster_listen: config.cluster_listen,
            data_dir: config.data_dir.clone(),
            join_token: config.join_token.clone(),
            bootstrap: if members.is_empty() {
                Bootstrap::None
            } else {
                Bootstrap::Members(members)
            },
            raft: config.raft_timings(),
            node_timeout: config.node_timeout(),
        },
        ApiSettings {
            region: config.region.clone(),
            account_id: config.account_id.clone(),
            auth,
            shards_per_index: config.shards_per_index,
            max_concurrent_requests: config.max_concurrent_requests,
            limits: RateLimits {
                write_requests_per_second: config.max_write_requests_per_index,
                write_vectors_per_second: config.max_write_vectors_per_index,
                read_requests_per_second: config.max_read_requests_per_index,
            },
            tokens: TokenSigner::from_shared_secret(&config.join_token),
        },
        &identity,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(
        id = config.id,
        http = %coordinator.http_addr,
        cluster = %coordinator.cluster_addr,
        "coordinator started"
    );
    shutdown.cancelled().await;
    for task in coordinator.tasks {
        let _ = task.await;
    }
    Ok(())
}

/// `quiver node --config F`.
pub async fn run_node(
    config: crate::config::NodeConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let identity = ClusterIdentity::load(&config.tls.dir, &config.tls.name)
        .with_context(|| format!("loading certificates from {}", config.tls.dir.display()))?;
    let node = start_node(
        NodeSettings {
            id: config.id.clone(),
            listen: config.listen,
            advertise: config.advertise,
            data_dir: config.data_dir.clone(),
            coordinators: config.coordinators.clone(),
            join_token: config.join_token.clone(),
            heartbeat_interval: Duration::from_millis(config.heartbeat_ms),
            shard: ShardConfig {
                index_description: config.faiss_index.clone(),
                ..ShardConfig::default()
            },
            http_listen: config.http_listen,
        },
        &identity,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(id = %config.id, addr = %node.addr, shards = node.service.shard_count(), "node started");
    shutdown.cancelled().await;
    for task in node.tasks {
        let _ = task.await;
    }
    node.service.shutdown().await;
    Ok(())
}
