//! Starting a storage node: the node service, its QUIC server, the heartbeat agent, and the
//! optional /health, /ready and /metrics port. `quiver node` and `quiver dev` start through here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use quiver_net::tls::ClusterIdentity;
use quiver_net::QuicTransport;
use quiver_node::agent::{self, AgentConfig};
use quiver_node::replication::ReplicationConfig;
use quiver_node::service::{NodeIdentity, NodeLimits, NodeService, ReplicationSummary};
use quiver_node::shard::ShardConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::HttpLimits;
use quiver_coordinator::metrics::ConnectionMetrics;

/// Connections the health and metrics port of a node holds at once (probes and scrapers).
const NODE_HTTP_CONNECTIONS: usize = 256;

pub struct NodeSettings {
    pub id: String,
    pub listen: SocketAddr,
    /// The `host:port` coordinators use (default: the bound address).
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// `host:port` of the coordinators' cluster ports.
    pub coordinators: Vec<String>,
    pub join_token: String,
    pub heartbeat_interval: Duration,
    pub shard: ShardConfig,
    pub replication: ReplicationConfig,
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
    let endpoint = quiver_net::server::bind(settings.listen, identity)
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr = endpoint.local_addr().context("node address")?;
    // Heartbeats and shard Raft traffic leave from the node's own endpoint.
    let transport: Arc<dyn quiver_net::Transport> =
        QuicTransport::on_endpoint(endpoint.clone(), identity)?;
    let service = NodeService::start(
        &settings.data_dir,
        NodeIdentity {
            node_id: settings.id.clone(),
            transport: transport.clone(),
            replication: settings.replication,
        },
        settings.shard,
        NodeLimits::default(),
    )
    .await
    .context("starting the node")?;
    let mut tasks = vec![tokio::spawn(quiver_net::server::serve(
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
            advertise: settings.advertise.unwrap_or_else(|| addr.to_string()),
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
        let connections = ConnectionMetrics::default();
        let app = node_router(
            settings.id,
            service.clone(),
            joined.clone(),
            connections.clone(),
        );
        tasks.push(tokio::spawn(crate::http::serve(
            listener,
            app,
            HttpLimits::with_max_connections(NODE_HTTP_CONNECTIONS),
            connections,
            shutdown.clone(),
        )));
    }
    Ok(Node {
        service,
        addr,
        http_addr,
        joined,
        tasks,
    })
}

/// /health, /ready (joined the cluster) and /metrics of a node.
fn node_router(
    id: String,
    service: Arc<NodeService>,
    joined: watch::Receiver<bool>,
    connections: ConnectionMetrics,
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
                let body = node_metrics(
                    &id,
                    &service.replication_summary(),
                    *joined.borrow(),
                    &connections,
                );
                async move { quiver_coordinator::metrics::exposition(body) }
            }),
        )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// The metrics of a storage node: shard replicas hosted and led, replication lag, elections and
/// snapshots, and whether it joined the cluster.
pub fn node_metrics(
    node: &str,
    replication: &ReplicationSummary,
    joined: bool,
    connections: &ConnectionMetrics,
) -> String {
    let mut registry = Registry::with_prefix("quiver_node");
    connections.register(&mut registry);
    let labels = NodeLabels {
        node: node.to_owned(),
    };
    let gauges: [(&str, &str, u64); 6] = [
        (
            "shards",
            "Shard replicas hosted by this node",
            replication.replicas,
        ),
        (
            "shard_leaders",
            "Shard replicas here that lead their group",
            replication.leaders,
        ),
        (
            "replication_lag_entries",
            "Largest number of log entries a follower of a group led here is behind",
            replication.max_lag,
        ),
        (
            "shard_raft_terms",
            "Sum of the Raft terms of the replicas here (grows by one per election)",
            replication.terms,
        ),
        (
            "snapshots_built",
            "Shard snapshots built since the node started",
            replication.snapshots_built,
        ),
        (
            "snapshots_installed",
            "Shard snapshots received from a leader and installed since the node started",
            replication.snapshots_installed,
        ),
    ];
    for (name, help, value) in gauges {
        let family = Family::<NodeLabels, Gauge>::default();
        family.get_or_create(&labels).set(as_gauge(value));
        registry.register(name, help, family);
    }
    let joined_gauge = Family::<NodeLabels, Gauge>::default();
    joined_gauge.get_or_create(&labels).set(i64::from(joined));
    registry.register(
        "joined",
        "1 once the control plane answered a heartbeat",
        joined_gauge,
    );
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(%error, "encoding metrics");
    }
    out
}

fn as_gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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
            replication: ReplicationConfig::default(),
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
