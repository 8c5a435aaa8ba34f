//! The QUIC RPC server of every Quiver process: mutual TLS, one bidirectional stream per request.
//!
//! A stream carries one postcard [`Envelope`] each way. The request is read to its end with a size
//! limit; whatever the bytes, the answer is a response (an error for garbage) and the process
//! keeps serving. What a request means is up to the [`RpcService`]: the node serves
//! `quiver_proto::NodeRequest`s, a coordinator serves control-plane requests with the same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use quiver_proto::{decode, encode, Envelope, NodeError, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connections::{Admission, Connections, Slot};
use crate::tls::{ClusterIdentity, Roles, TlsError};

/// Connections served at once. A new one over the bound closes the connection idle longest (no
/// stream in flight; one that never sent a request first), or is refused if all are busy.
pub const MAX_CONNECTIONS: usize = 1024;
/// Handshakes in progress at once; more are refused, and past half of it a peer whose address
/// is not yet validated is asked to retry (QUIC's stateless retry: a spoofed source gets nowhere).
pub const MAX_HANDSHAKES: usize = 256;
/// How long a peer has to complete the QUIC and TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest deadline a caller may ask for; longer ones are cut to this.
pub const MAX_DEADLINE: Duration = Duration::from_secs(120);
/// How long a peer may take to send its request bytes.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Request bytes buffered at once across all streams, in KiB (1 GiB). A stream takes budget as its
/// bytes arrive and holds it until answered, so many large requests cannot exhaust memory; a
/// stream that cannot get budget within [`READ_TIMEOUT`] is reset.
pub const READ_BUDGET_KIB: usize = 1024 * 1024;
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What a QUIC server does with the requests it decodes.
pub trait RpcService: Send + Sync + 'static {
    type Request: DeserializeOwned + Send + 'static;
    type Response: Serialize + Send + 'static;
    /// A short name of the request for logs.
    fn kind(request: &Self::Request) -> &'static str;
    /// The answer to a request refused before reaching [`RpcService::handle`].
    fn reject(error: NodeError) -> Self::Response;
    /// Whether a response reports a failure (logged at debug level).
    fn is_error(response: &Self::Response) -> bool;
    /// Handles one request from a peer whose certificate grants `roles`.
    fn handle(
        self: Arc<Self>,
        request: Self::Request,
        roles: Roles,
        deadline: Instant,
    ) -> BoxFuture<'static, Self::Response>;
}

/// Binds a QUIC server endpoint (it can also make outgoing connections).
pub fn bind(addr: SocketAddr, identity: &ClusterIdentity) -> Result<quinn::Endpoint, ServerError> {
    let config = identity.quic_server_config()?;
    quinn::Endpoint::server(config, addr).map_err(|source| ServerError::Bind { addr, source })
}

/// How long shutdown waits for requests in flight before closing the endpoint.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` fires, then stops taking new requests, lets the ones in
/// flight finish (at most [`DRAIN_TIMEOUT`]), and closes the endpoint.
pub async fn serve<S: RpcService>(
    endpoint: quinn::Endpoint,
    service: Arc<S>,
    shutdown: CancellationToken,
) {
    let table = Connections::new(MAX_CONNECTIONS);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let budget = Arc::new(Semaphore::new(READ_BUDGET_KIB));
    let streams = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            () = shutdown.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        if handshakes.available_permits() < MAX_HANDSHAKES / 2
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            let _ = incoming.retry();
            continue;
        }
        let served = Served {
            service: service.clone(),
            budget: budget.clone(),
            streams: streams.clone(),
            table: table.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "quic handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "quic handshake timed out");
                    return;
                }
            };
            drop(handshake);
            served.connection(connection).await;
        });
    }
    streams.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, streams.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = streams.len(),
            "requests still running at shutdown; closing"
        );
    }
    endpoint.close(0u32.into(), b"shutdown");
    // Let the close frames reach the peers (bounded: a silent peer must not hold shutdown).
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// What serving one connection shares with the rest of the server.
struct Served<S> {
    service: Arc<S>,
    budget: Arc<Semaphore>,
    streams: TaskTracker,
    table: Arc<Connections>,
    shutdown: CancellationToken,
}

impl<S: RpcService> Served<S> {
    /// Takes a slot in the connection table (closing an idle connection if it is full), then
    /// serves the connection's streams until it closes, is evicted, or the server shuts down.
    async fn connection(self, connection: quinn::Connection) {
        let slot = match self.table.admit() {
            Admission::Admitted { slot, evicted } => {
                if evicted.is_some() {
                    tracing::debug!("quic connections at their bound: closed an idle one");
                }
                slot
            }
            Admission::Full => {
                tracing::debug!("quic connections at their bound, all busy: refused one");
                connection.close(CLOSE_BUSY.into(), b"server busy");
                return;
            }
        };
        let roles = Roles::of_peer(&connection);
        loop {
            let stream = tokio::select! {
                stream = connection.accept_bi() => stream,
                () = slot.evicted.cancelled() => break,
                () = self.shutdown.cancelled() => break,
            };
            let Ok((send, recv)) = stream else { break };
            self.streams.spawn(serve_stream(
                send,
                recv,
                self.service.clone(),
                roles,
                self.budget.clone(),
                (self.table.clone(), slot.clone()),
            ));
        }
        self.table.release(&slot);
        if slot.evicted.is_cancelled() {
            // Requests being handled answer first (bounded by their deadlines); streams still
            // being read, a stalled peer's, are cut by the close.
            let until = Instant::now() + MAX_DEADLINE;
            while slot.busy() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            connection.close(CLOSE_EVICTED.into(), b"evicted: too many connections");
        }
    }
}

