//! Prometheus metrics of a coordinator: API requests by operation and status, their latency,
//! the Raft state, and the catalog (indexes, shards, node liveness).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cluster::ControlPlane;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// The HTTP server's connection counters (see `quiver::http`): shared by clone, registered in a
/// coordinator's [`Metrics`] and in a node's exposition.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Connections accepted since start.
    pub accepted: Counter,
    /// Connections closed at once because every slot held a request in flight.
    pub refused: Counter,
    /// Idle connections closed to make room for a new one.
    pub evicted: Counter,
    /// Accepts that failed because the process ran out of descriptors.
    pub out_of_descriptors: Counter,
    /// Connections closed because a request's headers did not arrive in time (or it sat idle).
    pub header_timeouts: Counter,
    /// Requests whose body arrived slower than the minimum rate.
    pub slow_bodies: Counter,
}

impl ConnectionMetrics {
    /// Registers every counter under `http_connections_*` / `http_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_connections_open",
            "HTTP connections open now",
            self.open.clone(),
        );
        let counters = [
            (
                "http_connections_accepted",
                "HTTP connections accepted",
                &self.accepted,
            ),
            (
                "http_connections_refused",
                "HTTP connections closed at once: every slot had a request in flight",
                &self.refused,
            ),
            (
                "http_connections_evicted",
                "Idle HTTP connections closed to make room for a new one",
                &self.evicted,
            ),
            (
                "http_accept_out_of_descriptors",
                "HTTP accepts that failed because the process had no free descriptor",
                &self.out_of_descriptors,
            ),
            (
                "http_header_timeouts",
                "HTTP connections closed because request headers did not arrive in time",
                &self.header_timeouts,
            ),
            (
                "http_slow_bodies",
                "HTTP requests refused because the body arrived slower than the minimum rate",
                &self.slow_bodies,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// The HTTP server's connection counters, exposed with the rest.
    pub connections: ConnectionMetrics,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
    raft_term: Gauge,
    raft_leader: Gauge,
    raft_is_leader: Gauge,
    raft_last_log_index: Gauge,
    raft_last_applied_index: Gauge,
    indexes: Gauge,
    shards: Gauge,
    node_up: Family<NodeLabels, Gauge>,
    node_shards: Family<NodeLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("quiver");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "S3 Vectors API requests by operation and HTTP status",
            requests.clone(),
        );
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms .. ~65 s
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        });
        registry.register(
            "api_request_duration_seconds",
            "S3 Vectors API request latency by operation",
            latency.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let raft_term = gauge(&mut registry, "raft_term", "Current Raft term");
        let raft_leader = gauge(
            &mut registry,
            "raft_leader",
            "Raft id of the current leader (0 if none)",
        );
        let raft_is_leader = gauge(
            &mut registry,
            "raft_is_leader",
            "1 if this coordinator leads",
        );
        let raft_last_log_index = gauge(
            &mut registry,
            "raft_last_log_index",
            "Index of the last Raft log entry",
        );
        let raft_last_applied_index = gauge(
            &mut registry,
            "raft_commit_index",
            "Index of the last committed Raft entry applied here",
        );
        let indexes = gauge(&mut registry, "indexes", "Vector indexes in the catalog");
        let shards = gauge(&mut registry, "shards", "Shards in the catalog");
        let node_up = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_up",
            "1 if the storage node heartbeats",
            node_up.clone(),
        );
        let node_shards = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_shards",
            "Shards placed on each storage node",
            node_shards.clone(),
        );
        let connections = ConnectionMetrics::default();
        connections.register(&mut registry);
        Metrics {
            registry,
            connections,
            requests,
            latency,
            raft_term,
            raft_leader,
            raft_is_leader,
            raft_last_log_index,
            raft_last_applied_index,
            indexes,
            shards,
            node_up,
            node_shards,
        }
    }
}

/// A `/metrics` response.
pub fn exposition(body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn as_gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Counts one API request; `operation` is one of a fixed set of labels.
    pub fn record(&self, operation: &'static str, status: u16, elapsed: Duration) {
        let operation = operation.to_owned();
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition, with the Raft and catalog gauges read now.
    pub fn render(&self, control: &ControlPlane) -> String {
        let metrics = control.raft().metrics().borrow().clone();
        self.raft_term.set(as_gauge(metrics.current_term));
        self.raft_leader
            .set(as_gauge(metrics.current_leader.unwrap_or(0)));
        self.raft_is_leader
            .set(i64::from(metrics.current_leader == Some(control.id())));
        self.raft_last_log_index
            .set(as_gauge(metrics.last_log_index.unwrap_or(0)));
        self.raft_last_applied_index.set(as_gauge(
            metrics.last_applied.map(|id| id.index).unwrap_or(0),
        ));
        {
            use crate::catalog::Catalog;
            let state = control.state();
            let indexes: Vec<_> = state.all_indexes().collect();
            self.indexes.set(as_gauge(indexes.len() as u64));
            self.shards.set(as_gauge(
                indexes.iter().map(|index| index.shards.len() as u64).sum(),
            ));
            let counts = state.shard_counts();
            for node in state.nodes() {
                let labels = NodeLabels {
                    node: node.id.clone(),
                };
                self.node_up.get_or_create(&labels).set(i64::from(node.up));
                self.node_shards
                    .get_or_create(&labels)
                    .set(as_gauge(counts.get(&node.id).copied().unwrap_or(0) as u64));
            }
        }
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "encoding metrics");
        }
        out
    }
}
