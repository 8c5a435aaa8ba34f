//! The caller's side of every cluster RPC: one transport trait and its QUIC implementation.
//!
//! [`Transport`] moves one encoded request to a peer and brings back the encoded answer; it is
//! object-safe so the data plane, the Raft network and the node agent all take an
//! `Arc<dyn Transport>`, and tests put [`crate::local::LocalTransport`] (in-process) or
//! [`crate::fault::FaultTransport`] (partitions, drops, delays) in its place. [`rpc`] adds the
//! typed envelope on top.
//!
//! Peers are named `host:port` (a DNS name or an IP literal) and resolved when a connection is
//! made, so a restarted container or pod that comes back under a new IP is found again under
//! its stable name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use quiver_proto::{decode, encode, Envelope, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use serde::{de::DeserializeOwned, Serialize};

use crate::tls::{ClusterIdentity, TlsError, CLUSTER_SERVER_NAME};

/// How long resolving a name and the QUIC handshake may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Peers a transport keeps connection slots for; past this, slots without a live connection
/// are forgotten (a cluster has far fewer peers; the bound only stops unbounded growth).
const MAX_PEER_SLOTS: usize = 4096;

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach {peer}: {reason}")]
    Unreachable { peer: String, reason: String },
    #[error("{peer} did not answer within the deadline")]
    Timeout { peer: String },
    #[error("protocol error talking to {peer}: {reason}")]
    Protocol { peer: String, reason: String },
}

/// Moves one encoded request envelope to `peer` (`host:port`) and returns the encoded answer,
/// within `timeout`.
pub trait Transport: Send + Sync + 'static {
    fn exchange(
        &self,
        peer: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// One typed request/response exchange with `peer`, bounded by `timeout` (the receiver sees the
/// same deadline in the envelope).
pub async fn rpc<Req, Resp>(
    transport: &dyn Transport,
    peer: &str,
    request_id: &str,
    timeout: Duration,
    request: Req,
) -> Result<Resp, TransportError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let protocol = |reason: String| TransportError::Protocol {
        peer: peer.to_owned(),
        reason,
    };
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
    let bytes = encode(&envelope).map_err(|e| protocol(e.to_string()))?;
    let answer = transport.exchange(peer, bytes, timeout).await?;
    let envelope = decode::<Resp>(&answer).map_err(|e| protocol(e.to_string()))?;
    if envelope.version != PROTOCOL_VERSION {
        return Err(protocol(format!(
            "peer speaks protocol {}",
            envelope.version
        )));
    }
    Ok(envelope.body)
}

/// The connection to one peer. Its lock is held across that peer's handshake only, so a peer
/// whose handshake hangs delays calls to itself, never calls to other peers.
#[derive(Default)]
struct PeerSlot {
    connection: tokio::sync::Mutex<Option<quinn::Connection>>,
}

/// QUIC with mutual TLS: one connection per peer, one bidirectional stream per exchange.
pub struct QuicTransport {
    inner: Arc<QuicInner>,
}

struct QuicInner {
    endpoint: quinn::Endpoint,
    peers: parking_lot::Mutex<HashMap<String, Arc<PeerSlot>>>,
}

impl QuicTransport {
    /// A transport on its own client-only endpoint.
    pub fn new(identity: &ClusterIdentity) -> Result<Arc<Self>, TlsError> {
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
    ) -> Result<Arc<Self>, TlsError> {
        endpoint.set_default_client_config(identity.quic_client_config()?);
        Ok(Arc::new(QuicTransport {
            inner: Arc::new(QuicInner {
                endpoint,
                peers: parking_lot::Mutex::new(HashMap::new()),
            }),
        }))
    }
}

