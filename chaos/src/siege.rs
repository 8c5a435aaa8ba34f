//! `quiver-chaos siege`: what an attacker with nothing but sockets does to a Quiver process's
//! ports, held for a while so that real clients can be measured meanwhile.
//!
//! - HTTP: `--idle` connections that never send a byte, and `--trickle` connections that send
//!   request headers one byte a second; each is reopened as soon as the server closes it, so
//!   the pressure stays on for the whole run.
//! - QUIC: `--stalled` peers that complete the handshake with a cluster certificate
//!   (`--tls-dir`), open a stream, send a few bytes of a request and never finish it; and
//!   `--strangers` that handshake over and over with a certificate from a CA of their own.
//!
//! It prints (and with `--report` writes) how many connections were opened and how many the
//! server closed; whether the real clients were served is for the caller to measure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quiver_net::tls::{ClusterIdentity, GeneratedCa, Role, CLUSTER_SERVER_NAME};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct SiegeArgs {
    /// HTTP port to besiege (`host:port`).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Idle TCP connections kept open to --http.
    #[arg(long, default_value_t = 2000)]
    pub idle: usize,
    /// Connections to --http that send their headers one byte a second.
    #[arg(long, default_value_t = 200)]
    pub trickle: usize,
    /// QUIC cluster port to besiege (`host:port`).
    #[arg(long)]
    pub quic: Option<SocketAddr>,
    /// Peers with a cluster certificate that complete the handshake and stall mid-request.
    #[arg(long, default_value_t = 1500)]
    pub stalled: usize,
    /// Peers that handshake again and again with a certificate from another CA.
    #[arg(long, default_value_t = 100)]
    pub strangers: usize,
    /// Directory of the certificate the stalled peers present (`ca.pem`, `NAME.pem`,
    /// `NAME.key`); required with --quic and --stalled > 0.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// NAME of that certificate.
    #[arg(long, default_value = "admin")]
    pub tls_name: String,
    /// How long a hostile connection the server closed waits before it comes back (0: at once,
    /// a connection flood).
    #[arg(long, default_value_t = 1000)]
    pub reconnect_pause_ms: u64,
    /// How long to hold the siege.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Write the summary here as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Counts of one kind of hostile connection.
