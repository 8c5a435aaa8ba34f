//! A fault-injecting [`Transport`] for tests and chaos runs, in the spirit of tikv's
//! `transport_simulate` filters: it wraps any transport and, per destination peer (or for every
//! peer), black-holes exchanges, refuses them, delays them, or loses every n-th one. Faults are
//! outgoing only: to cut a process off completely, put the rule on its transport and on every
//! transport that talks to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::client::{Transport, TransportError};

/// What happens to an exchange with a faulty peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request is lost and no answer comes: the caller waits out its deadline (a network
    /// partition as the caller sees it).
    Blackhole,
    /// The exchange fails at once as unreachable (a peer whose port is closed).
    Refuse,
    /// The exchange goes through after this extra delay (counted against the deadline).
    Delay(Duration),
    /// Every n-th exchange (n >= 1) is black-holed, the others go through; deterministic.
    DropEvery(u32),
}

#[derive(Default)]
struct Rules {
    /// Applies to every peer without a rule of its own.
    all: Option<(Fault, u64)>,
    /// Per peer: the fault and how many exchanges it has seen (for `DropEvery`).
    peers: HashMap<String, (Fault, u64)>,
}

pub struct FaultTransport {
    inner: Arc<dyn Transport>,
    rules: Mutex<Rules>,
}

enum Verdict {
    Pass(Duration),
    Blackhole,
    Refuse,
}

impl FaultTransport {
    pub fn new(inner: Arc<dyn Transport>) -> Arc<Self> {
        Arc::new(FaultTransport {
            inner,
            rules: Mutex::new(Rules::default()),
        })
    }

    /// Applies `fault` to exchanges with `peer`.
    pub fn set(&self, peer: &str, fault: Fault) {
        self.rules.lock().peers.insert(peer.to_owned(), (fault, 0));
    }

    /// Applies `fault` to exchanges with every peer that has no rule of its own.
    pub fn set_all(&self, fault: Fault) {
        self.rules.lock().all = Some((fault, 0));
    }

    /// Black-holes exchanges with each of `peers`.
    pub fn partition<'a>(&self, peers: impl IntoIterator<Item = &'a str>) {
        for peer in peers {
            self.set(peer, Fault::Blackhole);
        }
    }

    /// Removes every rule.
    pub fn heal(&self) {
        *self.rules.lock() = Rules::default();
    }

    fn verdict(&self, peer: &str) -> Verdict {
        let mut rules = self.rules.lock();
        let Rules { all, peers } = &mut *rules;
        let Some((fault, seen)) = peers.get_mut(peer).or(all.as_mut()) else {
            return Verdict::Pass(Duration::ZERO);
        };
        *seen += 1;
        match *fault {
            Fault::Blackhole => Verdict::Blackhole,
            Fault::Refuse => Verdict::Refuse,
            Fault::Delay(delay) => Verdict::Pass(delay),
            Fault::DropEvery(n) if *seen % u64::from(n.max(1)) == 0 => Verdict::Blackhole,
            Fault::DropEvery(_) => Verdict::Pass(Duration::ZERO),
        }
    }
}

impl Transport for FaultTransport {
    fn exchange(
        &self,
        peer: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let owned = peer.to_owned();
        match self.verdict(peer) {
            Verdict::Refuse => Box::pin(async move {
                Err(TransportError::Unreachable {
                    peer: owned,
                    reason: "refused (injected fault)".into(),
                })
            }),
            Verdict::Blackhole => Box::pin(async move {
                tokio::time::sleep(timeout).await;
                Err(TransportError::Timeout { peer: owned })
            }),
            Verdict::Pass(delay) if delay.is_zero() => self.inner.exchange(peer, request, timeout),
            Verdict::Pass(delay) => {
                let inner = self.inner.clone();
                Box::pin(async move {
                    if delay >= timeout {
                        tokio::time::sleep(timeout).await;
                        return Err(TransportError::Timeout { peer: owned });
                    }
                    tokio::time::sleep(delay).await;
                    inner.exchange(&owned, request, timeout - delay).await
                })
            }
        }
    }
}
