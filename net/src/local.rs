//! An in-process [`Transport`]: requests go straight to an [`RpcService`] through the same
//! decode/handle/encode path as the QUIC server ([`crate::server::respond`]), without sockets or
//! TLS. Tests build whole clusters on it, and wrap it in [`crate::fault::FaultTransport`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::RwLock;

use crate::client::{Transport, TransportError};
use crate::server::{respond, RpcService};
use crate::tls::Roles;

type Handler = Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Option<Vec<u8>>> + Send + Sync>;

/// Peers by name, each answered by a service in this process. Every request is presented to
/// the service as coming from a peer with the roles given at construction.
pub struct LocalTransport {
    roles: Roles,
    services: RwLock<HashMap<String, Handler>>,
}

impl LocalTransport {
    pub fn new(roles: Roles) -> Arc<Self> {
        Arc::new(LocalTransport {
            roles,
            services: RwLock::new(HashMap::new()),
        })
    }

    /// Answers requests to `peer` with `service` (replacing any earlier one).
    pub fn serve<S: RpcService>(&self, peer: &str, service: Arc<S>) {
        let roles = self.roles;
        let handler: Handler = Arc::new(move |bytes: Vec<u8>| {
            let service = service.clone();
            Box::pin(async move { respond(service, &bytes, roles).await })
        });
        self.services.write().insert(peer.to_owned(), handler);
    }

    /// Stops answering for `peer` (as if its process stopped).
    pub fn remove(&self, peer: &str) {
        self.services.write().remove(peer);
    }
}

impl Transport for LocalTransport {
    fn exchange(
        &self,
        peer: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let handler = self.services.read().get(peer).cloned();
        let peer = peer.to_owned();
        Box::pin(async move {
            let Some(handler) = handler else {
                return Err(TransportError::Unreachable {
                    peer,
                    reason: "no such peer in this process".into(),
                });
            };
            match tokio::time::timeout(timeout, handler(request)).await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) => Err(TransportError::Protocol {
                    peer,
                    reason: "stream reset".into(),
                }),
                Err(_) => Err(TransportError::Timeout { peer }),
            }
        })
    }
}