impl QuicInner {
    fn slot(&self, peer: &str) -> Arc<PeerSlot> {
        let mut peers = self.peers.lock();
        if let Some(slot) = peers.get(peer) {
            return slot.clone();
        }
        if peers.len() >= MAX_PEER_SLOTS {
            peers.retain(|_, slot| {
                slot.connection
                    .try_lock()
                    .map(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()))
                    .unwrap_or(true)
            });
        }
        peers.entry(peer.to_owned()).or_default().clone()
    }

    async fn connection(&self, peer: &str) -> Result<quinn::Connection, TransportError> {
        let slot = self.slot(peer);
        let mut connection = slot.connection.lock().await;
        if let Some(live) = connection.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(live.clone());
        }
        let unreachable = |reason: String| TransportError::Unreachable {
            peer: peer.to_owned(),
            reason,
        };
        let connect = async {
            let addr = resolve(peer).await.map_err(unreachable)?;
            // Certificates are checked against the cluster CA and the role they carry, not
            // against the name the peer was reached by (see `tls`), so every peer presents the
            // same server name whatever its host name or IP.
            let connecting = self
                .endpoint
                .connect(addr, CLUSTER_SERVER_NAME)
                .map_err(|e| unreachable(e.to_string()))?;
            connecting.await.map_err(|e| unreachable(e.to_string()))
        };
        let fresh = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable("connecting timed out".into()))??;
        *connection = Some(fresh.clone());
        Ok(fresh)
    }

    async fn exchange_once(&self, peer: &str, bytes: &[u8]) -> Result<Vec<u8>, TransportError> {
        let connection = self.connection(peer).await?;
        let protocol = |reason: String| TransportError::Protocol {
            peer: peer.to_owned(),
            reason,
        };
        let (mut send, mut recv) =
            connection
                .open_bi()
                .await
                .map_err(|e| TransportError::Unreachable {
                    peer: peer.to_owned(),
                    reason: e.to_string(),
                })?;
        send.write_all(bytes)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        send.finish().map_err(|e| protocol(e.to_string()))?;
        recv.read_to_end(MAX_FRAME_BYTES)
            .await
            .map_err(|e| protocol(e.to_string()))
    }
}

impl Transport for QuicTransport {
    fn exchange(
        &self,
        peer: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let this = self.inner.clone();
        let peer = peer.to_owned();
        Box::pin(async move {
            match tokio::time::timeout(timeout, this.exchange_once(&peer, &request)).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Timeout { peer }),
            }
        })
    }
}

/// Resolves `host:port` to one socket address (the first the resolver gives).
pub async fn resolve(peer: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = peer.parse::<SocketAddr>() {
        return Ok(addr);
    }
    check_peer_addr(peer)?;
    let mut addrs = tokio::net::lookup_host(peer)
        .await
        .map_err(|e| format!("resolving {peer}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{peer} resolves to no address"))
}

/// Checks that `peer` has the shape `host:port` (a DNS name, an IPv4 literal or a bracketed
/// IPv6 literal, and a port 1..=65535). Used to validate configuration and heartbeats before
/// anything is stored.
pub fn check_peer_addr(peer: &str) -> Result<(), String> {
    if peer.parse::<SocketAddr>().is_ok_and(|a| a.port() != 0) {
        return Ok(());
    }
    let (host, port) = peer
        .rsplit_once(':')
        .ok_or_else(|| format!("{peer:?} is not host:port"))?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(format!("{peer:?} has no valid port")),
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{peer:?} has no valid host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_are_host_and_port() {
        for good in [
            "127.0.0.1:7000",
            "[::1]:7000",
            "node-1:7001",
            "quiver-coordinator-0.quiver.default.svc.cluster.local:7000",
            "localhost:1",
        ] {
            assert_eq!(check_peer_addr(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "node-1",
            "node-1:",
            "node-1:0",
            "node-1:70000",
            ":7000",
            "-bad:7000",
            "a..b:7000",
            "host name:7000",
            "127.0.0.1:0",
        ] {
            assert!(check_peer_addr(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn names_resolve_at_connect_time() {
        assert_eq!(resolve("localhost:7000").await.map(|a| a.port()), Ok(7000));
        assert!(resolve("no-such-host.invalid:7000").await.is_err());
    }
}
