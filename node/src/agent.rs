//! The node's side of cluster membership: a heartbeat loop that registers the node with the
//! control plane, keeps it marked live, and reconciles the hosted shards with the assignments
//! each heartbeat answer carries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_proto::{ControlRequest, ControlResponse, NodeHello};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use quiver_net::{rpc, Transport};

use crate::service::NodeService;

/// Deadline of one heartbeat exchange.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// How many `NotLeader` redirects one heartbeat follows before waiting for the next tick.
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_id: String,
    /// The `host:port` coordinators reach this node at.
    pub advertise: String,
    /// `host:port` of the coordinators' cluster ports (any of them; the leader is found by
    /// redirects).
    pub coordinators: Vec<String>,
    pub join_token: String,
    pub interval: Duration,
}

/// Heartbeats until `shutdown`. `joined` turns true after the first answer with assignments.
pub async fn run(
    service: Arc<NodeService>,
    transport: Arc<dyn Transport>,
    config: AgentConfig,
    joined: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut next = 0usize;
    let mut leader: Option<String> = None;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if config.coordinators.is_empty() {
            tracing::error!("no coordinators configured");
            continue;
        }
        let hello = NodeHello {
            node_id: config.node_id.clone(),
            addr: config.advertise.clone(),
            join_token: config.join_token.clone(),
            incarnation: service.incarnation(),
        };
        for _ in 0..=MAX_REDIRECTS {
            let target = leader
                .clone()
                .unwrap_or_else(|| config.coordinators[next % config.coordinators.len()].clone());
            let asked_at = Instant::now();
            let answer: Result<ControlResponse, _> = rpc(
                &*transport,
                &target,
                "heartbeat",
                HEARTBEAT_TIMEOUT,
                ControlRequest::Heartbeat(hello.clone()),
            )
            .await;
            let failure = match answer {
                Ok(ControlResponse::Assignments {
                    cluster_id,
                    shards,
                    nodes,
                }) => {
                    leader = Some(target);
                    if let Err(error) = service.check_cluster(cluster_id) {
                        // Following another cluster's assignments would drop every shard here.
                        tracing::error!(%error, "refusing the control plane's assignments");
                        break;
                    }
                    service.set_directory(nodes);
                    match service.reconcile(shards, asked_at).await {
                        Ok(changes) => {
                            if !changes.created.is_empty() || !changes.dropped.is_empty() {
                                tracing::info!(
                                    ?changes,
                                    "shards reconciled with the control plane"
                                );
                            }
                            joined.send_replace(true);
                        }
                        Err(error) => tracing::warn!(%error, "reconciling shards failed"),
                    }
                    break;
                }
                Ok(ControlResponse::NotLeader { leader: hint }) => match hint {
                    Some(addr) => {
                        leader = Some(addr);
                        continue;
                    }
                    None => "no leader known".to_owned(),
                },
                Ok(ControlResponse::Unauthorized) => {
                    tracing::error!(coordinator = %target, "the coordinator refused our join token or certificate");
                    "unauthorized".to_owned()
                }
                Ok(other) => format!("{other:?}"),
                Err(error) => error.to_string(),
            };
            // Try the next coordinator at the next tick.
            tracing::debug!(coordinator = %target, %failure, "heartbeat not accepted");
            leader = None;
            next += 1;
            break;
        }
    }
}