/// Application close codes of the server.
const CLOSE_BUSY: u32 = 0x10;
const CLOSE_EVICTED: u32 = 0x11;

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads one request to its end, taking read budget as bytes arrive. The permit returned holds
/// the budget until the caller drops it.
async fn read_request(
    recv: &mut quinn::RecvStream,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), String> {
    let mut bytes = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(chunk) = recv
        .read_chunk(READ_CHUNK, true)
        .await
        .map_err(|e| e.to_string())?
    {
        if bytes.len() + chunk.bytes.len() > MAX_FRAME_BYTES {
            return Err(format!("request exceeds {MAX_FRAME_BYTES} bytes"));
        }
        let kib = u32::try_from(chunk.bytes.len().div_ceil(1024)).unwrap_or(u32::MAX);
        let permit = budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|e| e.to_string())?;
        match &mut held {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        bytes.extend_from_slice(&chunk.bytes);
    }
    Ok((bytes, held))
}

async fn serve_stream<S: RpcService>(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: Arc<S>,
    roles: Roles,
    budget: Arc<Semaphore>,
    (table, slot): (Arc<Connections>, Arc<Slot>),
) {
    let (bytes, budget_held) =
        match tokio::time::timeout(READ_TIMEOUT, read_request(&mut recv, &budget)).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                tracing::debug!(%error, "dropping unreadable stream");
                let _ = send.reset(1u32.into());
                return;
            }
            Err(_) => {
                let _ = send.reset(2u32.into());
                return;
            }
        };
    // Busy from the whole request to the whole answer: a connection whose streams are still
    // being read may be closed to make room (`crate::connections`); one answering may not.
    let busy = table.begin(&slot);
    let Some(bytes) = respond(service, &bytes, roles).await else {
        let _ = send.reset(3u32.into());
        return;
    };
    drop(budget_held);
    let sent = send.write_all(&bytes).await.is_ok() && send.finish().is_ok();
    drop(busy);
    if sent {
        // Stay tracked until the peer has the whole answer, so a draining shutdown does not
        // close the endpoint under it (bounded: a vanished peer must not hold the task).
        let _ = tokio::time::timeout(READ_TIMEOUT, send.stopped()).await;
    }
}

/// Decodes one request envelope, checks its version and deadline, lets `service` answer it, and
/// encodes the answer; whatever the bytes, the answer is a response (garbage gets `Malformed`).
/// `None` only if not even an error response can be encoded. The QUIC server and the in-process
/// [`crate::local::LocalTransport`] both answer through here.
pub async fn respond<S: RpcService>(
    service: Arc<S>,
    bytes: &[u8],
    roles: Roles,
) -> Option<Vec<u8>> {
    let (request_id, response) = match decode::<S::Request>(bytes) {
        Err(error) => (
            String::new(),
            S::reject(NodeError::Malformed(error.to_string())),
        ),
        Ok(envelope) if envelope.version != PROTOCOL_VERSION => (
            envelope.request_id,
            S::reject(NodeError::ProtocolVersion {
                got: envelope.version,
                supported: PROTOCOL_VERSION,
            }),
        ),
        Ok(envelope) => {
            let now = now_unix_ms();
            let budget = Duration::from_millis(envelope.deadline_unix_ms.saturating_sub(now))
                .min(MAX_DEADLINE);
            let deadline = Instant::now() + budget;
            let span = tracing::info_span!(
                "rpc",
                request_id = %envelope.request_id,
                kind = S::kind(&envelope.body)
            );
            let response = service
                .handle(envelope.body, roles, deadline)
                .instrument(span)
                .await;
            (envelope.request_id, response)
        }
    };
    if S::is_error(&response) {
        tracing::debug!(%request_id, "rpc failed");
    }
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        request_id,
        deadline_unix_ms: 0,
        body: response,
    };
    let bytes = match encode(&envelope) {
        Ok(bytes) => bytes,
        Err(error) => {
            let fallback = Envelope {
                body: S::reject(NodeError::Storage(format!("response too large: {error}"))),
                version: envelope.version,
                request_id: envelope.request_id,
                deadline_unix_ms: 0,
            };
            match encode(&fallback) {
                Ok(bytes) => bytes,
                Err(_) => return None,
            }
        }
    };
    Some(bytes)
}
