//! The HTTP front door of every Quiver process (the S3 Vectors API of a coordinator, the health
//! and metrics port of a node): hyper's HTTP/1.1 server with the limits a public port needs.
//!
//! - **A bound on open connections** (by default from the open-file budget, `fd_budget`). A new
//!   connection over the bound closes an idle one (a stranger that never sent a request first,
//!   see `quiver_net::connections`); when every connection has a request in flight it is closed at once.
//!   Either way it is counted in `/metrics` and logged at most every [`LOG_EVERY`].
//! - **A header-read timeout** that also closes idle keep-alive connections: hyper starts it
//!   whenever a connection waits for a request's headers.
//! - **A minimum body rate** after a grace period ([`body`]).
//! - **Header size and count limits** (431 beyond them).
//! - **Out of descriptors** on accept: close an idle connection, pause briefly, go on.

pub mod body;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use quiver_coordinator::metrics::ConnectionMetrics;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use self::body::{MinRate, MinRateBody, OnEnd};
use parking_lot::Mutex;
use quiver_net::connections::{Admission, Busy, Connections, Slot};

/// Longest time a connection may take to send a request's headers, and longest a kept-alive
/// connection may sit idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A body must start within this, then keep [`MIN_BODY_BYTES_PER_SECOND`].
pub const BODY_GRACE: Duration = Duration::from_secs(10);
/// 64 KiB/s: a 20 MiB PutVectors body may take about five minutes.
pub const MIN_BODY_BYTES_PER_SECOND: u64 = 64 * 1024;
/// Request line and headers (SigV4 requests use well under 4 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;
/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused, evicted and out-of-descriptor connections are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after an accept failed for want of descriptors.
const OUT_OF_DESCRIPTORS_PAUSE: Duration = Duration::from_millis(20);
/// Longest the accept loop waits for an evicted connection to let go of its descriptor (an idle
/// one does at once; one that turned busy meanwhile finishes its response first).
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// Waits until an evicted connection is gone, so descriptors never run ahead of the bound.
async fn closed(victim: &Slot) {
    let _ = tokio::time::timeout(EVICTION_WAIT, victim.closed.cancelled()).await;
}

/// The limits of one HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body: MinRate,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl HttpLimits {
    /// The default limits with a cap of `max_connections`.
    pub fn with_max_connections(max_connections: usize) -> HttpLimits {
        HttpLimits {
            max_connections,
            header_timeout: HEADER_TIMEOUT,
            body: MinRate {
                grace: BODY_GRACE,
                bytes_per_second: MIN_BODY_BYTES_PER_SECOND,
            },
            max_header_bytes: MAX_HEADER_BYTES,
            max_headers: MAX_HEADERS,
        }
    }
}

/// Logs an event at most every [`LOG_EVERY`], with the number of the ones in between.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn log(&mut self, log: impl FnOnce(u64)) {
        if self.last.is_some_and(|last| last.elapsed() < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.suppressed = 0;
        self.last = Some(Instant::now());
    }
}

fn out_of_descriptors(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// Serves `app` on `listener` within `limits` until `shutdown`, then lets requests in flight
/// finish (at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    metrics: ConnectionMetrics,
    shutdown: CancellationToken,
) {
    let table = Connections::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let http = Arc::new(http);
    let tracker = TaskTracker::new();
    let (mut refused_log, mut evicted_log, mut descriptors_log) = (
        Throttled::default(),
        Throttled::default(),
        Throttled::default(),
    );
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if out_of_descriptors(&error) => {
                metrics.out_of_descriptors.inc();
                let evicted = table.evict_one();
                if evicted.is_some() {
                    metrics.evicted.inc();
                }
                descriptors_log.log(|suppressed| {
                    tracing::warn!(%error, evicted = evicted.is_some(), suppressed,
                        open = table.len(), "out of descriptors accepting an HTTP connection")
                });
                match evicted {
                    Some(victim) => closed(&victim).await,
                    None => tokio::time::sleep(OUT_OF_DESCRIPTORS_PAUSE).await,
                }
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "accepting an HTTP connection");
                continue;
            }
        };
        let slot = match table.admit() {
            Admission::Admitted { slot, evicted } => {
                if let Some(victim) = evicted {
                    closed(&victim).await;
                    metrics.evicted.inc();
                    evicted_log.log(|suppressed| {
                        tracing::warn!(
                            max = limits.max_connections,
                            suppressed,
                            "HTTP connections at their bound: closed an idle one"
                        )
                    });
                }
                slot
            }
            Admission::Full => {
                metrics.refused.inc();
                refused_log.log(|suppressed| {
                    tracing::warn!(
                        max = limits.max_connections,
                        suppressed,
                        "HTTP connections at their bound, all busy: refused a new one"
                    )
                });
                drop(stream);
                continue;
            }
        };
        metrics.accepted.inc();
        metrics.open.inc();
        let connection = Connection {
            table: table.clone(),
            slot,
            http: http.clone(),
            app: app.clone(),
            limits,
            metrics: metrics.clone(),
        };
        tracker.spawn(connection.serve(stream, shutdown.clone()));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = tracker.len(),
            "HTTP requests still running at shutdown; closing"
        );
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    table: Arc<Connections>,
    slot: Arc<Slot>,
    http: Arc<hyper::server::conn::http1::Builder>,
    app: axum::Router,
    limits: HttpLimits,
    metrics: ConnectionMetrics,
}

impl Connection {
    async fn serve(self, stream: TcpStream, shutdown: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let service = {
            let (table, slot, app) = (self.table.clone(), self.slot.clone(), self.app.clone());
            let (rate, slow) = (self.limits.body, self.metrics.slow_bodies.clone());
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                // Busy once the body is read whole (before that nothing of the request has
                // happened, so an evicted connection may simply be dropped) until the response.
                let busy: Arc<Mutex<Option<Busy>>> = Arc::default();
                let on_end: OnEnd = {
                    let (table, slot, busy) = (table.clone(), slot.clone(), busy.clone());
                    Box::new(move || *busy.lock() = Some(table.begin(&slot)))
                };
                let request =
                    request.map(|body| MinRateBody::new(body, rate, slow.clone(), on_end));
                let app = app.clone();
                async move {
                    let response = app.oneshot(request).await.unwrap_or_else(|e| match e {});
                    busy.lock().take();
                    Ok::<_, Infallible>(response)
                }
            })
        };
        {
            let connection = self.http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(error) = served {
                            if error.is_timeout() {
                                self.metrics.header_timeouts.inc();
                            }
                            tracing::debug!(%error, "HTTP connection ended");
                        }
                        break;
                    }
                    () = self.slot.evicted.cancelled(), if !closing => {}
                    () = shutdown.cancelled(), if !closing => {}
                }
                // Evicted or shutting down: a connection not busy closes now (no request on it
                // has been read whole, so none has done anything), a busy one after its response.
                if !self.slot.busy() {
                    break;
                }
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
        // The connection (and its descriptor) is gone: now its slot may be reused.
        self.table.release(&self.slot);
        self.metrics.open.dec();
    }
}