#[derive(Debug, Default)]
struct Counts {
    opened: AtomicU64,
    closed_by_server: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct CountsReport {
    pub opened: u64,
    pub closed_by_server: u64,
    pub failed: u64,
}

impl Counts {
    fn report(&self) -> CountsReport {
        CountsReport {
            opened: self.opened.load(Ordering::Relaxed),
            closed_by_server: self.closed_by_server.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SiegeReport {
    pub duration_secs: u64,
    pub idle: CountsReport,
    pub trickle: CountsReport,
    pub stalled: CountsReport,
    pub strangers: CountsReport,
}

/// Pause after a failed attempt, so a refusing server does not turn the siege into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// When the siege ends, and how soon a closed connection comes back.
#[derive(Debug, Clone, Copy)]
struct Pace {
    deadline: Instant,
    reconnect: Duration,
}

impl Pace {
    /// Waits before reconnecting; false once the siege is over.
    async fn again(&self) -> bool {
        tokio::select! {
            () = sleep(self.reconnect) => Instant::now() < self.deadline,
            () = sleep_until(self.deadline) => false,
        }
    }
}
/// Bound on one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(args: SiegeArgs) -> anyhow::Result<bool> {
    raise_open_file_limit(args.idle + args.trickle + 64);
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let pace = Pace {
        deadline,
        reconnect: Duration::from_millis(args.reconnect_pause_ms),
    };
    let (idle, trickle, stalled, strangers) = (
        Arc::new(Counts::default()),
        Arc::new(Counts::default()),
        Arc::new(Counts::default()),
        Arc::new(Counts::default()),
    );
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = args.http {
        for _ in 0..args.idle {
            tasks.spawn(hold_idle(addr, pace, idle.clone()));
        }
        for _ in 0..args.trickle {
            tasks.spawn(hold_trickle(addr, pace, trickle.clone()));
        }
    }
    let _stranger_dir;
    if let Some(addr) = args.quic {
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .context("binding a UDP socket")?;
        let peer = |config: &quinn::ClientConfig, counts: &Arc<Counts>| QuicPeer {
            endpoint: endpoint.clone(),
            config: config.clone(),
            addr,
            pace,
            counts: counts.clone(),
        };
        if args.stalled > 0 {
            let dir = args
                .tls_dir
                .as_ref()
                .context("--stalled peers need --tls-dir with a cluster certificate")?;
            let config = ClusterIdentity::load(dir, &args.tls_name)
                .with_context(|| format!("loading {} from {}", args.tls_name, dir.display()))?
                .quic_client_config()?;
            for _ in 0..args.stalled {
                tasks.spawn(peer(&config, &stalled).stall());
            }
        }
        if args.strangers > 0 {
            let dir = tempfile::tempdir()?;
            let ca = GeneratedCa::generate("siege stranger CA")?;
            ca.write(dir.path())?;
            ca.issue_to(dir.path(), "stranger", &["127.0.0.1".into()], &Role::ALL)?;
            let config = ClusterIdentity::load(dir.path(), "stranger")?.quic_client_config()?;
            _stranger_dir = dir;
            for _ in 0..args.strangers {
                tasks.spawn(peer(&config, &strangers).knock());
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let report = SiegeReport {
        duration_secs: args.duration_secs,
        idle: idle.report(),
        trickle: trickle.report(),
        stalled: stalled.report(),
        strangers: strangers.report(),
    };
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &args.report {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
}

fn raise_open_file_limit(wanted: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
        if (hard as usize) < wanted {
            eprintln!(
                "siege: the open-file limit {hard} is below the {wanted} connections asked for"
            );
        }
    }
}

async fn connect(addr: SocketAddr, counts: &Counts) -> Option<TcpStream> {
    match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            counts.opened.fetch_add(1, Ordering::Relaxed);
            Some(stream)
        }
        _ => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            sleep(RETRY_PAUSE).await;
            None
        }
    }
}

/// Keeps one connection open that never sends a byte; reopens it when the server closes it.
async fn hold_idle(addr: SocketAddr, pace: Pace, counts: Arc<Counts>) {
    while Instant::now() < pace.deadline {
        let Some(mut stream) = connect(addr, &counts).await else {
            continue;
        };
        let mut byte = [0u8; 1];
        tokio::select! {
            _ = stream.read(&mut byte) => {
                counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
            }
            () = sleep_until(pace.deadline) => return,
        }
        drop(stream);
        if !pace.again().await {
            return;
        }
    }
}

/// Keeps one connection open that sends request headers a byte a second, never ending them.
async fn hold_trickle(addr: SocketAddr, pace: Pace, counts: Arc<Counts>) {
    let deadline = pace.deadline;
    const HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: quiver\r\nX-Trickle: ";
    while Instant::now() < deadline {
        let Some(mut stream) = connect(addr, &counts).await else {
            continue;
        };
        let mut sent = 0usize;
        let mut buf = [0u8; 64];
        loop {
            // One byte never fills the socket buffer, so the write does not wait.
            let byte = HEAD.get(sent).copied().unwrap_or(b'a');
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::select! {
                () = sleep(Duration::from_secs(1)) => {}
                // A response (a 4xx) or the close: either way the server is done with it.
                _ = stream.read(&mut buf) => break,
                () = sleep_until(deadline) => return,
            }
        }
        counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
        drop(stream);
        if !pace.again().await {
            return;
        }
    }
}

/// One hostile QUIC peer.
struct QuicPeer {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    pace: Pace,
    counts: Arc<Counts>,
}

impl QuicPeer {
    async fn handshake(&self) -> Option<quinn::Connection> {
        let connecting =
            match self
                .endpoint
                .connect_with(self.config.clone(), self.addr, CLUSTER_SERVER_NAME)
            {
                Ok(connecting) => connecting,
                Err(_) => {
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    sleep(RETRY_PAUSE).await;
                    return None;
                }
            };
        match timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => {
                self.counts.opened.fetch_add(1, Ordering::Relaxed);
                Some(connection)
            }
            _ => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                sleep(RETRY_PAUSE).await;
                None
            }
        }
    }

    /// Completes the handshake, opens a stream, sends the start of a request and stalls;
    /// reconnects when the server closes the connection.
    async fn stall(self) {
        while Instant::now() < self.pace.deadline {
            let Some(connection) = self.handshake().await else {
                continue;
            };
            // Keep the stream's halves alive: dropping them would finish or reset it.
            let stream = match connection.open_bi().await {
                Ok((mut send, recv)) => {
                    let _ = send.write_all(&[0u8; 16]).await;
                    Some((send, recv))
                }
                Err(_) => None,
            };
            tokio::select! {
                _ = connection.closed() => {
                    self.counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                }
                () = sleep_until(self.pace.deadline) => return,
            }
            drop(stream);
            if !self.pace.again().await {
                return;
            }
        }
    }

    /// Handshakes with a stranger's certificate, again and again.
    async fn knock(self) {
        while Instant::now() < self.pace.deadline {
            if let Some(connection) = self.handshake().await {
                // TLS 1.3 lets the client finish first; the server's verdict comes as a close.
                tokio::select! {
                    _ = connection.closed() => {
                        self.counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    }
                    () = sleep_until(self.pace.deadline) => return,
                }
            }
            if !self.pace.again().await {
                return;
            }
        }
    }
}
