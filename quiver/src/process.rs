//! Starting a coordinator (control plane + S3 Vectors API). `quiver coordinator` and
//! `quiver dev` start through here; nodes start in [`crate::node`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quiver_coordinator::api::{router, ApiConfig, AppState, ArnScope};
use quiver_coordinator::auth::{AuthConfig, Authenticator};
use quiver_coordinator::cluster::types::CoordinatorNode;
use quiver_coordinator::cluster::{ControlPlane, RaftTimings};
use quiver_coordinator::dataplane::DataPlane;
use quiver_coordinator::throttle::RateLimits;
use quiver_coordinator::tokens::TokenSigner;
use quiver_net::fault::FaultTransport;
use quiver_net::tls::ClusterIdentity;
use quiver_net::{QuicTransport, Transport};
use tokio::task::JoinHandle;

use crate::http::HttpLimits;
use tokio_util::sync::CancellationToken;

/// What the S3 Vectors API of a coordinator needs.
pub struct ApiSettings {
    pub region: String,
    pub account_id: String,
    pub auth: AuthConfig,
    pub shards_per_index: u32,
    pub replication_factor: usize,
    pub max_concurrent_requests: usize,
    /// HTTP connections held at once (0: from the open-file budget, see `fd_budget`).
    pub max_http_connections: usize,
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
    /// `host:port` the other processes reach the cluster port at (default: the bound address).
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub join_token: String,
    pub bootstrap: Bootstrap,
    pub raft: RaftTimings,
    /// A node silent this long is marked down.
    pub node_timeout: Duration,
    /// Tests only: route this coordinator's outgoing cluster traffic through a fault injector.
    pub faults: Option<FaultHook>,
}

/// Receives the [`FaultTransport`] wrapped around a coordinator's QUIC transport, so a test can
/// partition it from its peers and heal it.
pub type FaultHook = Box<dyn FnOnce(Arc<FaultTransport>) + Send>;

pub struct Coordinator {
    pub control: Arc<ControlPlane>,
    pub http_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub tasks: Vec<JoinHandle<()>>,
}

pub async fn start_coordinator(
    settings: CoordinatorSettings,
    api: ApiSettings,
    identity: &ClusterIdentity,
    shutdown: CancellationToken,
) -> anyhow::Result<Coordinator> {
    let scope = ArnScope::new(&api.region, &api.account_id).map_err(anyhow::Error::msg)?;
    let auth = Authenticator::new(&api.auth, &api.region, &api.account_id)
        .context("invalid auth configuration")?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    // One QUIC endpoint per process: it serves Raft and heartbeats, and makes the outgoing
    // connections to other coordinators and to nodes.
    let endpoint = quiver_net::server::bind(settings.cluster_listen, identity)
        .with_context(|| format!("binding the cluster port {}", settings.cluster_listen))?;
    let cluster_addr = endpoint.local_addr().context("cluster address")?;
    let mut transport: Arc<dyn Transport> = QuicTransport::on_endpoint(endpoint.clone(), identity)?;
    if let Some(hook) = settings.faults {
        let faults = FaultTransport::new(transport);
        hook(faults.clone());
        transport = faults;
    }
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
    let mut tasks = vec![tokio::spawn(quiver_net::server::serve(
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
                cluster_addr: settings
                    .advertise
                    .clone()
                    .unwrap_or_else(|| cluster_addr.to_string()),
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
            scope,
            shards_per_index: api.shards_per_index.max(2),
            replication_factor: api.replication_factor.max(1),
            max_concurrent_requests: api.max_concurrent_requests,
        },
        control.clone(),
        control.clone(),
        DataPlane::new(transport, control.clone()),
        auth,
        api.tokens,
        api.limits,
    ));
    let http_limits = HttpLimits::with_max_connections(
        crate::fd_budget::current().http_cap(api.max_http_connections),
    );
    let connections = state.connection_metrics();
    let http = crate::http::serve(
        listener,
        router(state),
        http_limits,
        connections,
        shutdown.clone(),
    );
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

/// `quiver coordinator --config F`.
pub async fn run_coordinator(
    config: crate::config::CoordinatorConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let auth = match &config.auth_config {
        Some(path) => AuthConfig::load(path)?,
        None if config.allow_dev_credentials => {
            tracing::warn!("serving the documented dev credentials (allow_dev_credentials = true)");
            AuthConfig::documented_dev()
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
            advertise: config.advertise.clone(),
            data_dir: config.data_dir.clone(),
            join_token: config.join_token.clone(),
            bootstrap: if members.is_empty() {
                Bootstrap::None
            } else {
                Bootstrap::Members(members)
            },
            raft: config.raft_timings(),
            node_timeout: config.node_timeout(),
            faults: None,
        },
        ApiSettings {
            region: config.region.clone(),
            account_id: config.account_id.clone(),
            auth,
            shards_per_index: config.shards_per_index,
            replication_factor: config.replication_factor,
            max_concurrent_requests: config.max_concurrent_requests,
            max_http_connections: config.max_http_connections,
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
