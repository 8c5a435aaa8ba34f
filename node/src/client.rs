//! The caller's side of the node RPC: a trait seam plus the QUIC implementation.
//!
//! [`NodeTransport`] is what the coordinator programs against, so tests can put an in-memory or
//! fault-injecting transport in its place. [`QuicTransport`] keeps one connection per peer,
//! opens one bidirectional stream per request, and bounds every call by its deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use quiver_proto::{
    decode, encode, Envelope, NodeRequest, NodeResponse, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::tls::{ClusterIdentity, TlsError, CLUSTER_SERVER_NAME};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach node {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("node {addr} did not answer within the deadline")]
    Timeout { addr: SocketAddr },
    #[error("protocol error talking to {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
}

/// One RPC to one node.
pub trait NodeTransport: Send + Sync + 'static {
    fn call(
        &self,
        addr: SocketAddr,
        request_id: &str,
        timeout: Duration,
        request: NodeRequest,
    ) -> BoxFuture<'static, Result<NodeResponse, TransportError>>;
}

pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    connections: tokio::sync::Mutex<HashMap<SocketAddr, quinn::Connection>>,
}

impl QuicTransport {
    /// A transport on its own client-only endpoint.
    pub fn new(identity: &ClusterIdentity) -> Result<std::sync::Arc<Self>, TlsError> {
        let bind: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
        let endpoint = quinn::Endpoint::client(bind).map_err(|source| TlsError::Io {
            path: "udp socket".into(),
            source,
        })?;
        Self::on_endpoint(endpoint, identity)
    }

    /// A transport that makes its outgoing connections from `endpoint`, typically the process's
    /// server endpoint, so that one UDP socket carries all of a process's cluster traffic.
    pub fn on_endpoint(
        mut endpoint: quinn::Endpoint,
        identity: &ClusterIdentity,
    ) -> Result<std::sync::Arc<Self>, TlsError> {
        endpoint.set_default_client_config(identity.quic_client_config()?);
        Ok(std::sync::Arc::new(QuicTransport {
            endpoint,
            connections: tokio::sync::Mutex::new(HashMap::new()),
        }))
    }

    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, TransportError> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(&addr) {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
        }
        let unreachable = |reason: String| TransportError::Unreachable { addr, reason };
        let connecting = self
            .endpoint
            .connect(addr, CLUSTER_SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let connection = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| unreachable("handshake timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        connections.insert(addr, connection.clone());
        Ok(connection)
    }

    async fn call_once<Resp: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        bytes: &[u8],
    ) -> Result<Resp, TransportError> {
        let connection = self.connection(addr).await?;
        let protocol = |reason: String| TransportError::Protocol { addr, reason };
        let (mut send, mut recv) =
            connection
                .open_bi()
                .await
                .map_err(|e| TransportError::Unreachable {
                    addr,
                    reason: e.to_string(),
                })?;
        send.write_all(bytes)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        send.finish().map_err(|e| protocol(e.to_string()))?;
        let response = recv
            .read_to_end(MAX_FRAME_BYTES)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let envelope = decode::<Resp>(&response).map_err(|e| protocol(e.to_string()))?;
        if envelope.version != PROTOCOL_VERSION {
            return Err(protocol(format!(
                "node speaks protocol {}",
                envelope.version
            )));
        }
        Ok(envelope.body)
    }
}

impl QuicTransport {
    /// One request/response exchange of any message types over one stream, bounded by
    /// `timeout` (the receiver sees the same deadline).
    pub fn rpc<Req, Resp>(
        self: &std::sync::Arc<Self>,
        addr: SocketAddr,
        request_id: &str,
        timeout: Duration,
        request: Req,
    ) -> BoxFuture<'static, Result<Resp, TransportError>>
    where
        Req: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static,
    {
        let this = self.clone();
        let deadline_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d + timeout).as_millis() as u64)
            .unwrap_or(0);
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request_id: request_id.to_owned(),
            deadline_unix_ms,
            body: request,
        };
        Box::pin(async move {
            let bytes = encode(&envelope).map_err(|e| TransportError::Protocol {
                addr,
                reason: e.to_string(),
            })?;
            match tokio::time::timeout(timeout, this.call_once(addr, &bytes)).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Timeout { addr }),
            }
        })
    }
}

impl NodeTransport for std::sync::Arc<QuicTransport> {
    fn call(
        &self,
        addr: SocketAddr,
        request_id: &str,
        timeout: Duration,
        request: NodeRequest,
    ) -> BoxFuture<'static, Result<NodeResponse, TransportError>> {
        self.rpc(addr, request_id, timeout, request)
    }
}
